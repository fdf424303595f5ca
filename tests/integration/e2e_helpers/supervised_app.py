"""The pool the supervised worker processes of ``test_supervisor`` load (``paota worker
tests.integration.e2e_helpers.supervised_app:pool --processes N``): configured by the ``PAOTA_*``
variables the test sets; each run appends ``start PID TASK_ID`` and ``end PID TASK_ID`` to
``$SUP_RUNS`` (one short write each, so lines of several processes never mix)."""

from __future__ import annotations

import asyncio
import os

from paota import Config, WorkerPool, current_task

pool = WorkerPool(
    Config.from_env(), concurrency=int(os.environ.get("SUP_CONCURRENCY", "4")), name="supervised"
)


def _note(what: str) -> None:
    line = f"{what} {os.getpid()} {current_task().id}\n".encode()
    fd = os.open(os.environ["SUP_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@pool.task(name="sup.work")
async def work(sleep_s: float) -> None:
    _note("start")
    await asyncio.sleep(sleep_s)
    _note("end")
