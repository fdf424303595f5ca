"""Consuming: one subscription per queue, on its own channel, and the deliveries it yields.

A :class:`ConsumerSession` is one ``basic.consume`` on one channel; it ends when the channel closes
or RabbitMQ cancels the consumer. :func:`consume` keeps subscribing again across reconnections:
deliveries of a lost connection come back from RabbitMQ as redelivered, and messages buffered from
the dead channel are dropped rather than run twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuid_module
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import commands as spec

from paota.brokers.amqp.connection import (
    ConnectionPool,
    Deadlines,
    being_cancelled,
    call_aiormq,
    close_quietly,
)
from paota.brokers.amqp.errors import (
    ChannelGoneError,
    Failure,
    broker_errors,
    classify,
    describe,
)
from paota.brokers.amqp.ladder import strip_ladder_deaths
from paota.core.errors import BrokerError, TopologyError

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

__all__ = ["AMQPDelivery", "ConsumerSession", "Subscriptions", "consume"]

logger = logging.getLogger("paota.brokers.amqp")

# How long an ack / reject / cancel may take before it is given up (the message then comes back).
SETTLE_TIMEOUT_S = 10.0


class AMQPDelivery:
    """A message from a queue (implements :class:`~paota.core.protocols.Delivery`).

    ``ack`` and ``reject`` never raise when the channel is gone (RabbitMQ redelivers the message);
    settling a delivery a second time raises :class:`BrokerError` and sends nothing.
    """

    __slots__ = (
        "_session",
        "_settled",
        "_tag",
        "body",
        "content_type",
        "headers",
        "message_id",
        "priority",
        "queue",
        "redelivered",
    )

    def __init__(
        self,
        session: ConsumerSession,
        tag: int,
        *,
        body: bytes,
        headers: dict[str, Any],
        redelivered: bool,
        content_type: str | None,
        priority: int | None,
        message_id: str | None,
    ) -> None:
        self._session = session
        self._tag = tag
        self._settled = False
        self.body = body
        self.headers = headers
        self.redelivered = redelivered
        self.content_type = content_type
        self.priority = priority
        self.message_id = message_id
        self.queue = session.queue

    def __repr__(self) -> str:
        return (
            f"<AMQPDelivery message_id={self.message_id!r} queue={self.queue!r} tag={self._tag} "
            f"redelivered={self.redelivered} settled={self._settled}>"
        )

    @property
    def alive(self) -> bool:
        """False once settled or once its channel closed (RabbitMQ then gives the message to
        another consumer; settling it here has no effect)."""
        return not self._settled and not self._session.channel.is_closed

    @property
    def closed(self) -> asyncio.Future[Any]:
        """Done when the delivery's channel closes."""
        return self._session.channel.closing

    async def ack(self) -> None:
        """Acknowledge: RabbitMQ forgets the message. The ack leaves with the others of this
        turn of the event loop (one ``multiple`` ack for those that finished in order)."""
        self._check_unsettled(ack=True)
        self._settled = True
        self._session.ack_soon(self._tag)
        self._session.release()

    async def reject(self, *, requeue: bool) -> None:
        """Reject: back to the queue (``requeue=True``) or dropped (``False``)."""
        self._check_unsettled(ack=False)
        self._settled = True
        try:
            await self._session.settle(self._tag, ack=False, requeue=requeue)
        finally:
            self._session.release()

    def _check_unsettled(self, *, ack: bool) -> None:
        if self._settled:
            # Sending it would make RabbitMQ close the channel with every unacked delivery on it.
            raise BrokerError(
                f"message {self.message_id or '(no id)'} was already acked or rejected; "
                f"it cannot be {'acked' if ack else 'rejected'} again"
            )


