"""What the pool does around the consumption of one queue, beside running tasks: the prefetch it
asks the broker for (:func:`prefetch_for`), giving a delivery back (:func:`give_back`), naming a
delivery in a log line (:func:`delivery_task`) and checking queue names and concurrencies."""

from __future__ import annotations

import logging
from typing import Any

from paota.core.capabilities import prefetch_limit
from paota.core.errors import ConfigError
from paota.core.message import decode_message
from paota.core.protocols import Delivery

__all__ = ["check_concurrency", "check_queue", "delivery_task", "give_back", "prefetch_for"]

logger = logging.getLogger("paota.core.pool")


def check_concurrency(value: Any, what: str) -> int:
    """``value`` if it is an integer >= 1, else :class:`~paota.ConfigError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what}={value!r} is not valid: expected an integer >= 1")
    return value


def check_queue(name: Any) -> str:
    """``name`` if it is a non-empty string, else :class:`~paota.ConfigError`."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"queue name {name!r} is not valid: expected a non-empty string")
    return name


def prefetch_for(broker: object, queue: str, concurrency: int, pool: str) -> int:
    """The prefetch to consume ``queue`` with: twice its concurrency, so one worker does not hoard
    a shared queue, and at most the broker's stated limit (:func:`prefetch_limit`; RabbitMQ's is
    ``amqp.prefetch_count``). Warns when the limit keeps it below the concurrency."""
    limit = prefetch_limit(broker)
    prefetch = 2 * concurrency if limit is None else min(limit, 2 * concurrency)
    if prefetch < concurrency:
        logger.warning(
            "worker pool %s: prefetch %d < concurrency %d on queue %s: at most %d tasks run "
            "at once",
            pool,
            prefetch,
            concurrency,
            queue,
            prefetch,
        )
    return prefetch


def delivery_task(delivery: Delivery) -> tuple[str, str]:
    """The task id and name of ``delivery`` for a log line off the hot path (its message id, or
    the decoded body's; empty strings when neither says)."""
    try:
        sig = decode_message(delivery.body, delivery.headers)
    except Exception:
        return delivery.message_id or "", ""
    return sig.uuid or delivery.message_id or "", sig.name


async def give_back(delivery: Delivery) -> None:
    """Give ``delivery`` back to the broker, unacked, to be delivered again (at-least-once): what
    the pool does with a delivery it does not settle (stopping, or its outcome could not be made
    durable). Never raises: a broker that cannot take it back redelivers it when the channel
    closes."""
    try:
        await delivery.reject(requeue=True)
    except Exception as exc:
        logger.debug("ignored while giving a delivery back: %r", exc)
