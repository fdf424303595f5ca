"""Running one task: async tasks on the loop, sync tasks on daemon threads, with a time limit.

An async task over its limit is cancelled (and given a second to unwind); a sync task cannot be
stopped: its thread runs on, its result is ignored, and its place goes to a new thread (see
:mod:`paota.core.threads`). Either way the run raises :class:`~paota.TaskTimeoutError`. Sync tasks
run in a copy of the caller's :mod:`contextvars` context, so :func:`paota.current_task` works in
their threads.

The runner also keeps the runs in progress, by task id, so that a cancellation reaches them
(:meth:`Runner.cancel`). An async task is cancelled where it awaits: it gets ``CancelledError``.
A sync task cannot be interrupted: its :attr:`~paota.TaskContext.cancelled` flag is set, for it
to poll. Either way, whatever the cancelled task then returns or raises, the run raises
:class:`~paota.TaskCancelledError`, whose outcome is CANCELLED (never a retry). A cancellation
that arrives before the run reached the runner (its STARTED record was being written) is kept for
a while (:data:`RECENT_CANCEL_S`), and that run then does not start at all.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Mapping
from typing import Any

from paota.core.context import ProgressSink, TaskContext
from paota.core.errors import TaskCancelledError, TaskTimeoutError
from paota.core.tasks import Task
from paota.core.threads import DaemonThreads

__all__ = ["RECENT_CANCELS", "RECENT_CANCEL_S", "Runner"]

#: Cancellations of runs not (yet) running here are kept this long, in seconds ...
RECENT_CANCEL_S = 300.0
#: ... and at most this many (the oldest go first).
RECENT_CANCELS = 1024


def _replays(ctx: TaskContext) -> int:
    return ctx.info.replays


class Runner:
    """Runs task functions; sync ones on up to ``threads`` daemon threads (made on demand).

    ``progress_sink`` is where the runs' progress reports go (None: they are dropped).
    """

    def __init__(self, threads: int) -> None:
        self._size = threads
        self._threads: DaemonThreads | None = None
        self._running: dict[str, TaskContext] = {}
        # The same task id running twice here at once (a redelivery while the first copy runs)
        # is rare: the second and later runs wait here, not in _running.
        self._also: dict[str, list[TaskContext]] = {}
        self._recent: dict[str, tuple[str, int, float]] = {}
        self.progress_sink: ProgressSink | None = None
        #: The event loop whose runs can be interrupted (set while a listener for cancellations
        #: runs, see :mod:`paota.middleware.cancel`); None: a cancellation only sets the flag.
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- the runs in progress --------------------------------------------------------------------

    def running(self, task_id: str) -> list[TaskContext]:
        """The runs of ``task_id`` in progress here."""
        ctx = self._running.get(task_id)
        if ctx is None:
            return []
        return [ctx, *self._also.get(task_id, ())]

    def running_ids(self) -> list[str]:
        """The task ids of the runs in progress here."""
        return list(self._running)

    def cancel(self, task_id: str, reason: str, *, replays: int | None = None) -> int:
        """Cancel the runs of ``task_id`` in progress here (of run ``replays`` or an earlier one,
        when given); returns how many. When none is running, the cancellation is kept for a while,
        for a run that is about to start."""
        count = 0
        for ctx in self.running(task_id):
            if replays is None or _replays(ctx) <= replays:
                self.cancel_run(ctx, reason)
                count += 1
        if not count:
            recent = self._recent
            recent.pop(task_id, None)
            recent[task_id] = (reason, -1 if replays is None else replays, time.monotonic())
            while len(recent) > RECENT_CANCELS:
                del recent[next(iter(recent))]
        return count

    def cancel_run(self, ctx: TaskContext, reason: str) -> None:
        """Cancel one run: set its flag and, for an async task, cancel the asyncio task running
        its code (not when that is the caller itself: the caller learns it from the flag)."""
        if ctx._cancel_reason is not None:
            return
        ctx._cancel_reason = reason
        target = ctx._cancel_target
        if target is not None and not target.done() and target is not asyncio.current_task():
            ctx._cancel_sent = target
            target.cancel(f"task {ctx.id} cancelled: {reason}")

    def _enter(self, ctx: TaskContext, task: Task[Any, Any]) -> TaskCancelledError | None:
        ctx._progress = self.progress_sink
        if task.is_async and self.loop is not None:
            ctx._cancel_target = asyncio.current_task(self.loop)
        task_id = ctx.signature.uuid
        running = self._running
        if task_id in running:
            self._also.setdefault(task_id, []).append(ctx)
        else:
            running[task_id] = ctx
        if self._recent:
            kept = self._recent.get(task_id)
            if kept is not None:
                reason, replays, at = kept
                if time.monotonic() - at > RECENT_CANCEL_S:
                    del self._recent[task_id]
                elif replays < 0 or _replays(ctx) <= replays:
                    ctx._cancel_reason = reason
                    return TaskCancelledError(reason)
        return None

    def _leave(self, ctx: TaskContext) -> TaskCancelledError | None:
        """Forget the run; the error it ends with when it was cancelled (None: not cancelled, or
        the delivery itself is being cancelled too, which must go through)."""
        task_id = ctx.signature.uuid
        running = self._running
        if running.get(task_id) is ctx:
            also = self._also.get(task_id)
            if also:
                running[task_id] = also.pop(0)
                if not also:
                    del self._also[task_id]
            else:
                del running[task_id]
        else:
            also = self._also.get(task_id)
            if also is not None and ctx in also:
                also.remove(ctx)
                if not also:
                    del self._also[task_id]
        ctx._progress = None
        ctx._cancel_target = None
        reason = ctx._cancel_reason
        if reason is None:
            return None
        sent, ctx._cancel_sent = ctx._cancel_sent, None
        current = asyncio.current_task()
        if current is not None and sent is current and current.uncancel() > 0:
            return None  # the pool cancels this delivery as well (it is stopping)
        return TaskCancelledError(reason)

    # --- running ---------------------------------------------------------------------------------

    async def run(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        limit_s: float,
        ctx: TaskContext | None = None,
    ) -> Any:
        """``task.fn(*args, **kwargs)``, at most ``limit_s`` seconds (0: no limit).

        With ``ctx`` (the pool passes it) the run is cancellable while it runs (see the module
        docs): a cancelled run raises :class:`~paota.TaskCancelledError`.
        """
        if ctx is None:
            return await self._call(task, args, kwargs, limit_s, None)
        # The common case inline (a run per task: every call and frame here costs throughput);
        # _enter and _leave do the rest.
        task_id = ctx.signature.uuid
        running = self._running
        if task_id in running or self._recent:
            cancelled = self._enter(ctx, task)
            if cancelled is not None:
                self._leave(ctx)
                raise cancelled
        else:
            running[task_id] = ctx
            ctx._progress = self.progress_sink
            # current_task() without its loop costs four times as much (Python 3.11).
            loop = self.loop
            if loop is not None and task.is_async:
                ctx._cancel_target = asyncio.current_task(loop)
        try:
            if task.is_async and limit_s <= 0:
                result = await task.fn(*args, **kwargs)
            else:
                result = await self._call(task, args, kwargs, limit_s, ctx)
        except BaseException as exc:
            cancelled = self._leave(ctx)
            if cancelled is None:
                raise
            raise cancelled from exc
        if ctx._cancel_reason is None and not self._also:  # then running[task_id] is ctx
            del running[task_id]
            ctx._progress = None
            return result
        cancelled = self._leave(ctx)
        if cancelled is not None:
            raise cancelled
        return result

    async def _call(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        limit_s: float,
        ctx: TaskContext | None,
    ) -> Any:
        if not task.is_async:
            return await self._in_thread(task, args, kwargs, limit_s)
        if limit_s <= 0:
            return await task.fn(*args, **kwargs)
        running = asyncio.ensure_future(task.fn(*args, **kwargs))
        if ctx is not None:
            # Cancel the task's own asyncio task: this one waits for it and reports the outcome.
            ctx._cancel_target = running
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
