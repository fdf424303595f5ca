"""What the management API does, on a :class:`~paota.Client`: read the store and the broker, and
act through the client's own public operations. Nothing here keeps a task in memory beyond the
request that asked for it: every answer is read afresh, so a restarted web process sees the same
history, and its memory does not grow with the number of tasks.

The operations on tasks are in :mod:`paota.web.ops_tasks` (and importable from here too); this
module holds those on parking queues, queues, workers and schedules.

Each function raises :class:`~paota.web.params.WebError` for what the caller got wrong (400, 404,
409) or what the backends cannot do (501); :class:`~paota.BrokerError` and
:class:`~paota.StoreError` pass through (the app answers 503).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from paota.client import Client
from paota.core.errors import BrokerError, ConfigError, DecodeError
from paota.core.message import decode_message
from paota.core.protocols import (
    Message,
    OutgoingMessage,
    ParkQueue,
    has_coordination,
    has_queue_depths,
    has_queue_stats,
)
from paota.web.ops_tasks import (
    SEND_FIELDS,
    cancel_task,
    connected,
    delete_task,
    get_task,
    list_tasks,
    retry_task,
    send_task,
)
from paota.web.params import WebError, bad, check_fields, opt_int, opt_str
from paota.web.views import jsonable, parked_item, worker_item

__all__ = [
    "SEND_FIELDS",
    "browse_parked",
    "cancel_task",
    "connected",
    "delete_task",
    "get_task",
    "list_queues",
    "list_schedules",
    "list_tasks",
    "list_workers",
    "requeue_parked",
    "retry_task",
    "send_task",
    "set_schedule_paused",
]

logger = logging.getLogger("paota.web")

#: Fields of a requeue request.
REQUEUE_FIELDS = frozenset({"reason", "task_ids", "limit"})


# --- parking queues ------------------------------------------------------------------------------


async def browse_parked(
    client: Client, queue: ParkQueue, *, reason: str | None, limit: int
) -> dict[str, Any]:
    """The messages of a parking queue: how many there are by reason, and the first ``limit``
    (with ``reason`` given, of that reason only), oldest first. Nothing moves: the broker's
    replay is asked with a rewrite that only looks (and leaves every message parked)."""
    await client.connect()
    broker = client.broker
    by_reason: Counter[str] = Counter()
    items: list[dict[str, Any]] = []

    def look(message: Message) -> OutgoingMessage | None:
        item_reason = parked_item(message, "", None)["reason"]
        by_reason[item_reason] += 1
        if len(items) < limit and (reason is None or item_reason == reason):
            try:
                sig = decode_message(message.body, message.headers)
                name, args = (
                    sig.name,
                    [{"Name": a.name, "Type": a.type, "Value": a.value} for a in sig.args],
                )
            except DecodeError:
                name, args = "(undecodable)", None
            items.append(parked_item(message, name, args))
        return None

    await broker.replay_parked(queue, look)
    return {
        "queue": queue.value,
        "name": broker.parking_queue(queue),
        "total": sum(by_reason.values()),
        "by_reason": dict(sorted(by_reason.items())),
        "items": items,
    }


async def requeue_parked(
    client: Client, queue: ParkQueue, body: Mapping[str, Any]
) -> dict[str, Any]:
    """Move parked messages back (:meth:`paota.Client.requeue_parked`): ``{"reason", "task_ids",
    "limit"}``, all optional."""
    check_fields(body, REQUEUE_FIELDS, "field")
    reason = opt_str(body, "reason")
    limit = opt_int(body, "limit", lo=1, hi=1_000_000)
    task_ids = body.get("task_ids")
    if task_ids is not None:
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise bad("task_ids", "must be an array of task ids (strings)")
        if not task_ids:
            raise bad("task_ids", "is empty: leave it out to requeue every message")
    await client.connect()
    moved = await client.requeue_parked(queue, reason=reason, limit=limit, task_ids=task_ids)
    return {"queue": queue.value, "moved": moved}


# --- queues, workers, schedules ------------------------------------------------------------------


async def worker_docs(client: Client) -> list[dict[str, Any]] | None:
    """The live workers' heartbeat records; None when the store cannot hold them."""
    store = client.store
    if not has_coordination(store):
        return None
    from paota.middleware.heartbeat import list_workers as heartbeats

    return await heartbeats(store)


