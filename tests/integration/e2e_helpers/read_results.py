"""Run in a second process by ``test_end_to_end_mongo.py``: the producer-side view of tasks.

Usage: ``python read_results.py JSON`` where JSON is
``{"uri": MONGO_URI, "database": DB, "tasks": {TASK_ID: TIMEOUT_S, ...}}``.

For each task id, waits for its result with ``WorkerPool(...).result(task_id, timeout=TIMEOUT_S)``
(a pool on the memory broker that only reads the MongoDB store the workers write to), then reads
its record with ``store.get``. Prints one JSON object ``{TASK_ID: {...}, ...}`` on stdout.
It imports only ``paota`` (not the test suite), as a producer application would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from typing import Any

from paota import Config, MongoConfig, ResultTimeoutError, TaskFailedError, WorkerPool


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def read(uri: str, database: str, tasks: dict[str, float]) -> dict[str, Any]:
    config = Config(store="mongodb", mongo=MongoConfig(uri=uri, database=database))
    out: dict[str, Any] = {}
    async with WorkerPool(config, name="e2e-reader") as pool:
        store = pool.store
        assert store is not None

        async def one(task_id: str, timeout_s: float) -> None:
            view: dict[str, Any] = {"pid": os.getpid()}
            try:
                view["result"] = await pool.result(task_id, timeout=timeout_s)
                view["outcome"] = "result"
            except TaskFailedError as exc:
                view.update(
                    outcome=type(exc).__name__,
                    task_id=exc.task_id,
                    status=exc.status,
                    error_type=exc.error_type,
                    error_message=exc.error_message,
                    traceback=exc.traceback,
                    text=str(exc),
                )
            except ResultTimeoutError as exc:
                view.update(outcome=type(exc).__name__, task_id=exc.task_id, text=str(exc))
            state = await store.get(task_id)
            view["record"] = (
                None
                if state is None
                else {
                    "status": state.status.value,
                    "attempts": state.attempts,
                    "worker": state.worker,
                    "args": state.args,
                    "result": state.result,
                    "error_type": None if state.error is None else state.error.type,
                    "created_at": _time(state.created_at),
                    "started_at": _time(state.started_at),
                    "finished_at": _time(state.finished_at),
                    "updated_at": _time(state.updated_at),
                }
            )
            out[task_id] = view

        # All waits run at once: the slowest task bounds the whole read, not their sum.
        await asyncio.gather(*(one(task_id, timeout) for task_id, timeout in tasks.items()))
    return out


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    result = asyncio.run(read(request["uri"], request["database"], request["tasks"]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
