"""A fixed pool of aiormq connections that reconnects by itself.

Each of the ``size`` slots holds one connection and one publishing channel (publisher confirms on).
Publishes stay on one slot's channel while it is usable and move to the next ready slot when it is
not. On a confirm channel they are pipelined anyway (each waits for its own confirm), and RabbitMQ
confirms a burst on one channel with few multiple-acks: 20,000 publishes, 1,000 in flight, drew
about 600 confirm frames on one connection and 3,500 dealt out round-robin over five, which cost
about 15% more client CPU per message. New channels (consumers, parked-message moves) are spread
over the slots in turn.

A supervisor task per slot waits for its connection to close; when it closes without
:meth:`ConnectionPool.close` having been called, it logs the loss, reconnects with exponential
backoff and jitter, runs the ``on_connect`` hook (the broker declares its topology there) and only
then marks the slot ready again. Callers wait for a ready slot
(:meth:`ConnectionPool.publish_channel`, :meth:`ConnectionPool.open_channel`) with a deadline.

The aiormq call helpers live in :mod:`paota.brokers.amqp.calls`; this module re-exports the ones
the broker's other modules import from here.

Publishing and settling run once per message, so their time bound is
:class:`~paota.brokers.amqp.deadlines.Deadlines` rather than ``asyncio.timeout``: same semantics,
but no timer per call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from paota.brokers.amqp.calls import (
    being_cancelled,
    call_aiormq,
    close_quietly,
    is_blocked,
    is_fatal,
    open_connection,
    with_heartbeat,
)
from paota.brokers.amqp.deadlines import Deadlines
from paota.brokers.amqp.errors import ChannelGoneError, describe
from paota.core.errors import BrokerError, TopologyError
from paota.core.settings import redact_url

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

__all__ = [
    "ChannelGoneError",
    "ConnectionPool",
    "Deadlines",
    "being_cancelled",
    "call_aiormq",
    "close_quietly",
    "describe",
    "is_blocked",
]

logger = logging.getLogger("paota.brokers.amqp")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


#: The name :mod:`paota.brokers.amqp.lock` imports it by.
_with_heartbeat = with_heartbeat


class _Slot:
    __slots__ = ("channel", "connection", "endpoint", "index", "lock", "ready", "supervisor")

    def __init__(self, index: int, endpoint: int) -> None:
        self.index = index
        self.endpoint = endpoint  # index of the URL this slot connects to (or tries next)
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.ready = False
        self.lock = asyncio.Lock()
        self.supervisor: asyncio.Task[None] | None = None

    def usable(self) -> bool:
        return self.ready and self.connection is not None and not self.connection.is_closed


class ConnectionPool:
    """``size`` aiormq connections that reconnect by themselves.

    ``url`` is one URL or a sequence of them (the nodes of a cluster): slot *i* first connects to
    URL *i* modulo their number, so the connections spread over the nodes; a slot that cannot
    connect, or loses its connection, tries the next URL in turn. ``on_connect(connection)`` runs
    after every (re)connection, before the slot is used; an error it raises fails the attempt.
    ``on_lost()`` runs when a connection is lost.
    """

    #: First reconnection delay and the cap of the exponential backoff, in seconds.
    reconnect_base_s = 0.25
    reconnect_cap_s = 10.0

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        size: int,
        heartbeat_s: int,
        connect_timeout_s: float,
        name: str,
        on_connect: Callable[[AbstractConnection], Awaitable[None]],
        on_lost: Callable[[], None],
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("ConnectionPool needs at least one URL")
        self._urls = [with_heartbeat(u, heartbeat_s) for u in urls]
        self._shown = [redact_url(u) for u in urls]
        #: The broker URL(s), passwords hidden, for messages.
        self.shown_url = ", ".join(self._shown)
        self._connect_timeout_s = connect_timeout_s
        self._name = name
        self._on_connect = on_connect
        self._on_lost = on_lost
        self._slots = [_Slot(i, i % len(urls)) for i in range(size)]
        self._next = 0
        self._publish_slot = self._slots[0]
        self._closed = False
        self._changed: asyncio.Condition | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every connection, retrying transient failures for ``connect_timeout_s``.

        Raises :class:`BrokerError` naming the (redacted) URL when RabbitMQ cannot be reached in
        time or refuses the login, and whatever ``on_connect`` raised (e.g. TopologyError).
        """
        self._changed = asyncio.Condition()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout_s
        try:
            # The first connection declares the topology; the others find it declared.
            await self._open_until(self._slots[0], deadline)
            results = await asyncio.gather(
                *(self._open_until(slot, deadline) for slot in self._slots[1:]),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            await self.close()
            raise
        for slot in self._slots:
            slot.supervisor = loop.create_task(
                self._supervise(slot), name=f"{self._name}-amqp-{slot.index}"
            )

    async def close(self) -> None:
        """Stop reconnecting and close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        supervisors = [s.supervisor for s in self._slots if s.supervisor is not None]
        for task in supervisors:
            task.cancel()
        await asyncio.gather(*supervisors, return_exceptions=True)
        connections = [s.connection for s in self._slots if s.connection is not None]
        for slot in self._slots:
            slot.ready = False
            slot.channel = None
            slot.connection = None
        await asyncio.gather(*(close_quietly(c) for c in connections))

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    # --- channels --------------------------------------------------------------------------------

    def ready_publish_channel(self) -> AbstractChannel | None:
        """The publishing channel to use now, or None when :meth:`publish_channel` must find one."""
        slot = self._publish_slot
        channel = slot.channel
        if (
            slot.ready
            and channel is not None
            and not channel.is_closed
            and slot.connection is not None
            and not slot.connection.is_closed
        ):
            return channel
        return None

    async def publish_channel(self, deadline: float | None) -> AbstractChannel:
        """The publishing channel of the current (else the next ready) slot, reopened if closed.

        Waits for a ready slot until ``deadline`` (loop time; None: no limit), then raises
        TimeoutError; raises BrokerError once the pool is closed.
        """
        while True:
            if self._publish_slot.usable():
                slot = self._publish_slot
            else:
                slot = await self._ready_slot(deadline)
                self._publish_slot = slot
            channel = slot.channel
            if channel is not None and not channel.is_closed:
                return channel
            async with slot.lock:
                connection = slot.connection
                if slot.channel is not None and not slot.channel.is_closed:
                    return slot.channel
                if connection is None or connection.is_closed:
                    continue
                try:
                    channel = await call_aiormq(connection.channel(), self._remaining(deadline))
                except TimeoutError:
                    raise
                except ConnectionError as exc:
                    logger.debug("could not reopen a publishing channel: %s", describe(exc))
                    await asyncio.sleep(0.05)
                    continue
                except Exception as exc:
                    raise BrokerError(
                        f"cannot open a channel to RabbitMQ at {self.shown_url}: {describe(exc)}"
                    ) from exc
                slot.channel = channel
                return channel

    async def discard_publish_channel(self, channel: AbstractChannel) -> None:
        """Close ``channel`` if it is a slot's publishing channel; the next publish opens a new
        one (:meth:`publish_channel`)."""
        for slot in self._slots:
            if slot.channel is channel:
                slot.channel = None
        await close_quietly(channel)

    async def open_channel(
        self, deadline: float | None, *, publisher_confirms: bool = False
    ) -> AbstractChannel:
        """A new channel on the next ready connection (the caller closes it).

        Waits until ``deadline`` (loop time; None: no limit), then raises TimeoutError; raises
        BrokerError once the pool is closed.
        """
        while True:
            slot = await self._ready_slot(deadline)
            connection = slot.connection
            if connection is None:
                continue
            try:
                return await call_aiormq(
                    connection.channel(publisher_confirms=publisher_confirms),
                    self._remaining(deadline),
                )
            except TimeoutError:
                raise
            except ConnectionError as exc:
                logger.debug("could not open a channel: %s", describe(exc))
                await asyncio.sleep(0.05)
            except Exception as exc:
                raise BrokerError(
                    f"cannot open a channel to RabbitMQ at {self.shown_url}: {describe(exc)}"
                ) from exc

    def any_connection(self) -> AbstractConnection | None:
        """An open connection of a ready slot, or None."""
        for slot in self._slots:
            if slot.usable():
                return slot.connection
        return None

    # --- internals -------------------------------------------------------------------------------

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        if deadline is None:
            return None
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def _pick(self) -> _Slot | None:
        # Publishing stays on one connection; other channels (consumers above all) go elsewhere
        # when another connection is up: RabbitMQ blocks a connection that published during a
        # memory or disk alarm, acks included, and a consumer on it would stop with it.
        slots = self._slots
        fallback = None
        for offset in range(len(slots)):
            slot = slots[(self._next + offset) % len(slots)]
            if slot.usable():
                if slot is self._publish_slot and len(slots) > 1:
                    fallback = fallback or slot
                    continue
                self._next = (slot.index + 1) % len(slots)
                return slot
        return fallback

    async def _ready_slot(self, deadline: float | None) -> _Slot:
        if self._closed:
            raise BrokerError(f"the connection pool to {self.shown_url} is closed")
        slot = self._pick()
        if slot is not None:
            return slot
        changed = self._changed
        if changed is None:
            raise BrokerError(f"the connection pool to {self.shown_url} is not started")
        async with changed:
            while True:
                if self._closed:
                    raise BrokerError(f"the connection pool to {self.shown_url} is closed")
                slot = self._pick()
                if slot is not None:
                    return slot
                remaining = self._remaining(deadline)
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    continue

    def _backoff_s(self, attempt: int) -> float:
        ceiling = min(self.reconnect_cap_s, self.reconnect_base_s * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def shown_endpoint(self, slot: _Slot) -> str:
        """The (redacted) URL ``slot`` is connected to, or tries next."""
        return self._shown[slot.endpoint]

    def _next_endpoint(self, slot: _Slot) -> None:
        slot.endpoint = (slot.endpoint + 1) % len(self._urls)

    async def _connect(self, slot: _Slot, timeout_s: float) -> AbstractConnection:
        return await open_connection(
            self._urls[slot.endpoint],
            name=f"{self._name} #{slot.index}",
            shown=self._shown[slot.endpoint],
            timeout_s=timeout_s,
        )

    async def _open(self, slot: _Slot, timeout_s: float) -> None:
        """One attempt to connect ``slot``, open its publishing channel and run ``on_connect``.

        A failed attempt moves the slot to the next URL, for the next attempt."""
        try:
            await self._open_once(slot, timeout_s)
        except BaseException:
            self._next_endpoint(slot)
            raise

    async def _open_once(self, slot: _Slot, timeout_s: float) -> None:
        import aiormq

        connection = await self._connect(slot, timeout_s)
        try:
            channel = await call_aiormq(connection.channel(), timeout_s)
            await self._on_connect(connection)
        except BaseException as exc:
            await close_quietly(connection)
            if isinstance(exc, BrokerError | asyncio.CancelledError):
                raise
            if isinstance(exc, aiormq.AMQPError | ConnectionError | asyncio.TimeoutError):
                raise BrokerError(
                    f"RabbitMQ at {self.shown_endpoint(slot)} closed the connection while it "
                    f"was being set up: {describe(exc)}"
                ) from exc
            raise
        if self._closed:
            await close_quietly(connection)
            raise BrokerError(f"the connection pool to {self.shown_url} is closed")
        slot.connection, slot.channel, slot.ready = connection, channel, True
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _open_until(self, slot: _Slot, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            try:
                await self._open(slot, max(remaining, 0.05))
                return
            except BrokerError as exc:
                remaining = deadline - loop.time()
                if is_fatal(exc):
                    raise
                if remaining <= 0:
                    raise BrokerError(
                        f"{exc} (gave up after {self._connect_timeout_s:g} s)"
                    ) from exc.__cause__
                if attempt == 0 and slot.index == 0:
                    # at once, not after the whole connection timeout of silence
                    logger.warning(
                        "%s; retrying for up to %.0f s more (amqp.connection_timeout_s, "
                        "PAOTA_AMQP_CONNECTION_TIMEOUT)",
                        exc,
                        remaining,
                    )
                else:
                    logger.debug("connection #%d failed (%s); retrying", slot.index, exc)
                await asyncio.sleep(min(self._backoff_s(attempt), remaining))
                attempt += 1

    async def _supervise(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            connection = slot.connection
            if connection is None:
                return
            closing = connection.closing
            closing.add_done_callback(_retrieve)
            await asyncio.wait({closing})
            if self._closed:
                return
            reason = (
                "closed"
                if closing.cancelled() or closing.exception() is None
                else describe(closing.exception())
            )
            slot.ready = False
            self._on_lost()
            lost_from = self.shown_endpoint(slot)
            # Another node first: the lost one may be down (it is tried again in turn).
            self._next_endpoint(slot)
            logger.warning(
                "AMQP connection #%d to %s lost (%s); reconnecting",
                slot.index,
                lost_from,
                reason,
            )
            lost_at = loop.time()
            attempt = 0
            while not self._closed:
                try:
                    await self._open(slot, self._connect_timeout_s)
                    break
                except TopologyError as exc:
                    logger.error(
                        "AMQP connection #%d: cannot declare the topology: %s", slot.index, exc
                    )
                except BrokerError as exc:
                    # Attempts 1, 2, 4, 8, ... are logged loudly: a long outage stays visible
                    # without one line per connection every few seconds.
                    failures = attempt + 1
                    logger.log(
                        logging.WARNING if failures & (failures - 1) == 0 else logging.DEBUG,
                        "AMQP connection #%d: reconnection attempt %d failed: %s",
                        slot.index,
                        failures,
                        exc,
                    )
                except Exception:
                    logger.exception(
                        "AMQP connection #%d: unexpected error while reconnecting", slot.index
                    )
                await asyncio.sleep(self._backoff_s(attempt))
                attempt += 1
            else:
                return
            logger.warning(
                "AMQP connection #%d to %s re-established after %.1f s",
                slot.index,
                self.shown_endpoint(slot),
                loop.time() - lost_at,
            )
