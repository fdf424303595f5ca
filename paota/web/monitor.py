"""The dashboard's charts: :class:`Monitor` samples the deployment and keeps the last hour.

Every ``interval_s`` (5 s by default) the web process reads what it reads for its other pages
anyway: the broker's count of each queue (messages ready, consumers, the parking queues) and the
workers' heartbeat records, whose ``queue_stats`` are cumulative counters of each worker
(:mod:`paota.middleware.counters`). A sample keeps, per queue, the rates of runs that succeeded,
were retried, failed, timed out or were cancelled, and the runtime histogram of those runs (from
which the percentiles come), over each worker's latest beat interval, plus the depth at that
instant; and the parked counts. The differences are taken per worker, between its own beats, so a
worker that starts, stops or dies neither inflates nor hides anything: a new worker's first record
is its baseline, a gone one is dropped (see :meth:`Monitor.sample`).

What it keeps is bounded (``window_s / interval_s`` samples, 720 for an hour, each a few numbers
per queue), whatever the number of tasks: no task is cached. The history starts when the web
process starts, and each web process has its own. The counters come from heartbeats, so a worker
appears in the charts with its heartbeat interval's delay (``PAOTA_HEARTBEAT_INTERVAL``, 10 s by
default), and needs a store the web process shares with it (MongoDB); without one, the charts show
the queue depths only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from paota.client import Client
from paota.core.errors import BrokerError, StoreError
from paota.middleware.counters import (
    COUNTS,
    RUNTIME_BOUNDS_MS,
    counts_of,
    percentile,
    runtime_buckets,
)
from paota.web.params import WebError

__all__ = ["Monitor", "Sample"]

logger = logging.getLogger("paota.web.monitor")

_EMPTY_BUCKETS = len(RUNTIME_BOUNDS_MS) + 1
_ZERO_COUNTS = dict.fromkeys(COUNTS, 0)
_ZERO_BUCKETS = [0] * _EMPTY_BUCKETS


@dataclass
class _QueueSample:
    rates: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0.0))
    runtime_ms: list[int] = field(default_factory=lambda: [0] * _EMPTY_BUCKETS)
    ready: int | None = None
    consumers: int | None = None

    def add(self, rates: Mapping[str, float], buckets: list[int]) -> None:
        for name in COUNTS:
            self.rates[name] += rates[name]
        for index, count in enumerate(buckets):
            self.runtime_ms[index] += count


@dataclass
class Sample:
    """The deployment at ``at``: per queue, the rates and runtimes of the workers' latest beat
    intervals and the depth; the parked counts; how many workers reported."""

    at: datetime
    queues: dict[str, _QueueSample]
    parked: dict[str, int]
    workers: int

    def to_json(self) -> dict[str, Any]:
        """The sample as ``/api/monitor`` answers it: rates per second, percentiles in ms."""
        queues: dict[str, Any] = {}
        for name, queue in self.queues.items():
            queues[name] = {
                **{f"{k}_per_s": round(v, 3) for k, v in queue.rates.items()},
                "runs_per_s": round(sum(queue.rates.values()), 3),
                "p50_ms": _ms(percentile(queue.runtime_ms, 0.50)),
                "p95_ms": _ms(percentile(queue.runtime_ms, 0.95)),
                "p99_ms": _ms(percentile(queue.runtime_ms, 0.99)),
                "ready": queue.ready,
                "consumers": queue.consumers,
            }
        return {
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "queues": queues,
            "parked": dict(self.parked),
            "workers": self.workers,
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class _Worker:
    """What the monitor knows of one worker: its counters at its last beat, and the rates and
    runtimes of its latest beat interval."""

    seen: datetime
    counts: dict[str, tuple[dict[str, int], list[int]]]
    latest: dict[str, tuple[dict[str, float], list[int]]] = field(default_factory=dict)


def _seen(doc: Mapping[str, Any]) -> datetime | None:
    text = doc.get("last_seen")
    if not isinstance(text, str):
        return None
    try:
        seen = datetime.fromisoformat(text)
    except ValueError:
        return None
    return seen if seen.tzinfo is not None else seen.replace(tzinfo=UTC)


def _queue_counts(doc: Mapping[str, Any]) -> dict[str, tuple[dict[str, int], list[int]]]:
    found: dict[str, tuple[dict[str, int], list[int]]] = {}
    stats = doc.get("queue_stats")
    if isinstance(stats, Mapping):
        for queue, value in stats.items():
            counts = counts_of(value)
            buckets = runtime_buckets(value.get("runtime_ms")) if counts is not None else None
            if isinstance(queue, str) and counts is not None and buckets is not None:
                found[queue] = (counts, buckets)
    return found


class Monitor:
    """Samples ``client``'s deployment every ``interval_s`` and keeps ``window_s`` of samples.

    :meth:`sample` takes one (a test calls it directly, on a virtual clock); :meth:`start` runs
    the loop in the background until :meth:`stop`. A sample the broker or the store could not
    answer is skipped (logged once per outage); the next one covers its time.
    """

    def __init__(
        self,
        client: Client,
        *,
        interval_s: float = 5.0,
        window_s: float = 3600.0,
        now: Any = None,
    ) -> None:
        self.client = client
        self.interval_s = float(interval_s)
        self.window_s = float(window_s)
        self._now = now or (lambda: datetime.now(UTC))
        self.samples: deque[Sample] = deque(maxlen=max(2, int(window_s / interval_s)))
        self._workers: dict[str, _Worker] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def sample(self) -> Sample | None:
        """Read the deployment once and record it.

        A worker's rates are its counters' growth between its own last two beats, divided by the
        time between them (its clock), so a sample between two beats shows the latest rates
        rather than nothing, and the next beat does not show twice as much. A worker whose beats
        stopped (more than two intervals ago) contributes nothing, though its record lives on
        until it expires."""
        from paota.web import ops

        try:
            docs = await ops.worker_docs(self.client) or []
            queues = (await ops.list_queues(self.client, docs=docs))["items"]
        except (BrokerError, StoreError, WebError) as exc:
            if not self._failing:
                logger.warning(
                    "dashboard charts: a sample failed (%s); skipping until it works", exc
                )
            self._failing = True
            return None
        self._failing = False
        at = self._now()
        sample = Sample(at, {}, {}, len(docs))
        workers: dict[str, _Worker] = {}
        for doc in docs:
            key, seen = str(doc.get("_key", "")), _seen(doc)
            if seen is None:
                continue
            counts = _queue_counts(doc)
            known = self._workers.get(key)
            if known is None or seen <= known.seen:
                worker = known or _Worker(seen, counts)  # new: its counts are the baseline
            else:
                seconds = (seen - known.seen).total_seconds()
                latest = {}
                for queue, (now_counts, now_buckets) in counts.items():
                    old_counts, old_buckets = known.counts.get(queue, (_ZERO_COUNTS, _ZERO_BUCKETS))
                    rates = {k: max(0, now_counts[k] - old_counts[k]) / seconds for k in COUNTS}
                    spread = [max(0, n - o) for n, o in zip(now_buckets, old_buckets, strict=True)]
                    latest[queue] = (rates, spread)
                worker = _Worker(seen, counts, latest)
            workers[key] = worker
            interval = doc.get("interval_s")
            if isinstance(interval, int | float) and (at - seen).total_seconds() > 2 * interval:
                continue  # its beats stopped: no current rate
            for queue, (rates, spread) in worker.latest.items():
                sample.queues.setdefault(queue, _QueueSample()).add(rates, spread)
        self._workers = workers
        for item in queues:
            kind = str(item.get("kind", ""))
            if kind.startswith("parking:"):
                sample.parked[kind.removeprefix("parking:")] = int(item.get("ready") or 0)
            else:
                depth = sample.queues.setdefault(str(item["name"]), _QueueSample())
                depth.ready = item.get("ready")
                depth.consumers = item.get("consumers")
        self.samples.append(sample)
        return sample

    def to_json(self) -> dict[str, Any]:
        """The samples of the window, oldest first."""
        samples = [s.to_json() for s in self.samples]
        return {
            "interval_s": self.interval_s,
            "window_s": self.window_s,
            "runtime_bounds_ms": list(RUNTIME_BOUNDS_MS),
            "samples": samples,
        }

    async def start(self) -> None:
        """Start sampling in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="paota-web-monitor")

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # never let the charts take the web process down
                logger.exception("dashboard charts: sampling failed")
            await asyncio.sleep(self.interval_s)
