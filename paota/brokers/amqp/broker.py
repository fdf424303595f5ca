"""The RabbitMQ broker: :class:`AMQPBroker` (implements :class:`~paota.core.protocols.Broker`).

Publishing: every publish goes through one of the pool's long-lived channels with publisher
confirms and ``mandatory`` set, and returns only once RabbitMQ confirmed it (a nack, a return as
unroutable or no confirm within ``publish_timeout_s`` raise :class:`PublishError`). Publishes do not
wait for each other: each gets its own confirmation, so a burst of concurrent publishes costs about
one round trip, not one per message. A publish while RabbitMQ is away waits for the reconnection
(within ``publish_timeout_s``) and is retried there; a message may then arrive twice, never zero
times (at-least-once).

Consuming: :meth:`AMQPBroker.consume` subscribes to the task queue on its own channel and keeps
doing so across reconnections; deliveries of a lost connection come back from RabbitMQ as
redelivered. Delays use the delay ladder described in :mod:`paota.brokers.amqp.topology`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import sys
import uuid as uuid_module
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import aiormq
from pamqp import commands as spec

from paota.brokers.amqp.connection import (
    ChannelGoneError,
    ConnectionPool,
    Deadlines,
    being_cancelled,
    call_aiormq,
    close_quietly,
    describe,
    is_blocked,
)
from paota.brokers.amqp.properties import message_properties
from paota.brokers.amqp.topology import (
    DELAY_QUEUE_TYPES,
    MAX_DELAY_S,
    Topology,
    declare,
    strip_ladder_deaths,
)
from paota.core.errors import BrokerError, DecodeError, PublishError, TopologyError
from paota.core.protocols import Delivery, ParkInfo, ParkQueue, replay_headers
from paota.core.signature import decode_message, encode_message

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

    from paota.core.config import Config
    from paota.core.signature import Signature

__all__ = ["AMQPBroker", "AMQPDelivery"]

logger = logging.getLogger("paota.brokers.amqp")

# How long an ack / reject / cancel may take before it is given up (the message then comes back).
_SETTLE_TIMEOUT_S = 10.0
# Deadlines and being_cancelled() need Task.cancelling()/uncancel(); Python 3.10 takes the
# slower call_aiormq() path.
_PY311 = sys.version_info >= (3, 11)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class AMQPDelivery:
    """A message from the task queue (implements :class:`~paota.core.protocols.Delivery`).

    Besides the protocol's ``body``, ``headers`` and ``redelivered`` it keeps the AMQP properties a
    parked copy needs: ``content_type``, ``priority`` and ``message_id``. ``ack`` and ``reject``
    never raise when the channel is gone (RabbitMQ redelivers the message); settling a delivery a
    second time raises :class:`BrokerError` and sends nothing.
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
        "redelivered",
    )

    def __init__(
        self,
        session: _ConsumerSession,
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

    def __repr__(self) -> str:
        return (
            f"<AMQPDelivery message_id={self.message_id!r} tag={self._tag} "
            f"redelivered={self.redelivered} settled={self._settled}>"
        )

    async def ack(self) -> None:
        """Acknowledge: RabbitMQ forgets the message."""
        await self._settle(ack=True, requeue=False)

    async def reject(self, *, requeue: bool) -> None:
        """Reject: back to the queue (``requeue=True``) or dropped (``False``)."""
        await self._settle(ack=False, requeue=requeue)

    async def _settle(self, *, ack: bool, requeue: bool) -> None:
        if self._settled:
            # Sending it would make RabbitMQ close the channel with every unacked delivery on it.
            raise BrokerError(
                f"message {self.message_id or '(no id)'} was already acked or rejected; "
                f"it cannot be {'acked' if ack else 'rejected'} again"
            )
        self._settled = True
        try:
            await self._session.settle(self._tag, ack=ack, requeue=requeue)
        finally:
            self._session.release()


class _ConsumerSession:
    """One subscription on one channel; ends when the channel closes or the consumer is cancelled.

    aiormq's consumer callback puts each message in ``buffer`` (a ``deque``; ``None`` marks the
    end) and wakes the generator waiting in :meth:`next_message`.
    """

    def __init__(self, broker: AMQPBroker, channel: AbstractChannel, consumer_tag: str) -> None:
        self._broker = broker
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.buffer: deque[DeliveredMessage | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.stopped = False
        self.end_reason = ""
        self._outstanding = 0
        closing = channel.closing
        closing.add_done_callback(self._on_channel_closed)
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
        self._broker._consumer_channels.discard(self.channel)
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

    def delivery(self, message: DeliveredMessage, ladder: frozenset[str]) -> AMQPDelivery:
        """Wrap ``message`` for the consumer; it counts as outstanding until settled."""
        props = message.header.properties
        headers = dict(props.headers) if props.headers else {}
        if "x-death" in headers:
            headers = strip_ladder_deaths(headers, ladder)
        tag = message.delivery_tag
        if tag is None:  # pragma: no cover - a Basic.Deliver always carries a tag
            raise BrokerError("RabbitMQ delivered a message without a delivery tag")
        self._outstanding += 1
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

    async def settle(self, tag: int, *, ack: bool, requeue: bool) -> None:
        """Ack or reject ``tag``; on a dead channel do nothing (RabbitMQ redelivers).

        AMQP 0-9-1 has no reply to an ack or a reject, so this returns once the frame is queued
        for the socket (``wait=False``), without also waiting for the write as aiormq does by
        default. The connection's frames leave in order: cancelling the consumer or closing the
        channel afterwards sends the ack first. (Closing a connection drops what aiormq has not
        written yet, so :meth:`AMQPBroker.close` closes the consumer channels first.)
        """
        channel = self.channel
        if channel.is_closed:
            logger.debug("channel gone: delivery %d comes back by itself", tag)
            return
        try:
            settling = (
                channel.basic_ack(tag, wait=False)
                if ack
                else channel.basic_reject(tag, requeue=requeue, wait=False)
            )
            if _PY311:
                try:
                    if not channel.connection.write_queue.full():
                        # Room in the connection's frame queue: the frame goes in without a
                        # wait, so there is nothing to bound in time.
                        await settling
                    else:
                        deadline = asyncio.get_running_loop().time() + _SETTLE_TIMEOUT_S
                        with self._broker._settle_deadlines.at(deadline):
                            await settling
                except asyncio.CancelledError:
                    if being_cancelled():
                        raise
                    raise ChannelGoneError("the AMQP channel closed during the operation") from None
            else:  # pragma: no cover - Python 3.10
                await call_aiormq(settling, _SETTLE_TIMEOUT_S)
        except (aiormq.AMQPError, ConnectionError, RuntimeError, asyncio.TimeoutError) as exc:
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
            self._broker._spawn(close_quietly(self.channel))

    async def stop(self) -> None:
        """Cancel the consumer and return the messages received but not yielded. Idempotent.

        The channel stays open until every yielded delivery is settled (their acks need it).
        """
        if self.stopped:
            return
        self.stopped = True
        self._broker._sessions.discard(self)
        channel = self.channel
        if not channel.is_closed:
            try:
                await call_aiormq(channel.basic_cancel(self.consumer_tag), _SETTLE_TIMEOUT_S)
            except Exception as exc:
                logger.debug("cancelling consumer %s failed: %s", self.consumer_tag, describe(exc))
        while self.buffer:
            message = self.buffer.popleft()
            if message is not None and message.delivery_tag is not None:
                await self.settle(message.delivery_tag, ack=False, requeue=True)
        if self._outstanding == 0:
            await close_quietly(channel)


class AMQPBroker:
    """A :class:`~paota.core.protocols.Broker` on RabbitMQ, Go paota's topology and wire format.

    ``config.amqp`` gives the URL, the names and the limits (see
    :class:`~paota.core.config.AMQPConfig`); ``worker_name`` shows in RabbitMQ's connection names
    and consumer tags. The constructor does no I/O: :meth:`connect` (or ``async with``) opens
    ``connection_pool_size`` connections and declares the topology
    (:mod:`paota.brokers.amqp.topology`). Lost connections are re-established in the background.

    Immediate tasks go to the task exchange with ``sig.routing_key``, or the binding key when that
    is empty. Delayed tasks (``delay_s`` > 0, at most 7 days, millisecond resolution) go through the
    delay ladder and always end in this broker's task queue. ``delay_queue_type`` overrides
    ``config.amqp.delay_queue_type`` (``"quorum"``, the default, or ``"classic"``); read the
    trade-off in :mod:`paota.brokers.amqp.topology` before choosing ``"classic"``.
    """

    def __init__(
        self, config: Config, *, worker_name: str = "", delay_queue_type: str | None = None
    ) -> None:
        self._config = config
        self._amqp = config.amqp
        self._worker_name = worker_name
        self._topology = Topology.from_config(config, delay_queue_type=delay_queue_type)
        # Both ladders' queues: after a switch of delay_queue_type, messages still come from the
        # other one for a while.
        self._ladder = frozenset(
            name
            for kind in DELAY_QUEUE_TYPES
            for name in Topology.from_config(config, delay_queue_type=kind).ladder_queues
        )
        self._state = _State.NEW
        self._pool: ConnectionPool | None = None
        self._connect_lock = asyncio.Lock()
        self._topology_lock = asyncio.Lock()
        self._topology_current = False
        self._sessions: set[_ConsumerSession] = set()
        self._consumer_channels: set[AbstractChannel] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._publish_deadlines = Deadlines()
        self._settle_deadlines = Deadlines()

    def __repr__(self) -> str:
        pool = self._pool
        where = pool.shown_url if pool is not None else "(not connected)"
        return f"<AMQPBroker {where} queue={self._topology.task_queue!r} {self._state.value}>"

    @property
    def topology(self) -> Topology:
        """What this broker declares and where it publishes."""
        return self._topology

    # --- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connections and declare the topology. Idempotent.

        Raises :class:`BrokerError` naming the host (password hidden) when RabbitMQ cannot be
        reached within ``connection_timeout_s`` or refuses the login, and :class:`TopologyError`
        when a queue or exchange exists with other arguments.
        """
        async with self._connect_lock:
            if self._state is _State.CLOSED:
                raise BrokerError("this AMQPBroker is closed; create a new one")
            if self._state is _State.OPEN:
                return
            name = f"paota {self._worker_name}".rstrip()
            pool = ConnectionPool(
                self._amqp.endpoints,
                size=self._amqp.connection_pool_size,
                heartbeat_s=self._amqp.heartbeat_interval_s,
                connect_timeout_s=self._amqp.connection_timeout_s,
                name=name,
                on_connect=self._ensure_topology,
                on_lost=self._topology_lost,
            )
            await pool.start()
            self._pool = pool
            self._state = _State.OPEN
            logger.info(
                "connected to RabbitMQ at %s (%d connections), task queue %r",
                pool.shown_url,
                self._amqp.connection_pool_size,
                self._topology.task_queue,
            )

    async def close(self) -> None:
        """Close every connection. Idempotent; unacked deliveries go back to their queue."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        for session in list(self._sessions):
            session.wake("the broker is closing")
        # Acks and rejects are queued for the socket without waiting for the write (see
        # _ConsumerSession.settle). Closing the consumer channels first sends what is queued
        # before the connections go: a channel's Close leaves after the frames queued before it.
        channels = [channel for channel in self._consumer_channels if not channel.is_closed]
        if channels:
            await asyncio.gather(*(close_quietly(channel) for channel in channels))
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def __aenter__(self) -> AMQPBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _require_pool(self) -> ConnectionPool:
        state, pool = self._state, self._pool
        if state is _State.NEW:
            raise BrokerError("the AMQPBroker is not connected: call connect() first")
        if state is _State.CLOSED or pool is None:
            raise BrokerError("the AMQPBroker is closed")
        return pool

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- topology --------------------------------------------------------------------------------

    def _topology_lost(self) -> None:
        self._topology_current = False

    async def _ensure_topology(self, connection: AbstractConnection) -> None:
        """Declare the topology on ``connection`` unless it was declared since the last loss."""
        if self._topology_current:
            return
        async with self._topology_lock:
            if self._topology_current:
                return
            timeout_s = self._amqp.connection_timeout_s
            channel = await call_aiormq(connection.channel(publisher_confirms=False), timeout_s)
            try:
                await declare(channel, self._topology, timeout_s=timeout_s)
            finally:
                await close_quietly(channel)
            self._topology_current = True
            logger.debug("topology for task queue %r declared", self._topology.task_queue)

    async def _redeclare(self) -> None:
        """Declare the topology again (something in it was deleted while we were connected)."""
        self._topology_current = False
        pool = self._require_pool()
        connection = pool.any_connection()
        if connection is not None:
            await self._ensure_topology(connection)

    # --- publishing ------------------------------------------------------------------------------

    async def publish(
        self,
        sig: Signature,
        *,
        delay_s: float = 0.0,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish ``sig`` and return once RabbitMQ confirmed it.

        ``headers`` are extra headers; the codec's own headers (header mode) take precedence.
        ``delay_s`` > 0 delivers it to the task queue after that many seconds (rounded to ms, at
        most 7 days; ValueError otherwise). Raises :class:`PublishError` when the message was
        nacked, returned as unroutable or not confirmed within ``publish_timeout_s``.
        """
        delay_ms = _delay_ms(delay_s)
        wire = encode_message(sig)
        all_headers = {**headers, **wire.headers} if headers else wire.headers
        if delay_ms:
            exchange, routing_key = self._topology.delay_route(delay_ms)
        else:
            exchange, routing_key = (
                self._topology.exchange,
                sig.routing_key or self._topology.routing_key,
            )
        what = f"task {sig.uuid or '(no id)'} ({sig.name})"
        props = _properties(
            what,
            headers=all_headers,
            content_type=wire.content_type,
            priority=sig.priority,
            message_id=sig.uuid,
        )
        await self._publish(exchange, routing_key, wire.body, props, what)

    async def _publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: spec.Basic.Properties,
        what: str,
    ) -> None:
        pool = self._require_pool()
        loop = asyncio.get_running_loop()
        timeout_s = self._amqp.publish_timeout_s
        deadline = loop.time() + timeout_s
        redeclared = False
        last_error: BaseException | None = None
        while True:
            channel = pool.ready_publish_channel()
            if channel is None:
                try:
                    channel = await pool.publish_channel(deadline)
                except asyncio.TimeoutError:
                    cause = f" (last error: {describe(last_error)})" if last_error else ""
                    raise PublishError(
                        f"{what} not published: no connection to RabbitMQ at {pool.shown_url} "
                        f"within {timeout_s:g} s{cause}"
                    ) from last_error
            # wait=False: aiormq does not wait for the frame to be written to the socket (with
            # wait=True it waits holding the channel lock, so concurrent publishes queue on it);
            # the publish still returns only with RabbitMQ's confirm.
            publishing = cast("aiormq.Channel", channel).basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=props,
                mandatory=True,
                wait=False,
            )
            try:
                if _PY311:
                    try:
                        with self._publish_deadlines.at(deadline):
                            confirmation = await publishing
                    except asyncio.CancelledError:
                        if being_cancelled():
                            raise
                        raise ChannelGoneError(
                            "the AMQP channel closed during the publish"
                        ) from None
                else:  # pragma: no cover - Python 3.10
                    confirmation = await call_aiormq(publishing, max(0.001, deadline - loop.time()))
            except asyncio.TimeoutError as exc:
                if is_blocked(getattr(channel, "connection", None)):
                    raise PublishError(
                        f"{what} not confirmed within {timeout_s:g} s: RabbitMQ at "
                        f"{pool.shown_url} is blocking publishers (a memory or disk alarm; "
                        "see `rabbitmq-diagnostics alarms`)"
                    ) from exc
                raise PublishError(
                    f"{what} not confirmed by RabbitMQ within {timeout_s:g} s"
                ) from exc
            except aiormq.PublishError as exc:
                returned = exc.message.delivery if exc.message is not None else None
                reply = (
                    f"{returned.reply_code} {returned.reply_text}"
                    if isinstance(returned, spec.Basic.Return)
                    else describe(exc)
                )
                raise PublishError(
                    f"{what} was returned by RabbitMQ as unroutable ({reply}): nothing is bound "
                    f"to exchange {exchange!r} with routing key {routing_key!r}"
                ) from exc
            except aiormq.DeliveryError as exc:
                raise PublishError(f"{what} was rejected (nack) by RabbitMQ") from exc
            except aiormq.ChannelNotFoundEntity as exc:
                # The exchange was deleted under us: declare the topology again, once.
                if redeclared:
                    raise PublishError(f"{what} not published: {describe(exc)}") from exc
                redeclared = True
                last_error = exc
                logger.warning("%s: %s; declaring the topology again", what, describe(exc))
                try:
                    await self._redeclare()
                except (aiormq.AMQPError, ConnectionError, asyncio.TimeoutError) as redeclare_exc:
                    last_error = redeclare_exc
                continue
            except aiormq.ChannelClosed as exc:
                raise PublishError(f"{what} refused by RabbitMQ: {describe(exc)}") from exc
            except (
                aiormq.AMQPError,
                ChannelGoneError,
                ConnectionError,
                aiormq.ChannelInvalidStateError,
            ) as exc:
                # The connection went away before the confirm: publish again on the next ready
                # connection (at-least-once: RabbitMQ may have kept the first copy).
                last_error = exc
                logger.debug("%s: publish interrupted (%s); retrying", what, describe(exc))
                await asyncio.sleep(0.05)
                continue
            if confirmation is not None and not isinstance(confirmation, spec.Basic.Ack):
                raise PublishError(f"{what} was rejected by RabbitMQ ({confirmation.name})")
            return

    # --- consuming -------------------------------------------------------------------------------

    def consume(self, *, prefetch: int) -> AsyncIterator[Delivery]:
        """Deliveries from the task queue, at most ``prefetch`` unacked at a time.

        The iterator survives reconnections (it subscribes again; RabbitMQ redelivers what the lost
        connection had not acked) and ends only when the broker is closed. Closing it
        (``aclose()``) cancels the consumer and returns the messages it received but did not yield.
        """
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self._require_pool()
        return self._consume(prefetch)

    async def _consume(self, prefetch: int) -> AsyncIterator[Delivery]:
        attempt = 0
        while self._state is _State.OPEN:
            try:
                session = await self._subscribe(prefetch)
            except TopologyError:
                raise
            except BrokerError as exc:
                if self._state is not _State.OPEN:
                    return
                delay_s = min(10.0, 0.25 * 2**attempt)
                attempt += 1
                logger.warning(
                    "cannot consume from %r (%s); trying again in %.1f s",
                    self._topology.task_queue,
                    exc,
                    delay_s,
                )
                await asyncio.sleep(delay_s)
                continue
            attempt = 0
            try:
                while True:
                    message = await session.next_message()
                    if message is None:
                        break
                    yield session.delivery(message, self._ladder)
            finally:
                await session.stop()
            if self._state is not _State.OPEN:
                return
            logger.warning(
                "consumer %s on queue %r stopped: %s; subscribing again",
                session.consumer_tag,
                self._topology.task_queue,
                session.end_reason,
            )

    async def _subscribe(self, prefetch: int) -> _ConsumerSession:
        pool = self._require_pool()
        timeout_s = self._amqp.connection_timeout_s
        channel = await pool.open_channel(None)
        tag = f"paota-{self._worker_name or 'worker'}-{uuid_module.uuid4().hex[:12]}"
        session = _ConsumerSession(self, channel, tag)
        self._sessions.add(session)
        self._consumer_channels.add(channel)
        try:
            await call_aiormq(channel.basic_qos(prefetch_count=prefetch), timeout_s)
            await call_aiormq(
                channel.basic_consume(
                    self._topology.task_queue, session.on_message, no_ack=False, consumer_tag=tag
                ),
                timeout_s,
            )
        except BaseException as exc:
            self._sessions.discard(session)
            session.stopped = True
            await close_quietly(channel)
            if isinstance(exc, aiormq.ChannelNotFoundEntity):
                self._topology_current = False
                try:
                    await self._redeclare()
                except TopologyError:
                    raise
                except (aiormq.AMQPError, ConnectionError, asyncio.TimeoutError):
                    pass
                raise BrokerError(
                    f"the task queue {self._topology.task_queue!r} was missing: {describe(exc)}"
                ) from exc
            if isinstance(
                exc, aiormq.AMQPError | ConnectionError | RuntimeError | asyncio.TimeoutError
            ):
                raise BrokerError(
                    f"cannot subscribe to {self._topology.task_queue!r}: {describe(exc)}"
                ) from exc
            raise
        logger.info(
            "consuming from %r as %s (prefetch %d)", self._topology.task_queue, tag, prefetch
        )
        return session

    # --- parking ---------------------------------------------------------------------------------

    def _park_queue(self, queue: ParkQueue) -> str:
        if queue is ParkQueue.FAILED:
            return self._topology.failed_queue
        if queue is ParkQueue.TIMEOUT:
            return self._topology.timeout_queue
        raise ValueError(f"unknown parking queue {queue!r}")

    async def park(self, delivery: Delivery, queue: ParkQueue, info: ParkInfo) -> None:
        """Copy ``delivery`` to the failed or timeout queue; returns once RabbitMQ confirmed it.

        The copy keeps the original body, headers, content type, priority and message id, plus
        the ``x-paota-*`` headers of ``info``.
        """
        name = self._park_queue(queue)
        headers = dict(delivery.headers)
        headers.update(info.headers())
        message_id = getattr(delivery, "message_id", None)
        what = f"parked copy of task {message_id or '(no id)'}"
        props = _properties(
            what,
            headers=headers,
            content_type=getattr(delivery, "content_type", None),
            priority=getattr(delivery, "priority", None),
            message_id=message_id,
        )
        await self._publish("", name, delivery.body, props, what)
        logger.debug("task %s parked in %r (%s)", message_id, name, info.reason.value)

    async def requeue_parked(
        self, queue: ParkQueue, *, reason: str | None = None, limit: int | None = None
    ) -> int:
        """Move parked messages back to the task exchange with their retries reset.

        Only messages whose ``x-paota-reason`` equals ``reason`` move (all when None), at most
        ``limit`` of them. Each moved copy has its ``x-paota-*`` headers removed and, when it
        decodes, ``retries_done`` set to 0; the parked original is acked only after the copy is
        confirmed. The others stay in the parking queue. Returns how many moved.
        """
        pool = self._require_pool()
        name = self._park_queue(queue)
        if limit is not None and limit <= 0:
            return 0
        loop = asyncio.get_running_loop()
        timeout_s = self._amqp.connection_timeout_s
        try:
            channel = await pool.open_channel(loop.time() + timeout_s)
        except asyncio.TimeoutError as exc:
            raise BrokerError(
                f"no connection to RabbitMQ at {pool.shown_url} within {timeout_s:g} s"
            ) from exc
        moved = 0
        held: list[int] = []
        try:
            declared = await call_aiormq(channel.queue_declare(name, passive=True), timeout_s)
            # Count first: non-matching messages stay unacked (held) until the end, so each
            # message is looked at once and the loop ends.
            for _ in range(declared.message_count or 0):
                if limit is not None and moved >= limit:
                    break
                message = await call_aiormq(channel.basic_get(name, no_ack=False), timeout_s)
                if message is None or not isinstance(message.delivery, spec.Basic.GetOk):
                    break
                tag = message.delivery_tag
                if tag is None:
                    break
                headers = dict(message.header.properties.headers or {})
                if reason is not None and _text(headers.get("x-paota-reason")) != reason:
                    held.append(tag)
                    continue
                try:
                    await self._republish_parked(message, headers)
                except BaseException:
                    held.append(tag)
                    raise
                await call_aiormq(channel.basic_ack(tag), timeout_s)
                moved += 1
        except (aiormq.AMQPError, ConnectionError, asyncio.TimeoutError) as exc:
            raise BrokerError(
                f"moving parked messages from {name!r} stopped after {moved}: {describe(exc)}"
            ) from exc
        finally:
            for tag in held:
                if channel.is_closed:
                    break
                try:
                    await call_aiormq(channel.basic_reject(tag, requeue=True), timeout_s)
                except Exception as exc:
                    logger.debug("returning parked message %d failed: %s", tag, describe(exc))
            await close_quietly(channel)
        if moved:
            logger.info(
                "moved %d parked message(s) from %r back to %r",
                moved,
                name,
                self._topology.task_queue,
            )
        return moved

    async def _republish_parked(self, message: DeliveredMessage, headers: dict[str, Any]) -> None:
        props = message.header.properties
        clean = replay_headers(headers)
        body = message.body
        content_type = props.content_type
        priority = props.priority
        message_id = props.message_id
        routing_key = self._topology.routing_key
        try:
            sig = decode_message(body, clean)
        except DecodeError:
            pass  # moved unchanged: it is parked again as undecodable if it still is
        else:
            sig = sig.replace(retries_done=0)
            wire = encode_message(sig)
            body, content_type = wire.body, wire.content_type
            clean.update(wire.headers)
            if sig.raw_args is None:  # JSON mode carries the priority; header mode does not
                priority = sig.priority
            message_id = sig.uuid or message_id
            routing_key = sig.routing_key or routing_key
        what = f"requeued task {message_id or '(no id)'}"
        new_props = _properties(
            what, headers=clean, content_type=content_type, priority=priority, message_id=message_id
        )
        await self._publish(self._topology.exchange, routing_key, body, new_props, what)


def _delay_ms(delay_s: float) -> int:
    if not isinstance(delay_s, int | float) or isinstance(delay_s, bool):
        raise TypeError(f"delay_s must be a number of seconds, not {type(delay_s).__name__}")
    if not math.isfinite(delay_s) or delay_s < 0:
        raise ValueError(f"delay_s must be a finite number >= 0, got {delay_s!r}")
    if delay_s > MAX_DELAY_S:
        raise ValueError(
            f"delay_s={delay_s:g} is longer than the longest supported delay, {MAX_DELAY_S} s "
            "(7 days)"
        )
    return math.ceil(delay_s * 1000)


def _properties(
    what: str,
    *,
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    priority: int | None,
    message_id: str | None,
) -> spec.Basic.Properties:
    try:
        return message_properties(
            headers=headers, content_type=content_type, priority=priority, message_id=message_id
        )
    except (TypeError, ValueError) as exc:
        raise PublishError(f"{what} cannot be sent: {exc}") from exc


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return None
