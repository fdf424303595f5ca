"""A worker process for ``test_chaos_worker.py``, run as ``paota worker chaos_worker:pool`` (cwd:
this directory) with its configuration in the ``PAOTA_*`` variables.

Its task ``work`` appends ``TASK_ID PID UNIX_TIME`` to the file ``PAOTA_CHAOS_STARTS`` when it
starts and to ``PAOTA_CHAOS_RUNS`` when it has run (after sleeping ``PAOTA_CHAOS_SLEEP_S``
seconds, so that a SIGKILL lands in the middle of tasks), one ``os.write`` of one line to a file
opened with ``O_APPEND``: lines from several processes, killed or not, never mix, and every run is
counted across processes. It imports only ``paota``, as an application would.
"""

from __future__ import annotations

import asyncio
import os
import time

from paota import Config, Signature, WorkerPool

_SLEEP_S = float(os.environ.get("PAOTA_CHAOS_SLEEP_S", "0.05"))
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT
_STARTS = os.open(os.environ["PAOTA_CHAOS_STARTS"], _FLAGS, 0o644)
_RUNS = os.open(os.environ["PAOTA_CHAOS_RUNS"], _FLAGS, 0o644)

pool = WorkerPool(Config.from_env(), name=f"chaos-worker-{os.getpid()}")


def _line(fd: int, task_id: str) -> None:
    os.write(fd, f"{task_id} {os.getpid()} {time.time():.6f}\n".encode())


@pool.task
async def work(sig: Signature) -> None:
    _line(_STARTS, sig.uuid)
    await asyncio.sleep(_SLEEP_S)
    _line(_RUNS, sig.uuid)
