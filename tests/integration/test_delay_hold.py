"""The hold queue on a real RabbitMQ: the last stretch of a delay waits in a worker
(:mod:`paota.brokers.amqp.hold`).

What the tests hold: a delayed message reaches its queue in due order and never before it is due;
messages held by a worker that goes away are held by the next one, none lost and none twice; a
message that cannot be moved is parked with its reason, never dropped; one due far later goes back
through the ladder; messages waiting in a ``"ladder"`` mode ladder still arrive when the workers
run in ``"hold"`` mode (the migration of a deployment).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable

import aiormq
import pytest

from paota.brokers.amqp import AMQPBroker
from paota.brokers.amqp.ladder import DUE_HEADER, TARGET_HEADER
from paota.core.config import Config
from paota.core.protocols import OutgoingMessage

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., Config]


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        await asyncio.sleep(0.02)


async def test_delayed_messages_arrive_in_due_order_and_never_early(
    make_config: ConfigFactory,
) -> None:
    config = make_config()
    delays = [2.0, 0.3, 1.2, 0.05, 0.8, 1.6, 0.5]
    async with AMQPBroker(config, worker_name="hold-order") as broker:
        deliveries = broker.consume(config.task_queue_name, prefetch=20)
        sent: dict[str, tuple[float, float]] = {}
        for index, delay_s in enumerate(delays):
            message_id = f"m{index}"
            sent[message_id] = (time.monotonic(), delay_s)
            await broker.publish(OutgoingMessage(b"x", "", message_id=message_id, delay_s=delay_s))
        arrived: list[str] = []
        for _ in delays:
            delivery = await asyncio.wait_for(anext(deliveries), 60)
            waited = time.monotonic() - sent[delivery.message_id][0]
            # never early (the monotonic clock of this process against the wall clock the due
            # time was computed with: a few ms of rounding allowed)
            assert waited >= sent[delivery.message_id][1] - 0.005, delivery.message_id
            assert DUE_HEADER not in delivery.headers and TARGET_HEADER not in delivery.headers
            assert "x-death" not in delivery.headers
            arrived.append(delivery.message_id)
            await delivery.ack()
        assert arrived == sorted(sent, key=lambda m: sent[m][0] + sent[m][1])
        hold = broker.hold
        assert hold is not None
        await _until(lambda: hold.moved == len(delays), "every move counted")


async def test_messages_held_by_a_worker_that_goes_are_held_by_the_next(
    make_config: ConfigFactory,
) -> None:
    config = make_config()
    n = 200
    first = AMQPBroker(config, worker_name="hold-first")
    await first.connect()
    first.consume(config.task_queue_name, prefetch=10)  # a consuming broker holds
    async with AMQPBroker(config, worker_name="hold-producer") as producer:
        due = time.monotonic() + 3.0
        await asyncio.gather(
            *(
                producer.publish(OutgoingMessage(b"x", "", message_id=f"m{i}", delay_s=3.0))
                for i in range(n)
            )
        )
        hold = first.hold
        assert hold is not None
        await _until(lambda: hold.holding == n, f"the first worker holds all {n}")
        await first.close()  # unacked: RabbitMQ gives them back
        async with AMQPBroker(config, worker_name="hold-second") as second:
            deliveries = second.consume(config.task_queue_name, prefetch=n)
            seen: list[str] = []
            while len(seen) < n:
                delivery = await asyncio.wait_for(anext(deliveries), 60)
                assert time.monotonic() >= due - 0.05, "delivered before it was due"
                seen.append(delivery.message_id)
                await delivery.ack()
            assert sorted(seen) == sorted(f"m{i}" for i in range(n))  # none lost, none twice
            await asyncio.sleep(0.5)
            depths = await second.queue_stats([config.task_queue_name])
            assert depths[config.task_queue_name] is not None
            assert depths[config.task_queue_name].ready == 0


async def _raw_publish(url: str, queue: str, headers: dict[str, object], message_id: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_publish(
            b"raw",
            exchange="",
            routing_key=queue,
            properties=aiormq.spec.Basic.Properties(
                headers=headers, message_id=message_id, delivery_mode=2
            ),
        )
    finally:
        await connection.close()


async def test_a_message_that_cannot_be_moved_is_parked_with_its_reason(
    make_config: ConfigFactory,
) -> None:
    config = make_config()
    url = config.amqp.endpoints[0]
    async with AMQPBroker(config, worker_name="hold-park") as broker:
        broker.consume(config.task_queue_name, prefetch=10)
        hold_queue = broker.topology.ladder.hold_queue
        now_ms = int(time.time() * 1000)
        missing = f"paota_test_no_such_queue_{uuid.uuid4().hex[:8]}"
        await _raw_publish(url, hold_queue, {DUE_HEADER: now_ms, TARGET_HEADER: missing}, "gone")
        await _raw_publish(url, hold_queue, {DUE_HEADER: now_ms}, "untargeted")
        hold = broker.hold
        assert hold is not None
        await _until(lambda: hold.parked == 2, "both parked")
        failed = broker.consume(config.amqp.failed_queue, prefetch=10)
        parked = {}
        for _ in range(2):
            delivery = await asyncio.wait_for(anext(failed), 30)
            parked[delivery.message_id] = delivery.headers
            await delivery.ack()
        assert parked["gone"]["x-paota-reason"] == "unroutable"
        assert missing in parked["gone"]["x-paota-error"]
        assert parked["gone"]["x-paota-origin-queue"] == missing  # a replay goes where it was going
        assert parked["untargeted"]["x-paota-reason"] == "bad-headers"
        assert TARGET_HEADER in parked["untargeted"]["x-paota-error"]


async def test_a_message_due_much_later_goes_back_through_the_ladder(
    make_config: ConfigFactory,
) -> None:
    config = make_config()
    url = config.amqp.endpoints[0]
    async with AMQPBroker(config, worker_name="hold-relay") as broker:
        broker.consume(config.task_queue_name, prefetch=10)
        hold_queue = broker.topology.ladder.hold_queue
        due_ms = int(time.time() * 1000) + 3_600_000  # an hour ahead, far beyond a hold
        headers = {DUE_HEADER: due_ms, TARGET_HEADER: config.task_queue_name}
        await _raw_publish(url, hold_queue, headers, "later")
        hold = broker.hold
        assert hold is not None
        await _until(lambda: hold.relayed == 1, "sent back to the ladder")
        assert hold.holding == 0 and hold.moved == 0
        stats = await broker.queue_stats([config.task_queue_name, *broker.topology.ladder.levels])
        # an hour is 2**21 + ... ms: it waits in the ladder's level 21 now, not in the task queue
        level_21 = next(name for name in broker.topology.ladder.levels if name.endswith("h21"))
        assert stats[config.task_queue_name] is not None
        assert stats[config.task_queue_name].ready == 0
        assert stats[level_21] is not None and stats[level_21].ready == 1
        # (deleting the ladder at the end of the session drops it)


async def test_tasks_waiting_in_a_ladder_mode_ladder_arrive_when_workers_hold(
    make_config: ConfigFactory,
) -> None:
    # A deployment on the broker-only ladder of before (delay_mode "ladder") switches to "hold":
    # the delays already waiting there still reach their queue.
    old = make_config(delay_mode="ladder")
    new = dataclasses.replace(old, amqp=dataclasses.replace(old.amqp, delay_mode="hold"))
    async with AMQPBroker(old, worker_name="old-producer") as producer:
        for index, delay_s in enumerate((1.5, 0.7, 2.5)):
            await producer.publish(
                OutgoingMessage(b"x", "", message_id=f"old{index}", delay_s=delay_s)
            )
        stats = await producer.queue_stats(producer.topology.ladder.levels)
        assert sum(s.ready for s in stats.values() if s is not None) == 3  # in the old ladder
    async with AMQPBroker(new, worker_name="new-worker") as worker:
        assert worker.topology.ladder.mode == "hold"
        deliveries = worker.consume(new.task_queue_name, prefetch=10)
        got = []
        for _ in range(3):
            delivery = await asyncio.wait_for(anext(deliveries), 60)
            assert "x-death" not in delivery.headers  # the old ladder's bookkeeping removed
            got.append(delivery.message_id)
            await delivery.ack()
        assert got == ["old1", "old0", "old2"]
