"""Run as a worker process by ``test_workflows_e2e.py``: a pool with the workflow test tasks.

Usage: ``python workflow_worker.py JSON`` where JSON is ``{"name": POOL_NAME, "log": PATH,
"queue": TASK_QUEUE, "amqp": {AMQPConfig fields}, "mongo": {"uri": ..., "database": ...}}``.

It consumes until SIGTERM. Every run of a task appends one JSON line ``{"worker", "task", "id",
"attempt"}`` to the log file, and every delivery skipped as a duplicate ``{"worker", "duplicate":
id}`` (one ``write`` of a short line in append mode, so the lines of two processes do not mix).
It prints ``ready`` once it consumes. It imports only ``paota``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import paota
from paota import (
    AMQPConfig,
    Config,
    Duplicate,
    Middleware,
    MongoConfig,
    Outcome,
    TaskContext,
    WorkerPool,
)


class LogDuplicates(Middleware):
    def __init__(self, name: str, log: int) -> None:
        self.name = name
        self.log = log
        self.ready = asyncio.Event()

    async def startup(self, worker: Any) -> None:
        self.ready.set()

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        if isinstance(outcome, Duplicate):
            line = {"worker": self.name, "duplicate": task.id}
            os.write(self.log, (json.dumps(line) + "\n").encode())


def make_pool(spec: dict[str, Any]) -> tuple[WorkerPool, asyncio.Event]:
    config = Config(
        broker="amqp",
        store="mongodb",
        task_queue_name=spec["queue"],
        retry_backoff_cap_s=1,
        amqp=AMQPConfig(**spec["amqp"]),
        mongo=MongoConfig(**spec["mongo"]),
    )
    log = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    duplicates = LogDuplicates(spec["name"], log)
    pool = WorkerPool(config, concurrency=4, name=spec["name"], middleware=[duplicates])

    def note() -> None:
        ctx = paota.current_task()
        line = {"worker": pool.name, "task": ctx.name, "id": ctx.id, "attempt": ctx.attempt}
        os.write(log, (json.dumps(line) + "\n").encode())

    @pool.task(name="wf.inc")
    async def inc(x: int) -> int:
        note()
        await asyncio.sleep(0.05)  # long enough for both workers to get members of a group
        return x + 1

    @pool.task(name="wf.total")
    async def total(xs: list[int]) -> int:
        note()
        return sum(xs)

    @pool.task(name="wf.boom", retry_count=1)
    async def boom(x: int) -> int:
        note()
        raise ValueError(f"boom {x}")

    @pool.task(name="wf.report")
    async def report(failure: dict[str, Any]) -> str:
        note()
        return f"reported {failure['task_id']} {failure['error_type']}: {failure['error_message']}"

    return pool, duplicates.ready


async def main(spec: dict[str, Any]) -> None:
    pool, started = make_pool(spec)
    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(pool.stop()))
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({ready, worker}, return_when=asyncio.FIRST_COMPLETED)
    print("ready" if ready.done() else "stopped", flush=True)
    await worker
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
