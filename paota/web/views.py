"""What the API answers with: task records, parked messages and worker records as JSON objects.

Every value a store or a header hands over is made JSON-safe here (times as RFC 3339, bytes as
text, NaN and infinities as strings, anything else as its ``str``), so an odd result of a task can
never turn a read into a server error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from paota.core.protocols import REPLAYS_HEADER, Message, header_int, header_text
from paota.core.state import TaskState, TaskStatus

__all__ = [
    "call_text",
    "dumps",
    "jsonable",
    "parked_item",
    "task_detail",
    "task_summary",
    "worker_item",
]

_DEPTH = 64


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` with every part JSON can hold as it is, and the rest as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if depth >= _DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    return str(value)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of ``value`` (made :func:`jsonable` first)."""
    return json.dumps(jsonable(value), separators=(",", ":"), ensure_ascii=False).encode()


def _time(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: How much of a call (``resize(path="a.png", width=200)``) and of a result the task list shows.
CALL_CHARS = 200
VALUE_CHARS = 60
RESULT_CHARS = 120


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value_text(value: Any, limit: int) -> str:
    try:
        text = json.dumps(jsonable(value), ensure_ascii=False)
    except (TypeError, ValueError):  # pragma: no cover - jsonable gives JSON-safe values
        text = str(value)
    return _cut(text, limit)


def call_text(name: str, args: Any) -> str:
    """The task as its function was called, from the record's Go args:
    ``resize(path="a.png", width=200)``; arguments without a name are positional; long values
    and long calls are cut with an ellipsis."""
    parts = []
    for arg in args if isinstance(args, list) else []:
        if isinstance(arg, Mapping):
            arg_name, value = arg.get("Name"), arg.get("Value")
        else:
            arg_name, value = None, arg
        shown = _value_text(value, VALUE_CHARS)
        parts.append(f"{arg_name}={shown}" if isinstance(arg_name, str) and arg_name else shown)
    return _cut(f"{name}({', '.join(parts)})", CALL_CHARS)


def _runtime_s(state: TaskState) -> float | None:
    if state.started_at is None or state.finished_at is None:
        return None
    return max(0.0, (state.finished_at - state.started_at).total_seconds())


def task_summary(state: TaskState) -> dict[str, Any]:
    """A record as the task list shows it: the call, a preview of the result, the run time (no
    full args, result or traceback)."""
    error = state.error
    succeeded = state.status is TaskStatus.SUCCEEDED
    return {
        "id": state.task_id,
        "name": state.name,
        "status": state.status.value,
        "queue": state.queue,
        "attempts": state.attempts,
        "runs": state.attempts + (1 if state.started_at is not None else 0),
        "replays": state.replays,
        "worker": state.worker,
        "call": call_text(state.name, state.args),
        "result_preview": _value_text(state.result, RESULT_CHARS) if succeeded else None,
        "runtime_s": _runtime_s(state),
        "created_at": _time(state.created_at),
        "started_at": _time(state.started_at),
        "finished_at": _time(state.finished_at),
        "updated_at": _time(state.updated_at),
        "progress": state.progress,
        "progress_message": state.progress_message,
        "error": None if error is None else {"type": error.type, "message": error.message},
        "workflow_id": state.workflow_id,
        "parent_id": state.parent_id,
    }


def task_detail(state: TaskState) -> dict[str, Any]:
    """A record in full: the summary plus args, result, traceback and expiry."""
    detail = task_summary(state)
    error = state.error
    detail["args"] = jsonable(state.args)
    detail["result"] = jsonable(state.result)
    if error is not None:
        detail["error"] = {
            "type": error.type,
            "message": error.message,
            "traceback": error.traceback,
        }
    detail["expires_at"] = _time(state.expires_at)
    return detail


def parked_item(message: Message, name: str, args: Any) -> dict[str, Any]:
    """A parked message as the parking page shows it: who, why, when, from where."""
    headers = message.headers
    error = header_text(headers.get("x-paota-error"))
    error_type, _, error_message = error.partition(": ")
    return {
        "id": message.message_id or "",
        "name": name,
        "reason": header_text(headers.get("x-paota-reason")) or "(parked by another library)",
        "error": {"type": error_type, "message": error_message} if error else None,
        "traceback": header_text(headers.get("x-paota-traceback")),
        "worker": header_text(headers.get("x-paota-worker")),
        "parked_at": header_text(headers.get("x-paota-parked-at")) or None,
        "origin_queue": header_text(headers.get("x-paota-origin-queue")),
        "replays": header_int(headers.get(REPLAYS_HEADER)),
        "args": jsonable(args),
        "bytes": len(message.body),
    }


def worker_item(doc: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A worker's heartbeat record, read defensively (any field may be missing or odd), with
    ``late`` set when its last beat is more than one and a half intervals old."""
    queues = doc.get("queues")
    interval = doc.get("interval_s")
    seen_text = doc.get("last_seen")
    late = False
    if isinstance(seen_text, str) and isinstance(interval, int | float):
        try:
            seen = datetime.fromisoformat(seen_text)
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=UTC)
            late = (now - seen).total_seconds() > 1.5 * float(interval)
        except ValueError:
            late = False
    return {
        "key": str(doc.get("_key", "")),
        "name": str(doc.get("name", "")),
        "host": str(doc.get("host", "")),
        "pid": doc.get("pid") if isinstance(doc.get("pid"), int) else None,
        "queues": jsonable(queues) if isinstance(queues, Mapping) else {},
        "concurrency": doc.get("concurrency") if isinstance(doc.get("concurrency"), int) else None,
        "running": doc.get("running") if isinstance(doc.get("running"), int) else None,
        "tasks": [str(t) for t in doc.get("tasks", []) if isinstance(t, str)]
        if isinstance(doc.get("tasks"), list)
        else [],
        "started_at": doc.get("started_at") if isinstance(doc.get("started_at"), str) else None,
        "last_seen": seen_text if isinstance(seen_text, str) else None,
        "interval_s": interval if isinstance(interval, int | float) else None,
        "late": late,
        "stats": jsonable(doc.get("stats")) if isinstance(doc.get("stats"), Mapping) else {},
        "version": str(doc.get("version", "")),
    }
