"""Run in a second process by ``test_cancel_progress_amqp_mongo.py``: watch one task's record.

Usage: ``python watch_progress.py JSON`` where JSON is
``{"uri": MONGO_URI, "database": DB, "task_id": ID, "timeout_s": T}``.

Polls ``client.handle(task_id).state()`` (a Client on the memory broker that only reads the MongoDB
store the workers write to) every 20 ms until the record is final or the time is up, and prints
every distinct ``[status, progress, progress_message]`` it sees as a JSON line the moment it sees
it (the test lets the task go on only once its report was seen). It imports only ``paota``, as a
producer application would.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from paota import Client, Config, MongoConfig


async def watch(uri: str, database: str, task_id: str, timeout_s: float) -> None:
    seen: list[Any] = []
    config = Config(store="mongodb", mongo=MongoConfig(uri=uri, database=database))
    async with Client(config, name="progress-watcher") as client:
        handle = client.handle(task_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await handle.state()
            if state is not None:
                view = [state.status.value, state.progress, state.progress_message]
                if not seen or seen[-1] != view:
                    seen.append(view)
                    print(json.dumps(view), flush=True)
                if state.status.is_final:
                    break
            await asyncio.sleep(0.02)


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    asyncio.run(
        watch(request["uri"], request["database"], request["task_id"], request["timeout_s"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
