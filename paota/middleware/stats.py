"""The pool's counters, as a middleware: :class:`PoolStats` and :class:`StatsMiddleware`."""

from __future__ import annotations

from dataclasses import dataclass

from paota.core.context import TaskContext
from paota.core.middleware import Middleware
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

__all__ = ["PoolStats", "StatsMiddleware"]


@dataclass
class PoolStats:
    """Counters of what a pool did since it was created: deliveries settled (``received``); tasks
    that succeeded, were retried, failed for good, timed out or were cancelled; unknown tasks
    returned for another worker or dropped; deliveries deferred (to their ETA, or throttled);
    duplicates of finished runs skipped."""

    received: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    timed_out: int = 0
    cancelled: int = 0
    returned: int = 0
    dropped: int = 0
    deferred: int = 0
    duplicates: int = 0


class StatsMiddleware(Middleware):
    """Counts every outcome into :attr:`stats`."""

    def __init__(self) -> None:
        self.stats = PoolStats()

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Count ``outcome``."""
        stats = self.stats
        stats.received += 1
        kind = type(outcome)
        if kind is Succeeded:
            stats.succeeded += 1
        elif kind is Retry:
            stats.retried += 1
        elif isinstance(outcome, Park):
            if outcome.status is TaskStatus.TIMED_OUT:
                stats.timed_out += 1
            else:
                stats.failed += 1
        elif kind is Defer:
            stats.deferred += 1
        elif kind is Return:
            stats.returned += 1
        elif kind is Drop:
            stats.dropped += 1
        elif kind is Duplicate:
            stats.duplicates += 1
        elif kind is Cancelled:
            stats.cancelled += 1
