"""What a queue holds now: passive declares of queue names (depths, consumers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from paota.brokers.amqp.connection import ConnectionPool, call_aiormq, close_quietly
from paota.brokers.amqp.errors import broker_errors
from paota.core.protocols import QueueStat

__all__ = ["queue_depths", "queue_stats"]


async def queue_depths(
    pool: ConnectionPool, names: Iterable[str], *, timeout_s: float
) -> dict[str, int]:
    """``{queue: messages ready}`` for ``names`` (a missing queue counts 0)."""
    loop = asyncio.get_running_loop()
    depths: dict[str, int] = {}
    channel = await pool.open_channel(loop.time() + timeout_s)
    try:
        for name in dict.fromkeys(names):
            try:
                declared = await call_aiormq(channel.queue_declare(name, passive=True), timeout_s)
            except Exception:
                depths[name] = 0
                channel = await pool.open_channel(loop.time() + timeout_s)
                continue
            depths[name] = int(declared.message_count or 0)
    finally:
        await close_quietly(channel)
    return depths


async def queue_stats(
    pool: ConnectionPool, queues: Iterable[str], *, timeout_s: float
) -> dict[str, QueueStat | None]:
    """Messages ready and consumers per queue, from a passive declare of each; None for a
    queue that does not exist. Raises :class:`~paota.BrokerError` when RabbitMQ cannot answer."""
    import aiormq

    loop = asyncio.get_running_loop()
    stats: dict[str, QueueStat | None] = {}
    with broker_errors("reading queue statistics"):
        channel = await pool.open_channel(loop.time() + timeout_s)
        try:
            for name in dict.fromkeys(queues):
                try:
                    declared = await call_aiormq(
                        channel.queue_declare(name, passive=True), timeout_s
                    )
                except aiormq.ChannelNotFoundEntity:
                    # A missing queue closes the channel (404): say so, go on on a new one.
                    stats[name] = None
                    channel = await pool.open_channel(loop.time() + timeout_s)
                    continue
                stats[name] = QueueStat(
                    ready=int(declared.message_count or 0),
                    consumers=int(declared.consumer_count or 0),
                )
        finally:
            await close_quietly(channel)
    return stats
