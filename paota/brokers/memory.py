"""An in-process broker with the delivery semantics of the AMQP broker.

It keeps the AMQP contract the pool relies on: a prefetch window per consumer, ack, reject with or
without requeue, the redelivered flag, priorities, delays that run in ETA order, and named parking
queues (failed, timeout) that tests and users can inspect. Messages go through the same wire codec
as on RabbitMQ. It lives in one process: only tasks published from this process reach its workers.

For tests, :meth:`MemoryBroker.run_until_idle` waits until everything due has been processed and,
with a :class:`~paota.core.clock.ManualClock`, fast-forwards time to the next delayed message instead
of sleeping, so retries with Fibonacci backoff run in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from paota.core.clock import Clock, ManualClock, SystemClock
from paota.core.errors import BrokerError, DecodeError
from paota.core.protocols import Delivery, ParkInfo, ParkQueue, replay_headers
from paota.core.signature import Signature, decode_message, encode_message

__all__ = ["DelayRecord", "MemoryBroker", "MemoryDelivery", "MemoryMessage"]


@dataclass
class MemoryMessage:
    """A message held by the memory broker: body, headers, priority and AMQP-like flags."""

    body: bytes
    headers: dict[str, Any]
    priority: int = 0
    redelivered: bool = False
    seq: int = 0


@dataclass(frozen=True)
class DelayRecord:
    """One delayed publish, as seen by the broker (for tests: retry backoff is observable)."""

    task_id: str
    retries_done: int
    delay_s: float


@dataclass(eq=False)
class _Consumer:
    cancelled: bool = False
    deliveries: set[MemoryDelivery] = field(default_factory=set)


class MemoryDelivery:
    """A message handed to a consumer of the memory broker."""

    __slots__ = ("_broker", "_consumer", "_done", "message")

    def __init__(self, broker: MemoryBroker, consumer: _Consumer, message: MemoryMessage) -> None:
        self._broker = broker
        self._consumer = consumer
        self._done = False
        self.message = message

    @property
    def body(self) -> bytes:
        """The message body, unchanged."""
        return self.message.body

    @property
    def headers(self) -> Mapping[str, Any]:
        """The message headers."""
        return self.message.headers

    @property
    def redelivered(self) -> bool:
        """True when this message was delivered before."""
        return self.message.redelivered

    async def ack(self) -> None:
        """Acknowledge; the broker forgets the message."""
        self._settle(requeue=False)

    async def reject(self, *, requeue: bool) -> None:
        """Reject; with ``requeue`` the message returns to its place in the queue, marked redelivered."""
        self._settle(requeue=requeue)

    def _settle(self, *, requeue: bool) -> None:
        if self._done:
            raise BrokerError(
                "delivery already acknowledged or rejected (AMQP would close the channel: "
                "PRECONDITION_FAILED unknown delivery tag)"
            )
        self._done = True
        self._broker._settle(self, requeue=requeue)


class MemoryBroker:
    """In-process :class:`~paota.core.protocols.Broker`.

    ``clock`` defaults to the system clock; pass a :class:`ManualClock` to let
    :meth:`run_until_idle` skip over delays.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._ready: list[tuple[int, int, MemoryMessage]] = []
        self._delayed: list[tuple[float, int, MemoryMessage]] = []
        self._parked: dict[ParkQueue, list[MemoryMessage]] = {q: [] for q in ParkQueue}
        self._consumers: set[_Consumer] = set()
        self._seq = itertools.count()
        self._wakeup: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._open = False
        self._closed = False
        self.delays: list[DelayRecord] = []
        """Every delayed publish (task id, retries done, delay), in publish order."""

    # lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the broker. Idempotent; a closed broker cannot be reopened."""
        if self._closed:
            raise BrokerError("memory broker is closed; create a new one")
        if not self._open:
            self._wakeup = asyncio.Event()
            self._open = True

    async def close(self) -> None:
        """Close: consumers stop, unacked deliveries return to the queue. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for consumer in list(self._consumers):
            self._return_unacked(consumer)
        self._consumers.clear()
        if self._wakeup is not None:
            self._wakeup.set()

    async def __aenter__(self) -> MemoryBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self) -> asyncio.Event:
        if not self._open or self._wakeup is None:
            state = "closed" if self._closed else "not connected (call connect() or use async with)"
            raise BrokerError(f"memory broker is {state}")
        return self._wakeup

    # publishing ------------------------------------------------------------------------------

    async def publish(
        self,
        sig: Signature,
        *,
        delay_s: float = 0.0,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Encode ``sig`` with the wire codec and enqueue it, after ``delay_s`` seconds if > 0."""
        self._check_open()
        wire = encode_message(sig)
        msg_headers = wire.headers
        if headers:
            msg_headers = {**msg_headers, **headers}
        message = MemoryMessage(wire.body, msg_headers, sig.priority, False, next(self._seq))
        if delay_s > 0:
            self.delays.append(DelayRecord(sig.uuid, sig.retries_done, delay_s))
            heapq.heappush(self._delayed, (self.clock.monotonic() + delay_s, message.seq, message))
            self._schedule_timer()
        else:
            self._enqueue(message)

    async def publish_raw(
        self, body: bytes, headers: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> None:
        """Enqueue a message as is, bypassing the codec (to feed a worker garbage, or a message
        another producer encoded)."""
        self._check_open()
        self._enqueue(MemoryMessage(body, dict(headers or {}), priority, False, next(self._seq)))

    def _enqueue(self, message: MemoryMessage) -> None:
        heapq.heappush(self._ready, (-message.priority, message.seq, message))
        if self._wakeup is not None:
            self._wakeup.set()

    def _release_due(self) -> int:
        now = self.clock.monotonic()
        released = 0
        while self._delayed and self._delayed[0][0] <= now:
            _, _, message = heapq.heappop(self._delayed)
            self._enqueue(message)
            released += 1
        return released

    def _schedule_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._delayed or isinstance(self.clock, ManualClock) or not self._open:
            return
        wait_s = max(0.0, self._delayed[0][0] - self.clock.monotonic())
        self._timer = asyncio.get_running_loop().call_later(wait_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._release_due()
        self._schedule_timer()

    # consuming -------------------------------------------------------------------------------

    async def consume(self, *, prefetch: int) -> AsyncIterator[Delivery]:
        """Yield deliveries, at most ``prefetch`` unacked at a time, highest priority first."""
        wakeup = self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch!r}")
        consumer = _Consumer()
        self._consumers.add(consumer)
        ready = self._ready
        try:
            while True:
                if self._closed:
                    return
                if ready and len(consumer.deliveries) < prefetch:
                    _, _, message = heapq.heappop(ready)
                    delivery = MemoryDelivery(self, consumer, message)
                    consumer.deliveries.add(delivery)
                    yield delivery
                    continue
                wakeup.clear()
                await wakeup.wait()
        finally:
            consumer.cancelled = True
            if not consumer.deliveries:
                self._consumers.discard(consumer)

    def _settle(self, delivery: MemoryDelivery, *, requeue: bool) -> None:
        consumer = delivery._consumer
        if delivery in consumer.deliveries:
            consumer.deliveries.discard(delivery)
            if consumer.cancelled and not consumer.deliveries:
                self._consumers.discard(consumer)
            if requeue and not self._closed:
                delivery.message.redelivered = True
                self._enqueue(delivery.message)
            elif self._wakeup is not None:
                self._wakeup.set()

    def _return_unacked(self, consumer: _Consumer) -> None:
        for delivery in list(consumer.deliveries):
            delivery._done = True
            delivery.message.redelivered = True
            self._enqueue(delivery.message)
        consumer.deliveries.clear()

    # parking ---------------------------------------------------------------------------------

    async def park(self, delivery: Delivery, queue: ParkQueue, info: ParkInfo) -> None:
        """Copy the delivery (original body and headers plus ``x-paota-*``) to a parking queue."""
        self._check_open()
        headers = {**delivery.headers, **info.headers()}
        self._parked[queue].append(MemoryMessage(delivery.body, headers, 0, False, next(self._seq)))

    def parked(self, queue: ParkQueue) -> list[MemoryMessage]:
        """The messages in a parking queue, oldest first (a copy of the list)."""
        return list(self._parked[queue])

    async def requeue_parked(
        self, queue: ParkQueue, *, reason: str | None = None, limit: int | None = None
    ) -> int:
        """Move parked messages back to the task queue with retries reset; returns how many moved."""
        self._check_open()
        keep: list[MemoryMessage] = []
        moved = 0
        for message in self._parked[queue]:
            matches = reason is None or message.headers.get("x-paota-reason") == reason
            if not matches or (limit is not None and moved >= limit):
                keep.append(message)
                continue
            headers = replay_headers(message.headers)
            try:
                sig = decode_message(message.body, headers).replace(retries_done=0)
            except DecodeError:
                self._enqueue(MemoryMessage(message.body, headers, 0, False, next(self._seq)))
            else:
                wire_keys = encode_message(sig).headers.keys()
                extra = {k: v for k, v in headers.items() if k not in wire_keys}
                await self.publish(sig, headers=extra)
            moved += 1
        self._parked[queue] = keep
        return moved

    # test support ----------------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        """Messages waiting for a consumer."""
        return len(self._ready)

    @property
    def delayed_count(self) -> int:
        """Messages waiting for their delay to pass."""
        return len(self._delayed)

    @property
    def unacked_count(self) -> int:
        """Messages delivered and neither acked nor rejected."""
        return sum(len(c.deliveries) for c in self._consumers)

    def _busy(self) -> bool:
        return bool(self._ready) or any(c.deliveries for c in self._consumers)

    async def run_until_idle(self, *, advance_time: bool = True, timeout_s: float = 30.0) -> None:
        """Wait until no message is ready or unacked.

        With a :class:`ManualClock` and ``advance_time``, delayed messages are then released by
        moving the clock to the next one's due time, until none are left. With the system clock,
        delayed messages are waited for in real time when ``advance_time`` is set, else left alone.
        Raises ``TimeoutError`` after ``timeout_s`` real seconds.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            while self._busy():
                if loop.time() > deadline:
                    raise TimeoutError(
                        f"memory broker not idle after {timeout_s}s: {len(self._ready)} ready, "
                        f"{self.unacked_count} unacked, {len(self._delayed)} delayed"
                    )
                await asyncio.sleep(0.001)
            # Let handlers that were just woken finish their bookkeeping.
            for _ in range(5):
                await asyncio.sleep(0)
            if self._busy():
                continue
            if not advance_time or not self._delayed:
                return
            if isinstance(self.clock, ManualClock):
                self.clock.advance(max(0.0, self._delayed[0][0] - self.clock.monotonic()))
                self._release_due()
            else:
                if loop.time() > deadline:
                    raise TimeoutError(
                        f"memory broker: delayed messages still pending after {timeout_s}s"
                    )
                await asyncio.sleep(
                    min(0.01, max(0.0, self._delayed[0][0] - self.clock.monotonic()))
                )