class Subscriptions(Protocol):
    """What a session needs from the broker that owns it."""

    settle_deadlines: Deadlines
    ladder: frozenset[str]

    def session_ended(self, session: ConsumerSession) -> None:
        """Forget a session (its channel closed, or it stopped)."""
        ...

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, awaited when the broker closes."""
        ...


class ConsumerSession:
    """One subscription to ``queue`` on one channel.

    aiormq's consumer callback puts each message in ``buffer`` (a ``deque``; ``None`` marks the
    end) and wakes the generator waiting in :meth:`next_message`.

    Acks are coalesced: :meth:`ack_soon` notes the tag, and one flush per turn of the event loop
    sends a single ``basic.ack(multiple=True)`` for the deliveries that finished in order (the
    oldest outstanding ones) and a plain ack for each that finished ahead of an older one still
    running, so a long task never holds back the acks, and the prefetch window, of the ones after
    it. One frame instead of a hundred costs the worker and RabbitMQ a fraction of the CPU. Acks
    are still sent without waiting for the write, as before; a flush runs to its end before the
    next starts, so the frames leave in order (a ``multiple`` ack never covers a tag acked
    alone before).
    """

    def __init__(
        self, owner: Subscriptions, channel: AbstractChannel, queue: str, consumer_tag: str
    ) -> None:
        self._owner = owner
        self.channel = channel
        self.queue = queue
        self.consumer_tag = consumer_tag
        self.buffer: deque[DeliveredMessage | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.stopped = False
        self.end_reason = ""
        self._outstanding = 0
        self._tags: deque[int] = deque()  # yielded deliveries not yet acked on the wire, in order
        self._acked: set[int] = set()  # acked by the pool, not sent yet
        self._sent_alone: set[int] = set()  # acked on the wire by themselves, still in _tags
        self._flushing: asyncio.Task[None] | None = None
        channel.closing.add_done_callback(self._on_channel_closed)
        channel.on_consumer_cancel_callbacks.add(self._on_cancelled)

    def _push(self, item: DeliveredMessage | None) -> None:
        self.buffer.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_message(self) -> DeliveredMessage | None:
        """The next message, or None once the session ended."""
        buffer = self.buffer
        while not buffer:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return buffer.popleft()

    def _on_channel_closed(self, closing: asyncio.Future[Any]) -> None:
        self._owner.session_ended(self)
        exc = None if closing.cancelled() else closing.exception()
        self.end_reason = self.end_reason or f"channel closed ({describe(exc)})"
        # Messages buffered from a dead channel can no longer be acked: RabbitMQ redelivers them,
        # so running them here would only run them twice.
        self.buffer.clear()
        self._push(None)

    def _on_cancelled(self, frame: spec.Basic.Cancel) -> None:
        self.end_reason = "RabbitMQ cancelled the consumer (was the queue deleted?)"
        self._push(None)

    def wake(self, reason: str) -> None:
        """End the session's wait for messages (the broker is closing)."""
        self.end_reason = reason
        self._push(None)

    async def on_message(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback: hand the message to the generator, or return it."""
        if self.stopped:
            tag = message.delivery_tag
            if tag is not None:
                await self.settle(tag, ack=False, requeue=True)
            return
        self._push(message)

    def delivery(self, message: DeliveredMessage) -> AMQPDelivery:
        """Wrap ``message`` for the consumer; it counts as outstanding until settled."""
        props = message.header.properties
        headers = dict(props.headers) if props.headers else {}
        if "x-death" in headers:
            headers = strip_ladder_deaths(headers, self._owner.ladder)
        tag = message.delivery_tag
        if tag is None:  # pragma: no cover - a Basic.Deliver always carries a tag
            raise BrokerError("RabbitMQ delivered a message without a delivery tag")
        self._outstanding += 1
        self._tags.append(tag)
        return AMQPDelivery(
            self,
            tag,
            body=message.body,
            headers=headers,
            redelivered=bool(message.redelivered),
            content_type=props.content_type,
            priority=props.priority,
            message_id=props.message_id,
        )

    def ack_soon(self, tag: int) -> None:
        """Ack ``tag`` with the others of this turn of the event loop (see the class docs)."""
        self._acked.add(tag)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def flush(self) -> None:
        """Send the acks noted so far (waits for a flush under way)."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)
        if self._acked:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let the other deliveries of this turn finish first
            while self._acked:
                if self.channel.is_closed:
                    self._acked.clear()  # RabbitMQ redelivers them
                    break
                tags, acked, alone = self._tags, self._acked, self._sent_alone
                last = None
                while tags and (tags[0] in acked or tags[0] in alone):
                    tag = tags.popleft()
                    if tag in acked:
                        acked.discard(tag)
                        last = tag
                    else:
                        alone.discard(tag)
                frames = [] if last is None else [(last, True)]
                for tag in sorted(acked):
                    frames.append((tag, False))
                    alone.add(tag)
                acked.clear()
                for tag, multiple in frames:
                    await self._send_ack(tag, multiple=multiple)
        finally:
            self._flushing = None

    async def _send_ack(self, tag: int, *, multiple: bool) -> None:
        channel = self.channel
        if channel.is_closed:
            return
        try:
            sending = channel.basic_ack(tag, multiple=multiple, wait=False)
            await self._bounded(channel, sending)
        except Exception as exc:
            if classify(exc) is None:
                raise
            logger.debug(
                "ack of delivery %d%s not sent (%s): RabbitMQ will redeliver",
                tag,
                " and those before it" if multiple else "",
                describe(exc),
            )

    async def _bounded(self, channel: AbstractChannel, settling: Any) -> None:
        try:
            if not channel.connection.write_queue.full():
                # Room in the connection's frame queue: the frame goes in without a wait, so
                # there is nothing to bound in time.
                await settling
            else:
                deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT_S
                with self._owner.settle_deadlines.at(deadline):
                    await settling
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            raise ChannelGoneError("the AMQP channel closed during the operation") from None

    async def settle(self, tag: int, *, ack: bool, requeue: bool) -> None:
        """Ack or reject ``tag`` now, by itself; on a dead channel do nothing (RabbitMQ
        redelivers).

        AMQP 0-9-1 has no reply to an ack or a reject, so this returns once the frame is queued
        for the socket (``wait=False``), without also waiting for the write as aiormq does by
        default. The connection's frames leave in order: cancelling the consumer or closing the
        channel afterwards sends the ack first. (Closing a connection drops what aiormq has not
        written yet, so the broker closes the consumer channels first.)
        """
        channel = self.channel
        if channel.is_closed:
            logger.debug("channel gone: delivery %d comes back by itself", tag)
            return
        if tag in self._acked or tag in self._sent_alone:  # pragma: no cover - settled twice
            return
        # It leaves at once, by itself; the flush of coalesced acks then passes over its tag.
        self._sent_alone.add(tag)
        try:
            settling = (
                channel.basic_ack(tag, wait=False)
                if ack
                else channel.basic_reject(tag, requeue=requeue, wait=False)
            )
            await self._bounded(channel, settling)
        except Exception as exc:
            if classify(exc) is None:
                raise
            logger.debug(
                "%s of delivery %d not sent (%s): RabbitMQ will redeliver it",
                "ack" if ack else "reject",
                tag,
                describe(exc),
            )

    def release(self) -> None:
        """One yielded delivery was settled; close a stopped session's channel after the last."""
        self._outstanding -= 1
        if self.stopped and self._outstanding == 0:
            self._owner.spawn(self._close_after_flush())

    async def _close_after_flush(self) -> None:
        await self.flush()
        await close_quietly(self.channel)

    async def stop(self) -> None:
        """Cancel the consumer and return the messages received but not yielded. Idempotent.

        The channel stays open until every yielded delivery is settled (their acks need it).
        """
        if self.stopped:
            return
        self.stopped = True
        self._owner.session_ended(self)
        channel = self.channel
        if not channel.is_closed:
            try:
                await call_aiormq(channel.basic_cancel(self.consumer_tag), SETTLE_TIMEOUT_S)
            except Exception as exc:
                logger.debug("cancelling consumer %s failed: %s", self.consumer_tag, describe(exc))
        while self.buffer:
            message = self.buffer.popleft()
            if message is not None and message.delivery_tag is not None:
                await self.settle(message.delivery_tag, ack=False, requeue=True)
        if self._outstanding == 0:
            await self.flush()
            await close_quietly(channel)


async def subscribe(
    owner: Subscriptions,
    pool: ConnectionPool,
    queue: str,
    prefetch: int,
    *,
    worker_name: str,
    timeout_s: float,
    on_missing: Callable[[], Any],
) -> ConsumerSession:
    """A new session consuming ``queue`` with ``basic_qos(prefetch)``.

    Raises :class:`BrokerError` (after ``await on_missing()`` when the queue was missing: the
    topology is declared again for the next attempt).
    """
    channel = await pool.open_channel(None)
    tag = f"paota-{worker_name or 'worker'}-{uuid_module.uuid4().hex[:12]}"
    session = ConsumerSession(owner, channel, queue, tag)
    try:
        with broker_errors(f"cannot subscribe to {queue!r}"):
            await call_aiormq(channel.basic_qos(prefetch_count=prefetch), timeout_s)
            await call_aiormq(
                channel.basic_consume(queue, session.on_message, no_ack=False, consumer_tag=tag),
                timeout_s,
            )
    except BaseException as exc:
        session.stopped = True
        owner.session_ended(session)
        await close_quietly(channel)
        cause = exc.__cause__ if isinstance(exc, BrokerError) else None
        if cause is not None and classify(cause) is Failure.MISSING:
            try:
                await on_missing()
            except TopologyError:
                raise
            except BrokerError:
                pass
        raise
    logger.info("consuming from %r as %s (prefetch %d)", queue, tag, prefetch)
    return session


async def consume(
    owner: Subscriptions,
    is_open: Callable[[], bool],
    start: Callable[[], Any],
    queue: str,
) -> AsyncIterator[AMQPDelivery]:
    """Deliveries of ``queue`` across reconnections, until ``is_open()`` turns False.

    ``start()`` makes a new :class:`ConsumerSession` (see :func:`subscribe`).
    """
    attempt = 0
    while is_open():
        try:
            session: ConsumerSession = await start()
        except TopologyError:
            raise
        except BrokerError as exc:
            if not is_open():
                return
            delay_s = min(10.0, 0.25 * 2**attempt)
            attempt += 1
            logger.warning(
                "cannot consume from %r (%s); trying again in %.1f s", queue, exc, delay_s
            )
            await asyncio.sleep(delay_s)
            continue
        attempt = 0
        try:
            while True:
                message = await session.next_message()
                if message is None:
                    break
                yield session.delivery(message)
        finally:
            await session.stop()
        if not is_open():
            return
        logger.warning(
            "consumer %s on queue %r stopped: %s; subscribing again",
            session.consumer_tag,
            queue,
            session.end_reason,
        )
