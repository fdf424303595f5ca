"""A worker pool that schedules too: ``WorkerPool(..., scheduler=True)`` (or ``paota worker
--scheduler``) installs :class:`SchedulerMiddleware`, which runs a
:class:`~paota.scheduler.Scheduler` beside the pool's consumers, from the pool's startup to its
shutdown. Any number of pools may do so on a shared store; without one, a pool whose scheduler
may not run (another holds the broker lock) logs why at ERROR and consumes without scheduling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from paota.core.middleware import Middleware
from paota.core.services import WorkerServices
from paota.scheduler.scheduler import Scheduler, SchedulerError

__all__ = ["SchedulerMiddleware"]

logger = logging.getLogger("paota.scheduler")


class SchedulerMiddleware(Middleware):
    """Starts a :class:`~paota.scheduler.Scheduler` for the pool when it starts, stops it when it
    stops. ``scheduler`` is the running one (None before startup, or when it may not run)."""

    def __init__(self, *, poll_s: float = 1.0, refresh_s: float = 5.0) -> None:
        self.poll_s = poll_s
        self.refresh_s = refresh_s
        self.scheduler: Scheduler | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self, services: WorkerServices) -> None:
        """Start the scheduler (see the module docs)."""
        scheduler = Scheduler(services.client, poll_s=self.poll_s, refresh_s=self.refresh_s)
        try:
            await scheduler.start()
        except SchedulerError as exc:
            logger.error("worker pool %s consumes without scheduling: %s", services.name, exc)
            return
        self.scheduler = scheduler
        self._task = asyncio.create_task(scheduler.run(), name=f"{services.name}-scheduler")

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop the scheduler and wait for it."""
        scheduler, task = self.scheduler, self._task
        self._task = None
        if scheduler is None or task is None:
            return
        await scheduler.stop()
        try:
            await asyncio.wait_for(task, 30)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
