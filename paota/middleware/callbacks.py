"""Per-task ``on_success`` / ``on_failure`` callbacks, fired once per run at its final outcome.

A task that fails three times and is then parked calls ``on_failure`` once, with the last error,
never once per attempt: retries are not final. ``on_failure`` also fires when a run is parked
without running (start deadline, bad arguments) and when it is cancelled. Callbacks run after the
outcome is durable and before the ack; a callback that raises is logged and changes nothing. A
worker that crashes after the callback but before the ack gets the message again; the store then
knows the run finished and skips it, so the callback does not fire twice (without a store it may).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from paota.core.context import TaskContext
from paota.core.middleware import Middleware
from paota.core.outcome import Cancelled, Outcome, Park, Succeeded
from paota.core.services import WorkerServices
from paota.core.state import ErrorInfo

__all__ = ["CallbacksMiddleware"]

logger = logging.getLogger("paota.middleware.callbacks")


class CallbacksMiddleware(Middleware):
    """Calls the registered task's ``on_success(task, result)`` / ``on_failure(task, error)``."""

    def __init__(self) -> None:
        self._tasks: Any = None

    async def startup(self, services: WorkerServices) -> None:
        """Remember the pool's registry."""
        self._tasks = services.registry

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Fire the callback that ``outcome`` calls for, if the task has one."""
        registry = self._tasks
        if registry is None:
            return
        registered = registry.get(task.name)
        if registered is None:
            return
        if isinstance(outcome, Succeeded):
            callback, value = registered.on_success, outcome.result
        elif isinstance(outcome, Park):
            callback, value = registered.on_failure, outcome.error
        elif isinstance(outcome, Cancelled):
            callback, value = registered.on_failure, ErrorInfo("Cancelled", outcome.reason)
        else:
            return
        if callback is None:
            return
        try:
            returned = callback(task, value)
            if inspect.isawaitable(returned):
                await returned
        except Exception:
            logger.exception(
                "task %s (%s): %s callback failed",
                task.id,
                task.name,
                "on_success" if isinstance(outcome, Succeeded) else "on_failure",
                extra=task.log_extra,
            )
