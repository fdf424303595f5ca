"""The broker contract: every Broker implementation passes these tests.

Subclass :class:`BrokerContract` and provide a ``broker`` fixture yielding a connected broker on a
fresh, empty task queue, where the queue ``{default_queue}.extra`` is free to use too (see
tests/unit/test_broker_memory.py and tests/integration/). Brokers move bytes: the messages here are
encoded by the core's codec (:func:`message`), as the pool does, and parked copies are built by the
core (:func:`paota.core.settle.parked_copy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from paota.core.errors import BrokerError
from paota.core.message import Arg, Signature, decode_message, encode_message
from paota.core.protocols import (
    PARKING_HEADERS,
    REPLAYS_HEADER,
    Broker,
    Delivery,
    Message,
    OutgoingMessage,
    ParkInfo,
    ParkQueue,
    ParkReason,
)
from paota.core.replay import replay_rewrite
from paota.core.settle import parked_copy


class Receiver:
    """Reads deliveries with timeouts without cancelling the consumer's pending ``__anext__``
    (cancelling it would end an async generator for good)."""

    def __init__(self, deliveries: AsyncIterator[Delivery]) -> None:
        self._deliveries = deliveries
        self._pending: asyncio.Future[Delivery] | None = None

    def _next(self) -> asyncio.Future[Delivery]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._deliveries.__anext__())
        return self._pending

    async def next(self, timeout: float = 5.0) -> Delivery:
        """The next delivery, or a test failure after ``timeout`` seconds."""
        pending = self._next()
        done, _ = await asyncio.wait({pending}, timeout=timeout)
        if not done:
            pytest.fail(f"no delivery within {timeout}s")
        self._pending = None
        return pending.result()

    async def nothing(self, within: float = 0.3) -> None:
        """Assert nothing is delivered within ``within`` seconds."""
        pending = self._next()
        done, _ = await asyncio.wait({pending}, timeout=within)
        if done:
            self._pending = None
            delivery = pending.result()
            pytest.fail(f"unexpected delivery: {delivery.body[:200]!r}")

    async def close(self) -> None:
        """Stop consuming."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self._pending
        await self._deliveries.aclose()  # type: ignore[attr-defined]


def sig(name: str = "Add", **kw: Any) -> Signature:
    """A signature with a unique id and a couple of args."""
    import uuid

    kw.setdefault("uuid", f"task_{uuid.uuid4()}")
    kw.setdefault("created_at", datetime.now(UTC))
    kw.setdefault("args", [Arg("a", "int", 1), Arg("b", "int", 2)])
    return Signature(name, **kw)


def message(
    signature: Signature,
    queue: str,
    *,
    delay_s: float = 0.0,
    headers: dict[str, Any] | None = None,
) -> OutgoingMessage:
    """``signature`` encoded as the core publishes it, for ``queue``."""
    wire = encode_message(signature)
    return OutgoingMessage(
        wire.body,
        queue,
        headers={**(headers or {}), **wire.headers},
        content_type=wire.content_type,
        message_id=signature.uuid,
        priority=signature.priority,
        delay_s=delay_s,
        routing_key=signature.routing_key,
    )


async def publish(broker: Broker, signature: Signature, **kw: Any) -> None:
    """Publish ``signature`` to the broker's task queue (``queue=`` for another)."""
    queue = kw.pop("queue", None) or broker.default_queue
    await broker.publish(message(signature, queue, **kw))


def park_info(reason: ParkReason = ParkReason.RETRIES_EXHAUSTED) -> ParkInfo:
    """A ParkInfo as the pool would build it."""
    return ParkInfo(
        reason=reason,
        error_type="ValueError",
        error_message="boom",
        worker="contract-worker",
        parked_at=datetime.now(UTC),
        traceback="Traceback (most recent call last): ...",
    )


async def park(broker: Broker, delivery: Delivery, queue: ParkQueue, info: ParkInfo) -> None:
    """Park ``delivery`` as the pool does: publish the core's parked copy."""
    await broker.publish(parked_copy(delivery, broker.parking_queue(queue), info))


async def requeue(
    broker: Broker, queue: ParkQueue, *, reason: str | None = None, limit: int | None = None
) -> int:
    """``requeue_parked`` as the client does it."""
    rewrite = replay_rewrite(broker.default_queue, reason=reason, now=lambda: datetime.now(UTC))
    return await broker.replay_parked(queue, rewrite, limit=limit)


async def peek_parked(broker: Broker, queue: ParkQueue) -> list[Message]:
    """The parked messages, left where they are."""
    seen: list[Message] = []

    def look(msg: Message) -> None:
        seen.append(msg)

    await broker.replay_parked(queue, look)  # type: ignore[arg-type]
    return seen


