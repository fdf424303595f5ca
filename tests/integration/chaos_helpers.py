"""Shared by the chaos tests (issue 7): configs for brokers of a test's own, counting task runs,
sending thousands of tasks, and the one-line report each test ends with.

Every chaos test ends with the same count: tasks sent (confirmed by the broker), run, lost (sent and
never run: must be 0), run twice (at-least-once redeliveries: reported, not failed) and the time to
recover from each fault (from the fault to the first task run after it, or to the broker answering
again). :meth:`ChaosCount.report` prints it as one line::

    CHAOS sigkill: tasks=4000 ran=4000 lost=0 duplicates=97 recover_s=6.8,9.5 delayed=2058 ...

straight to the terminal (past pytest's capture, when given the test's ``capsys``), and, when the
environment variable ``PAOTA_CHAOS_REPORT`` names a file, appends it there as one JSON object per
line (the README's table is filled from such a file).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from paota import Config, Signature, WorkerPool
from paota.core.config import AMQPConfig

__all__ = [
    "REPORT_ENV",
    "ChaosCount",
    "FileRuns",
    "Planned",
    "Runs",
    "SendFailure",
    "SendResult",
    "bounded",
    "chaos_config",
    "in_thread",
    "plan",
    "send_all",
    "wait_until",
]

REPORT_ENV = "PAOTA_CHAOS_REPORT"


def chaos_config(
    url: str | Sequence[str], *, config_fields: dict[str, Any] | None = None, **amqp: Any
) -> Config:
    """A Config for a broker of the test's own, with names unique to the call.

    The test's container goes away with everything in it, so nothing is deleted afterwards (in
    particular not the at-least-once delay ladder, see
    :func:`paota.brokers.amqp.topology.delete_ladder`).
    """
    suffix = uuid.uuid4().hex[:8]
    urls = [url] if isinstance(url, str) else list(url)
    fields: dict[str, Any] = {
        "url": urls[0],
        "urls": tuple(urls[1:]),
        "exchange": f"chaos_exchange_{suffix}",
        "delayed_queue": f"chaos_delayed_{suffix}",
        "failed_queue": f"chaos_failed_{suffix}",
        "timeout_queue": f"chaos_timeout_{suffix}",
        "connection_timeout_s": 15.0,  # a loaded machine may take over 5 s
        "publish_timeout_s": 30.0,
        **amqp,
    }
    top: dict[str, Any] = {"broker": "amqp", "task_queue_name": f"chaos_tasks_{suffix}"}
    top.update(config_fields or {})
    return Config(**top, amqp=AMQPConfig(**fields))


async def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str | Callable[[], str],
    *,
    poll_s: float = 0.05,
) -> float:
    """Wait until ``predicate()`` holds; fail with ``what`` after ``timeout_s``. Returns the time
    it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            message = what() if callable(what) else what
            raise AssertionError(f"after {timeout_s:g} s: {message}")
        await asyncio.sleep(poll_s)
    return time.monotonic() - started


class Runs:
    """Task runs counted in this process: how many times each id ran, and when (monotonic)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.times: list[float] = []
        self.last: dict[str, float] = {}

    def record(self, task_id: str) -> None:
        """One run of ``task_id`` finished now."""
        now = time.monotonic()
        self.counts[task_id] += 1
        self.times.append(now)
        self.last[task_id] = now

    @property
    def total(self) -> int:
        """Runs so far, duplicates included."""
        return len(self.times)

    def distinct(self) -> int:
        """Task ids that ran at least once."""
        return len(self.counts)

    def between(self, start: float, end: float) -> int:
        """Runs finished between ``start`` and ``end``."""
        return sum(1 for t in self.times if start <= t <= end)

    def first_after(self, moment: float) -> float | None:
        """The time of the first run finished after ``moment``, or None."""
        return next((t for t in self.times if t > moment), None)

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids of ``ids`` that did not run."""
        return [task_id for task_id in ids if task_id not in self.counts]

    async def wait_for_all(self, ids: Iterable[str], timeout_s: float) -> None:
        """Wait until every id of ``ids`` ran; fail naming how many did not."""
        wanted = set(ids)
        await wait_until(
            lambda: wanted.issubset(self.counts),
            timeout_s,
            lambda: (
                f"{len(self.missing(wanted))} of {len(wanted)} tasks did not run "
                f"(e.g. {sorted(self.missing(wanted))[:3]})"
            ),
        )

    async def wait_for_count(self, count: int, timeout_s: float) -> None:
        """Wait until ``count`` distinct tasks ran."""
        await wait_until(
            lambda: self.distinct() >= count,
            timeout_s,
            lambda: f"only {self.distinct()} of {count} tasks ran",
        )


