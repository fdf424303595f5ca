"""The last stretch of a delay, held by a worker: :class:`DelayHold`.

In ``"hold"`` mode (:mod:`paota.brokers.amqp.ladder`) every delayed message ends in the hold
queue less than ``2**HOLD_BITS`` ms before it is due. A worker's broker consumes that queue with a
prefetch of ``amqp.delay_hold_max`` and keeps each message unacknowledged, in a heap ordered by
due time, until its ``x-paota-delay-due`` time (Unix ms); then it publishes the message, confirmed
and unchanged apart from the delay headers, to its ``x-paota-delay-queue`` through the default
exchange, and acks it only after the confirm. Why it is safe:

- *Nothing is lost.* Until the confirm of its copy, the message is unacked in a quorum queue: a
  worker that dies, or a connection that drops, gives it back to RabbitMQ, and another worker holds
  it. A message whose channel closed while it was held is not published (its redelivery is).
- *Nothing runs early.* A message is published when the clock reads its due time, which the
  publisher computed with its own clock; the worker that runs it checks a task's ETA again with its
  clock (:func:`~paota.core.outcome.admit`) and defers it when it is still ahead.
- *At most once more, and few of them.* A crash between the confirm and the ack publishes a
  message twice, as the at-least-once ladder does when a node dies between a dead-lettering's
  confirm and its settle. At most :data:`MAX_MOVING` moves are under way at once, and a move whose
  delivery's channel closes is given up rather than published again on a new connection (the
  redelivery moves it), so a connection lost or a broker frozen copies at most that many.
- *Prefetch stays honest.* The hold queue has its own channel and prefetch; held messages take no
  place of a task queue's prefetch or a pool's concurrency.

A message that cannot be moved is parked with the reason: one without a valid target queue in this
worker's failed queue (``bad-headers``); one whose target queue does not exist (returned as
unroutable) in the failed queue of the application that sent it (``x-paota-delay-failed``; the
vhost's one hold queue serves every application), its origin queue set to the target so that a
replay puts it where it was going. Only when that failed queue is gone too (the application's
queues were deleted) is it dropped, with an ERROR line. A message due later than twice the hold
window (a hand-written header, a clock far off) goes back through the ladder for the rest of its
delay. A publish that fails for
another reason (no connection, a nack) is tried again a second later while the message is held.

Holding is bounded: at most ``delay_hold_max`` messages per worker, each of at most the broker's
largest message size. When more are due within the window than the workers together hold, the
rest wait in the hold queue in arrival order, which keeps them at most one window late.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from paota.brokers.amqp.errors import Failure, classify
from paota.brokers.amqp.ladder import DUE_HEADER, FAILED_HEADER, HOLD_BITS, TARGET_HEADER, Ladder
from paota.brokers.amqp.properties import message_properties
from paota.core.errors import BrokerError, PublishError
from paota.core.headers import ORIGIN_HEADER, ParkInfo, ParkReason
from paota.core.protocols import MAX_DELAY_S, QueueStat

if TYPE_CHECKING:
    from pamqp import commands as spec

    from paota.brokers.amqp.consumer import AMQPDelivery

__all__ = ["DelayHold", "due_headers", "warn_unheld"]

logger = logging.getLogger("paota.brokers.amqp")

Publish = Callable[[str, str, bytes, "spec.Basic.Properties", str], Awaitable[None]]

#: A due time further ahead than this goes back through the ladder (ms).
_HOLD_LIMIT_MS = 2 * 2**HOLD_BITS
_RETRY_S = 1.0
_HOLD_HEADERS = frozenset((DUE_HEADER, TARGET_HEADER, FAILED_HEADER))
#: Moves under way at once, at most: what a lost connection may copy (see the module docs).
MAX_MOVING = 100
_QUEUE_NAME_MAX = 255


def due_headers(
    headers: Mapping[str, Any] | None, queue: str, due_ms: int, failed_queue: str = ""
) -> dict[str, Any]:
    """``headers`` with the hold queue's: the target ``queue``, the due time (Unix ms) and the
    sender's ``failed_queue`` (where the message is parked if its queue is gone when due)."""
    added = {DUE_HEADER: due_ms, TARGET_HEADER: queue}
    if failed_queue:
        added[FAILED_HEADER] = failed_queue
    return {**(headers or {}), **added}


