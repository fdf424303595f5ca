"""Progress of running tasks: ``await current_task().progress(0.4, "resized 4 of 10")``.

A report rewrites the run's STARTED record with ``progress`` (0 to 1) and ``progress_message``, so
``await handle.state()`` shows it from any process that reads the store. Writes are rate-limited
per run: at most one every :data:`MIN_INTERVAL_S` seconds; a report within the interval replaces
the one waiting, and the last one is written when the interval is over (last one wins). When the
run ends, a report still waiting is dropped: the final record replaces the STARTED one anyway
(final records carry no progress).

A progress write the store refuses means the record moved on: when it is CANCELLED, the run is
cancelled here (a sync task sees ``current_task().cancelled``; ``await progress(...)`` raises
:class:`~paota.TaskCancelledError`), which also reaches a task whose worker missed the broadcast.
A write that fails (the store is down) is logged and retried with the next report; it never fails
the task. :class:`ProgressMiddleware` has only ``startup`` and ``shutdown`` hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from paota.core.clock import Clock
from paota.core.context import TaskContext
from paota.core.errors import StoreError
from paota.core.middleware import Middleware
from paota.core.protocols import Store
from paota.core.runner import Runner
from paota.core.services import WorkerServices
from paota.core.state import TaskStatus

__all__ = ["MIN_INTERVAL_S", "ProgressMiddleware"]

logger = logging.getLogger("paota.middleware.progress")

#: At most one progress write per run every this many seconds.
MIN_INTERVAL_S = 0.5

_KEY = "paota.progress"


@dataclass(eq=False)
class _Reports:
    """One run's progress writing: what waits to be written, and when the next write may go."""

    pending: tuple[float, str] | None = None
    next_at: float = 0.0
    writing: bool = False
    timer: asyncio.TimerHandle | None = None


class ProgressMiddleware(Middleware):
    """Writes the progress runs report (the pool's runner hands it over, see
    :class:`~paota.core.context.ProgressSink`); installed when the pool has a store."""

    def __init__(self) -> None:
        self._store: Store | None = None
        self._clock: Clock | None = None
        self._runner: Runner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._interval_s = MIN_INTERVAL_S
        self._flushing: set[asyncio.Task[None]] = set()

    async def startup(self, services: WorkerServices) -> None:
        """Take the reports of the pool's runs."""
        runner = services.runner
        if services.store is None or not isinstance(runner, Runner):
            return
        self._store, self._clock, self._runner = services.store, services.clock, runner
        self._loop = asyncio.get_running_loop()
        self._interval_s = MIN_INTERVAL_S
        runner.progress_sink = self

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop taking reports; writes in flight finish."""
        runner = self._runner
        if runner is not None and runner.progress_sink is self:
            runner.progress_sink = None
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    # --- the sink --------------------------------------------------------------------------------

    async def write(self, task: TaskContext, fraction: float, message: str) -> None:
        """Write the report now, or keep it for when the interval is over."""
        reports = self._reports(task)
        reports.pending = (fraction, message)
        assert self._loop is not None
        if reports.writing or self._loop.time() < reports.next_at:
            self._schedule(task, reports)
            return
        await self._flush(task, reports)

    def write_threadsafe(self, task: TaskContext, fraction: float, message: str) -> None:
        """:meth:`write` from any thread (a sync task's), without waiting for the write."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
            loop.call_soon_threadsafe(self._write_soon, task, fraction, message)

    def _write_soon(self, task: TaskContext, fraction: float, message: str) -> None:
        reports = self._reports(task)
        reports.pending = (fraction, message)
        assert self._loop is not None
        if reports.writing or self._loop.time() < reports.next_at:
            self._schedule(task, reports)
        else:
            self._spawn(task, reports)

    # --- writing ---------------------------------------------------------------------------------

    @staticmethod
    def _reports(task: TaskContext) -> _Reports:
        reports = task.data.get(_KEY)
        if not isinstance(reports, _Reports):
            reports = task.data[_KEY] = _Reports()
        return reports

    def _schedule(self, task: TaskContext, reports: _Reports) -> None:
        loop = self._loop
        if reports.timer is not None or loop is None:
            return
        delay_s = max(0.0, reports.next_at - loop.time())
        reports.timer = loop.call_later(delay_s, self._on_timer, task, reports)

    def _on_timer(self, task: TaskContext, reports: _Reports) -> None:
        reports.timer = None
        if reports.writing:
            return  # the write in flight schedules the next one
        self._spawn(task, reports)

    def _spawn(self, task: TaskContext, reports: _Reports) -> None:
        flush = asyncio.ensure_future(self._flush(task, reports))
        self._flushing.add(flush)
        flush.add_done_callback(self._flushing.discard)

    async def _flush(self, task: TaskContext, reports: _Reports) -> None:
        pending, store, record = reports.pending, self._store, task.started_record
        if pending is None or store is None or record is None or task.progress_sink is not self:
            return  # nothing to write, or the run is over: its final record has the last word
        assert self._loop is not None and self._clock is not None
        reports.pending = None
        reports.writing = True
        reports.next_at = self._loop.time() + self._interval_s
        fraction, message = pending
        state = record.replace(
            progress=fraction, progress_message=message, updated_at=self._clock.now()
        )
        try:
            if not await store.record(state):
                await self._check_cancelled(task, store)
        except StoreError as exc:
            logger.warning(
                "task %s: progress not recorded (%s); the next report tries again",
                task.id,
                exc,
                extra=task.log_extra,
            )
            if reports.pending is None:
                reports.pending = pending
        finally:
            reports.writing = False
        if reports.pending is not None and task.progress_sink is self:
            self._schedule(task, reports)

    async def _check_cancelled(self, task: TaskContext, store: Store) -> None:
        """After a refused write: cancel the run if its record says CANCELLED."""
        current = await store.get(task.id)
        if current is None or current.status is not TaskStatus.CANCELLED:
            return
        if current.replays != task.info.replays:
            return
        runner = self._runner
        if runner is not None:
            reason = current.error.message if current.error is not None else "cancelled"
            runner.cancel_run(task, reason)
