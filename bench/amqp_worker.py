"""The pool that ``bench/amqp.py`` runs under ``paota worker --processes N``
(``amqp_worker:pool``, with ``bench/`` on ``PYTHONPATH``), configured by the ``PAOTA_*``
variables the benchmark sets, and reporting through files in ``$BENCH_DIR``:

- each worker process holds its first deliveries at a gate: it writes ``holding-PID`` and waits
  for the file ``go``, so that every process is consuming when the clock starts (process start-up
  is not part of the drain rate);
- every 50 ms it writes ``progress-PID.json``: tasks run, the wall time of the last one, and its
  resident memory now and at its peak (``VmRSS``, ``VmHWM``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from paota import Config, Signature, WorkerPool

DIR = Path(os.environ.get("BENCH_DIR", "."))
PREFETCH = 100

pool = WorkerPool(Config.from_env(), concurrency=PREFETCH, name=f"bench-child-{os.getpid()}")

_gate: asyncio.Event | None = None
_count = 0
_last = 0.0
_background: set[asyncio.Task[None]] = set()


def _memory_kib() -> tuple[int, int]:
    rss = hwm = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def _write_progress() -> None:
    rss, hwm = _memory_kib()
    path = DIR / f"progress-{os.getpid()}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"count": _count, "last": _last, "rss": rss, "hwm": hwm}))
    temporary.replace(path)


async def _report() -> None:
    while True:
        _write_progress()
        await asyncio.sleep(0.05)


async def _open_gate(gate: asyncio.Event) -> None:
    (DIR / f"holding-{os.getpid()}").touch()
    go = DIR / "go"
    while True:
        if go.exists():  # polled: the benchmark opens the gates of every process at once
            gate.set()
            return
        await asyncio.sleep(0.002)


@pool.task(name="Noop")
async def noop(sig: Signature) -> None:
    global _gate, _count, _last
    if _gate is None:
        _gate = asyncio.Event()
        for job in (_open_gate(_gate), _report()):
            task = asyncio.create_task(job)
            _background.add(task)
    if not _gate.is_set():
        await _gate.wait()
    _count += 1
    _last = time.time()
