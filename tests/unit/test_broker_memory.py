"""The broker contract on the memory broker, plus what only the memory broker offers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from paota.brokers.memory import MemoryBroker
from paota.core.clock import ManualClock
from paota.core.errors import BrokerError
from paota.core.message import decode_message
from paota.core.protocols import ParkQueue, ParkReason
from tests.contracts.broker_contract import BrokerContract, Receiver, park, park_info, publish, sig


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    async def broker(self) -> AsyncIterator[MemoryBroker]:
        async with MemoryBroker() as broker:
            yield broker


async def test_priority_first() -> None:
    async with MemoryBroker() as broker:
        low, high = sig(priority=1), sig(priority=9)
        await publish(broker, low)
        await publish(broker, high)
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        first = await rx.next()
        assert decode_message(first.body, first.headers).uuid == high.uuid
        await rx.close()


async def test_manual_clock_fast_forwards_delays_in_order() -> None:
    clock = ManualClock()
    async with MemoryBroker(clock=clock) as broker:
        await publish(broker, sig(uuid="slow"), delay_s=60.0)
        await publish(broker, sig(uuid="fast"), delay_s=1.0)
        assert broker.delayed_count == 2
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        seen: list[tuple[str, float]] = []

        async def consume() -> None:
            while True:
                delivery = await rx.next(timeout=60)
                seen.append((decode_message(delivery.body).uuid, clock.monotonic()))
                await delivery.ack()

        consumer = asyncio.create_task(consume())
        await broker.run_until_idle(advance_time=True)
        assert seen == [("fast", 1.0), ("slow", 60.0)]
        assert [r.delay_s for r in broker.delays] == [60.0, 1.0]
        consumer.cancel()
        await rx.close()


async def test_parked_messages_are_inspectable() -> None:
    async with MemoryBroker() as broker:
        await publish(broker, sig())
        rx = Receiver(broker.consume(broker.default_queue, prefetch=1))
        delivery = await rx.next()
        await park(broker, delivery, ParkQueue.FAILED, park_info(ParkReason.UNDECODABLE))
        await delivery.ack()
        [parked] = broker.parked(ParkQueue.FAILED)
        assert parked.body == delivery.body
        assert parked.headers["x-paota-reason"] == "undecodable"
        assert parked.headers["x-paota-error"] == "ValueError: boom"
        assert parked.headers["x-paota-worker"] == "contract-worker"
        assert "x-paota-parked-at" in parked.headers
        await rx.close()


async def test_double_ack_is_an_error() -> None:
    async with MemoryBroker() as broker:
        await publish(broker, sig())
        rx = Receiver(broker.consume(broker.default_queue, prefetch=1))
        delivery = await rx.next()
        await delivery.ack()
        with pytest.raises(BrokerError, match="already"):
            await delivery.ack()
        await rx.close()


async def test_close_returns_unacked_deliveries() -> None:
    broker = MemoryBroker()
    await broker.connect()
    await publish(broker, sig())
    rx = Receiver(broker.consume(broker.default_queue, prefetch=1))
    await rx.next()
    assert broker.unacked_count == 1
    await broker.close()
    assert broker.ready_count == 1
    assert broker.unacked_count == 0


async def test_unopened_broker_says_so() -> None:
    with pytest.raises(BrokerError, match="not connected"):
        await publish(MemoryBroker(), sig())


async def test_closing_with_tasks_nobody_ran_says_how_many_will_never_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a producer on the default (memory) broker that sends and closes loses its tasks: not silently
    from paota import Client, Config

    client = Client(Config(), name="newcomer")

    @client.task(name="resize")
    async def resize(path: str) -> None: ...

    async with client:
        await resize.send("a.png")
        await resize.send("b.png")
        await resize.with_options(delay_s=60).send("c.png")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "closes with 3 task(s) that will never run (2 in paota_tasks, 1 delayed)" in m
        and "PAOTA_BROKER=amqp" in m
        for m in warnings
    ), warnings


async def test_closing_after_everything_ran_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker(clock=ManualClock())
    async with broker:
        await publish(broker, sig())
        async for delivery in broker.consume(broker.default_queue, prefetch=1):
            await delivery.ack()
            break
    assert not [r for r in caplog.records if "never run" in r.getMessage()]