class BrokerContract:
    """Behaviour every broker shows; subclasses provide the ``broker`` fixture."""

    async def test_publish_consume_ack(self, broker: Broker) -> None:
        # given a published task
        sent = sig()
        await publish(broker, sent)
        # when it is consumed and acked
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            delivery = await rx.next()
            # then it decodes to the same signature, first delivery, from its queue
            assert decode_message(delivery.body, delivery.headers) == sent
            assert delivery.redelivered is False
            assert delivery.queue == broker.default_queue
            assert delivery.message_id == sent.uuid
            assert delivery.content_type == "application/json"
            await delivery.ack()
            # and it is gone
            await rx.nothing()
        finally:
            await rx.close()

    async def test_reject_with_requeue_redelivers(self, broker: Broker) -> None:
        sent = sig()
        await publish(broker, sent)
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            first = await rx.next()
            await first.reject(requeue=True)
            again = await rx.next()
            assert decode_message(again.body, again.headers).uuid == sent.uuid
            assert again.redelivered is True
            await again.ack()
        finally:
            await rx.close()

    async def test_reject_without_requeue_drops(self, broker: Broker) -> None:
        await publish(broker, sig())
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            first = await rx.next()
            await first.reject(requeue=False)
            await rx.nothing()
        finally:
            await rx.close()

    async def test_a_second_ack_raises_and_sends_nothing(self, broker: Broker) -> None:
        await publish(broker, sig())
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            delivery = await rx.next()
            await delivery.ack()
            with pytest.raises(BrokerError, match="already"):
                await delivery.ack()
            with pytest.raises(BrokerError, match="already"):
                await delivery.reject(requeue=True)
        finally:
            await rx.close()

    async def test_prefetch_bounds_unacked_deliveries(self, broker: Broker) -> None:
        for _ in range(3):
            await publish(broker, sig())
        rx = Receiver(broker.consume(broker.default_queue, prefetch=2))
        try:
            first = await rx.next()
            second = await rx.next()
            await rx.nothing()
            await first.ack()
            third = await rx.next()
            await second.ack()
            await third.ack()
        finally:
            await rx.close()

    async def test_several_queues_keep_their_messages_apart(self, broker: Broker) -> None:
        other = f"{broker.default_queue}.extra"
        here, there = sig(), sig()
        await publish(broker, here)
        await publish(broker, there, queue=other)
        rx_default = Receiver(broker.consume(broker.default_queue, prefetch=10))
        rx_other = Receiver(broker.consume(other, prefetch=10))
        try:
            got = await rx_other.next()
            assert decode_message(got.body, got.headers).uuid == there.uuid
            assert got.queue == other
            await got.ack()
            got = await rx_default.next()
            assert decode_message(got.body, got.headers).uuid == here.uuid
            await got.ack()
            await rx_default.nothing()
            await rx_other.nothing()
        finally:
            await rx_default.close()
            await rx_other.close()

    async def test_delays_run_in_eta_order(self, broker: Broker) -> None:
        # given a long delay published before a short one
        slow, fast = sig(), sig()
        await publish(broker, slow, delay_s=30.0)
        t0 = time.monotonic()
        await publish(broker, fast, delay_s=0.3)
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            # then the short one arrives first, after its delay, not behind the long one
            delivery = await rx.next(timeout=5.0)
            elapsed = time.monotonic() - t0
            assert decode_message(delivery.body, delivery.headers).uuid == fast.uuid
            assert 0.25 <= elapsed < 3.0
            await delivery.ack()
            await rx.nothing(within=0.3)
        finally:
            await rx.close()

    async def test_a_delay_ends_in_its_own_queue(self, broker: Broker) -> None:
        other = f"{broker.default_queue}.extra"
        sent = sig()
        await publish(broker, sent, queue=other, delay_s=0.1)
        rx_other = Receiver(broker.consume(other, prefetch=10))
        rx_default = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            got = await rx_other.next()
            assert decode_message(got.body, got.headers).uuid == sent.uuid
            await got.ack()
            await rx_default.nothing()
        finally:
            await rx_other.close()
            await rx_default.close()

    async def test_headers_and_properties_arrive_as_sent_after_a_delay(
        self, broker: Broker
    ) -> None:
        sent = sig(priority=3)
        await publish(
            broker, sent, delay_s=0.05, headers={"x-paota-returns": 2, "traceparent": "t"}
        )
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            delivery = await rx.next()
            assert delivery.headers.get("x-paota-returns") == 2
            assert delivery.headers.get("traceparent") == "t"
            assert delivery.priority == 3
            assert decode_message(delivery.body, delivery.headers) == sent
            await delivery.ack()
        finally:
            await rx.close()

    async def test_headers_are_published_exactly_as_given(self, broker: Broker) -> None:
        # the broker neither merges nor drops: what the core built is what arrives
        sent = sig(args=[], raw_args=b'{"id":"1"}', retry_count=3)
        msg = message(sent, broker.default_queue, headers={"uuid": "overridden by the codec"})
        assert msg.headers["uuid"] == sent.uuid
        await broker.publish(msg)
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            delivery = await rx.next()
            assert dict(delivery.headers) == dict(msg.headers)
            await delivery.ack()
        finally:
            await rx.close()

    def test_delays_out_of_range_are_refused(self) -> None:
        for bad in (math.nan, math.inf, -1.0, 30 * 365 * 86400.0):
            with pytest.raises(ValueError, match="delay_s"):
                OutgoingMessage(b"{}", "q", delay_s=bad)
        with pytest.raises(TypeError, match="delay_s"):
            OutgoingMessage(b"{}", "q", delay_s="1")  # type: ignore[arg-type]

    async def test_header_mode_round_trip(self, broker: Broker) -> None:
        sent = sig(args=[], raw_args=b'{"id":"1"}', retry_count=3)
        await publish(broker, sent)
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            delivery = await rx.next()
            assert delivery.body == b'{"id":"1"}'
            got = decode_message(delivery.body, delivery.headers)
            assert (got.uuid, got.name, got.raw_args, got.retry_count) == (
                sent.uuid,
                sent.name,
                sent.raw_args,
                3,
            )
            await delivery.ack()
        finally:
            await rx.close()

    async def test_parked_copies_keep_body_headers_and_properties(self, broker: Broker) -> None:
        sent = sig(priority=7)
        await publish(broker, sent, headers={"traceparent": "t"})
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            delivery = await rx.next()
            await park(broker, delivery, ParkQueue.FAILED, park_info())
            await delivery.ack()
        finally:
            await rx.close()
        [parked] = await peek_parked(broker, ParkQueue.FAILED)
        assert parked.body == delivery.body
        assert parked.priority == 7
        assert parked.content_type == "application/json"
        assert parked.message_id == sent.uuid
        assert parked.headers["traceparent"] == "t"
        assert parked.headers["x-paota-reason"] == "retries-exhausted"
        assert parked.headers["x-paota-error"] == "ValueError: boom"
        assert parked.headers["x-paota-worker"] == "contract-worker"
        assert "x-paota-parked-at" in parked.headers

    async def test_park_then_requeue_by_reason(self, broker: Broker) -> None:
        # given two parked messages with different reasons
        exhausted, unknown = sig(retries_done=3, retry_count=3), sig(name="Nope")
        await publish(broker, exhausted)
        await publish(broker, unknown)
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            for _ in range(2):
                delivery = await rx.next()
                got = decode_message(delivery.body, delivery.headers)
                reason = (
                    ParkReason.UNKNOWN_TASK if got.name == "Nope" else ParkReason.RETRIES_EXHAUSTED
                )
                await park(broker, delivery, ParkQueue.FAILED, park_info(reason))
                await delivery.ack()
            # when only the retries-exhausted one is requeued
            moved = await requeue(broker, ParkQueue.FAILED, reason="retries-exhausted")
            assert moved == 1
            # then it is back with its retries reset and without the parking headers
            delivery = await rx.next()
            back = decode_message(delivery.body, delivery.headers)
            assert back.uuid == exhausted.uuid
            assert back.retries_done == 0
            assert not set(PARKING_HEADERS) & set(delivery.headers)
            assert delivery.headers[REPLAYS_HEADER] == 1
            await delivery.ack()
            # and the other one stays parked until asked for
            assert await requeue(broker, ParkQueue.FAILED, limit=5) == 1
            delivery = await rx.next()
            assert decode_message(delivery.body, delivery.headers).uuid == unknown.uuid
            await delivery.ack()
            assert await requeue(broker, ParkQueue.FAILED) == 0
        finally:
            await rx.close()

    async def test_park_keeps_undecodable_body(self, broker: Broker) -> None:
        await publish(broker, sig())
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            delivery = await rx.next()
            await park(broker, delivery, ParkQueue.TIMEOUT, park_info(ParkReason.START_DEADLINE))
            await delivery.ack()
            assert await requeue(broker, ParkQueue.TIMEOUT, reason="exec-timeout") == 0
            assert await requeue(broker, ParkQueue.TIMEOUT, reason="start-deadline") == 1
            delivery = await rx.next()
            await delivery.ack()
        finally:
            await rx.close()

    async def test_close_is_idempotent_and_final(self, broker: Broker) -> None:
        await broker.close()
        await broker.close()
        with pytest.raises(BrokerError):
            await publish(broker, sig())
        with pytest.raises(BrokerError):
            await broker.connect()
