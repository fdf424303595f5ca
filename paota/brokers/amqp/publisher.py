"""Confirmed publishing: :class:`Publisher`.

Every publish goes through one of the pool's long-lived channels with publisher confirms and
``mandatory`` set, and returns only once RabbitMQ confirmed it (a nack, a return as unroutable or
no confirm within ``publish_timeout_s`` raise :class:`~paota.PublishError`). Publishes do not wait
for each other: each gets its own confirmation, so a burst of concurrent publishes costs about one
round trip, not one per message. A publish while RabbitMQ is away waits for the reconnection
(within ``publish_timeout_s``) and is retried there; a message may then arrive twice, never zero
times (at-least-once). A publish that times out while RabbitMQ blocks publishers (a memory or disk
alarm) says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from pamqp import commands as spec

from paota.brokers.amqp.connection import ConnectionPool, Deadlines, being_cancelled, is_blocked
from paota.brokers.amqp.driver import aiormq
from paota.brokers.amqp.errors import ChannelGoneError, Failure, classify, describe, translate
from paota.brokers.amqp.frames import FrameBatcher, can_batch
from paota.core.errors import PublishError

__all__ = ["Publisher"]

logger = logging.getLogger("paota.brokers.amqp")


class Publisher:
    """Publishes with confirms on ``pool``'s publishing channels.

    ``redeclare()`` is awaited once when an exchange turns out to be missing (deleted under us),
    before the publish is tried again.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        timeout_s: float,
        redeclare: Callable[[], Awaitable[None]],
    ) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._redeclare = redeclare
        self._deadlines = Deadlines()
        self._batcher = FrameBatcher()

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: spec.Basic.Properties,
        what: str,
    ) -> None:
        """Publish and wait for RabbitMQ's confirm (see the module docs)."""
        pool = self._pool
        loop = asyncio.get_running_loop()
        timeout_s = self._timeout_s
        deadline = loop.time() + timeout_s
        redeclared = False
        last_error: BaseException | None = None
        while True:
            channel = pool.ready_publish_channel()
            if channel is None:
                try:
                    channel = await pool.publish_channel(deadline)
                except TimeoutError:
                    cause = f" (last error: {describe(last_error)})" if last_error else ""
                    raise PublishError(
                        f"{what} not published: no connection to RabbitMQ at {pool.shown_url} "
                        f"within {timeout_s:g} s{cause}"
                    ) from last_error
            publishing: Awaitable[object]
            if can_batch(channel):
                # Written with the other publishes of this turn of the loop, in one frame
                # (paota.brokers.amqp.frames); returns with RabbitMQ's confirm.
                try:
                    publishing = self._batcher.publish(
                        cast("aiormq.Channel", channel),
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=props,
                    )
                except ChannelGoneError as exc:
                    last_error = exc
                    await asyncio.sleep(0.05)
                    continue
            else:
                # wait=False: aiormq does not wait for the frame to be written to the socket
                # (with wait=True it waits holding the channel lock, so concurrent publishes
                # queue on it); the publish still returns only with RabbitMQ's confirm.
                publishing = cast("aiormq.Channel", channel).basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=props,
                    mandatory=True,
                    wait=False,
                )
            try:
                try:
                    with self._deadlines.at(deadline):
                        confirmation = await publishing
                except asyncio.CancelledError:
                    if being_cancelled():
                        raise
                    raise ChannelGoneError("the AMQP channel closed during the publish") from None
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                if failure is Failure.TIMEOUT:
                    if is_blocked(getattr(channel, "connection", None)):
                        raise PublishError(
                            f"{what} not confirmed within {timeout_s:g} s: RabbitMQ at "
                            f"{pool.shown_url} is blocking publishers (a memory or disk alarm; "
                            "see `rabbitmq-diagnostics alarms`)"
                        ) from exc
                    raise PublishError(
                        f"{what} not confirmed by RabbitMQ within {timeout_s:g} s"
                    ) from exc
                if failure is Failure.UNROUTABLE:
                    error = translate(exc, what, publish=True)
                    raise PublishError(
                        f"{error}: nothing is bound to exchange {exchange!r} with routing key "
                        f"{routing_key!r}"
                    ) from exc
                if failure is Failure.MISSING and not redeclared:
                    # The exchange was deleted under us: declare the topology again, once.
                    redeclared = True
                    last_error = exc
                    logger.warning("%s: %s; declaring the topology again", what, describe(exc))
                    try:
                        await self._redeclare()
                    except Exception as redeclare_exc:
                        if classify(redeclare_exc) is None:
                            raise
                        last_error = redeclare_exc
                    continue
                if failure is Failure.NACKED and loop.time() + 0.1 < deadline:
                    # RabbitMQ nacks when a queue cannot take the message now: a quorum queue
                    # whose leader just died keeps nacking a channel that first published to it
                    # then (seen on 3.10 for tens of seconds). Publish again on a new channel,
                    # until the deadline, rather than fail the send.
                    last_error = exc
                    logger.debug("%s: nacked by RabbitMQ; publishing again", what)
                    await pool.discard_publish_channel(channel)
                    await asyncio.sleep(0.1)
                    continue
                if failure is Failure.GONE:
                    # The connection went away before the confirm: publish again on the next
                    # ready connection (at-least-once: RabbitMQ may have kept the first copy).
                    last_error = exc
                    logger.debug("%s: publish interrupted (%s); retrying", what, describe(exc))
                    await asyncio.sleep(0.05)
                    continue
                raise translate(exc, what, publish=True) from exc
            if confirmation is not None and not isinstance(confirmation, spec.Basic.Ack):
                raise PublishError(f"{what} was rejected by RabbitMQ ({confirmation.name})")
            return
