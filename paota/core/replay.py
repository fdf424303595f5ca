"""Replays: what a parked message becomes when it is moved back (``paota requeue``).

The broker moves the bytes (:meth:`~paota.core.protocols.Broker.replay_parked`); this module says
what to publish in place of each parked message: the same task as a new run, back in the queue it
came from.

- Only messages whose ``x-paota-reason`` is the given reason move (all, when none is given).
- The parking headers are dropped, ``x-paota-returns`` too; ``x-paota-replays`` goes one higher, so
  the store records the replay as a new run. Every other header stays.
- The target is the queue the message was parked from (``x-paota-origin-queue``), else the default
  task queue. The body's ``RoutingKey`` is never used for that: the Go library writes the parking
  queue's name there when it parks or retries a task, so routing by it would send the message
  straight back to the parking queue. A ``RoutingKey`` naming a parking queue is cleared.
- ``retries_done`` is reset to 0. A task with a start deadline (``task_timeout``) gets the replay
  time as its ``eta``, so the deadline counts from the replay, not from the first send.
- A message that does not decode moves unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from paota.core.errors import DecodeError
from paota.core.message import decode_message
from paota.core.message.outgoing import outgoing
from paota.core.protocols import (
    ORIGIN_HEADER,
    PARKING_HEADERS,
    REPLAYS_HEADER,
    RETURNS_HEADER,
    Broker,
    Message,
    OutgoingMessage,
    ParkQueue,
    Rewrite,
    header_int,
)

__all__ = ["replay_headers", "replay_rewrite", "requeue"]


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers of a parked message moved back for replay: the parking and return headers
    dropped, ``x-paota-replays`` one higher."""
    clean = {k: v for k, v in headers.items() if k not in PARKING_HEADERS and k != RETURNS_HEADER}
    clean[REPLAYS_HEADER] = header_int(headers.get(REPLAYS_HEADER)) + 1
    return clean


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return None


def replay_rewrite(
    default_queue: str,
    *,
    reason: str | None,
    now: Callable[[], datetime],
    parking: Collection[str] = (),
) -> Rewrite:
    """The rewrite function for :meth:`~paota.core.protocols.Broker.replay_parked` (see the
    module docs); ``parking`` names the parking queues."""

    def rewrite(message: Message) -> OutgoingMessage | None:
        headers = message.headers
        if reason is not None and _text(headers.get("x-paota-reason")) != reason:
            return None
        clean = replay_headers(headers)
        queue = _text(headers.get(ORIGIN_HEADER)) or default_queue
        try:
            sig = decode_message(message.body, clean)
        except DecodeError:
            return OutgoingMessage(
                message.body,
                queue,
                headers=clean,
                content_type=message.content_type,
                message_id=message.message_id or "",
                priority=message.priority or 0,
            )
        changes: dict[str, Any] = {"retries_done": 0}
        if sig.routing_key in parking:
            changes["routing_key"] = ""
        if sig.task_timeout > 0:
            changes["eta"] = now()
        sig = sig.replace(**changes)
        # JSON mode carries the priority in the body; header mode keeps the message's own.
        priority = sig.priority if sig.raw_args is None else (message.priority or 0)
        return outgoing(
            sig,
            queue,
            headers=clean,
            priority=priority,
            message_id=sig.uuid or message.message_id or "",
        )

    return rewrite


async def requeue(
    broker: Broker,
    queue: ParkQueue,
    *,
    now: Callable[[], datetime],
    reason: str | None = None,
    limit: int | None = None,
    task_ids: Iterable[str] | None = None,
) -> int:
    """Move the parked messages of ``queue`` back (see :meth:`paota.Client.requeue_parked`):
    those with ``x-paota-reason == reason`` when given, those of ``task_ids`` when given."""
    rewrite = replay_rewrite(
        broker.default_queue,
        reason=reason,
        now=now,
        parking={broker.parking_queue(q) for q in ParkQueue},
    )
    if task_ids is not None:
        wanted, replay = frozenset(task_ids), rewrite

        def rewrite(message: Message) -> OutgoingMessage | None:
            return replay(message) if message.message_id in wanted else None

    return await broker.replay_parked(queue, rewrite, limit=limit)
