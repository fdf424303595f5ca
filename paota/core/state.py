"""Task states as the store records them."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ErrorInfo", "TaskState", "TaskStatus", "may_replace", "task_state"]


class TaskStatus(str, enum.Enum):
    """Where a task is in its life. SUCCEEDED, FAILED, TIMED_OUT and CANCELLED are final."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """True for SUCCEEDED, FAILED, TIMED_OUT and CANCELLED."""
        return self in _FINAL

    @property
    def rank(self) -> int:
        """Order of the status within one attempt (final states outrank everything)."""
        return _RANK[self]


_FINAL = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED}
)
_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.STARTED: 1,
    TaskStatus.RETRYING: 2,
    TaskStatus.SUCCEEDED: 3,
    TaskStatus.FAILED: 3,
    TaskStatus.TIMED_OUT: 3,
    TaskStatus.CANCELLED: 3,
}


def may_replace(current: TaskState | None, new: TaskState) -> bool:
    """Whether ``new`` may overwrite ``current``: transitions never go backwards.

    Within one run (``replays``), a final record is never replaced, and otherwise the pair
    (attempts, status rank) must not decrease, so a redelivered duplicate cannot turn RETRYING of
    attempt 2 back into STARTED of attempt 1, nor SUCCEEDED into STARTED. A replay (a parked task
    moved back to the queue with ``paota requeue``) starts a new run that replaces the old one,
    final or not. Every store applies exactly this rule, atomically.
    """
    if current is None:
        return True
    if new.replays != current.replays:
        return new.replays > current.replays
    if current.status.is_final:
        return False
    return (new.attempts, new.status.rank) >= (current.attempts, current.status.rank)


@dataclass(frozen=True)
class ErrorInfo:
    """What went wrong: the exception type, its message and a (truncated) traceback."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class TaskState:
    """One task's record: status, attempts, result or error, who ran it and when.

    ``args`` is the argument list as on the wire (a list of ``{"Name", "Type", "Value"}`` dicts).
    ``attempts`` is the signature's ``retries_done`` at the time of the record, ``replays`` how
    many times the task was moved back from a parking queue. ``queue`` is the queue it was sent
    to (or consumed from). ``progress`` (0..1) and ``progress_message`` are what a running task
    last reported; ``expires_at`` is when a finished record may be removed (a per-task result
    lifetime); ``parent_id`` and ``workflow_id`` link a workflow step to its workflow. Times are
    aware UTC.
    """

    task_id: str
    name: str
    status: TaskStatus
    args: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attempts: int = 0
    replays: int = 0
    result: Any = None
    error: ErrorInfo | None = None
    worker: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    queue: str = ""
    progress: float | None = None
    progress_message: str = ""
    expires_at: datetime | None = None
    parent_id: str = ""
    workflow_id: str = ""

    def replace(self, **changes: Any) -> TaskState:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def task_state(
    task_id: str,
    name: str,
    status: TaskStatus,
    *,
    args: list[dict[str, Any]],
    attempts: int,
    replays: int,
    worker: str,
    created_at: datetime | None,
    updated_at: datetime,
    result: Any = None,
    error: ErrorInfo | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    queue: str = "",
    progress: float | None = None,
    progress_message: str = "",
    expires_at: datetime | None = None,
    parent_id: str = "",
    workflow_id: str = "",
) -> TaskState:
    """A :class:`TaskState` built without ``dataclasses`` overhead (the hot path writes two or three
    per task); the same as calling the constructor with these fields."""
    state = object.__new__(TaskState)
    object.__setattr__(
        state,
        "__dict__",
        {
            "task_id": task_id,
            "name": name,
            "status": status,
            "args": args,
            "attempts": attempts,
            "replays": replays,
            "result": result,
            "error": error,
            "worker": worker,
            "created_at": created_at,
            "started_at": started_at,
            "finished_at": finished_at,
            "updated_at": updated_at,
            "queue": queue,
            "progress": progress,
            "progress_message": progress_message,
            "expires_at": expires_at,
            "parent_id": parent_id,
            "workflow_id": workflow_id,
        },
    )
    return state
