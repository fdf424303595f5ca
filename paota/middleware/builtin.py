"""The middleware every worker pool installs by itself, around the user's.

:func:`inner` comes after the user's middleware (its ``execute`` hooks run closest to the task),
:func:`outer` before it (its ``after_outcome`` hooks run last). A feature whose middleware a pool
needs only for some tasks (limits, workflows, cancellation...) returns it only when the pool uses
the feature, so a pool without them pays nothing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from paota.core.capabilities import is_shared
from paota.core.middleware import Middleware
from paota.core.protocols import has_control_channel, has_coordination
from paota.core.replies import ReplyMiddleware, ReplyPath
from paota.middleware.callbacks import CallbacksMiddleware
from paota.middleware.limit_options import has_limits
from paota.middleware.stats import StatsMiddleware

if TYPE_CHECKING:
    from paota.core.pool import BaseWorkerPool as WorkerPool

__all__ = ["heartbeats", "inner", "outer", "run_control"]


def outer(pool: WorkerPool, stats: StatsMiddleware) -> list[Middleware]:
    """Built-in middleware placed before the user's (counting, ``stats``, comes first of all)."""
    return [stats, *run_control(pool), *heartbeats(pool)]


def heartbeats(pool: WorkerPool) -> list[Middleware]:
    """Recording the worker in a store other processes read (one with the Coordination
    capability, not the in-process memory store), unless the pool has a HeartbeatMiddleware of
    its own or ``heartbeat_interval_s`` is 0. Startup and shutdown hooks and a background beat
    only: nothing per task."""
    from paota.middleware.heartbeat import HeartbeatMiddleware

    interval_s = pool.config.heartbeat_interval_s
    store = pool.store
    if interval_s <= 0 or not has_coordination(store) or not is_shared(store):
        return []
    if any(isinstance(m, HeartbeatMiddleware) for m in pool.middleware):
        return []
    return [HeartbeatMiddleware(interval_s)]


def run_control(pool: WorkerPool) -> list[Middleware]:
    """Cancelling running tasks (a broker with a control channel) and writing their progress (a
    store). Both have startup and shutdown hooks only: a pool pays nothing per task for them."""

    items: list[Middleware] = []
    if has_control_channel(pool.broker):
        from paota.middleware.cancel import CancellationMiddleware

        items.append(CancellationMiddleware())
    if pool.store is not None:
        from paota.middleware.progress import ProgressMiddleware

        items.append(ProgressMiddleware())
    return items


def _uses_limits(pool: WorkerPool) -> bool:
    """Whether a task of ``pool`` has a limit, or the pool has a limiter of its own (one the user
    made imported :mod:`paota.middleware.limits` already): the one test of whether the limiter
    is installed."""
    limits = sys.modules.get("paota.middleware.limits")
    if limits is not None and any(isinstance(m, limits.LimitsMiddleware) for m in pool.middleware):
        return True
    return any(
        task is not None and has_limits(task) for task in map(pool.registered_task, pool.task_names)
    )


def inner(pool: WorkerPool, *, scheduler: bool = False) -> list[Middleware]:
    """Built-in middleware placed after the user's (``scheduler``: the pool runs a scheduler)."""
    items: list[Middleware] = [CallbacksMiddleware()]
    if isinstance(pool.broker, ReplyPath):
        # Sends the final outcome where a message asks for it (x-paota-reply-to); for the
        # others, a header lookup per delivery.
        items.append(ReplyMiddleware(pool.broker))
    if has_coordination(pool.store):
        # A store with the Coordination capability (workflows.uses_workflows) can advance
        # workflows: any delivery may be a workflow step; for one that is not, the hook is a
        # header lookup.
        from paota.middleware.workflows import WorkflowMiddleware

        items.append(WorkflowMiddleware(pool))
    # After every middleware with an admit hook: the others admit a run before it takes a
    # concurrency slot or a reserved start (a cancelled task must not spend the rate). None when
    # no task of the pool has a limit (then the limiter's module is not even imported).
    if _uses_limits(pool):
        from paota.middleware import limits

        items.extend(limits.install(pool))
    if scheduler:
        # Last in, so its shutdown runs first: a stopping pool sends no more slots.
        from paota.scheduler.middleware import SchedulerMiddleware

        items.append(SchedulerMiddleware())
    return items