async def list_queues(
    client: Client, *, docs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The task queues (the default one, the registered tasks', the workers') and the parking
    queues, each with its messages ready and consumers, as the broker counts them (``docs``: the
    workers' records, when the caller has read them already)."""
    await client.connect()
    broker = client.broker
    names: dict[str, str] = {broker.default_queue: "task"}
    for queue in sorted(client.registry.queues()):
        names.setdefault(queue, "task")
    if docs is None:
        docs = await worker_docs(client) or []
    for doc in docs:
        queues = doc.get("queues")
        if isinstance(queues, Mapping):
            for queue in queues:
                if isinstance(queue, str):
                    names.setdefault(queue, "task")
    workers_of: Counter[str] = Counter()
    for doc in docs:
        queues = doc.get("queues")
        if isinstance(queues, Mapping):
            workers_of.update(q for q in queues if isinstance(q, str))
    for parking in ParkQueue:
        names[broker.parking_queue(parking)] = f"parking:{parking.value}"
    items: list[dict[str, Any]] = []
    if has_queue_stats(broker):
        stats = await broker.queue_stats(names)
        for queue, kind in names.items():
            stat = stats.get(queue)
            items.append(
                {
                    "name": queue,
                    "kind": kind,
                    "exists": stat is not None,
                    "ready": stat.ready if stat is not None else 0,
                    "consumers": stat.consumers if stat is not None else 0,
                    "workers": workers_of.get(queue, 0),
                }
            )
    elif has_queue_depths(broker):
        depths = await broker.queue_depths(names)
        for queue, kind in names.items():
            items.append(
                {
                    "name": queue,
                    "kind": kind,
                    "exists": None,
                    "ready": depths.get(queue, 0),
                    "consumers": None,
                    "workers": workers_of.get(queue, 0),
                }
            )
    else:
        raise WebError(501, f"the broker {type(broker).__name__} cannot count its queues")
    return {"items": items}


async def list_workers(client: Client) -> dict[str, Any]:
    """The live workers' heartbeat records, with the number of consumers the broker counts on the
    task queues (so that a page can say why a consuming worker is not listed); 501 when the store
    cannot hold the records."""
    await client.connect()
    docs = await worker_docs(client)
    if docs is None:
        raise WebError(501, "the store has no Coordination capability: it keeps no worker records")
    now = datetime.now(UTC)
    consumers: int | None = None
    try:
        queues = (await list_queues(client, docs=docs))["items"]
        counted = [q["consumers"] for q in queues if q["kind"] == "task"]
        if all(isinstance(c, int) for c in counted):
            consumers = sum(counted)
    except (WebError, BrokerError):
        consumers = None  # the workers are still worth showing
    return {
        "items": [worker_item(doc, now) for doc in docs],
        "consumers": consumers,
        "store": type(client.store).__name__,
    }


def _schedules(client: Client) -> Any:
    from paota.scheduler.manage import Schedules

    store = client.store
    if not has_coordination(store):
        raise WebError(501, "schedules need a store with the Coordination capability")
    return Schedules(store, code=client.schedules, clock=client.clock)


async def list_schedules(client: Client, *, count: int) -> dict[str, Any]:
    """Every schedule (the client's code ones and the store's runtime ones) with its next
    ``count`` slots and the last slot sent."""
    await client.connect()
    schedules = _schedules(client)
    try:
        infos = await schedules.list(count=count)
    except ConfigError as exc:  # a stored schedule this process cannot read (cronsim missing)
        raise WebError(501, f"schedules cannot be read here: {exc}") from None
    return {"items": [jsonable(info.to_json()) for info in infos]}


async def set_schedule_paused(client: Client, schedule_id: str, paused: bool) -> dict[str, Any]:
    """Pause or resume a schedule (:class:`paota.scheduler.Schedules`); 404 when there is none
    of that id, 400 for an id that cannot be one."""
    from paota.scheduler.schedule import check_id

    await client.connect()
    try:
        check_id(schedule_id)
    except ConfigError as exc:
        raise bad("schedule_id", str(exc)) from None
    schedules = _schedules(client)
    try:
        if paused:
            await schedules.pause(schedule_id)
        else:
            await schedules.resume(schedule_id)
    except ConfigError as exc:
        raise WebError(404, f"schedule_id: {exc}", field="schedule_id") from None
    schedule = await schedules.get(schedule_id)
    return {"id": schedule_id, "paused": bool(schedule.paused) if schedule is not None else paused}
