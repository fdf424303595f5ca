"""A lock held by RabbitMQ: an exclusive, auto-deleted queue on a connection of its own.

RabbitMQ lets one connection at a time declare an exclusive queue; another connection's declare
fails with ``RESOURCE_LOCKED`` (405), and the queue goes away with the connection that holds it,
so a process that dies (or loses RabbitMQ) gives the lock back by itself. The lock has its own
connection, not one of the broker's publishing pool, because those reconnect by themselves: a
reconnected connection would no longer hold the queue, and nobody would notice. Here a lost
connection is a lost lock (:attr:`AMQPLock.held` turns False) and the holder takes it again
explicitly. Used by the scheduler when no shared store can keep slots apart (see
:mod:`paota.scheduler.scheduler`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from paota.brokers.amqp.connection import _with_heartbeat, call_aiormq, close_quietly, describe
from paota.core.errors import BrokerError
from paota.core.settings import redact_url

if TYPE_CHECKING:
    from aiormq.abc import AbstractConnection

__all__ = ["AMQPLock", "take_lock"]

logger = logging.getLogger("paota.brokers.amqp")


class AMQPLock:
    """A held lock (see the module docs). :meth:`release` closes its connection."""

    def __init__(self, name: str, connection: AbstractConnection, where: str) -> None:
        self.name = name
        self.where = where
        self._connection = connection
        self._released = False

    def __repr__(self) -> str:
        return f"<AMQPLock {self.name!r} on {self.where} held={self.held}>"

    @property
    def held(self) -> bool:
        """False once released, or once its connection closed (the queue is gone with it)."""
        return not self._released and not self._connection.is_closed

    async def release(self) -> None:
        """Give the lock back (close its connection). Idempotent."""
        if self._released:
            return
        self._released = True
        await close_quietly(self._connection)


async def take_lock(
    name: str, urls: tuple[str, ...], *, heartbeat_s: int, timeout_s: float, client_name: str
) -> AMQPLock | None:
    """Take the lock ``name`` on the first node of ``urls`` that answers: the lock, or None when
    another connection holds it. Raises :class:`~paota.BrokerError` when no node answers."""
    import aiormq

    errors = []
    for url in urls:
        where = redact_url(url)
        try:
            connection = await call_aiormq(
                aiormq.connect(
                    _with_heartbeat(url, heartbeat_s),
                    client_properties={"connection_name": f"{client_name} lock {name}"},
                ),
                timeout_s,
            )
        except (aiormq.AMQPError, OSError, TimeoutError, ConnectionError) as exc:
            errors.append(f"{where}: {describe(exc)}")
            continue
        try:
            channel = await call_aiormq(connection.channel(), timeout_s)
            await call_aiormq(
                channel.queue_declare(name, exclusive=True, auto_delete=True), timeout_s
            )
        except aiormq.ChannelLockedResource:
            await close_quietly(connection)
            return None
        except (aiormq.AMQPError, OSError, TimeoutError, ConnectionError) as exc:
            await close_quietly(connection)
            errors.append(f"{where}: {describe(exc)}")
            continue
        except asyncio.CancelledError:
            await close_quietly(connection)
            raise
        logger.debug("took the lock %r on %s", name, where)
        return AMQPLock(name, connection, where)
    raise BrokerError(f"taking the lock {name!r}: no RabbitMQ node answered ({'; '.join(errors)})")
