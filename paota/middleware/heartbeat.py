"""Workers that say they are alive: :class:`HeartbeatMiddleware` and :func:`list_workers`.

A running pool whose store other processes read (MongoDB, or any store with the
:class:`~paota.core.protocols.Coordination` capability but the in-process memory store) records
itself as a document of kind ``"worker"``: when it starts, then every
``Config.heartbeat_interval_s`` seconds (``PAOTA_HEARTBEAT_INTERVAL``, 10 s by default; 0 turns
heartbeats off). Each record lives ``3 x`` the interval: a worker that stops cleanly deletes its
record at once; one that dies (a crash, a SIGKILL, a lost machine) ages out within that time, since
nobody renews it. ``paota workers`` (or :func:`list_workers`) lists the records. On the memory
store, whose records only the same process could read, add a :class:`HeartbeatMiddleware`
yourself (a dashboard in the same process, say).

Why these numbers: a record must outlive a beat that is late or lost (the store slow for a moment,
the loop busy), so it lives three intervals and a worker is only reported missing after it missed
two beats in a row; 10 s makes a dead worker disappear within 30 s while costing one small store
write per worker every 10 s, nothing per task. A record shows ``last_seen``, so a reader can tell
a late worker (more than one interval) from a live one before it ages out.

The record (JSON-like values, times in RFC 3339): ``name`` (the pool's), ``host``, ``pid``,
``queues`` (queue -> concurrency), ``concurrency`` (their sum), ``running`` (deliveries being
handled now), ``tasks`` (registered names), ``started_at``, ``last_seen``, ``interval_s``,
``ttl_s``, ``stats`` (the pool's counters), ``queue_stats`` (per queue: runs by outcome and a
runtime histogram, :mod:`paota.middleware.counters`), ``version``. Its key is ``host:pid:random``, so
processes that share a pool name never overwrite each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from paota.core.context import TaskContext
from paota.core.errors import ConfigError, StoreError
from paota.core.middleware import Middleware
from paota.core.outcome import Outcome
from paota.core.protocols import Coordination, has_coordination
from paota.middleware.counters import QueueCounters

if TYPE_CHECKING:
    from paota.core.services import WorkerServices

__all__ = ["TTL_INTERVALS", "WORKER_KIND", "HeartbeatMiddleware", "list_workers"]

logger = logging.getLogger("paota.middleware.heartbeat")

WORKER_KIND = "worker"
"""The kind of the store documents workers are recorded as."""
TTL_INTERVALS = 3
"""How many intervals a record lives without being renewed."""


class HeartbeatMiddleware(Middleware):
    """Records the pool it runs in as a ``"worker"`` document of its store, every ``interval_s``
    seconds, each record living ``ttl_s`` (default ``3 x interval_s``).

    A pool installs one by itself (see the module docs); build one to choose other numbers, or
    to record a pool on the memory store (``WorkerPool(..., middleware=[HeartbeatMiddleware(5)])``);
    the pool then installs none.
    A store without the Coordination capability is not written to (logged once at startup). A
    failed write is logged (a WARNING once per outage) and retried at the next beat; it never
    affects the tasks.
    """

    def __init__(self, interval_s: float = 10.0, *, ttl_s: float | None = None) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int | float):
            raise ConfigError(f"heartbeat interval_s={interval_s!r} is not a number of seconds")
        if not 0 < interval_s < float("inf"):
            raise ConfigError(f"heartbeat interval_s={interval_s!r} is not valid: expected > 0")
        ttl = TTL_INTERVALS * float(interval_s) if ttl_s is None else ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > interval_s:
            raise ConfigError(
                f"heartbeat ttl_s={ttl_s!r} is not valid: expected a number of seconds longer "
                f"than interval_s={interval_s!r} (a record must outlive the wait for the next beat)"
            )
        self.interval_s = float(interval_s)
        self.ttl_s = float(ttl)
        self.key = ""
        self._pool: WorkerServices | None = None
        self._store: Coordination | None = None
        self._started_at: datetime | None = None
        self._queues: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.counters = QueueCounters()

    async def startup(self, services: WorkerServices) -> None:
        """Write the first record and start beating."""
        store = services.store
        if not has_coordination(store):
            logger.info(
                "worker pool %s: no heartbeats (its store %s has no Coordination capability)",
                services.name,
                type(store).__name__ if store is not None else "(none)",
            )
            return
        self._pool = services
        self._store = store
        self.key = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._started_at = services.clock.now()
        self._queues = dict(services.consumed)
        await self.beat()
        self._task = asyncio.create_task(self._beating(), name=f"{services.name}-heartbeat")

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Count the outcome into the record's per-queue counters."""
        pool = self._pool
        if pool is not None:
            self.counters.count(task.queue, outcome, task.started_at, pool.clock.now())

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop beating and delete the record (the worker is gone, not late)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        store, self._store = self._store, None
        if store is None:
            return
        try:
            await store.delete_doc(WORKER_KIND, self.key)
        except StoreError as exc:
            logger.warning(
                "worker pool %s: its heartbeat record was not deleted (%s); it ages out in %gs",
                services.name,
                exc,
                self.ttl_s,
            )

    def document(self) -> dict[str, Any]:
        """The record as written now."""
        pool = self._pool
        assert pool is not None and self._started_at is not None
        stats = pool.read_stats() if pool.read_stats is not None else None
        return {
            "name": pool.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": dict(self._queues),
            "concurrency": sum(self._queues.values()),
            "running": pool.running(),
            "tasks": sorted(pool.registry),
            "started_at": self._started_at.isoformat(),
            "last_seen": pool.clock.now().isoformat(),
            "interval_s": self.interval_s,
            "ttl_s": self.ttl_s,
            "stats": dataclasses.asdict(stats) if stats is not None else {},
            "queue_stats": self.counters.snapshot(),
            "version": _version(),
        }

    async def beat(self) -> None:
        """Write the record once (what the loop does every interval); never raises."""
        store, pool = self._store, self._pool
        if store is None or pool is None:
            return
        try:
            await store.put_doc(WORKER_KIND, self.key, self.document(), ttl_s=self.ttl_s)
        except Exception as exc:
            if not self._failing:
                logger.warning(
                    "worker pool %s: heartbeat not recorded (%s); retrying every %gs",
                    pool.name,
                    exc,
                    self.interval_s,
                )
            self._failing = True
            return
        if self._failing:
            logger.info("worker pool %s: heartbeats recorded again", pool.name)
        self._failing = False

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.beat()


def _version() -> str:
    from paota._version import __version__

    return __version__


async def list_workers(store: Any) -> list[dict[str, Any]]:
    """The live worker records of ``store`` (see the module docs), by name then host and pid.

    Raises :class:`~paota.ConfigError` when the store has no Coordination capability (it cannot
    hold them) and :class:`~paota.StoreError` when it cannot answer.
    """
    if not has_coordination(store):
        raise ConfigError(
            f"the store {type(store).__name__} has no Coordination capability: it keeps no "
            "worker records (the memory and MongoDB stores do)"
        )
    docs = await store.list_docs(WORKER_KIND, limit=100_000)
    return sorted(docs, key=_order)


def _order(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    pid = doc.get("pid")
    return (str(doc.get("name", "")), str(doc.get("host", "")), pid if isinstance(pid, int) else 0)
