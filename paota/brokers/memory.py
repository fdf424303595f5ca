"""An in-process broker with the delivery semantics of the AMQP broker.

It keeps the AMQP contract the pool relies on: named queues, created on first use; a prefetch
window per consumer; ack, reject with or without requeue; the redelivered flag; priorities; delays
that run in ETA order and end in their target queue; the parking queues (failed, timeout), which
tests and users can inspect. Like every broker it moves bytes: it stores what the core encoded and
hands it back unchanged. It lives in one process: only tasks published from this process reach its
workers.

For tests, :meth:`MemoryBroker.run_until_idle` waits until everything due has been processed and,
with a :class:`~paota.core.clock.ManualClock`, fast-forwards time to the next delayed message instead
of sleeping, so retries with Fibonacci backoff run in milliseconds.

Its queues, consumers and deliveries are in ``paota.brokers.memory_delivery``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paota.brokers.memory_delivery import (
    MemoryConsumer,
    MemoryDelivery,
    MemoryMessage,
    MemoryQueue,
)
from paota.core.clock import Clock, ManualClock, SystemClock
from paota.core.errors import BrokerError, PublishError
from paota.core.protocols import Delivery, OutgoingMessage, ParkQueue, QueueStat, Rewrite

__all__ = ["DelayRecord", "MemoryBroker", "MemoryDelivery", "MemoryMessage"]

logger = logging.getLogger("paota.brokers.memory")

DEFAULT_QUEUE = "paota_tasks"
DEFAULT_PARKING = {
    ParkQueue.FAILED: "paota_task_failed_queue",
    ParkQueue.TIMEOUT: "paota_task_timeout_queue",
}


@dataclass(frozen=True)
class DelayRecord:
    """One delayed publish, as the broker saw it (for tests: retry backoff is observable).

    ``retries_done`` is read from the message's body with the wire codec, for tests only: the
    broker itself never decodes what it carries.
    """

    task_id: str
    delay_s: float
    queue: str
    body: bytes = field(repr=False)
    headers: Mapping[str, Any] = field(repr=False)

    @property
    def retries_done(self) -> int:
        """The ``RetriesDone`` of the delayed task (decoded on demand)."""
        from paota.core.message import decode_message

        return decode_message(self.body, self.headers).retries_done


class MemoryBroker:
    """In-process :class:`~paota.core.protocols.Broker`.

    ``clock`` defaults to the system clock; pass a :class:`ManualClock` to let
    :meth:`run_until_idle` skip over delays. ``default_queue`` and ``parking`` name the task
    queue and the parking queues (the AMQP defaults; :func:`paota.core.factory.make_broker`
    passes the config's names).
    """

    #: In this process only: no other process sees its queues (paota.core.capabilities).
    shared = False

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        default_queue: str = DEFAULT_QUEUE,
        parking: Mapping[ParkQueue, str] | None = None,
        binding_key: str = "paota_task_binding_key",
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._default_queue = default_queue
        self._binding_key = binding_key
        self._parking = {**DEFAULT_PARKING, **(parking or {})}
        self._queues: dict[str, MemoryQueue] = {}
        self._delayed: list[tuple[float, int, str, MemoryMessage]] = []
        self._consumers: set[MemoryConsumer] = set()
        self._consumed: set[str] = set()  # queues that have had a consumer
        self._control: set[asyncio.Queue[bytes | None]] = set()  # control listeners
        self._replies: dict[str, asyncio.Queue[bytes | None]] = {}  # reply addresses
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._open = False
        self._closed = False
        self.delays: list[DelayRecord] = []
        """Every delayed publish (task id, delay, queue), in publish order."""

    @property
    def default_queue(self) -> str:
        """The task queue used when a task names none."""
        return self._default_queue

    def parking_queue(self, queue: ParkQueue) -> str:
        """The name of a parking queue."""
        return self._parking[queue]

    # lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the broker. Idempotent; a closed broker cannot be reopened."""
        if self._closed:
            raise BrokerError("memory broker is closed; create a new one")
        self._open = True

    async def close(self) -> None:
        """Close: consumers stop, unacked deliveries return to their queue. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._open = False
        self._warn_of_tasks_left()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for consumer in list(self._consumers):
            consumer.return_unacked()
        self._consumers.clear()
        for queue in self._queues.values():
            queue.wakeup.set()
        for listener in self._control:
            listener.put_nowait(None)  # the end
        for inbox in self._replies.values():
            inbox.put_nowait(None)

    def _warn_of_tasks_left(self) -> None:
        """A producer that sent into this broker and closes before anything consumed the tasks
        has lost them: say so, with the count (the broker lives in this process only)."""
        unacked = sum(len(c.deliveries) for c in self._consumers)
        left = self.ready_count + len(self._delayed) + unacked
        if not left:
            return
        by_queue = {q.name: len(q.ready) for q in self._queues.values() if q.ready}
        parking = set(self._parking.values())
        shown = ", ".join(f"{n} in {q}" for q, n in sorted(by_queue.items()) if q not in parking)
        if self._delayed:
            shown += f"{', ' if shown else ''}{len(self._delayed)} delayed"
        if unacked:
            shown += f"{', ' if shown else ''}{unacked} delivered, not settled"
        logger.warning(
            "the in-memory broker closes with %d task(s) that will never run (%s): it lives in "
            "this process only. To send tasks to workers in other processes, set "
            "PAOTA_BROKER=amqp and PAOTA_AMQP_URL",
            left,
            shown,
        )

    async def __aenter__(self) -> MemoryBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _requeues(self) -> bool:
        return not self._closed

    def _check_open(self) -> None:
        if not self._open:
            state = "closed" if self._closed else "not connected (call connect() or use async with)"
            raise BrokerError(f"memory broker is {state}")

    def _queue(self, name: str) -> MemoryQueue:
        queue = self._queues.get(name)
        if queue is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"a queue name must be a non-empty string, got {name!r}")
            queue = self._queues[name] = MemoryQueue(name)
        return queue

    # publishing ------------------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        """Enqueue ``message`` (bytes and headers as given) in its queue, after its delay."""
        if not self._open:
            self._check_open()
        stored = MemoryMessage(
            message.body,
            dict(message.headers),
            message.priority,
            False,
            next(self._seq),
            message.content_type,
            message.message_id or None,
        )
        name = message.queue or self._default_queue
        key = message.routing_key
        if key and message.delay_s <= 0:
            # As the AMQP topology's direct exchange: the binding key reaches the task queue, a
            # queue's name reaches that queue, any other key reaches nothing.
            if key == self._binding_key:
                name = self._default_queue
            elif key in self._queues or key in self._parking.values():
                name = key
            else:
                raise PublishError(
                    f"task {message.message_id or '(no id)'} was returned as unroutable: no "
                    f"queue is bound with routing key {key!r}"
                )
        if message.delay_s > 0:
            self.delays.append(
                DelayRecord(message.message_id, message.delay_s, name, message.body, stored.headers)
            )
            due = self.clock.monotonic() + message.delay_s
            heapq.heappush(self._delayed, (due, stored.seq, name, stored))
            self._schedule_timer()
        else:
            self._queue(name).push(stored)

    async def publish_raw(
        self,
        body: bytes,
        headers: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        queue: str | None = None,
    ) -> None:
        """Enqueue bytes as they are (to feed a worker garbage, or a message another producer
        encoded), in ``queue`` (default: the task queue)."""
        self._check_open()
        message = MemoryMessage(body, dict(headers or {}), priority, False, next(self._seq))
        self._queue(queue or self._default_queue).push(message)

    def _release_due(self) -> int:
        now = self.clock.monotonic()
        released = 0
        while self._delayed and self._delayed[0][0] <= now:
            _, _, name, message = heapq.heappop(self._delayed)
            self._queue(name).push(message)
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

    async def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Delivery]:
        """Yield deliveries of ``queue``, at most ``prefetch`` unacked at a time, highest
        priority first."""
        self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch!r}")
        q = self._queue(queue)
        consumer = MemoryConsumer(q, self._consumers.discard, self._requeues)
        self._consumers.add(consumer)
        self._consumed.add(queue)
        ready, wakeup = q.ready, q.wakeup
        try:
            while True:
                if self._closed:
                    return
                if ready and len(consumer.deliveries) < prefetch:
                    _, _, message = heapq.heappop(ready)
                    delivery = MemoryDelivery(consumer, message)
                    consumer.deliveries.add(delivery)
                    yield delivery
                    continue
                wakeup.clear()
                await wakeup.wait()
        finally:
            consumer.cancelled = True
            if not consumer.deliveries:
                self._consumers.discard(consumer)

    # control channel -------------------------------------------------------------------------

    async def open_replies(self) -> tuple[str, AsyncIterator[bytes]]:
        """A reply address of this broker and the replies sent to it (until the broker closes)."""
        self._check_open()
        address = f"paota.reply.{next(self._seq)}"
        inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._replies[address] = inbox

        async def replies() -> AsyncIterator[bytes]:
            try:
                while (body := await inbox.get()) is not None:
                    yield body
            finally:
                self._replies.pop(address, None)

        return address, replies()

    async def send_reply(self, address: str, body: bytes) -> None:
        """Deliver a reply to ``address``; BrokerError when nothing reads it any more."""
        self._check_open()
        inbox = self._replies.get(address)
        if inbox is None:
            raise BrokerError(f"no reply address {address!r} here (its sender is gone)")
        inbox.put_nowait(body)

    async def broadcast_control(self, body: bytes) -> None:
        """Hand ``body`` to every control listener of this broker (this process only)."""
        self._check_open()
        for listener in self._control:
            listener.put_nowait(bytes(body))

    async def listen_control(self) -> AsyncIterator[bytes | None]:
        """Control messages broadcast from now on; ``None`` first (nothing was heard before the
        subscription). Ends when the broker is closed."""
        self._check_open()
        listener: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._control.add(listener)
        try:
            yield None
            while not self._closed:
                body = await listener.get()
                if body is None:
                    return
                yield body
        finally:
            self._control.discard(listener)

    # parking ---------------------------------------------------------------------------------

    def parked(self, queue: ParkQueue) -> list[MemoryMessage]:
        """The messages in a parking queue, oldest first (a copy)."""
        return self.messages(self._parking[queue])

    def messages(self, queue: str) -> list[MemoryMessage]:
        """The messages ready in ``queue``, oldest first (a copy; for tests and tools)."""
        q = self._queues.get(queue)
        return [] if q is None else [m for _, _, m in sorted(q.ready, key=lambda e: e[1])]

    async def replay_parked(
        self, queue: ParkQueue, rewrite: Rewrite, *, limit: int | None = None
    ) -> int:
        """Publish what ``rewrite`` makes of each parked message and remove it; the others stay."""
        self._check_open()
        parking = self._queue(self._parking[queue])
        keep: list[MemoryMessage] = []
        moved = 0
        for message in self.messages(parking.name):
            replacement = None if limit is not None and moved >= limit else rewrite(message)
            if replacement is None:
                keep.append(message)
                continue
            await self.publish(replacement)
            moved += 1
        parking.ready = [(-m.priority, m.seq, m) for m in keep]
        heapq.heapify(parking.ready)
        return moved

    # test support ----------------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        """Messages waiting for a consumer in the task queues (parking queues not counted)."""
        parking = set(self._parking.values())
        return sum(len(q.ready) for q in self._queues.values() if q.name not in parking)

    @property
    def delayed_count(self) -> int:
        """Messages waiting for their delay to pass."""
        return len(self._delayed)

    @property
    def unacked_count(self) -> int:
        """Messages delivered and neither acked nor rejected."""
        return sum(len(c.deliveries) for c in self._consumers)

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue``."""
        q = self._queues.get(queue)
        return 0 if q is None else len(q.ready)

    async def queue_depths(self, queues: Iterable[str] | None = None) -> dict[str, int]:
        """``{queue: messages ready}`` for the task queue, the parking queues and ``queues``
        (:class:`~paota.core.protocols.QueueDepths`; as RabbitMQ counts them: delivered and
        delayed messages are not ready)."""
        self._check_open()
        names = [self._default_queue, *self._parking.values(), *(queues or ())]
        return {name: self.depth(name) for name in dict.fromkeys(names)}

    async def queue_stats(self, queues: Iterable[str]) -> dict[str, QueueStat | None]:
        """Messages ready and consumers subscribed per queue, None for a queue never used
        (:class:`~paota.core.protocols.QueueStats`)."""
        self._check_open()
        stats: dict[str, QueueStat | None] = {}
        for name in queues:
            q = self._queues.get(name)
            if q is None:
                stats[name] = None
                continue
            consumers = sum(1 for c in self._consumers if c.queue is q and not c.cancelled)
            stats[name] = QueueStat(ready=len(q.ready), consumers=consumers)
        return stats

    def _busy(self) -> bool:
        for q in self._queues.values():
            # Messages waiting in a queue nobody ever consumed (a parking queue, or a queue no
            # worker of this process serves) leave the broker idle; the task queue always counts.
            if q.ready and (q.name in self._consumed or q.name == self._default_queue):
                return True
        return any(c.deliveries for c in self._consumers)

    async def run_until_idle(self, *, advance_time: bool = True, timeout_s: float = 30.0) -> None:
        """Wait until no message is ready in a consumed queue or unacked.

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
                        f"memory broker not idle after {timeout_s}s: {self.ready_count} ready, "
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
