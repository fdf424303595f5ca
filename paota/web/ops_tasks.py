"""What the management API does with tasks, on a :class:`~paota.Client`: list and read their
records, send a task by name (its arguments checked as its worker will bind them), retry, cancel
and delete one. :mod:`paota.web.ops` holds the operations on parking queues, queues, workers and
schedules, and re-exports these.

Each function raises :class:`~paota.web.params.WebError` for what the caller got wrong (400, 404,
409) or what the backends cannot do (501); :class:`~paota.BrokerError` and
:class:`~paota.StoreError` pass through (the app answers 503).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from paota.client import Client
from paota.core.errors import ArgumentError, BindError
from paota.core.message import Arg, Signature
from paota.core.protocols import MAX_DELAY_S, REPLAYS_HEADER, ListCursor, ParkQueue, Store
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
from paota.web.views import task_detail, task_summary

__all__ = [
    "SEND_FIELDS",
    "cancel_task",
    "connected",
    "delete_task",
    "get_task",
    "list_tasks",
    "retry_task",
    "send_task",
]

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


async def connected(client: Client) -> Store:
    """The client connected (idempotent), and its store; 501 without one."""
    await client.connect()
    store = client.store
    if store is None:
        raise WebError(
            501, "the management API needs a store (PAOTA_STORE=mongodb, or memory in-process)"
        )
    return store


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
