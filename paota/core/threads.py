"""Daemon threads for sync tasks.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so one stuck
sync task would keep a stopped worker process alive forever. These threads are daemons. A task the
pool gave up on (it ran past the execution limit) keeps its thread, but no longer its place: the
pool may start a replacement, so abandoned tasks cannot starve the ones after them.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DaemonThreads", "Job"]


class Job:
    """One call on a daemon thread: ``started`` resolves when a thread picks it up, ``done`` with
    its result or exception."""

    __slots__ = ("abandoned", "args", "done", "fn", "loop", "started")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.loop = loop
        self.fn = fn
        self.args = args
        self.started: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[Any] = loop.create_future()
        self.abandoned = False


def _resolve(
    future: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class DaemonThreads:
    """Up to ``size`` daemon threads (plus one per abandoned job still running), started on demand."""

    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._limit = size
        self._threads = 0
        self._busy = 0
        self._name = name
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        """Queue ``fn(*args)``; await ``job.started`` / ``job.done`` on the calling loop."""
        job = Job(asyncio.get_running_loop(), fn, args)
        with self._lock:
            self._busy += 1
            if self._busy > self._threads and self._threads < self._limit:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"{self._name}-{self._threads}", daemon=True
                ).start()
        self._queue.put(job)
        return job

    def abandon(self, job: Job) -> None:
        """Give up on ``job`` (still running): its thread no longer counts against the size."""
        with self._lock:
            if not job.abandoned and not job.done.done():
                job.abandoned = True
                self._limit += 1

    def close(self) -> None:
        """Let the threads end once idle (they are daemons: nothing waits for them)."""
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            loop = job.loop
            try:
                loop.call_soon_threadsafe(_resolve, job.started)
                try:
                    result = job.fn(*job.args)
                except BaseException as exc:
                    loop.call_soon_threadsafe(_resolve, job.done, None, exc)
                else:
                    loop.call_soon_threadsafe(_resolve, job.done, result)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting for this job any more
            with self._lock:
                self._busy -= 1
                if job.abandoned:
                    self._limit -= 1
                if self._threads > self._limit:
                    self._threads -= 1
                    return
