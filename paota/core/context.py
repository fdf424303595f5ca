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
import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from paota.core.delivery_info import DeliveryInfo
from paota.core.errors import PaotaError, TaskCancelledError

if TYPE_CHECKING:
    from paota.core.message import Signature
    from paota.core.state import TaskState

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


#: The longest progress message a task may report.
PROGRESS_MESSAGE_MAX = 1000


class ProgressSink(Protocol):
    """Where a run's progress goes (the pool's progress writer, see
    :mod:`paota.middleware.progress`)."""

    async def write(self, task: TaskContext, fraction: float, message: str) -> None:
        """Record ``fraction`` and ``message`` for ``task`` (rate-limited, last one wins)."""
        ...

    def write_threadsafe(self, task: TaskContext, fraction: float, message: str) -> None:
        """:meth:`write` from any thread, without waiting for it."""
        ...


def check_progress(fraction: Any, message: Any) -> tuple[float, str]:
    """``(fraction, message)`` if they are a progress report, else TypeError / ValueError saying
    what is wrong and what is allowed."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise TypeError(
            f"progress must be a number from 0 to 1, not {type(fraction).__name__} {fraction!r}"
        )
    if not math.isfinite(fraction) or not 0 <= fraction <= 1:
        raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
    if not isinstance(message, str):
        raise TypeError(f"a progress message must be a str, not {type(message).__name__}")
    if len(message) > PROGRESS_MESSAGE_MAX:
        raise ValueError(
            f"a progress message is at most {PROGRESS_MESSAGE_MAX} characters, got {len(message)}"
        )
    return float(fraction), message


class TaskContext:
    """One delivery of one task on a worker: what it is, where it came from, and room for
    middleware to keep per-run data (``data``).

    ``attempt`` is the signature's ``retries_done`` (0 for the first run), ``queue`` the queue the
    message was consumed from, ``headers`` the message headers (read-only), ``worker`` the name of
    the pool running it.

    A running task reports its progress with ``await progress(0.4, "resized 4 of 10")`` (or
    :meth:`progress_nowait` from a sync task's thread), and learns that it was cancelled from
    :attr:`cancelled` / :meth:`raise_if_cancelled` (see :meth:`paota.Client.cancel`).
    """

    __slots__ = (
        "_cancel_reason",
        "_cancel_sent",
        "_cancel_target",
        "_info",
        "_log_extra",
        "_progress",
        "_record",
        "data",
        "headers",
        "queue",
        "signature",
        "started_at",
        "worker",
    )

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
        self._info: DeliveryInfo | None = None
        self._log_extra: dict[str, Any] | None = None
        # Set by the runner while the task runs (see paota.core.runner): why it was cancelled,
        # the asyncio task to cancel, the one that was cancelled, where progress goes.
        self._cancel_reason: str | None = None
        self._cancel_target: Any = None
        self._cancel_sent: Any = None
        self._progress: ProgressSink | None = None
        # The STARTED record the pool wrote for this run: a progress report is that record with
        # the progress fields.
        self._record: TaskState | None = None

    @property
    def started_record(self) -> TaskState | None:
        """The STARTED record the pool wrote for this run (None without a store): a progress
        report is this record with the progress fields."""
        return self._record

    @property
    def progress_sink(self) -> ProgressSink | None:
        """Where the run's progress reports go while it runs (None: before and after it)."""
        return self._progress

    @property
    def info(self) -> DeliveryInfo:
        """What the delivery's paota headers say (replays, returns, workflow links), read once."""
        info = self._info
        if info is None:
            info = self._info = DeliveryInfo.of(self.headers)
        return info

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled (thread-safe: a sync task polls it)."""
        return self._cancel_reason is not None

    @property
    def cancel_reason(self) -> str | None:
        """Why the run was cancelled (None while it is not)."""
        return self._cancel_reason

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~paota.TaskCancelledError` if the run was cancelled (for sync tasks,
        which cannot be interrupted: call it between steps)."""
        reason = self._cancel_reason
        if reason is not None:
            raise TaskCancelledError(reason)

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report progress: ``fraction`` done (0 to 1) and what is going on; the store's record
        of the task shows it (``state.progress``, ``state.progress_message``) while it runs.

        Writes are rate-limited (at most one per task every 0.5 s; the last report wins and is
        written when the interval is over). Without a store it does nothing. Raises TypeError /
        ValueError for a fraction outside 0..1 or a message that is not a str of at most 1,000
        characters.
        """
        fraction, message = check_progress(fraction, message)
        self.raise_if_cancelled()
        sink = self._progress
        if sink is not None:
            await sink.write(self, fraction, message)
            # A write the store refused because the task was cancelled tells the task here.
            self.raise_if_cancelled()

    def progress_nowait(self, fraction: float, message: str = "") -> None:
        """:meth:`progress` without waiting for the write: thread-safe, for sync tasks."""
        fraction, message = check_progress(fraction, message)
        sink = self._progress
        if sink is not None:
            sink.write_threadsafe(self, fraction, message)

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
