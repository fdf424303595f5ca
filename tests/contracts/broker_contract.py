"""The broker contract: every Broker implementation passes these tests.

Subclass :class:`BrokerContract` and provide a ``broker`` fixture yielding a connected broker on a
fresh, empty task queue (see tests/unit/test_broker_memory.py and tests/integration/).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest

from paota.core.errors import BrokerError
from paota.core.protocols import (
    PARKING_HEADERS,
    REPLAYS_HEADER,
    Broker,
    Delivery,
    ParkInfo,
    ParkQueue,
    ParkReason,
)
from paota.core.signature import Arg, Signature, decode_message


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
    kw.setdefault("created_at", datetime.now(timezone.utc))
    kw.setdefault("args", [Arg("a", "int", 1), Arg("b", "int", 2)])
    return Signature(name, **kw)


def park_info(reason: ParkReason = ParkReason.RETRIES_EXHAUSTED) -> ParkInfo:
    """A ParkInfo as the pool would build it."""
    return ParkInfo(
        reason=reason,
        error_type="ValueError",
        error_message="boom",
        worker="contract-worker",
        parked_at=datetime.now(timezone.utc),
        traceback="Traceback (most recent call last): ...",
    )


class BrokerContract:
    """Behaviour every broker shows; subclasses provide the ``broker`` fixture."""

    async def test_publish_consume_ack(self, broker: Broker) -> None:
        # given a published task
        sent = sig()
        await broker.publish(sent)
        # when it is consumed and acked
        rx = Receiver(broker.consume(prefetch=10))
        try:
            delivery = await rx.next()
            # then it decodes to the same signature, first delivery
            assert decode_message(delivery.body, delivery.headers) == sent
            assert delivery.redelivered is False
            await delivery.ack()
            # and it is gone
            await rx.nothing()
        finally:
            await rx.close()

    async def test_reject_with_requeue_redelivers(self, broker: Broker) -> None:
        sent = sig()
        await broker.publish(sent)
        rx = Receiver(broker.consume(prefetch=10))
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
        await broker.publish(sig())
        rx = Receiver(broker.consume(prefetch=10))
        try:
            first = await rx.next()
            await first.reject(requeue=False)
            await rx.nothing()
        finally:
            await rx.close()

    async def test_prefetch_bounds_unacked_deliveries(self, broker: Broker) -> None:
        for _ in range(3):
            await broker.publish(sig())
        rx = Receiver(broker.consume(prefetch=2))
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

    async def test_delays_run_in_eta_order(self, broker: Broker) -> None:
        # given a long delay published before a short one
        slow, fast = sig(), sig()
        await broker.publish(slow, delay_s=30.0)
        t0 = time.monotonic()
        await broker.publish(fast, delay_s=0.3)
        rx = Receiver(broker.consume(prefetch=10))
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

    async def test_extra_headers_survive_a_delay(self, broker: Broker) -> None:
        sent = sig(priority=3)
        await broker.publish(sent, delay_s=0.05, headers={"x-paota-returns": 2})
        rx = Receiver(broker.consume(prefetch=10))
        try:
            delivery = await rx.next()
            assert delivery.headers.get("x-paota-returns") == 2
            assert decode_message(delivery.body, delivery.headers) == sent
            await delivery.ack()
        finally:
            await rx.close()

    async def test_header_mode_round_trip(self, broker: Broker) -> None:
        sent = sig(args=[], raw_args=b'{"id":"1"}', retry_count=3)
        await broker.publish(sent)
        rx = Receiver(broker.consume(prefetch=10))
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

    async def test_park_then_requeue_by_reason(self, broker: Broker) -> None:
        # given two parked messages with different reasons
        exhausted, unknown = sig(retries_done=3, retry_count=3), sig(name="Nope")
        await broker.publish(exhausted)
        await broker.publish(unknown)
        rx = Receiver(broker.consume(prefetch=10))
        try:
            for _ in range(2):
                delivery = await rx.next()
                got = decode_message(delivery.body, delivery.headers)
                reason = (
                    ParkReason.UNKNOWN_TASK if got.name == "Nope" else ParkReason.RETRIES_EXHAUSTED
                )
                await broker.park(delivery, ParkQueue.FAILED, park_info(reason))
                await delivery.ack()
            # when only the retries-exhausted one is requeued
            moved = await broker.requeue_parked(ParkQueue.FAILED, reason="retries-exhausted")
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
            assert await broker.requeue_parked(ParkQueue.FAILED, limit=5) == 1
            delivery = await rx.next()
            assert decode_message(delivery.body, delivery.headers).uuid == unknown.uuid
            await delivery.ack()
            assert await broker.requeue_parked(ParkQueue.FAILED) == 0
        finally:
            await rx.close()

    async def test_park_keeps_undecodable_body(self, broker: Broker) -> None:
        await broker.publish(sig())
        rx = Receiver(broker.consume(prefetch=10))
        try:
            delivery = await rx.next()
            await broker.park(delivery, ParkQueue.TIMEOUT, park_info(ParkReason.START_DEADLINE))
            await delivery.ack()
            assert await broker.requeue_parked(ParkQueue.TIMEOUT, reason="exec-timeout") == 0
            assert await broker.requeue_parked(ParkQueue.TIMEOUT, reason="start-deadline") == 1
            delivery = await rx.next()
            await delivery.ack()
        finally:
            await rx.close()

    async def test_close_is_idempotent_and_final(self, broker: Broker) -> None:
        await broker.close()
        await broker.close()
        with pytest.raises(BrokerError):
            await broker.publish(sig())
