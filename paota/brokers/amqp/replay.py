"""Moving parked messages back: :func:`replay_parked` (``paota requeue``).

The parking queue is read with ``basic.get`` on a channel of its own. Each message's replacement
(what the core's rewrite makes of it) is published with confirms before the parked original is
acked, so a crash in between leaves a duplicate, never a loss. Messages that stay (the rewrite
said None, or the limit was reached) are held unacked until the end and then returned, so each
message is looked at once and the loop ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pamqp import commands as spec

from paota.brokers.amqp.connection import ConnectionPool, call_aiormq, close_quietly
from paota.brokers.amqp.errors import classify, describe, translate
from paota.core.errors import BrokerError
from paota.core.protocols import OutgoingMessage, Rewrite

__all__ = ["ParkedMessage", "replay_parked"]

logger = logging.getLogger("paota.brokers.amqp")


class ParkedMessage:
    """A message read from a parking queue (implements :class:`~paota.core.protocols.Message`)."""

    __slots__ = ("body", "content_type", "headers", "message_id", "priority")

    def __init__(self, body: bytes, props: spec.Basic.Properties) -> None:
        self.body = body
        self.headers: dict[str, Any] = dict(props.headers or {})
        self.content_type = props.content_type
        self.priority = props.priority
        self.message_id = props.message_id


async def replay_parked(
    pool: ConnectionPool,
    name: str,
    rewrite: Rewrite,
    publish: Callable[[OutgoingMessage], Awaitable[None]],
    *,
    limit: int | None,
    timeout_s: float,
) -> int:
    """Move the messages of parking queue ``name`` for which ``rewrite`` gives a replacement;
    returns how many moved (see the module docs)."""
    if limit is not None and limit <= 0:
        return 0
    loop = asyncio.get_running_loop()
    try:
        channel = await pool.open_channel(loop.time() + timeout_s)
    except TimeoutError as exc:
        raise BrokerError(
            f"no connection to RabbitMQ at {pool.shown_url} within {timeout_s:g} s"
        ) from exc
    moved = 0
    held: list[int] = []
    try:
        try:
            declared = await call_aiormq(channel.queue_declare(name, passive=True), timeout_s)
            for _ in range(declared.message_count or 0):
                if limit is not None and moved >= limit:
                    break
                message = await call_aiormq(channel.basic_get(name, no_ack=False), timeout_s)
                if message is None or not isinstance(message.delivery, spec.Basic.GetOk):
                    break
                tag = message.delivery_tag
                if tag is None:
                    break
                replacement = rewrite(ParkedMessage(message.body, message.header.properties))
                if replacement is None:
                    held.append(tag)
                    continue
                try:
                    await publish(replacement)
                except BaseException:
                    held.append(tag)
                    raise
                await call_aiormq(channel.basic_ack(tag), timeout_s)
                moved += 1
        except Exception as exc:
            if classify(exc) is None:
                raise
            raise translate(
                exc, f"moving parked messages from {name!r} stopped after {moved}"
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
        logger.info("moved %d parked message(s) from %r back", moved, name)
    return moved
