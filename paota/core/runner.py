"""Running one task: async tasks on the loop, sync tasks on daemon threads, with a time limit.

An async task over its limit is cancelled (and given a second to unwind); a sync task cannot be
stopped: its thread runs on, its result is ignored, and its place goes to a new thread (see
:mod:`paota.core.threads`). Either way the run raises :class:`~paota.TaskTimeoutError`. Sync tasks
run in a copy of the caller's :mod:`contextvars` context, so :func:`paota.current_task` works in
their threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Mapping
from typing import Any

from paota.core.errors import TaskTimeoutError
from paota.core.tasks import Task
from paota.core.threads import DaemonThreads

__all__ = ["Runner"]


class Runner:
    """Runs task functions; sync ones on up to ``threads`` daemon threads (made on demand)."""

    def __init__(self, threads: int) -> None:
        self._size = threads
        self._threads: DaemonThreads | None = None

    async def run(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        limit_s: float,
    ) -> Any:
        """``task.fn(*args, **kwargs)``, at most ``limit_s`` seconds (0: no limit)."""
        if not task.is_async:
            return await self._in_thread(task, args, kwargs, limit_s)
        if limit_s <= 0:
            return await task.fn(*args, **kwargs)
        running = asyncio.ensure_future(task.fn(*args, **kwargs))
        try:
            done, _ = await asyncio.wait({running}, timeout=limit_s)
        except asyncio.CancelledError:
            running.cancel()
            raise
        if done:
            return running.result()
        running.cancel()
        await asyncio.wait({running}, timeout=1.0)  # let it unwind, but never wait on a task
        raise TaskTimeoutError(
            f"ran longer than the {limit_s}s maximum execution duration and was cancelled"
        )

    async def _in_thread(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], limit_s: float
    ) -> Any:
        threads = self._threads
        if threads is None:
            threads = self._threads = DaemonThreads(self._size, "paota-task")
        call = functools.partial(task.fn, *args, **kwargs) if kwargs else task.fn
        job = threads.submit(contextvars.copy_context().run, call, *(() if kwargs else args))
        if limit_s > 0:
            await job.started  # the limit counts from when a thread runs it, not from the queue
            done, _ = await asyncio.wait({job.done}, timeout=limit_s)
            if not done:
                threads.abandon(job)
                raise TaskTimeoutError(
                    f"ran longer than the {limit_s}s maximum execution duration (a sync task "
                    "cannot be stopped: its thread runs on, its result is ignored)"
                )
        result = await job.done
        if inspect.isawaitable(result):
            # an async function behind a plain decorator: run the coroutine here, on the loop
            result = await result
        return result

    def close(self) -> None:
        """Let the threads end once idle."""
        if self._threads is not None:
            self._threads.close()
            self._threads = None
