"""The public :class:`WorkerPool`: the kernel's pool (:class:`~paota.core.pool.BaseWorkerPool`)
with the built-in middleware composed around the user's (:mod:`paota.middleware.builtin`:
counting, cancellation, progress, heartbeats, callbacks, replies, workflows, limits, the
scheduler), and the public :class:`~paota.Client`'s features (periodic tasks, task options).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from paota.client import Client
from paota.core.clock import Clock
from paota.core.config import Config
from paota.core.middleware import Middleware
from paota.core.pool import BaseWorkerPool
from paota.core.protocols import Broker, Store
from paota.core.services import WorkerServices
from paota.middleware import builtin
from paota.middleware.stats import PoolStats, StatsMiddleware

__all__ = ["PoolStats", "WorkerPool"]


class WorkerPool(BaseWorkerPool, Client):
    """Runs registered tasks from a broker's queues; sends tasks too (it is a :class:`Client`).

    ``concurrency`` is how many tasks of one queue run at once; ``queues`` names the queues to
    consume, each with its own concurrency (``{"paota_tasks": 50, "emails": 5}``; a list of
    names, or None as a concurrency, takes ``concurrency``). Without ``queues`` the pool consumes
    the config's task queue and every queue a registered task names. ``scheduler=True`` also
    runs a :class:`paota.scheduler.Scheduler` for the pool's periodic tasks while it consumes.
    The constructor does no I/O: ``async with pool`` (or ``await pool.connect()``) opens the
    broker and store; ``await pool.start()`` also consumes until :meth:`stop` or SIGINT/SIGTERM.
    """

    def __init__(
        self,
        config: Config | None = None,
        concurrency: int = 10,
        name: str = "",
        *,
        queues: Mapping[str, int | None] | Sequence[str] | None = None,
        broker: Broker | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        middleware: Sequence[Middleware] = (),
        scheduler: bool = False,
    ) -> None:
        super().__init__(
            config,
            concurrency,
            name,
            queues=queues,
            broker=broker,
            store=store,
            clock=clock,
            middleware=middleware,
        )
        #: Whether the pool also runs a scheduler for its periodic tasks while it consumes
        #: (``scheduler=True``; see :mod:`paota.scheduler`).
        self.run_scheduler = bool(scheduler)
        self._stats = StatsMiddleware()

    @property
    def stats(self) -> PoolStats:
        """What this pool did since it was created (counted by a middleware)."""
        return self._stats.stats

    def services(self, queues: Mapping[str, int]) -> WorkerServices:
        """The kernel's services, with the pool's counts (``services.read_stats()``)."""
        return dataclasses.replace(super().services(queues), read_stats=lambda: self.stats)

    def compose(self) -> list[Middleware]:
        """Counting first, so every other middleware's outcome is counted even if it fails;
        the user's middleware next; then the built-in ones whose ``after_outcome`` runs first
        (callbacks, replies, workflows, limits, the scheduler)."""
        return [
            *builtin.outer(self, self._stats),
            *self.middleware.items,
            *builtin.inner(self, scheduler=self.run_scheduler),
        ]
