"""AMQPBroker._publish against a stub channel: deadline, channel loss, cancellation.

In virtual time (:func:`tests.waiting.virtual_time`): a deadline fires at exactly its time."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import pytest
from pamqp import commands as spec

from paota.brokers.amqp.broker import AMQPBroker, _State
from paota.brokers.amqp.publisher import Publisher
from paota.core.config import AMQPConfig, Config
from paota.core.errors import PublishError
from paota.core.protocols import OutgoingMessage
from tests.waiting import until, virtual_time


def message(task_id: str) -> OutgoingMessage:
    """A message as the core publishes one for task ``task_id``."""
    return OutgoingMessage(b"{}", "paota_tasks", message_id=task_id)


class StubChannel:
    is_closed = False

    def __init__(self, behaviour: list[str]) -> None:
        self.behaviour = behaviour
        self.calls = 0

    async def basic_publish(self, body: bytes, **kwargs: Any) -> Any:
        assert kwargs["wait"] is False and kwargs["mandatory"] is True
        what = self.behaviour[min(self.calls, len(self.behaviour) - 1)]
        self.calls += 1
        if what == "hang":
            await asyncio.Future()
        if what == "gone":  # aiormq cancels the futures of a closed channel
            raise asyncio.CancelledError
        if what == "nack":
            raise aiormq.DeliveryError(None, spec.Basic.Nack(delivery_tag=self.calls))
        return spec.Basic.Ack(delivery_tag=self.calls)


class StubPool:
    shown_url = "amqp://stub/"

    def __init__(self, channel: StubChannel) -> None:
        self.channel = channel
        self.discarded = 0

    def ready_publish_channel(self) -> StubChannel:
        return self.channel

    async def discard_publish_channel(self, channel: StubChannel) -> None:
        self.discarded += 1

    async def publish_channel(self, deadline: float | None) -> StubChannel:
        return self.channel


def make(behaviour: list[str], timeout_s: float = 0.2) -> tuple[AMQPBroker, StubChannel]:
    config = Config(
        broker="amqp", amqp=AMQPConfig(url="amqp://x@127.0.0.1/", publish_timeout_s=timeout_s)
    )
    broker = AMQPBroker(config)
    channel = StubChannel(behaviour)
    broker._pool = StubPool(channel)  # type: ignore[assignment]
    broker._publisher = Publisher(
        broker._pool,  # type: ignore[arg-type]
        timeout_s=timeout_s,
        redeclare=broker._redeclare,
    )
    broker._state = _State.OPEN
    return broker, channel


@virtual_time
async def test_a_confirm_that_never_comes_fails_within_the_publish_timeout() -> None:
    broker, _ = make(["hang"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PublishError, match=r"not confirmed by RabbitMQ within 0\.2 s"):
        await broker.publish(message("t1"))
    assert loop.time() - started == pytest.approx(0.2)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@virtual_time
async def test_a_publish_interrupted_by_a_closed_channel_is_retried() -> None:
    broker, channel = make(["gone", "ack"], timeout_s=5)
    await broker.publish(message("t2"))
    assert channel.calls == 2


@virtual_time
async def test_many_concurrent_publishes_with_some_hanging() -> None:
    broker, channel = make(["ack"], timeout_s=0.3)
    channel.behaviour = ["ack", "hang"] * 500
    results = await asyncio.gather(
        *(broker.publish(message(f"t{i}")) for i in range(1000)),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, PublishError)]
    assert len(failed) == 500 and results.count(None) == 500


@virtual_time
async def test_cancelling_a_publish_cancels_it() -> None:
    broker, channel = make(["hang"], timeout_s=5)
    task = asyncio.ensure_future(broker.publish(message("t3")))
    await until(lambda: channel.calls == 1, what="the publish reached the channel")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@virtual_time
async def test_a_nack_is_published_again_on_a_new_channel_until_acked() -> None:
    broker, channel = make(["nack", "nack", "ack"], timeout_s=5)
    await broker.publish(message("t-nack"))
    assert channel.calls == 3
    assert broker._pool.discarded == 2  # type: ignore[union-attr]


@virtual_time
async def test_nacks_until_the_publish_timeout_fail_with_publish_error() -> None:
    broker, _ = make(["nack"], timeout_s=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PublishError, match=r"rejected \(nack\)"):
        await broker.publish(message("t-nacked"))
    assert loop.time() - started <= 0.5 + 0.01
