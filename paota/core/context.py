"""The running task, as code inside it and middleware see it: :class:`TaskContext` and
:func:`current_task`.

The worker sets a :class:`TaskContext` in a :mod:`contextvars` variable around everything it does
for one delivery: middleware hooks, the task itself (async tasks inherit it; sync tasks get a copy
of the context in their thread) and logging. Every log record the worker writes about a task carries
``task_id`` and ``task_name`` as record attributes (``extra``); :class:`TaskLogFilter` adds them to
the records of any logger (your own, inside a task).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from paota.core.errors import PaotaError

if TYPE_CHECKING:
    from paota.core.message import Signature

__all__ = [
    "SCHEDULED_AT_HEADER",
    "SCHEDULE_HEADER",
    "SCHEDULE_TZ_HEADER",
    "NotInTaskError",
    "TaskContext",
    "TaskLogFilter",
    "current_task",
    "scheduled_time",
    "task_log_extra",
]


class NotInTaskError(PaotaError, LookupError):
    """:func:`current_task` was called outside a running task."""


class TaskContext:
    """One delivery of one task on a worker: what it is, where it came from, and room for
    middleware to keep per-run data (``data``).

    ``attempt`` is the signature's ``retries_done`` (0 for the first run), ``queue`` the queue the
    message was consumed from, ``headers`` the message headers (read-only), ``worker`` the name of
    the pool running it.
    """

    __slots__ = ("_log_extra", "data", "headers", "queue", "signature", "started_at", "worker")

    def __init__(
        self,
        signature: Signature,
        *,
        queue: str,
        headers: Mapping[str, Any],
        worker: str,
        started_at: datetime | None = None,
    ) -> None:
        self.signature = signature
        self.queue = queue
        self.headers = headers
        self.worker = worker
        self.started_at = started_at
        self.data: dict[str, Any] = {}
        self._log_extra: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """The task id (the signature's ``uuid``)."""
        return self.signature.uuid

    @property
    def name(self) -> str:
        """The task name."""
        return self.signature.name

    @property
    def attempt(self) -> int:
        """How many retries came before this run (``retries_done``)."""
        return self.signature.retries_done

    @property
    def schedule_id(self) -> str:
        """The id of the schedule that sent this run (a periodic task), else ``""``."""
        return str(self.headers.get(SCHEDULE_HEADER) or "")

    @property
    def scheduled_at(self) -> datetime | None:
        """The slot this run of a periodic task is for: its scheduled time, aware, in the
        schedule's time zone (the same on every retry); None when no schedule sent it."""
        return scheduled_time(self.headers)

    @property
    def log_extra(self) -> dict[str, Any]:
        """``{"task_id": ..., "task_name": ...}`` for ``logger.info(..., extra=...)``."""
        extra = self._log_extra
        if extra is None:
            extra = self._log_extra = task_log_extra(self.signature.uuid, self.signature.name)
        return extra

    def __repr__(self) -> str:
        return (
            f"<TaskContext {self.name} id={self.id!r} attempt={self.attempt} queue={self.queue!r}>"
        )


SCHEDULE_HEADER = "x-paota-schedule"
"""The id of the schedule that sent a periodic task's message."""
SCHEDULED_AT_HEADER = "x-paota-scheduled-at"
"""The slot a periodic task's message is for, ISO 8601 with the zone's offset."""
SCHEDULE_TZ_HEADER = "x-paota-schedule-tz"
"""The IANA time zone of the schedule."""


def scheduled_time(headers: Mapping[str, Any]) -> datetime | None:
    """The slot time the headers of a periodic task's message carry (aware, in the schedule's
    zone when it is known here), or None."""
    raw = headers.get(SCHEDULED_AT_HEADER)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    tz = headers.get(SCHEDULE_TZ_HEADER)
    if isinstance(tz, bytes):
        tz = tz.decode("utf-8", "replace")
    if isinstance(tz, str) and tz:
        from zoneinfo import ZoneInfo

        try:
            return at.astimezone(ZoneInfo(tz))
        except (ValueError, KeyError, OSError):  # an unknown zone here: keep the offset
            return at
    return at


_current: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("paota_current_task")


def current_task() -> TaskContext:
    """The task running in this context (in an async task, its thread for a sync task, or a hook).

    Raises :class:`NotInTaskError` outside a task.
    """
    try:
        return _current.get()
    except LookupError:
        raise NotInTaskError(
            "paota.current_task() was called outside a running task (only task code, the "
            "threads of sync tasks and middleware hooks run inside one)"
        ) from None


def set_current(ctx: TaskContext) -> contextvars.Token[TaskContext]:
    """Make ``ctx`` the current task (the worker does this); undo with :func:`reset_current`."""
    return _current.set(ctx)


def reset_current(token: contextvars.Token[TaskContext]) -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)


def task_log_extra(task_id: str, name: str) -> dict[str, Any]:
    """The ``extra`` of a log record about a task."""
    return {"task_id": task_id, "task_name": name}


class TaskLogFilter(logging.Filter):
    """A logging filter that adds ``task_id`` and ``task_name`` (empty outside a task) to every
    record, so a format like ``"%(task_id)s %(message)s"`` works for any logger::

        handler.addFilter(paota.TaskLogFilter())
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the fields (unless the record has them already); never drops a record."""
        if not hasattr(record, "task_id"):
            ctx = _current.get(None)
            record.task_id = ctx.id if ctx is not None else ""
            record.task_name = ctx.name if ctx is not None else ""
        return True
