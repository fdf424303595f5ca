"""What happens to a delivery, as a value: the :data:`Outcome` types and the decisions.

Two pure functions decide, from the message and the facts (the time, the config, whether the task
is known, what the run gave), never from I/O: :func:`admit` before a task runs (run it, or defer,
return, drop or park it without running) and :func:`decide` after it ran (succeeded, retry, park,
cancelled). :func:`paota.core.settle.Settler.settle` then carries the outcome out, always in the
same order: publish, record, hooks, ack.

============== ===================================================== ==============
outcome        what settle does                                      store status
============== ===================================================== ==============
Succeeded      ack                                                   SUCCEEDED
Retry          republish with ``retries_done + 1`` after the delay   RETRYING
Defer          republish unchanged after the delay (an ETA not yet   (unchanged)
               reached, a throttled task), plus the headers it
               carries; never counts as a retry
Return         republish for another worker, ``x-paota-returns`` + 1 (unchanged)
Park           copy to a parking queue with the reason               FAILED / TIMED_OUT
Drop           ack and forget (``ignore_when_task_not_registered``)  (unchanged)
Duplicate      ack (a redelivery of a finished run)                  (unchanged)
Cancelled      ack (the task was cancelled)                          CANCELLED
============== ===================================================== ==============
"""

from __future__ import annotations

import traceback as traceback_module
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from paota.core.bounds import BadHeaders, MessageTooLarge
from paota.core.errors import DecodeError, TaskCancelledError, TaskTimeoutError
from paota.core.message import Signature
from paota.core.protocols import MAX_DELAY_S, ParkQueue, ParkReason
from paota.core.state import ErrorInfo, TaskStatus

__all__ = [
    "Cancelled",
    "Defer",
    "Drop",
    "Duplicate",
    "Outcome",
    "Park",
    "Retry",
    "Return",
    "Succeeded",
    "admit",
    "decide",
    "error_info",
    "fibonacci_backoff_s",
    "internal_error",
    "unreadable",
    "until",
]

