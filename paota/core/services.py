"""What a worker gives its middleware: :class:`WorkerServices`, the typed face of a running pool.

``Middleware.startup(services)`` and ``shutdown(services)`` receive it: the pool's name, config,
broker, store and clock, its task registry, the runner of its tasks, the queues it consumes, a
client to send tasks with, and ways to ask how many tasks run and to stop the pool. A feature reads
these and no private attribute of the pool; it asks a backend for a capability
(:func:`~paota.core.protocols.has_coordination`, ...) instead of testing its class.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paota.core.client import BaseClient
    from paota.core.clock import Clock
    from paota.core.config import Config
    from paota.core.protocols import Broker, Store
    from paota.core.registry import TaskRegistry
    from paota.core.runner import Runner

__all__ = ["WorkerServices"]


@dataclass(frozen=True, eq=False)
class WorkerServices:
    """The parts of a running worker pool that its middleware use (see the module docs).

    ``consumed`` is each queue the pool consumes with its concurrency; ``client`` is the pool
    itself as a client (``await services.client.send_task(sig)``); ``running()`` is how many
    deliveries are being handled now; ``stop()`` stops the pool gracefully (await it from a task
    of its own: it returns once the pool has stopped); ``read_stats()`` what the pool counted
    (:class:`~paota.PoolStats`), where the pool counts.
    """

    name: str
    config: Config
    broker: Broker
    store: Store | None
    clock: Clock
    registry: TaskRegistry
    runner: Runner
    consumed: Mapping[str, int]
    client: BaseClient
    running: Callable[[], int]
    stop: Callable[[], Awaitable[None]]
    read_stats: Callable[[], Any] | None = None
    _pool: Any = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        # Middleware written for the pool itself (``startup(self, worker)`` reading, say,
        # ``worker.send_task``) keep working, warned; private attributes are not offered.
        pool = self.__dict__.get("_pool")
        if pool is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = getattr(pool, name)
        warnings.warn(
            f"WorkerServices.{name}: a middleware's startup/shutdown receives WorkerServices, not "
            f"the pool; use services.client.{name} (or another attribute of WorkerServices)",
            DeprecationWarning,
            stacklevel=2,
        )
        return value
