"""The RabbitMQ broker: :class:`AMQPBroker` (implements :class:`~paota.core.protocols.Broker`).

A facade over the pieces: the connection pool (:mod:`~paota.brokers.amqp.connection`), the topology
(:mod:`~paota.brokers.amqp.topology`, declared on every (re)connection, other task queues on first
use), confirmed publishing (:mod:`~paota.brokers.amqp.publisher`), subscriptions
(:mod:`~paota.brokers.amqp.consumer`) and replays (:mod:`~paota.brokers.amqp.replay`). It moves
bytes: what it publishes is an :class:`~paota.core.protocols.OutgoingMessage` the core encoded.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from paota.brokers.amqp.connection import ConnectionPool, Deadlines, call_aiormq, close_quietly
from paota.brokers.amqp.consumer import AMQPDelivery, ConsumerSession, consume, subscribe
from paota.brokers.amqp.control import broadcast, control_exchange_name, listen
from paota.brokers.amqp.errors import broker_errors
from paota.brokers.amqp.hold import DelayHold, due_headers, warn_unheld
from paota.brokers.amqp.inspection import queue_depths, queue_stats
from paota.brokers.amqp.ladder import every_ladder_queue
from paota.brokers.amqp.ladders import note_use
from paota.brokers.amqp.properties import message_properties
from paota.brokers.amqp.publisher import Publisher
from paota.brokers.amqp.replay import replay_parked
from paota.brokers.amqp.replies import open_replies
from paota.brokers.amqp.tolerant import install as _tolerate_non_utf8
from paota.brokers.amqp.topology import (
    MAX_DELAY_S,
    Topology,
    check_queue_name,
    declare,
    ladder_name,
)
from paota.core.errors import BrokerError, PublishError
from paota.core.protocols import Delivery, OutgoingMessage, ParkQueue, QueueStat, Rewrite

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

    from paota.brokers.amqp.lock import AMQPLock
    from paota.core.config import Config

__all__ = ["MAX_DELAY_S", "AMQPBroker", "AMQPDelivery"]

logger = logging.getLogger("paota.brokers.amqp")

_tolerate_non_utf8()

#: How long after its first delayed publish a broker checks that a worker consumes the hold queue.
_HOLD_CHECK_AFTER_S = 5.0


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class AMQPBroker:
    """A :class:`~paota.core.protocols.Broker` on RabbitMQ, Go paota's topology and wire format.

    ``config.amqp`` gives the URL(s), the names and the limits (see
    :class:`~paota.brokers.amqp.settings.AMQPConfig`); ``worker_name`` shows in RabbitMQ's
    connection names and consumer tags. The constructor does no I/O: :meth:`connect` (or ``async
    with``) opens ``connection_pool_size`` connections and declares the topology. Lost connections
    are re-established in the background.

    The task queue (``task_queue_name``) is reached as Go publishes, through the task exchange with
    the binding key (or the message's own ``routing_key``); other queues are declared on first use
    with the task queue's arguments. Delayed messages (``delay_s`` > 0, at most 7 days,
    millisecond resolution) go through the delay ladder and end in their target queue; in
    ``"hold"`` mode (the default) a broker that consumes also holds the last stretch of delays
    (:mod:`paota.brokers.amqp.hold`). ``delay_queue_type`` and ``delay_mode`` override
    ``config.amqp.delay_queue_type`` (``"quorum"``, the default, or ``"classic"``) and
    ``config.amqp.delay_mode`` (``"hold"`` or ``"ladder"``); read the trade-offs in
    :mod:`paota.brokers.amqp.ladder` first.
    """

    def __init__(
        self,
        config: Config,
        *,
        worker_name: str = "",
        delay_queue_type: str | None = None,
        delay_mode: str | None = None,
    ) -> None:
        self._config = config
        self._amqp = config.amqp
        self._worker_name = worker_name
        self._topology = Topology.from_config(
            config, delay_queue_type=delay_queue_type, delay_mode=delay_mode
        )
        # Every ladder's queues: after a switch of mode or queue type, messages still come from
        # the other one for a while.
        self.ladder = every_ladder_queue(
            {mode: ladder_name(config, mode) for mode in ("hold", "ladder")}
        )
        self._hold: DelayHold | None = None
        self._hold_check: asyncio.Task[None] | None = None
        self._state = _State.NEW
        self._pool: ConnectionPool | None = None
        self._publisher: Publisher | None = None
        self._connect_lock = asyncio.Lock()
        self._topology_lock = asyncio.Lock()
        self._topology_current = False
        self._queues: set[str] = set()  # other task queues, declared since the last connection
        self._queues_wanted: set[str] = set()  # every other task queue used, to redeclare
        self._sessions: set[ConsumerSession] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self.settle_deadlines = Deadlines()
        #: The fanout exchange of the control channel (cancellations reach running tasks there).
        self.control_exchange = control_exchange_name(self._amqp.exchange)
        if self._amqp.auto_delete:
            logger.warning(
                "PAOTA_AMQP_AUTO_DELETE / amqp.auto_delete is ignored: the task queue is always "
                "declared with auto_delete=false, as the Go library does (a queue declared both "
                "ways fails with PRECONDITION_FAILED)"
            )

    def __repr__(self) -> str:
        pool = self._pool
        where = pool.shown_url if pool is not None else "(not connected)"
        return f"<AMQPBroker {where} queue={self._topology.task_queue!r} {self._state.value}>"

    @property
    def topology(self) -> Topology:
        """What this broker declares and where it publishes."""
        return self._topology

    @property
    def prefetch_limit(self) -> int:
        """The prefetch a consumer asks for at most: ``amqp.prefetch_count``."""
        return self._amqp.prefetch_count

    @property
    def default_queue(self) -> str:
        """The task queue (``task_queue_name``)."""
        return self._topology.task_queue

    def parking_queue(self, queue: ParkQueue) -> str:
        """The failed or timeout queue's name."""
        if queue is ParkQueue.FAILED:
            return self._topology.failed_queue
        if queue is ParkQueue.TIMEOUT:
            return self._topology.timeout_queue
        raise ValueError(f"unknown parking queue {queue!r}")

    # --- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connections and declare the topology. Idempotent.

        Raises :class:`BrokerError` naming the host (password hidden) when RabbitMQ cannot be
        reached within ``connection_timeout_s`` or refuses the login, and
        :class:`~paota.TopologyError` when a queue or exchange exists with other arguments.
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
            self._publisher = Publisher(
                pool, timeout_s=self._amqp.publish_timeout_s, redeclare=self._redeclare
            )
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
        if self._hold_check is not None:
            self._hold_check.cancel()
        if self._hold is not None:
            # moves under way finish and their acks leave with the flush below
            await self._hold.stop(self._amqp.publish_timeout_s)
        sessions = list(self._sessions)
        for session in sessions:
            session.wake("the broker is closing")
        # Acks and rejects are queued for the socket without waiting for the write (see
        # ConsumerSession.settle). Closing the consumer channels first sends what is queued
        # before the connections go: a channel's Close leaves after the frames queued before it.
        # Acks noted in this turn of the loop leave before the channels close.
        await asyncio.gather(*(s.flush() for s in sessions), return_exceptions=True)
        channels = [s.channel for s in sessions if not s.channel.is_closed]
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

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background; :meth:`close` waits for it."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def session_ended(self, session: ConsumerSession) -> None:
        """Forget a consumer session."""
        self._sessions.discard(session)

    # --- topology --------------------------------------------------------------------------------

    def _topology_lost(self) -> None:
        self._topology_current = False
        self._queues.clear()

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
                for name in sorted(self._queues_wanted):
                    await declare(channel, self._topology.extra_queue(name), timeout_s=timeout_s)
                # the ladder's last use, for `paota ladders`
                await note_use(connection, self._topology, self._worker_name)
            finally:
                await close_quietly(channel)
            self._queues = set(self._queues_wanted)
            self._topology_current = True
            logger.debug("topology for task queue %r declared", self._topology.task_queue)

    async def _redeclare(self) -> None:
        """Declare the topology again (something in it was deleted while we were connected)."""
        self._topology_lost()
        pool = self._require_pool()
        connection = pool.any_connection()
        if connection is not None:
            with broker_errors("declaring the topology again"):
                await self._ensure_topology(connection)

    async def _ensure_queue(self, name: str) -> None:
        """Declare task queue ``name`` (not the default one) unless done since the last loss."""
        if name in self._queues or name == self._topology.task_queue:
            return
        if name in (self._topology.failed_queue, self._topology.timeout_queue):
            return
        extra = self._topology.extra_queue(check_queue_name(name))
        pool = self._require_pool()
        timeout_s = self._amqp.connection_timeout_s
        loop = asyncio.get_running_loop()
        async with self._topology_lock:
            if name in self._queues:
                return
            try:
                channel: AbstractChannel = await pool.open_channel(loop.time() + timeout_s)
            except TimeoutError as exc:
                raise BrokerError(
                    f"cannot declare queue {name!r}: no connection to RabbitMQ at "
                    f"{pool.shown_url} within {timeout_s:g} s"
                ) from exc
            try:
                with broker_errors(f"declaring queue {name!r}"):
                    await declare(channel, extra, timeout_s=timeout_s)
            finally:
                await close_quietly(channel)
            self._queues_wanted.add(name)
            self._queues.add(name)

    # --- publishing ------------------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        """Publish ``message`` and return once RabbitMQ confirmed it.

        Raises :class:`~paota.PublishError` when the message was nacked, returned as unroutable or
        not confirmed within ``publish_timeout_s``.
        """
        self._require_pool()
        publisher = self._publisher
        assert publisher is not None
        queue = message.queue or self._topology.task_queue
        if queue not in self._queues and queue != self._topology.task_queue:
            await self._ensure_queue(queue)
        delay_s = message.delay_s
        headers = message.headers
        if delay_s:
            delay_ms = _delay_ms(delay_s)
            exchange, routing_key = self._topology.delay_route(delay_ms, queue)
            if self._topology.ladder.hold_queue:
                due_ms = int(time.time() * 1000) + delay_ms
                headers = due_headers(headers, queue, due_ms, self._topology.failed_queue)
                if self._hold_check is None:
                    self._hold_check = asyncio.get_running_loop().create_task(
                        self._check_hold_consumers()
                    )
        elif message.routing_key:
            exchange, routing_key = self._topology.exchange, message.routing_key
        else:
            exchange, routing_key = self._topology.route(queue)
        what = f"task {message.message_id or '(no id)'}"
        try:
            props = message_properties(
                headers=headers,
                content_type=message.content_type,
                priority=message.priority,
                message_id=message.message_id,
            )
        except (TypeError, ValueError) as exc:
            raise PublishError(f"{what} cannot be sent: {exc}") from exc
        await publisher.publish(exchange, routing_key, message.body, props, what)

    # --- consuming -------------------------------------------------------------------------------

    def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Delivery]:
        """Deliveries from ``queue``, at most ``prefetch`` unacked at a time.

        The iterator survives reconnections (it subscribes again; RabbitMQ redelivers what the lost
        connection had not acked) and ends only when the broker is closed. Closing it
        (``aclose()``) cancels the consumer and returns the messages it received but did not yield.
        """
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        pool = self._require_pool()
        check_queue_name(queue)
        if (self._hold is None or self._hold.failed) and self._topology.ladder.hold_queue:
            self._start_hold(pool)

        return self._subscription(pool, queue, prefetch, task_queue=True)

    def _subscription(
        self, pool: ConnectionPool, queue: str, prefetch: int, *, task_queue: bool
    ) -> AsyncIterator[AMQPDelivery]:
        """Deliveries of ``queue`` across reconnections (declared first if a ``task_queue``)."""

        async def start() -> ConsumerSession:
            if task_queue:
                await self._ensure_queue(queue)
            session = await subscribe(
                self,
                pool,
                queue,
                prefetch,
                worker_name=self._worker_name,
                timeout_s=self._amqp.connection_timeout_s,
                on_missing=self._redeclare,
            )
            self._sessions.add(session)
            return session

        return consume(self, lambda: self._state is _State.OPEN, start, queue)

    # --- the hold queue --------------------------------------------------------------------------

    def _start_hold(self, pool: ConnectionPool) -> None:
        """Consume the hold queue and move its messages when due (a consuming broker does)."""
        hold_queue = self._topology.ladder.hold_queue
        publisher = self._publisher
        assert publisher is not None
        self._hold = DelayHold(
            self._subscription(pool, hold_queue, self._amqp.delay_hold_max, task_queue=False),
            publisher.publish,
            self._topology.ladder,
            failed_queue=self._topology.failed_queue,
            worker_name=self._worker_name,
        )
        self.spawn(self._hold.run())

    @property
    def hold(self) -> DelayHold | None:
        """The delays this broker holds (``"hold"`` mode, once it consumes), else None."""
        return self._hold

    async def _check_hold_consumers(self) -> None:
        """A few seconds after the first delayed publish, warn once when nothing consumes the
        hold queue (see :func:`~paota.brokers.amqp.hold.warn_unheld`)."""
        await asyncio.sleep(_HOLD_CHECK_AFTER_S)
        if self._hold is None and self._state is _State.OPEN:
            await warn_unheld(self.queue_stats, self._topology.ladder.hold_queue)

    # --- control channel -------------------------------------------------------------------------

    async def broadcast_control(self, body: bytes) -> None:
        """Publish ``body`` to every listener of the control exchange (confirmed; see
        :mod:`paota.brokers.amqp.control`)."""
        await broadcast(
            self._require_pool(),
            self.control_exchange,
            body,
            timeout_s=self._amqp.publish_timeout_s,
        )

    def listen_control(self) -> AsyncIterator[bytes | None]:
        """The control messages broadcast from now on, ``None`` after each (re)subscription;
        ends when the broker is closed."""
        return listen(
            self._require_pool(),
            self.control_exchange,
            timeout_s=self._amqp.connection_timeout_s,
            is_open=lambda: self._state is _State.OPEN,
        )

    # --- replies ---------------------------------------------------------------------------------

    async def open_replies(self) -> tuple[str, AsyncIterator[bytes]]:
        """This process's reply queue and the replies that reach it (see
        :mod:`paota.brokers.amqp.replies`)."""
        return await open_replies(self._require_pool(), timeout_s=self._amqp.connection_timeout_s)

    async def send_reply(self, address: str, body: bytes) -> None:
        """Publish a reply to the reply queue ``address`` (confirmed; PublishError when the
        queue is gone)."""
        self._require_pool()
        publisher = self._publisher
        assert publisher is not None
        props = message_properties(
            headers=None,
            content_type="application/json",
            priority=None,
            message_id=None,
            persistent=False,
        )
        await publisher.publish("", address, body, props, f"reply to {address}")

    # --- replays ---------------------------------------------------------------------------------

    async def replay_parked(
        self, queue: ParkQueue, rewrite: Rewrite, *, limit: int | None = None
    ) -> int:
        """Move parked messages back: each replacement is confirmed before its original is
        acked; the others stay (see :mod:`paota.brokers.amqp.replay`)."""
        return await replay_parked(
            self._require_pool(),
            self.parking_queue(queue),
            rewrite,
            self.publish,
            limit=limit,
            timeout_s=self._amqp.connection_timeout_s,
        )

    # --- locks -----------------------------------------------------------------------------------

    async def exclusive_lock(self, name: str) -> AMQPLock | None:
        """Take the broker-held lock ``name`` (an exclusive queue on a connection of its own,
        see :mod:`paota.brokers.amqp.lock`): the lock, or None when another connection holds it.
        Raises :class:`~paota.BrokerError` when RabbitMQ cannot be reached."""
        self._require_pool()
        from paota.brokers.amqp.lock import take_lock

        return await take_lock(
            name,
            self._amqp.endpoints,
            heartbeat_s=self._amqp.heartbeat_interval_s,
            timeout_s=self._amqp.connection_timeout_s,
            client_name=f"paota {self._worker_name}".rstrip(),
        )

    # --- inspection ------------------------------------------------------------------------------

    async def queue_depths(self, queues: Iterable[str] | None = None) -> dict[str, int]:
        """``{queue: messages ready}`` for the task queue, the parking queues and ``queues``
        (names; a missing queue counts 0): :class:`~paota.core.protocols.QueueDepths`."""
        names = [
            self._topology.task_queue,
            self._topology.failed_queue,
            self._topology.timeout_queue,
            *(queues or ()),
        ]
        return await queue_depths(
            self._require_pool(), names, timeout_s=self._amqp.connection_timeout_s
        )

    async def queue_stats(self, queues: Iterable[str]) -> dict[str, QueueStat | None]:
        """Messages ready and consumers per queue, from a passive declare of each; None for a
        queue that does not exist (:class:`~paota.core.protocols.QueueStats`). Raises
        :class:`~paota.BrokerError` when RabbitMQ cannot answer."""
        return await queue_stats(
            self._require_pool(), queues, timeout_s=self._amqp.connection_timeout_s
        )


def _delay_ms(delay_s: float) -> int:
    import math

    return max(1, math.ceil(delay_s * 1000))
