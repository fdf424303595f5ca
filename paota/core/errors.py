"""The paota error tree.

Every error paota raises derives from :class:`PaotaError`; driver errors (aiormq, pymongo) are
translated at the adapter boundary and chained with ``raise ... from exc``::

    PaotaError
    ├── ConfigError            invalid configuration (names the field/variable, value, what is allowed)
    ├── RegistrationError      a task could not be registered (not callable, name clash)
    ├── DecodeError            a message body could not be decoded (keeps the raw bytes)
    ├── BrokerError            the broker cannot be reached or misbehaved
    │   ├── PublishError       a publish was nacked, returned, or not confirmed
    │   └── TopologyError      a queue/exchange exists with different arguments
    ├── StoreError             the task-state store cannot be reached or failed a write
    ├── TaskTimeoutError       a task ran past its execution limit or waited past its start deadline
    ├── TaskCancelledError     a run was cancelled (raised inside it; its outcome is CANCELLED)
    ├── SendManyError          some tasks of a batch send were not sent (names which, and why)
    ├── ArgumentError          a task argument cannot travel in a message (also a TypeError)
    ├── BindError              a message's args do not fit the task's parameters (a TypeError)
    └── TaskError              about one task
        ├── TaskFailedError    the task ended FAILED, TIMED_OUT or CANCELLED (raised by ``result()``)
        └── ResultTimeoutError the result was not ready within the timeout
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ArgumentError",
    "BindError",
    "BrokerError",
    "ConfigError",
    "DecodeError",
    "PaotaError",
    "PublishError",
    "ReplyLostError",
    "RegistrationError",
    "ResultTimeoutError",
    "SendManyError",
    "StoreError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskTimeoutError",
    "TopologyError",
]


class PaotaError(Exception):
    """Root of every error paota raises."""


class ConfigError(PaotaError, ValueError):
    """Invalid configuration; the message names the field or variable, the value and what is allowed."""


class RegistrationError(PaotaError, ValueError):
    """A task could not be registered (not callable, or the name is taken by another function)."""


class ArgumentError(PaotaError, TypeError):
    """A task argument's value cannot travel in a message (not a JSON value, NaN, ...)."""


class BindError(PaotaError, TypeError):
    """A message's args do not fit the task's parameters (on a worker: parked ``bad-arguments``)."""


class DecodeError(PaotaError, ValueError):
    """A message could not be decoded into a :class:`~paota.Signature`.

    ``raw`` keeps the undecodable body and ``headers`` the message headers, so the message can be
    parked unchanged.
    """

    def __init__(self, message: str, raw: bytes, headers: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.headers: Mapping[str, Any] = dict(headers or {})


class BrokerError(PaotaError):
    """The broker cannot be reached, or it failed an operation."""


class PublishError(BrokerError):
    """A publish was negatively confirmed, returned as unroutable, or not confirmed in time."""


class TopologyError(BrokerError, ConfigError):
    """Declaring a queue or exchange clashed with an existing one: a configuration that does not
    match the broker. The message says which argument, which setting declares it, and how to
    migrate."""


class StoreError(PaotaError):
    """The task-state store cannot be reached or a write failed.

    ``permanent`` is True when trying again cannot help: the store refused this very write for
    good (a document over its size limit, a value it cannot encode, an integer out of its range).
    False (the default) for an outage: a connection, a timeout, no primary. Workers wait out an
    outage with the delivery unacked; a permanent refusal parks the delivery (``store-rejected``).
    """

    def __init__(self, message: str = "", *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class TaskTimeoutError(PaotaError, TimeoutError):
    """A task ran longer than ``Config.max_task_execution_duration_s``, or waited longer than its
    ``task_timeout`` to start. Recorded as the error of a TIMED_OUT task (and of a retried attempt).
    """


class SendManyError(PaotaError):
    """A batch send (``send_many``) could not send some of its tasks; the others were sent.

    ``sent`` holds the handles of the tasks the broker confirmed, in the order they were given;
    ``failed`` holds ``(index, signature, error)`` for each task that was not confirmed (its
    position in the batch, the :class:`~paota.Signature` with its task id, and what was raised:
    usually a :class:`PublishError` or a :class:`StoreError`). ``handles`` has one entry per
    task of the batch: its handle, or None where it failed. Sending the ``failed`` signatures
    again is safe: their ids are kept, and a task that did arrive after all is run once per copy
    (at-least-once), as for any send that raised.
    """

    def __init__(
        self, handles: Sequence[Any], failed: Sequence[tuple[int, Any, BaseException]]
    ) -> None:
        self.handles: list[Any] = list(handles)
        self.sent: list[Any] = [h for h in self.handles if h is not None]
        self.failed: list[tuple[int, Any, BaseException]] = list(failed)
        index, sig, error = self.failed[0]
        super().__init__(
            f"{len(self.failed)} of {len(self.handles)} tasks were not sent (the first: #{index} "
            f"{getattr(sig, 'uuid', '')} {getattr(sig, 'name', '')!r}: {type(error).__name__}: "
            f"{error}); {len(self.sent)} were sent and confirmed (see .sent and .failed)"
        )


class TaskCancelledError(PaotaError):
    """The run was cancelled: raised in a cancelled run (``current_task().raise_if_cancelled()``,
    or by the worker when a cancelled task ends), and raised by a task to cancel itself.

    Its outcome is CANCELLED, never a retry; ``reason`` says who cancelled it or why.
    """

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason


class TaskError(PaotaError):
    """An error about one task; ``task_id`` names it."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskFailedError(TaskError):
    """The task ended in FAILED, TIMED_OUT or CANCELLED; raised by ``result()``.

    ``status`` is the final status, ``error_type`` and ``error_message`` what the task raised (or why
    it was parked), ``traceback`` the (truncated) traceback when there is one.
    """

    def __init__(
        self,
        task_id: str,
        status: str,
        error_type: str,
        error_message: str,
        traceback: str = "",
    ) -> None:
        super().__init__(f"task {task_id} {status}: {error_type}: {error_message}", task_id)
        self.status = status
        self.error_type = error_type
        self.error_message = error_message
        self.traceback = traceback


class ResultTimeoutError(TaskError, TimeoutError):
    """The task had no final state within the timeout given to ``result()``."""


class ReplyLostError(PaotaError):
    """The reply path of this process was lost (a reconnection) before the task's reply came:
    its result is only in a store, if there is one (see :mod:`paota.core.replies`)."""
