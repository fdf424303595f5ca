"""Per-queue counters of what a worker did, for the dashboard's charts: :class:`QueueCounters`.

A worker's heartbeat record carries them (``queue_stats``), cumulative since the worker started:
per queue, the runs that succeeded, were retried, failed for good, timed out or were cancelled,
and a histogram of how long the runs took (``runtime_ms``: counts per bucket of
:data:`RUNTIME_BOUNDS_MS`, the last bucket for longer runs). A reader that samples the records
(the dashboard, :mod:`paota.web.monitor`) turns the differences between two samples into rates and
runtime percentiles; the counters cost a worker a few increments per task and one small field in a
record it writes anyway.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from paota.core.outcome import Cancelled, Outcome, Park, Retry, Succeeded
from paota.core.state import TaskStatus

__all__ = [
    "COUNTS",
    "RUNTIME_BOUNDS_MS",
    "QueueCounters",
    "counts_of",
    "percentile",
    "runtime_buckets",
]

#: Upper bounds (milliseconds) of the runtime buckets; a last bucket holds the longer runs.
RUNTIME_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
)  # fmt: skip
#: The counts each queue has, in this order.
COUNTS = ("succeeded", "retried", "failed", "timed_out", "cancelled")


class QueueCounters:
    """Cumulative counts and runtime histograms, per queue."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[str, dict[str, Any]] = {}

    def count(
        self, queue: str, outcome: Outcome, started_at: datetime | None, now: datetime
    ) -> None:
        """Count one settled delivery of ``queue``: its outcome, and how long it ran when it did."""
        kind = type(outcome)
        if kind is Succeeded:
            name = "succeeded"
        elif kind is Retry:
            name = "retried"
        elif isinstance(outcome, Park):
            name = "timed_out" if outcome.status is TaskStatus.TIMED_OUT else "failed"
        elif kind is Cancelled:
            name = "cancelled"
        else:
            return  # deferred, returned, dropped, a duplicate: nothing ran
        counts = self._queues.get(queue)
        if counts is None:
            counts = self._queues[queue] = {
                **dict.fromkeys(COUNTS, 0),
                "runtime_ms": [0] * (len(RUNTIME_BOUNDS_MS) + 1),
            }
        counts[name] += 1
        if started_at is not None:
            ms = (now - started_at).total_seconds() * 1000.0
            counts["runtime_ms"][bisect.bisect_left(RUNTIME_BOUNDS_MS, ms)] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The counters as a heartbeat record holds them (copies)."""
        return {
            queue: {**counts, "runtime_ms": list(counts["runtime_ms"])}
            for queue, counts in self._queues.items()
        }


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a runtime histogram, in milliseconds, interpolated within its
    bucket (None when it is empty; the last, open bucket gives twice its lower bound)."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = RUNTIME_BOUNDS_MS[index - 1] if index > 0 else 0.0
            high = RUNTIME_BOUNDS_MS[index] if index < len(RUNTIME_BOUNDS_MS) else 2 * low
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return float(RUNTIME_BOUNDS_MS[-1])


def runtime_buckets(value: Any) -> list[int] | None:
    """A record's ``runtime_ms`` read defensively: a list of as many non-negative ints as there
    are buckets, else None."""
    if not isinstance(value, list) or len(value) != len(RUNTIME_BOUNDS_MS) + 1:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return None
    return list(value)


def counts_of(value: Any) -> dict[str, int] | None:
    """A record's per-queue counts read defensively, else None."""
    if not isinstance(value, Mapping):
        return None
    found = {}
    for name in COUNTS:
        count = value.get(name, 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return None
        found[name] = count
    return found