TRACEBACK_LIMIT = 4000


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The task returned ``result``."""

    result: Any


@dataclass(frozen=True, slots=True)
class Retry:
    """The attempt failed with ``error``; run attempt ``attempt`` after ``delay_s`` seconds."""

    delay_s: float
    attempt: int
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Defer:
    """Not now: publish the message again, unchanged, after ``delay_s`` seconds. ``reason`` says
    why (``"eta"``, ``"throttled"``, ...); a deferral is never a retry. ``headers``, when given,
    are set on the deferred copy on top of the message's own (a rate limiter notes the start it
    reserved there)."""

    delay_s: float
    reason: str = "eta"
    headers: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Return:
    """No task of that name here: send it back for another worker (the ``returns``-th time)."""

    delay_s: float
    returns: int


@dataclass(frozen=True, slots=True)
class Park:
    """The message cannot run: copy it to ``queue`` with ``reason``; ``status`` is recorded."""

    queue: ParkQueue
    reason: ParkReason
    error: ErrorInfo
    status: TaskStatus


@dataclass(frozen=True, slots=True)
class Drop:
    """Acknowledge and forget (the message asked for it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A redelivery of a run the store has as finished (or moved on): acknowledge only."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The task was cancelled (``reason`` says by whom or why): acknowledge, record CANCELLED."""

    reason: str


Outcome: TypeAlias = Succeeded | Retry | Defer | Return | Park | Drop | Duplicate | Cancelled
"""Every way a delivery can end."""

#: Outcomes after which the run is over (``on_success`` / ``on_failure`` fire).
FINAL = (Succeeded, Park, Cancelled)


def fibonacci_backoff_s(attempt: int, cap_s: float) -> float:
    """The retry delay before retry number ``attempt`` (1-based): 1, 1, 2, 3, 5, 8 ... capped."""
    a, b = 1, 1
    for _ in range(max(0, attempt - 1)):
        a, b = b, a + b
        if a >= cap_s:
            return cap_s
    return float(min(a, cap_s))


def until(eta: datetime, now: datetime) -> float:
    """Seconds from ``now`` to ``eta``, within what a broker delays (a later ETA is deferred again
    when the message comes back early)."""
    return min(max(0.0, (eta - now).total_seconds()), float(MAX_DELAY_S))


def error_info(exc: BaseException) -> ErrorInfo:
    """The exception's type name, message and (last 4,000 characters of) traceback."""
    tb = "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(type(exc).__name__, str(exc), tb[-TRACEBACK_LIMIT:])


def admit(
    sig: Signature,
    *,
    now: datetime,
    registered: bool,
    returns: int,
    max_returns: int,
    known: str = "",
) -> Outcome | None:
    """Whether a decoded message may run now: None (run it) or the outcome that replaces the run.

    In order: an unknown task is dropped (``ignore_when_task_not_registered``), returned for
    another worker (``returns`` < ``max_returns``, delays 1, 2, 3 ... s) or parked
    (``unknown-task``; ``known`` lists this worker's tasks for the message); an ``eta`` in the
    future is deferred to it; a task that waited longer than ``task_timeout`` seconds since it was
    due (the later of ``created_at`` and ``eta``) is parked in the timeout queue
    (``start-deadline``) without running.
    """
    if not registered:
        if sig.ignore_when_task_not_registered:
            return Drop("no such task registered (ignore_when_task_not_registered)")
        if returns < max_returns:
            return Return(float(returns + 1), returns + 1)
        unknown = LookupError(
            f"no worker has a task named {sig.name!r} (returned {returns} times; "
            f"this worker knows: {known or 'nothing'})"
        )
        return Park(
            ParkQueue.FAILED, ParkReason.UNKNOWN_TASK, error_info(unknown), TaskStatus.FAILED
        )
    eta = sig.eta
    if eta is not None and eta > now:
        return Defer(until(eta, now), "eta")
    if sig.task_timeout > 0:
        due = sig.created_at or now
        if eta is not None and eta > due:
            due = eta
        waited_s = (now - due).total_seconds()
        if waited_s > sig.task_timeout:
            error = TaskTimeoutError(
                f"waited {waited_s:.3f}s to start, over the {sig.task_timeout}s start deadline"
            )
            return Park(
                ParkQueue.TIMEOUT,
                ParkReason.START_DEADLINE,
                error_info(error),
                TaskStatus.TIMED_OUT,
            )
    return None


def decide(
    sig: Signature,
    exc: BaseException | None,
    result: Any = None,
    *,
    retry_backoff_cap_s: float,
    retryable: bool = True,
) -> Outcome:
    """The outcome of a run that returned ``result`` (``exc`` None) or raised ``exc``.

    A failure is retried while ``retries_done < retry_count`` (and ``retryable``), after a
    Fibonacci backoff capped at ``retry_backoff_cap_s``; then it is parked: an execution timeout
    (:class:`~paota.TaskTimeoutError`) in the timeout queue (``exec-timeout``, TIMED_OUT), anything
    else in the failed queue (``retries-exhausted``, FAILED). Arguments that do not fit the task
    (:class:`~paota.BindError`) park at once (``bad-arguments``). A cancelled run
    (:class:`~paota.TaskCancelledError`) is :class:`Cancelled`, never retried.
    """
    if exc is None:
        return Succeeded(result)
    if isinstance(exc, TaskCancelledError):
        return Cancelled(exc.reason)
    from paota.core.errors import BindError

    if isinstance(exc, BindError):
        return Park(ParkQueue.FAILED, ParkReason.BAD_ARGUMENTS, error_info(exc), TaskStatus.FAILED)
    error = error_info(exc)
    if retryable and sig.retries_done < sig.retry_count:
        attempt = sig.retries_done + 1
        return Retry(fibonacci_backoff_s(attempt, retry_backoff_cap_s), attempt, error)
    if isinstance(exc, TaskTimeoutError):
        return Park(ParkQueue.TIMEOUT, ParkReason.EXEC_TIMEOUT, error, TaskStatus.TIMED_OUT)
    return Park(ParkQueue.FAILED, ParkReason.RETRIES_EXHAUSTED, error, TaskStatus.FAILED)


def unreadable(exc: DecodeError) -> Park:
    """The outcome of a delivery that cannot be read: parked ``too-large``, ``bad-headers`` or
    ``undecodable`` (by the error), FAILED."""
    reason = (
        ParkReason.TOO_LARGE
        if isinstance(exc, MessageTooLarge)
        else ParkReason.BAD_HEADERS
        if isinstance(exc, BadHeaders)
        else ParkReason.UNDECODABLE
    )
    return Park(ParkQueue.FAILED, reason, error_info(exc), TaskStatus.FAILED)


def internal_error(exc: Exception) -> Park:
    """The outcome of a delivery whose handling failed on a bug (paota's, or a seam's), not on
    the message: parked ``internal-error`` with the traceback, to be looked at and replayed."""
    return Park(ParkQueue.FAILED, ParkReason.INTERNAL_ERROR, error_info(exc), TaskStatus.FAILED)
