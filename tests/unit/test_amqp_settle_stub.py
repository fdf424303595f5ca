"""ConsumerSession.settle against a stub channel: no wait with room, bounded wait without."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import paota.brokers.amqp.consumer as consumer_module
from paota.brokers.amqp.broker import AMQPBroker
from paota.brokers.amqp.consumer import ConsumerSession
from paota.core.config import AMQPConfig, Config


class StubConnection:
    def __init__(self, size: int) -> None:
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue(size)


class StubChannel:
    def __init__(self, size: int) -> None:
        self.connection = StubConnection(size)
        self.closing = asyncio.get_running_loop().create_future()
        self.on_consumer_cancel_callbacks: set[Any] = set()
        self.sent: list[tuple[str, int]] = []

    @property
    def is_closed(self) -> bool:
        return self.closing.done()

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        assert wait is False
        await self.connection.write_queue.put(("ack", tag))
        self.sent.append(("ack", tag))

    async def basic_reject(self, tag: int, *, requeue: bool = True, wait: bool = True) -> None:
        assert wait is False
        await self.connection.write_queue.put(("reject", tag))
        self.sent.append(("reject", tag))


def session(size: int) -> tuple[ConsumerSession, StubChannel]:
    broker = AMQPBroker(Config(broker="amqp", amqp=AMQPConfig(url="amqp://x@127.0.0.1/")))
    channel = StubChannel(size)
    return ConsumerSession(broker, channel, "q", "tag"), channel  # type: ignore[arg-type]


async def test_with_room_in_the_frame_queue_settling_does_not_wait() -> None:
    s, channel = session(10)
    await s.settle(1, ack=True, requeue=False)
    await s.settle(2, ack=False, requeue=True)
    assert channel.sent == [("ack", 1), ("reject", 2)]


async def test_a_full_frame_queue_that_never_drains_is_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "SETTLE_TIMEOUT_S", 0.2)
    s, channel = session(1)
    channel.connection.write_queue.put_nowait("stuck")
    started = time.monotonic()
    await s.settle(1, ack=True, requeue=False)  # logged, not raised: RabbitMQ redelivers
    assert 0.15 < time.monotonic() - started < 1.0
    assert channel.sent == []
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_full_frame_queue_that_drains_settles() -> None:
    s, channel = session(1)
    channel.connection.write_queue.put_nowait("queued")
    asyncio.get_running_loop().call_later(0.05, channel.connection.write_queue.get_nowait)
    await s.settle(1, ack=True, requeue=False)
    assert channel.sent == [("ack", 1)]


class AckRecorder(StubChannel):
    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        assert wait is False
        self.sent.append(("ack-multiple" if multiple else "ack", tag))


def recorder() -> tuple[ConsumerSession, AckRecorder]:
    broker = AMQPBroker(Config(broker="amqp", amqp=AMQPConfig(url="amqp://x@127.0.0.1/")))
    channel = AckRecorder(10)
    return ConsumerSession(broker, channel, "q", "tag"), channel  # type: ignore[arg-type]


async def test_acks_of_one_turn_leave_as_one_multiple_ack() -> None:
    s, channel = recorder()
    s._tags.extend(range(1, 101))  # 100 deliveries yielded
    for tag in range(1, 101):
        s.ack_soon(tag)
    await s.flush()
    assert channel.sent == [("ack-multiple", 100)]


async def test_an_ack_ahead_of_a_running_delivery_leaves_by_itself() -> None:
    s, channel = recorder()
    s._tags.extend(range(1, 6))
    for tag in (1, 2, 4, 5):  # 3 still runs
        s.ack_soon(tag)
    await s.flush()
    assert channel.sent == [("ack-multiple", 2), ("ack", 4), ("ack", 5)]
    # when 3 ends, its ack alone covers it; 4 and 5 are not acked twice
    s.ack_soon(3)
    await s.flush()
    assert channel.sent[3:] == [("ack-multiple", 3)]
    assert not s._tags and not s._sent_alone


async def test_a_rejected_delivery_in_the_middle_is_passed_over() -> None:
    s, channel = recorder()
    s._tags.extend(range(1, 4))
    await s.settle(2, ack=False, requeue=True)
    s.ack_soon(1)
    s.ack_soon(3)
    await s.flush()
    assert channel.sent == [("reject", 2), ("ack-multiple", 3)]
