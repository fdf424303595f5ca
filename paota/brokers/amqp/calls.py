"""Helpers for calling aiormq (bounded calls, opening and closing connections), shared by the
connection pool and the broker's other modules.

aiormq fails every future of a closed connection, some of them with ``CancelledError``; awaiting
such a future would look like a cancellation of the caller. :func:`call_aiormq` tells the two apart
(and bounds the call in time), so that only a real cancellation raises ``CancelledError``;
:func:`being_cancelled` asks the same question where aiormq's ``CancelledError`` was caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from paota.brokers.amqp.errors import ChannelGoneError, describe
from paota.core.errors import BrokerError, TopologyError

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

__all__ = [
    "being_cancelled",
    "call_aiormq",
    "close_quietly",
    "is_blocked",
    "is_fatal",
    "open_connection",
    "with_heartbeat",
]

logger = logging.getLogger("paota.brokers.amqp")

T = TypeVar("T")


def is_blocked(connection: AbstractConnection | None) -> bool:
    """Whether RabbitMQ has blocked publishing on ``connection`` (``connection.blocked``: a memory
    or disk alarm). aiormq keeps this in a private event; if that ever changes, this says False."""
    event = getattr(connection, "_Connection__connection_unblocked", None)
    return isinstance(event, asyncio.Event) and not event.is_set()


async def call_aiormq(aw: Awaitable[T], timeout_s: float | None) -> T:
    """Await an aiormq call, at most ``timeout_s`` seconds (None: no limit).

    Raises TimeoutError when time is up, :class:`ChannelGoneError` when aiormq failed the call
    with ``CancelledError`` because its channel or connection closed, the call's own exception
    otherwise; ``CancelledError`` only when the calling task itself is being cancelled.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await aw
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise ChannelGoneError("the AMQP channel closed during the operation") from None


def being_cancelled() -> bool:
    """True when the current task is being cancelled, as opposed to merely seeing aiormq's
    ``CancelledError`` for a future of a closed channel or connection."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def is_fatal(exc: BaseException) -> bool:
    """Connection errors that retrying will not cure (bad credentials, vhost access refused)."""
    import aiormq

    cause = exc.__cause__ if isinstance(exc, BrokerError) else exc
    return isinstance(
        cause, aiormq.AuthenticationError | aiormq.ProbableAuthenticationError
    ) or isinstance(exc, TopologyError)


def with_heartbeat(url: str, heartbeat_s: int) -> str:
    """``url`` with aiormq's ``heartbeat`` query parameter, unless the URL sets one itself."""
    from yarl import URL

    parsed = URL(url)
    if "heartbeat" in parsed.query:
        return url
    return str(parsed.update_query(heartbeat=str(heartbeat_s)))


async def open_connection(
    url: str, *, name: str, shown: str, timeout_s: float
) -> AbstractConnection:
    """A connection to RabbitMQ at ``url`` named ``name`` (as the management UI shows it).

    Raises :class:`BrokerError` naming ``shown`` (the URL, password hidden) when RabbitMQ does not
    answer within ``timeout_s``, refuses the login or fails the connection otherwise.
    """
    import aiormq

    connection = aiormq.Connection(url, client_properties={"connection_name": name})
    try:
        await call_aiormq(connection.connect(), timeout_s)
    except BaseException as exc:
        await close_quietly(connection)
        if isinstance(exc, asyncio.CancelledError):
            raise
        if isinstance(exc, asyncio.TimeoutError):
            why = await _stall_hint(url)
            raise BrokerError(
                f"cannot connect to RabbitMQ at {shown}: no answer within {timeout_s:.1f} s{why}"
            ) from exc
        if isinstance(exc, aiormq.AuthenticationError | aiormq.ProbableAuthenticationError):
            raise BrokerError(f"RabbitMQ at {shown} refused the login: {describe(exc)}") from exc
        raise BrokerError(f"cannot connect to RabbitMQ at {shown}: {describe(exc)}") from exc
    return connection


#: What a handshake that stalls on an open TCP connection may mean, and how to check it.
STALL_HINT = (
    ": it accepted the TCP connection but never answered the AMQP handshake. A node that does "
    "this while `rabbitmq-diagnostics check_running` says it runs may be out of file handles "
    "(each queue takes some; a delay ladder takes 18, and 30 in 'ladder' mode): compare "
    "`rabbitmqctl eval 'file_handle_cache:info().'` (total_used, total_limit) or the file "
    "descriptors of `rabbitmq-diagnostics status` with the limit, raise the node's open-files "
    "limit (`ulimit -n`, systemd LimitNOFILE), and delete unused ladders (`paota ladders`). It may "
    "also be overloaded or paused"
)


async def _stall_hint(url: str) -> str:
    """Why a connection attempt that timed out may have: :data:`STALL_HINT` when the TCP port
    accepts a connection (so the AMQP handshake stalled), else a hint that TCP itself did not
    open."""
    from yarl import URL

    parsed = URL(url)
    host = parsed.host or "localhost"
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (TimeoutError, OSError):
        return (
            f" (no TCP connection to {host}:{port} opened either: is it reachable, the port right?)"
        )
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return STALL_HINT


async def close_quietly(closable: AbstractConnection | AbstractChannel) -> None:
    """Close an aiormq connection or channel, ignoring every error (it may be dead already)."""
    if closable.is_closed:
        return
    try:
        await call_aiormq(closable.close(), 5.0)
    except Exception as exc:
        logger.debug("closing %r failed: %s", closable, describe(exc))
