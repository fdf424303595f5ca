"""What the management API does, on a :class:`~paota.Client`: read the store and the broker, and
act through the client's own public operations. Nothing here keeps a task in memory beyond the
request that asked for it: every answer is read afresh, so a restarted web process sees the same
history, and its memory does not grow with the number of tasks.

Each function raises :class:`~paota.web.params.WebError` for what the caller got wrong (400, 404,
409) or what the backends cannot do (501); :class:`~paota.BrokerError` and
:class:`~paota.StoreError` pass through (the app answers 503).
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from paota.client import Client
from paota.core.errors import ArgumentError, BindError, BrokerError, ConfigError, DecodeError
from paota.core.message import Arg, Signature, decode_message
from paota.core.protocols import (
    MAX_DELAY_S,
    REPLAYS_HEADER,
    ListCursor,
    Message,
    OutgoingMessage,
    ParkQueue,
    Store,
    has_coordination,
    has_queue_depths,
    has_queue_stats,
)
from paota.core.state import TaskState, TaskStatus, task_state
from paota.core.tasks import Task
from paota.web.params import (
    WebError,
    bad,
    check_fields,
    encode_cursor,
    opt_int,
    opt_number,
    opt_str,
)
from paota.web.views import jsonable, parked_item, task_detail, task_summary, worker_item

__all__ = [
    "browse_parked",
    "cancel_task",
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

#: Fields of a send request (``POST /api/tasks``).
SEND_FIELDS = frozenset(
    {
        "name",
        "args",
        "queue",
        "delay_s",
        "priority",
        "retry_count",
        "task_timeout",
        "id",
        "unchecked",
    }
)
#: Fields of a requeue request.
REQUEUE_FIELDS = frozenset({"reason", "task_ids", "limit"})


async def connected(client: Client) -> Store:
    """The client connected (idempotent), and its store; 501 without one."""
    await client.connect()
    store = client.store
    if store is None:
        raise WebError(
            501, "the management API needs a store (PAOTA_STORE=mongodb, or memory in-process)"
        )
    return store


# --- tasks ---------------------------------------------------------------------------------------


async def list_tasks(
    client: Client,
    *,
    status: TaskStatus | None,
    name: str | None,
    queue: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    cursor: ListCursor | None,
    limit: int,
) -> dict[str, Any]:
    """One page of records, newest first, and the cursor of the next page (None at the end)."""
    store = await connected(client)
    # One more than asked tells whether a next page exists without a second query.
    found = await store.list(
        status=status,
        name=name,
        queue=queue,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=limit + 1,
    )
    page = found[:limit]
    more = len(found) > limit
    return {
        "items": [task_summary(s) for s in page],
        "next_cursor": encode_cursor(ListCursor.of(page[-1])) if more and page else None,
    }


async def _record(store: Store, task_id: str) -> TaskState:
    state = await store.get(task_id)
    if state is None:
        raise WebError(404, f"task_id: no task {task_id[:200]!r} in the store", field="task_id")
    return state


async def get_task(client: Client, task_id: str) -> dict[str, Any]:
    """One record in full; 404 when the store has none."""
    store = await connected(client)
    return task_detail(await _record(store, task_id))


def _arg(value: Any, index: int) -> Arg:
    """One argument of a send: ``{"name", "type", "value"}`` (or Go's ``{"Name", "Type",
    "Value"}``, as records show them), else a value whose Go type is inferred."""
    field = f"args[{index}]"
    if isinstance(value, Mapping) and ("value" in value or "Value" in value):
        keys = ("name", "type", "value") if "value" in value else ("Name", "Type", "Value")
        check_fields(value, keys, f"field of {field}")
        name, type_, raw = (value.get(k) for k in keys)
        if name is None:
            name = ""
        if not isinstance(name, str):
            raise bad(f"{field}.name", "must be a string")
        if type_ is not None and not isinstance(type_, str):
            raise bad(f"{field}.type", "must be a Go type name such as int64 or string")
        if type_:
            return Arg(name, type_, raw)
        value = raw
    else:
        name = ""
    try:
        return Arg.of(value, name)
    except (TypeError, ValueError) as exc:
        raise bad(field, str(exc)) from None


async def send_task(client: Client, body: Mapping[str, Any]) -> dict[str, Any]:
    """Send a task by name: ``{"name", "args", "queue", "delay_s", "priority", "retry_count",
    "task_timeout", "id", "unchecked"}``.

    ``args`` is an array (an argument is a JSON value, its Go type inferred, or ``{"name",
    "type", "value"}``) or an object of arguments by name. When the app knows the task (it is
    registered on the pool or client the app serves), the arguments are bound to its function as
    a worker would bind them: a missing, extra or ill-typed argument is a 400 naming it, and
    nothing is sent; the task's defaults apply. A name the app does not know is a 400 when the
    app knows any task, unless ``"unchecked": true`` (a task only other workers run, a Go
    worker's say); an app that knows no task sends every name unchecked.
    """
    check_fields(body, SEND_FIELDS, "field")
    name = opt_str(body, "name")
    if not name:
        raise bad("name", "is required: the registered name of the task to send")
    if len(name) > 500:
        raise bad("name", "is longer than 500 characters")
    unchecked = body.get("unchecked", False)
    if not isinstance(unchecked, bool):
        raise bad("unchecked", "must be true or false")
    raw_args = body.get("args")
    if raw_args is None:
        raw_args = []
    if not isinstance(raw_args, list | Mapping):
        raise bad(
            "args",
            "must be an array of values or of {name, type, value} objects, or an object of "
            "arguments by name",
        )
    queue = opt_str(body, "queue", name_like=True)
    delay_s = opt_number(body, "delay_s", lo=0, hi=MAX_DELAY_S)
    priority = opt_int(body, "priority", lo=0, hi=255)
    retry_count = opt_int(body, "retry_count", lo=0, hi=1000)
    task_timeout = opt_int(body, "task_timeout", lo=0, hi=2**31 - 1)
    task_id = opt_str(body, "id", name_like=True) or ""
    task = client.registered_task(name)
    if task is None and client.task_names and not unchecked:
        known = ", ".join(client.task_names[:20])
        raise bad(
            "name",
            f"{name!r} is not a task this server knows (it knows {known}); send with "
            '"unchecked": true for a task that only other workers run',
            allowed=client.task_names,
        )
    if task is not None and not task.go_style:
        sig = _checked_signature(task, raw_args)
    else:
        if isinstance(raw_args, Mapping):
            args = [
                _arg({"name": str(k), "value": v}, i) for i, (k, v) in enumerate(raw_args.items())
            ]
        else:
            args = [_arg(value, i) for i, value in enumerate(raw_args)]
        sig = Signature(name, args=args, **_task_defaults(client, name))
    overrides = {
        field: value
        for field, value in (
            ("priority", priority),
            ("retry_count", retry_count),
            ("task_timeout", task_timeout),
        )
        if value is not None
    }
    sig = sig.replace(uuid=task_id, **overrides)
    store = client.store
    if task_id and store is not None and await store.get(task_id) is not None:
        raise WebError(409, f"id: a task {task_id!r} exists already", field="id")
    handle = await client.send_task(sig, queue=queue, delay_s=delay_s)
    return {"id": handle.id, "name": name, "queue": handle.queue}


def _checked_signature(task: Task[Any, Any], raw_args: list[Any] | Mapping[str, Any]) -> Signature:
    """The signature of ``task`` called with ``raw_args``, checked as its worker will bind it
    (with the task's defaults); a 400 naming what does not fit."""
    positional: list[Any] = []
    named: dict[str, Any] = {}
    if isinstance(raw_args, Mapping):
        named = {str(key): value for key, value in raw_args.items()}
    else:
        for index, value in enumerate(raw_args):
            arg = _arg(value, index)  # a value JSON cannot carry is a 400 naming its index
            if arg.name:
                named[arg.name] = arg.value
            else:
                positional.append(arg.value)
    function = inspect.signature(task.fn)
    shown = f"{task.name}({', '.join(_parameter(p) for p in function.parameters.values())})"
    try:
        function.bind(*positional, **named)
        sig = task.signature(*positional, **named).to_signature()
    except ArgumentError as exc:
        raise bad("args", f"{exc}; nothing was sent") from None
    except TypeError as exc:
        raise bad("args", f"do not fit {shown}: {exc}; nothing was sent") from None
    try:
        task.bind(sig)
    except BindError as exc:
        raise bad("args", f"do not fit {shown}: {exc}; nothing was sent") from None
    return sig


def _parameter(parameter: inspect.Parameter) -> str:
    """``width: int`` (an annotation written as text shows as written)."""
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return parameter.name
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    return f"{parameter.name}: {text or annotation}"


def _task_defaults(client: Client, name: str) -> dict[str, Any]:
    task = client.registered_task(name)
    if task is None:
        return {}
    defaults = task.defaults
    found = {
        "retry_count": defaults.retry_count,
        "task_timeout": defaults.task_timeout,
        "priority": defaults.priority,
    }
    return {k: v for k, v in found.items() if isinstance(v, int)}


async def retry_task(client: Client, task_id: str) -> dict[str, Any]:
    """Run a finished task again, as a new run of the same task id (``replays`` one higher).

    A failed or timed-out task whose message is still parked is requeued from its parking queue
    (body and headers as they were, the trace context included). Otherwise the message is rebuilt
    from the record: name, args and queue, the registered task's defaults for its options when
    this client knows the task. Either way the store records a new run (PENDING right away).
    409 for a task that has not finished.
    """
    store = await connected(client)
    state = await _record(store, task_id)
    if not state.status.is_final:
        raise WebError(
            409,
            f"task_id: task {task_id} is {state.status.value}; only a finished task (SUCCEEDED, "
            "FAILED, TIMED_OUT, CANCELLED) can be retried",
            field="task_id",
        )
    parked = {
        TaskStatus.FAILED: ParkQueue.FAILED,
        TaskStatus.TIMED_OUT: ParkQueue.TIMEOUT,
    }.get(state.status)
    if parked is not None:
        moved = await client.requeue_parked(parked, task_ids={task_id})
        if moved:
            return {"id": task_id, "replays": state.replays + 1, "from": "parked"}
    now = client.clock.now()
    replays = state.replays + 1
    try:
        args = [Arg(str(a.get("Name", "")), str(a["Type"]), a.get("Value")) for a in state.args]
    except (KeyError, TypeError, AttributeError):
        raise WebError(
            409, f"task_id: the record of {task_id} has arguments that cannot be sent again"
        ) from None
    options = _task_defaults(client, state.name)
    created = state.created_at or now
    sig = Signature(
        state.name,
        args=args,
        uuid=task_id,
        created_at=created,
        # A start deadline counts from the retry, as for a requeue.
        eta=now if options.get("task_timeout") else None,
        **options,
    )
    queue = state.queue or client.broker.default_queue
    # The new run's PENDING record first (the send's own, of replays 0, is refused by the store).
    await store.record(
        task_state(
            task_id,
            state.name,
            TaskStatus.PENDING,
            args=state.args,
            attempts=0,
            replays=replays,
            worker="",
            created_at=created,
            updated_at=now,
            queue=queue,
        )
    )
    await client.send_task(sig, queue=queue, headers={REPLAYS_HEADER: replays})
    return {"id": task_id, "replays": replays, "from": "record"}


async def cancel_task(client: Client, task_id: str, reason: str | None) -> dict[str, Any]:
    """Cancel a task that has not finished (:meth:`paota.Client.cancel`); 404 for a task the
    store does not have, 409 for one that finished."""
    store = await connected(client)
    state = await _record(store, task_id)
    if state.status.is_final:
        raise WebError(
            409,
            f"task_id: task {task_id} has finished ({state.status.value}); nothing to cancel",
            field="task_id",
        )
    cancel = getattr(client, "cancel", None)
    if cancel is None:  # pragma: no cover - a client without cancellation
        raise WebError(501, "this paota has no cancellation (Client.cancel)")
    cancelled = bool(await cancel(task_id, reason=reason))
    if not cancelled:
        raise WebError(409, f"task_id: task {task_id} finished meanwhile", field="task_id")
    return {"id": task_id, "cancelled": True}


async def delete_task(client: Client, task_id: str) -> None:
    """Delete a finished task's record; 409 for one that has not finished (its worker would
    record it again)."""
    store = await connected(client)
    state = await _record(store, task_id)
    if not state.status.is_final:
        raise WebError(
            409,
            f"task_id: task {task_id} is {state.status.value}; cancel it first, or wait until it "
            "finishes (a running task's worker would record it again)",
            field="task_id",
        )
    await store.delete(task_id)


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
