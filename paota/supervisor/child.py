"""The child's side of ``paota worker --processes N``: :class:`SupervisedChild`, the middleware
that links a worker process to its supervisor and recycles it (see :mod:`paota.supervisor`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from paota.core.context import TaskContext
from paota.core.middleware import Middleware
from paota.core.services import WorkerServices

__all__ = ["FD_ENV", "SupervisedChild", "current_rss_bytes", "supervised_child"]

logger = logging.getLogger("paota.supervisor")

#: The environment variable that gives a child the file descriptor of its end of the link.
FD_ENV = "PAOTA_SUPERVISOR_FD"


def current_rss_bytes() -> int:
    """This process's resident memory now (``/proc/self/statm``); where there is no ``/proc``,
    its peak resident memory (``getrusage``), which is never below it."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


class SupervisedChild(Middleware):
    """The middleware of a supervised worker process (``paota worker --processes``): says
    ``ready`` to the supervisor once the pool consumes, recycles the process when it holds more
    than ``max_memory_bytes`` (looked at every ``memory_check_s``), and stops the pool gracefully
    when the supervisor goes away. Startup and shutdown hooks only; :func:`supervised_child`
    adds the count of ``max_tasks``."""

    def __init__(
        self,
        fd: int,
        *,
        max_memory_bytes: int | None = None,
        memory_check_s: float = 1.0,
    ) -> None:
        self.fd = fd
        self.max_memory_bytes = max_memory_bytes
        self.memory_check_s = memory_check_s
        self._pool: WorkerServices | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._recycling = False

    async def startup(self, services: WorkerServices) -> None:
        """Connect the link, say ``ready``, start watching memory and the supervisor."""
        self._pool = services
        reader, self._writer = await asyncio.open_unix_connection(
            sock=socket.socket(fileno=self.fd)
        )
        self._send(
            {
                "event": "ready",
                "pid": os.getpid(),
                "grace_s": float(services.config.shutdown_grace_s),
            }
        )
        self._spawn(self._watch_supervisor(reader))
        if self.max_memory_bytes is not None:
            self._spawn(self._watch_memory(self.max_memory_bytes))

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop watching; close the link."""
        for task in list(self._background):
            if task is not asyncio.current_task() and not task.done():
                task.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def recycle(self, reason: str) -> None:
        """Tell the supervisor (it starts a replacement), then stop the pool gracefully: no
        more deliveries, running tasks finish, the process exits. Once."""
        if self._recycling or self._pool is None:
            return
        self._recycling = True
        logger.info("worker process %d recycles: %s", os.getpid(), reason)
        self._send({"event": "recycling", "reason": reason})
        self._spawn(self._pool.stop())

    def _send(self, message: Mapping[str, Any]) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        writer.write(json.dumps(message).encode() + b"\n")

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        async def run() -> None:
            await awaitable

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_supervisor(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(4096):
            pass  # the supervisor sends nothing: only the end of the stream matters
        if self._pool is not None and not self._recycling:
            logger.warning(
                "worker process %d: its supervisor is gone; stopping gracefully", os.getpid()
            )
            self._recycling = True
            self._spawn(self._pool.stop())

    async def _watch_memory(self, limit: int) -> None:
        while not self._recycling:
            await asyncio.sleep(self.memory_check_s)
            rss = current_rss_bytes()
            if rss > limit:
                self.recycle(
                    f"holds {rss / 1024**2:.1f} MiB, more than --max-memory-per-child "
                    f"{limit / 1024**2:.1f} MiB"
                )


class _CountingChild(SupervisedChild):
    """A :class:`SupervisedChild` that also recycles after ``max_tasks`` runs."""

    def __init__(self, fd: int, *, max_tasks: int, **kwargs: Any) -> None:
        super().__init__(fd, **kwargs)
        self.max_tasks = max_tasks
        self.runs = 0

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Count the run as it starts: the N-th start recycles at once, so no delivery waiting
        for a slot starts after it."""
        self.runs += 1
        if self.runs >= self.max_tasks:
            self.recycle(f"started {self.runs} tasks (--max-tasks-per-child {self.max_tasks})")
        return await call_next()


def supervised_child(
    fd: int,
    *,
    max_tasks: int | None = None,
    max_memory_bytes: int | None = None,
    memory_check_s: float = 1.0,
) -> SupervisedChild:
    """The middleware of a supervised worker process: with an ``execute`` hook (counting runs)
    only when ``max_tasks`` is set, so a child without it pays nothing per task."""
    if max_tasks is None:
        return SupervisedChild(fd, max_memory_bytes=max_memory_bytes, memory_check_s=memory_check_s)
    return _CountingChild(
        fd, max_tasks=max_tasks, max_memory_bytes=max_memory_bytes, memory_check_s=memory_check_s
    )
