"""The name of an outcome as metrics and traces report it (no third-party imports here)."""

from __future__ import annotations

from paota.core.outcome import (
    Cancelled,
    Defer,
    Drop,
    Duplicate,
    Outcome,
    Park,
    Retry,
    Return,
    Succeeded,
)
from paota.core.state import TaskStatus

__all__ = ["outcome_label"]


def outcome_label(outcome: Outcome) -> str:
    """``succeeded``, ``retried``, ``failed`` / ``timed_out`` (a park, by the status recorded),
    ``throttled`` (a :class:`~paota.Defer` with reason ``"throttled"``), ``deferred`` (any other
    deferral: an ETA not reached), ``cancelled``, ``duplicate``, ``returned`` or ``dropped``."""
    kind = type(outcome)
    if kind is Succeeded:
        return "succeeded"
    if kind is Retry:
        return "retried"
    if isinstance(outcome, Park):
        return "timed_out" if outcome.status is TaskStatus.TIMED_OUT else "failed"
    if isinstance(outcome, Defer):
        return "throttled" if outcome.reason == "throttled" else "deferred"
    if kind is Cancelled:
        return "cancelled"
    if kind is Duplicate:
        return "duplicate"
    if kind is Return:
        return "returned"
    if kind is Drop:
        return "dropped"
    return type(outcome).__name__.lower()  # pragma: no cover - every Outcome is listed above
