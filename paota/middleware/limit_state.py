"""What a worker keeps in memory for each limited task (:mod:`paota.middleware.limits`): the
slots its runs hold here (:class:`Hold`), and in :class:`TaskLimit` the per-worker rate
reservation, the mean run time and lateness that pace deferrals, and the task's counts.
"""

from __future__ import annotations

import random
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from paota.middleware.limit_options import parse_rate

if TYPE_CHECKING:
    from paota.core.tasks import Task
    from paota.middleware.limits import LimitStats

__all__ = [
    "DEFAULT_RUN_ESTIMATE_S",
    "JITTER",
    "MAX_GRACE_S",
    "MIN_THROTTLE_DELAY_S",
    "Hold",
    "TaskLimit",
]

#: Before a task has finished once here, a run is assumed to take this long (pacing deferrals).
DEFAULT_RUN_ESTIMATE_S = 1.0
#: The shortest concurrency deferral.
MIN_THROTTLE_DELAY_S = 0.01
#: Deferrals are stretched or shrunk by up to this fraction, so workers do not fall into step.
JITTER = 0.1
#: A copy that comes back later than this after its reserved start always takes a new one.
MAX_GRACE_S = 1.0


class Hold:
    """One run's slot. It lives in the run's :attr:`TaskContext.data`; a slot set holds it
    weakly, so a run whose delivery ends by a path that releases nothing (the pool stopping
    between ``admit`` and the run) frees its local slot when it is forgotten, and its global
    slot stops being renewed and expires."""

    __slots__ = ("__weakref__", "holder", "limit", "lost", "released")

    def __init__(self, limit: TaskLimit, holder: str) -> None:
        self.limit = limit
        self.holder = holder
        self.released = False
        self.lost = False


class TaskLimit:
    """The limits of one task and the state this worker keeps for them (``stats``: its
    counts)."""

    def __init__(self, task: Task[Any, Any], stats: LimitStats) -> None:
        self.name = task.name
        options = task.options
        self.max_concurrency: int | None = options.get("max_concurrency")
        rate = options.get("rate")
        self.rate = None if rate is None else parse_rate(rate)
        self.scope: str = options.get("limit_scope") or "worker"
        self.is_global = self.scope == "global"
        self.slot_key = f"limits:{task.name}:concurrency"
        self.rate_key = f"limits:{task.name}:rate"
        self.holds: weakref.WeakSet[Hold] = weakref.WeakSet()
        self.next_start: datetime | None = None  # worker scope
        self.horizon = 0.0  # when the last concurrency deferral is due back (monotonic)
        self.run_estimate_s: float | None = None
        self.late_s = 0.0  # how late reserved copies usually come back (mean)
        self.stats = stats

    def describe(self) -> str:
        """The limits, as the pool's log says them (``max_concurrency=3, rate=10/s per
        worker``)."""
        parts = []
        if self.max_concurrency is not None:
            parts.append(f"max_concurrency={self.max_concurrency}")
        if self.rate is not None:
            parts.append(f"rate={self.rate.text}")
        return f"{', '.join(parts)} per {self.scope}"

    def reserve_local(self, now: datetime) -> float:
        """The worker-scope twin of ``Coordination.reserve_start``."""
        assert self.rate is not None
        last = self.next_start
        step = timedelta(seconds=self.rate.interval_s)
        start = now if last is None or last + step <= now else last + step
        self.next_start = start
        return (start - now).total_seconds()

    def grace_s(self) -> float:
        """How late a copy may come back and still start on its reservation: one interval, or
        twice the usual lateness when the broker delivers later than that (so that a slow broker
        does not make every copy miss its start and take a new one, for ever), at most
        :data:`MAX_GRACE_S`."""
        assert self.rate is not None
        return min(MAX_GRACE_S, max(self.rate.interval_s, 2 * self.late_s))

    def observe_lateness(self, late_s: float) -> None:
        """Fold how late one reserved copy came back into the mean (each sample at most
        :data:`MAX_GRACE_S`, so a burst of stale copies moves it little)."""
        self.late_s = 0.9 * self.late_s + 0.1 * min(max(late_s, 0.0), MAX_GRACE_S)

    def observe(self, duration_s: float) -> None:
        """Fold one run's duration into the mean that paces concurrency deferrals."""
        duration_s = min(max(duration_s, 0.0), 60.0)
        estimate = self.run_estimate_s
        self.run_estimate_s = duration_s if estimate is None else 0.8 * estimate + 0.2 * duration_s

    def concurrency_delay(self, now: float, max_delay_s: float, rng: random.Random) -> float:
        """When to try again with every slot taken: one slot's worth of time after the last
        delivery deferred (slots come free every ``run time / max_concurrency`` seconds), so
        throttled deliveries come back one after the other instead of all at once."""
        assert self.max_concurrency is not None
        estimate = self.run_estimate_s
        step = (DEFAULT_RUN_ESTIMATE_S if estimate is None else estimate) / self.max_concurrency
        self.horizon = min(max(self.horizon, now) + step, now + max_delay_s)
        delay = (self.horizon - now) * rng.uniform(1 - JITTER, 1 + JITTER)
        return max(MIN_THROTTLE_DELAY_S, delay)