async def warn_unheld(
    queue_stats: Callable[[list[str]], Awaitable[dict[str, QueueStat | None]]], hold_queue: str
) -> None:
    """Log a WARNING when no consumer reads ``hold_queue``: delayed tasks wait there until a
    paota worker (Python, ``"hold"`` mode) runs."""
    try:
        stats = await queue_stats([hold_queue])
    except BrokerError:
        return
    stat = stats.get(hold_queue)
    if stat is not None and stat.consumers == 0:
        logger.warning(
            "no worker consumes the hold queue %r now: delayed tasks wait there until a paota "
            "worker runs (Go workers do not move them; amqp.delay_mode='ladder' delays without "
            "a Python worker)",
            hold_queue,
        )


def _what(delivery: AMQPDelivery) -> str:
    return f"delayed task {delivery.message_id or '(no id)'}"


def _own_headers(delivery: AMQPDelivery) -> dict[str, Any]:
    """``delivery``'s headers without the hold queue's two."""
    return {k: v for k, v in delivery.headers.items() if k not in _HOLD_HEADERS}


def _now_ms() -> int:
    return int(time.time() * 1000)


class DelayHold:
    """Holds the messages of the hold queue until they are due, then moves each to its queue.

    ``deliveries`` is the hold queue's consumer (across reconnections), ``publish`` the broker's
    confirmed publish (``exchange, routing_key, body, properties, what``), ``failed_queue`` where
    a message that cannot be moved is parked. :meth:`run` until cancelled.
    """

    def __init__(
        self,
        deliveries: AsyncIterator[AMQPDelivery],
        publish: Publish,
        ladder: Ladder,
        *,
        failed_queue: str,
        worker_name: str,
        now_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._deliveries = deliveries
        self._publish = publish
        self._ladder = ladder
        self._failed_queue = failed_queue
        self._worker = worker_name
        self._now_ms = now_ms
        self._heap: list[tuple[int, int, AMQPDelivery]] = []
        self._seq = 0
        self._wake = asyncio.Event()
        self._moving: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_MOVING)
        self._by_channel: dict[asyncio.Future[Any], set[asyncio.Task[Any]]] = {}
        self._stopping = False
        self._timer_task: asyncio.Task[None] | None = None
        #: True once :meth:`run` ended on an error (nothing moves here any more).
        self.failed = False
        #: Messages moved to their queue, parked, and sent back to the ladder (for tests, stats).
        self.moved = 0
        self.parked = 0
        self.relayed = 0
        #: Messages whose queue and failed queue were both gone (logged at ERROR).
        self.dropped = 0

    @property
    def holding(self) -> int:
        """How many messages wait here now."""
        return len(self._heap)

    async def run(self) -> None:
        """Take deliveries and move each when it is due, until cancelled."""
        timer = self._timer_task = asyncio.create_task(self._timer())
        try:
            async for delivery in self._deliveries:
                self._take(delivery)
        except Exception:
            # (a TopologyError of the hold queue): the broker's next consume() starts another
            self.failed = True
            logger.exception("the hold queue's consumer stopped; delayed tasks wait there")
        finally:
            self._stopping = True
            timer.cancel()
            for task in list(self._moving):
                task.cancel()
            await asyncio.gather(timer, *self._moving, return_exceptions=True)

    async def stop(self, timeout_s: float) -> None:
        """Stop moving (for a broker that closes): start no more moves and let those under way
        finish, within ``timeout_s``, so that their acks leave before the channel closes (a move
        cut off would be published again by the worker that gets its redelivery)."""
        self._stopping = True
        if self._timer_task is not None:
            self._timer_task.cancel()
        if self._moving:
            await asyncio.wait(set(self._moving), timeout=timeout_s)

    def _take(self, delivery: AMQPDelivery) -> None:
        if self._stopping:
            return  # left unacked: it goes back to the queue when the channel closes
        due = delivery.headers.get(DUE_HEADER)
        if isinstance(due, bool) or not isinstance(due, int):
            due = 0  # no due time: it goes on at once, and its worker decides
        elif due - self._now_ms() > _HOLD_LIMIT_MS:
            due = 0  # far later than a hold lasts: back to the ladder at once (see _move)
        self._push(due, delivery)

    def _push(self, due_ms: int, delivery: AMQPDelivery) -> None:
        self._seq += 1
        first = not self._heap or due_ms < self._heap[0][0]
        heapq.heappush(self._heap, (due_ms, self._seq, delivery))
        if first:
            self._wake.set()

    async def _timer(self) -> None:
        heap = self._heap
        while True:
            self._wake.clear()
            now = self._now_ms()
            while heap and heap[0][0] <= now:
                _, _, delivery = heapq.heappop(heap)
                if self._slots.locked():
                    await self._slots.acquire()
                    now = self._now_ms()  # the wait for a slot took time
                else:
                    await self._slots.acquire()
                self._spawn(self._move(delivery))
            if heap:
                wait_s = (heap[0][0] - now) / 1000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
            else:
                await self._wake.wait()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._moving.add(task)
        task.add_done_callback(self._moved)

    def _moved(self, task: asyncio.Task[None]) -> None:
        self._moving.discard(task)
        self._slots.release()

    def _watch(self, delivery: AMQPDelivery) -> None:
        """Cancel the current move when ``delivery``'s channel closes: the redelivery moves it,
        and publishing it again on a new connection would copy it (one callback per channel)."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - moves run in tasks
            return
        closed = delivery.closed
        moves = self._by_channel.get(closed)
        if moves is None:
            moves = self._by_channel[closed] = set()
            closed.add_done_callback(self._channel_closed)
        moves.add(task)
        task.add_done_callback(moves.discard)

    def _channel_closed(self, closed: asyncio.Future[Any]) -> None:
        for task in self._by_channel.pop(closed, ()):
            task.cancel()
        # what that channel's deliveries wait for here is redelivered elsewhere: forget them
        heap = self._heap
        kept = [entry for entry in heap if entry[2].closed is not closed]
        if len(kept) != len(heap):
            heap[:] = kept
            heapq.heapify(heap)

    async def _send(
        self, delivery: AMQPDelivery, exchange: str, key: str, props: spec.Basic.Properties
    ) -> bool:
        """Publish ``delivery``'s body; False (given up) when its channel closed first."""
        try:
            await self._publish(exchange, key, delivery.body, props, _what(delivery))
        except asyncio.CancelledError:
            if delivery.closed.done() and not self._stopping:
                return False
            raise
        return True

    async def _move(self, delivery: AMQPDelivery) -> None:
        try:
            await self._move_one(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # a broker error the publisher does not turn into PublishError, or a bug: the
            # delivery is not left unsettled on a live channel; it is tried again while held
            logger.error("%s: moving it failed (%r)", _what(delivery), exc)
            await self._later(delivery)

    async def _move_one(self, delivery: AMQPDelivery) -> None:
        if not delivery.alive:
            return  # its channel closed: RabbitMQ gives it to another consumer
        self._watch(delivery)
        target = delivery.headers.get(TARGET_HEADER)
        if isinstance(target, bytes):
            target = target.decode("utf-8", "replace")
        if not isinstance(target, str) or not target or len(target.encode()) > _QUEUE_NAME_MAX:
            await self._park(
                delivery,
                ParkReason.BAD_HEADERS,
                f"header {TARGET_HEADER!r} is {target!r}: expected the name of a queue (1 to "
                f"{_QUEUE_NAME_MAX} bytes)",
                "",
            )
            return
        due = delivery.headers.get(DUE_HEADER)
        ahead_ms = due - self._now_ms() if isinstance(due, int) else 0
        if ahead_ms > MAX_DELAY_S * 1000 + _HOLD_LIMIT_MS:
            await self._park(
                delivery,
                ParkReason.BAD_HEADERS,
                f"header {DUE_HEADER!r} is {due!r}: {ahead_ms / 86_400_000:.1f} days ahead, over "
                f"the {MAX_DELAY_S // 86_400} days a delay may last",
                target,
            )
            return
        headers = _own_headers(delivery)
        try:
            props = self._props(delivery, headers)
        except (TypeError, ValueError) as exc:
            await self._park(delivery, ParkReason.BAD_HEADERS, f"its headers: {exc}", target)
            return
        try:
            if ahead_ms > _HOLD_LIMIT_MS:
                # Due far later than a hold lasts: the ladder waits the rest.
                exchange, key = self._ladder.route(min(ahead_ms, MAX_DELAY_S * 1000), target)
                props = self._props(delivery, {**headers, DUE_HEADER: due, TARGET_HEADER: target})
                if not await self._send(delivery, exchange, key, props):
                    return
                self.relayed += 1
            else:
                if not await self._send(delivery, "", target, props):
                    return
                self.moved += 1
        except PublishError as exc:
            cause = exc.__cause__
            if cause is not None and classify(cause) is Failure.UNROUTABLE:
                await self._park(
                    delivery,
                    ParkReason.UNROUTABLE,
                    f"no queue named {target!r} exists to take it when it was due",
                    target,
                    sender_failed=True,
                )
                return
            logger.warning("%s: %s", _what(delivery), exc)
            await self._later(delivery)
            return
        await delivery.ack()

    async def _later(self, delivery: AMQPDelivery) -> None:
        """Try ``delivery`` again in :data:`_RETRY_S`, while it is held."""
        logger.info("%s: trying again in %.0f s", _what(delivery), _RETRY_S)
        await asyncio.sleep(_RETRY_S)
        if delivery.alive:
            self._push(self._now_ms(), delivery)

    def _props(self, delivery: AMQPDelivery, headers: dict[str, Any]) -> spec.Basic.Properties:
        return message_properties(
            headers=headers,
            content_type=delivery.content_type,
            priority=delivery.priority,
            message_id=delivery.message_id,
        )

    async def _park(
        self,
        delivery: AMQPDelivery,
        reason: ParkReason,
        message: str,
        origin: str,
        *,
        sender_failed: bool = False,
    ) -> None:
        """Park ``delivery`` in this worker's failed queue, or (``sender_failed``) in the failed
        queue of the application that sent it, as its header names it; when that one is gone
        too, the application is: the message is dropped with an ERROR saying so."""
        failed = self._failed_queue
        named = delivery.headers.get(FAILED_HEADER)
        if isinstance(named, bytes):
            named = named.decode("utf-8", "replace")
        if sender_failed and isinstance(named, str) and 0 < len(named.encode()) <= _QUEUE_NAME_MAX:
            failed = named
        info = ParkInfo(
            reason=reason,
            error_type="DelayError",
            error_message=message,
            worker=self._worker,
            parked_at=datetime.now(UTC),
            origin_queue=origin,
        )
        headers = _own_headers(delivery)
        headers.pop(ORIGIN_HEADER, None)
        headers.update(info.headers())
        logger.error("%s parked in %r: %s", _what(delivery), failed, message)
        try:
            props = self._props(delivery, headers)
        except (TypeError, ValueError):
            props = self._props(delivery, info.headers())  # its own headers do not encode
        try:
            if not await self._send(delivery, "", failed, props):
                return
        except PublishError as exc:
            cause = exc.__cause__
            gone = cause is not None and classify(cause) is Failure.UNROUTABLE
            if gone and failed != self._failed_queue:
                # its queue and its application's failed queue are both gone
                logger.error(
                    "%s dropped: %s, and its failed queue %r is gone too",
                    _what(delivery),
                    message,
                    failed,
                )
                self.dropped += 1
                await delivery.ack()
                return
            logger.warning("%s: parking failed (%s)", _what(delivery), exc)
            await self._later(delivery)
            return
        self.parked += 1
        await delivery.ack()
