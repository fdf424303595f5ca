"""The control channel on RabbitMQ: a fanout exchange, and one exclusive queue per listener.

Broadcasts go to a durable fanout exchange named after the task exchange
(:func:`control_exchange_name`: ``{exchange}.control``), with publisher confirms but without
``mandatory``: when no worker listens, a broadcast reaches nobody, and that is not an error (what a
control message asks for, a cancellation, is durable in the store already). Each listener declares
a server-named, exclusive, auto-deleted queue bound to the exchange and consumes it without acks;
the queue goes away with its connection. After a lost connection the listener subscribes again,
on a new queue, and yields ``None`` first: what was broadcast in between did not reach it (see
:class:`~paota.core.protocols.ControlChannel`). Go paota neither declares nor uses this exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from pamqp import commands as spec

from paota.brokers.amqp.connection import ConnectionPool, call_aiormq, close_quietly
from paota.brokers.amqp.errors import broker_errors
from paota.core.errors import BrokerError, PublishError

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage

__all__ = ["broadcast", "control_exchange_name", "listen"]

logger = logging.getLogger("paota.brokers.amqp")

_PROPERTIES = spec.Basic.Properties(content_type="application/json", delivery_mode=1)


def control_exchange_name(task_exchange: str) -> str:
    """The control exchange of a deployment whose task exchange is ``task_exchange``: processes
    sharing a task exchange share its control exchange, and other deployments on the vhost do
    not hear them."""
    return f"{task_exchange}.control" if task_exchange else "paota.control"


async def _declare(channel: AbstractChannel, exchange: str, timeout_s: float) -> None:
    await call_aiormq(
        channel.exchange_declare(exchange, exchange_type="fanout", durable=True), timeout_s
    )


async def broadcast(pool: ConnectionPool, exchange: str, body: bytes, *, timeout_s: float) -> None:
    """Publish ``body`` to the control ``exchange`` (declared if missing) and wait for the
    confirm. Raises :class:`~paota.PublishError` when that fails or takes over ``timeout_s``."""
    loop = asyncio.get_running_loop()
    try:
        # A channel of its own per broadcast: broadcasts are rare (one per cancellation), and the
        # pool's publishing channels publish with `mandatory`, which a fanout nobody listens to
        # would turn into an error.
        channel = await pool.open_channel(loop.time() + timeout_s, publisher_confirms=True)
    except TimeoutError as exc:
        raise PublishError(
            f"control message not sent: no connection to RabbitMQ at {pool.shown_url} within "
            f"{timeout_s:g} s"
        ) from exc
    try:
        with broker_errors(f"control message to exchange {exchange!r}", publish=True):
            await _declare(channel, exchange, timeout_s)
            confirmation = await call_aiormq(
                channel.basic_publish(
                    body, exchange=exchange, routing_key="", properties=_PROPERTIES
                ),
                timeout_s,
            )
    finally:
        await close_quietly(channel)
    if confirmation is not None and not isinstance(confirmation, spec.Basic.Ack):
        raise PublishError(
            f"control message to exchange {exchange!r} was rejected by RabbitMQ "
            f"({confirmation.name})"
        )


class _Subscription:
    """One exclusive queue on one channel; messages and the end (None) in :attr:`received`."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.received: asyncio.Queue[bytes | None] = asyncio.Queue()
        channel.closing.add_done_callback(lambda _: self.received.put_nowait(None))

    async def on_message(self, message: DeliveredMessage) -> None:
        self.received.put_nowait(message.body)


async def _subscribe(pool: ConnectionPool, exchange: str, timeout_s: float) -> _Subscription:
    loop = asyncio.get_running_loop()
    try:
        channel = await pool.open_channel(loop.time() + timeout_s)
    except TimeoutError as exc:
        raise BrokerError(
            f"cannot listen to the control exchange {exchange!r}: no connection to RabbitMQ at "
            f"{pool.shown_url} within {timeout_s:g} s"
        ) from exc
    subscription = _Subscription(channel)
    try:
        with broker_errors(f"subscribing to the control exchange {exchange!r}"):
            await _declare(channel, exchange, timeout_s)
            declared = await call_aiormq(
                channel.queue_declare("", exclusive=True, auto_delete=True), timeout_s
            )
            queue = declared.queue
            if not isinstance(queue, str) or not queue:
                raise BrokerError("RabbitMQ did not name the control queue it declared")
            await call_aiormq(channel.queue_bind(queue, exchange, routing_key=""), timeout_s)
            await call_aiormq(
                channel.basic_consume(queue, subscription.on_message, no_ack=True), timeout_s
            )
    except BaseException:
        await close_quietly(channel)
        raise
    logger.debug("listening to the control exchange %r on queue %r", exchange, queue)
    return subscription


async def listen(
    pool: ConnectionPool, exchange: str, *, timeout_s: float, is_open: Callable[[], bool]
) -> AsyncIterator[bytes | None]:
    """Control messages of ``exchange``, ``None`` after each (re)subscription, until
    ``is_open()`` turns False (the broker closed)."""
    attempt = 0
    while is_open():
        try:
            subscription = await _subscribe(pool, exchange, timeout_s)
        except BrokerError as exc:
            if not is_open():
                return
            delay_s = min(10.0, 0.25 * 2**attempt)
            attempt += 1
            logger.warning(
                "cannot listen to the control exchange %r (%s); trying again in %.1f s",
                exchange,
                exc,
                delay_s,
            )
            await asyncio.sleep(delay_s)
            continue
        attempt = 0
        try:
            yield None
            while True:
                body = await subscription.received.get()
                if body is None:
                    break
                yield body
        finally:
            await close_quietly(subscription.channel)
        if is_open():
            logger.warning("control channel of %r lost; subscribing again", exchange)