class FileRuns:
    """Task runs counted across processes: one line ``TASK_ID PID UNIX_TIME`` per run, appended
    by the tasks to ``path`` with ``O_APPEND`` (one ``write`` per line, so lines never mix)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def lines(self) -> list[tuple[str, int, float]]:
        """Every complete line so far as (task id, pid, wall time)."""
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out.append((parts[0], int(parts[1]), float(parts[2])))
        return out

    def counts(self) -> collections.Counter[str]:
        """How many times each task id ran."""
        return collections.Counter(task_id for task_id, _, _ in self.lines())

    def first_by(self, pid: int) -> float | None:
        """The wall time of the first run by process ``pid``, or None."""
        return next((t for _, p, t in self.lines() if p == pid), None)


@dataclass(frozen=True)
class Planned:
    """One task to send: its id and its delay (0: immediate; else an ETA that many seconds after
    the moment it is sent)."""

    task_id: str
    delay_s: float = 0.0


def plan(
    count: int,
    *,
    delayed_fraction: float = 0.5,
    delay_s: tuple[float, float] = (0.5, 6.0),
    seed: int = 7,
    prefix: str = "chaos",
) -> list[Planned]:
    """``count`` tasks with fixed ids; ``delayed_fraction`` of them (spread through the list) with
    a delay drawn between ``delay_s`` seconds."""
    rng = random.Random(seed)
    return [
        Planned(
            f"{prefix}_{i:06d}",
            rng.uniform(*delay_s) if rng.random() < delayed_fraction else 0.0,
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class SendFailure:
    """A ``send_task`` that raised: the task, the error, when it started and how long it took."""

    task_id: str
    error: BaseException
    started: float
    elapsed_s: float


@dataclass
class SendResult:
    """What happened to each send: the confirmed ids (with when they were confirmed and, for
    delayed ones, when they are due, both monotonic), and the failures."""

    confirmed: list[str] = field(default_factory=list)
    confirmed_at: list[float] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)
    failed: list[SendFailure] = field(default_factory=list)
    started: int = 0

    def delayed_waiting(self) -> int:
        """Confirmed delayed tasks not due yet: they wait in the delay ladder."""
        now = time.monotonic()
        return sum(1 for due in self.due.values() if due > now)

    def first_confirmed_after(self, moment: float) -> float | None:
        """When the first send confirmed after ``moment`` was confirmed, or None."""
        return next((t for t in self.confirmed_at if t > moment), None)


async def send_all(
    producer: WorkerPool,
    tasks: Iterable[Planned],
    *,
    name: str = "work",
    in_flight: int = 200,
    rate_per_s: float | None = None,
    result: SendResult | None = None,
    tolerate: tuple[type[BaseException], ...] = (),
    stop: asyncio.Event | None = None,
) -> SendResult:
    """``send_task`` every planned task, ``in_flight`` at a time (at about ``rate_per_s`` when
    given; sends that wait slow the rate down, as they would a real producer). A send that raises
    one of ``tolerate`` is recorded as failed; any other error propagates. ``stop`` ends sending
    early. ``result`` is filled as sends complete, so another task can watch it."""
    result = result if result is not None else SendResult()
    pending = iter(tasks)
    interval_s = in_flight / rate_per_s if rate_per_s else 0.0

    async def sender() -> None:
        for task in pending:  # one iterator shared by the senders: each task is sent once
            if stop is not None and stop.is_set():
                return
            eta = None
            if task.delay_s > 0:
                eta = datetime.now(UTC) + timedelta(seconds=task.delay_s)
            started = time.monotonic()
            result.started += 1
            try:
                await producer.send_task(Signature(name, uuid=task.task_id, eta=eta))
            except tolerate as exc:
                result.failed.append(
                    SendFailure(task.task_id, exc, started, time.monotonic() - started)
                )
            else:
                result.confirmed.append(task.task_id)
                result.confirmed_at.append(time.monotonic())
                if task.delay_s > 0:
                    result.due[task.task_id] = started + task.delay_s
            if interval_s:
                await asyncio.sleep(interval_s)

    await asyncio.gather(*(sender() for _ in range(in_flight)))
    return result


@dataclass
class ChaosCount:
    """The count a chaos test ends with (see the module docs)."""

    test: str
    sent: int
    ran: int
    lost: int
    duplicates: int
    recover_s: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        test: str,
        confirmed: Iterable[str],
        counts: collections.Counter[str],
        recover_s: Iterable[float],
        **extra: Any,
    ) -> ChaosCount:
        """Count ``confirmed`` ids against the run ``counts``."""
        sent = set(confirmed)
        ran = {task_id for task_id in sent if counts[task_id] > 0}
        return cls(
            test=test,
            sent=len(sent),
            ran=len(ran),
            lost=len(sent - ran),
            duplicates=sum(counts[task_id] - 1 for task_id in ran),
            recover_s=[round(s, 2) for s in recover_s],
            extra=extra,
        )

    def line(self) -> str:
        """``CHAOS test: tasks=N lost=0 duplicates=D recover_s=a,b key=value ...``"""
        recover = ",".join(f"{s:.1f}" for s in self.recover_s) or "-"
        parts = [
            f"CHAOS {self.test}:",
            f"tasks={self.sent}",
            f"ran={self.ran}",
            f"lost={self.lost}",
            f"duplicates={self.duplicates}",
            f"recover_s={recover}",
        ]
        parts += [f"{key}={value}" for key, value in self.extra.items()]
        return " ".join(parts)

    def report(self, capsys: pytest.CaptureFixture[str] | None = None) -> ChaosCount:
        """Print :meth:`line` (to the terminal with ``capsys``: pytest shows it even with ``-q``)
        and append the JSON line to ``$PAOTA_CHAOS_REPORT`` when set."""
        if capsys is not None:
            with capsys.disabled():
                print(f"\n{self.line()}")
        else:
            print(f"\n{self.line()}")
        target = os.environ.get(REPORT_ENV)
        if target:
            record = {
                "test": self.test,
                "tasks": self.sent,
                "ran": self.ran,
                "lost": self.lost,
                "duplicates": self.duplicates,
                "recover_s": self.recover_s,
                **self.extra,
            }
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            with open(target, "a", encoding="utf-8") as out:
                out.write(json.dumps(record, sort_keys=False) + "\n")
        return self


async def in_thread(fn: Callable[..., Any], *args: Any, timeout_s: float = 120.0) -> Any:
    """Run a blocking call (docker, rabbitmqctl) in a thread, bounded in time."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout_s)


async def bounded(aw: Awaitable[Any], timeout_s: float, what: str) -> Any:
    """Await ``aw`` at most ``timeout_s``; fail with ``what`` (never hang)."""
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        raise AssertionError(f"{what}: still waiting after {timeout_s:g} s") from None
