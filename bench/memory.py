"""End-to-end no-op throughput on the in-memory broker, in one process.

Runs, in one process and one event loop:
  raw      an asyncio.Queue of 20-byte payloads, a consumer loop with ``concurrency`` slots: the
           ceiling of what asyncio itself does per message;
  paota    ``send_task`` of N no-op tasks, drained by a WorkerPool (no store);
  +store   the same with the memory store recording PENDING, STARTED and SUCCEEDED per task;
  +3 mw    paota (no store) with three middlewares that override no hook (they cost nothing);
  +3 hooks paota (no store) with three middlewares overriding every hook with a pass-through;
  +beats   +store with a worker heartbeat (its per-queue counters count every outcome).
Prints tasks/s for each, paota's ratio to raw, and the middleware runs' ratio to plain paota.

    python bench/memory.py [--tasks 20000] [--concurrency 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from collections.abc import Awaitable, Callable
from typing import Any

from paota import Config, Middleware, Outcome, PublishContext, Signature, TaskContext, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.middleware.heartbeat import HeartbeatMiddleware
from paota.stores.memory import MemoryStore


async def raw_ceiling(n: int, concurrency: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    done = asyncio.Event()
    count = 0
    slots = asyncio.Semaphore(concurrency)

    async def handle(payload: bytes) -> None:
        nonlocal count
        count += 1
        slots.release()
        if count == n:
            done.set()

    running: set[asyncio.Task[None]] = set()

    async def consume() -> None:
        while True:
            payload = await queue.get()
            await slots.acquire()
            task = asyncio.create_task(handle(payload))
            running.add(task)
            task.add_done_callback(running.discard)

    consumer = asyncio.create_task(consume())
    t0 = time.perf_counter()
    for _ in range(n):
        queue.put_nowait(b'{"Name":"Noop"}')
    await done.wait()
    elapsed = time.perf_counter() - t0
    consumer.cancel()
    return n / elapsed


class NoHooks(Middleware):
    """A middleware that overrides nothing."""


class PassThrough(Middleware):
    """A middleware whose every hook does the least it can."""

    async def publish(
        self, message: PublishContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        await call_next()

    async def admit(self, task: TaskContext) -> Outcome | None:
        return None

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        return await call_next()

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        return None


async def paota_run(
    n: int, concurrency: int, *, with_store: bool, middleware: list[Middleware] | None = None
) -> float:
    broker = MemoryBroker()
    store = MemoryStore() if with_store else None
    pool = WorkerPool(
        Config(), concurrency, "bench", broker=broker, store=store, middleware=middleware or []
    )
    done = asyncio.Event()
    count = 0

    @pool.task(name="Noop")
    async def noop(sig: Signature) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        t0 = time.perf_counter()
        sig = Signature("Noop")
        for _ in range(n):
            await pool.send_task(sig)
        await done.wait()
        elapsed = time.perf_counter() - t0
        await pool.stop()
        await worker
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    args = parser.parse_args()
    n, c = args.tasks, args.concurrency
    print(f"paota memory benchmark: {n} no-op tasks, concurrency {c}, best of {args.repeat}")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or '?'}"
    )
    runs: dict[str, list[float]] = {
        "raw": [],
        "plain": [],
        "stored": [],
        "mw": [],
        "hooks": [],
        "beats": [],
    }
    for _ in range(args.repeat):  # interleaved, so a slow spell of the machine hits every run
        runs["raw"].append(await raw_ceiling(n, c))
        runs["plain"].append(await paota_run(n, c, with_store=False))
        runs["stored"].append(await paota_run(n, c, with_store=True))
        runs["mw"].append(
            await paota_run(n, c, with_store=False, middleware=[NoHooks() for _ in range(3)])
        )
        runs["hooks"].append(
            await paota_run(n, c, with_store=False, middleware=[PassThrough() for _ in range(3)])
        )
        runs["beats"].append(
            await paota_run(n, c, with_store=True, middleware=[HeartbeatMiddleware(60.0)])
        )
    raw, plain, stored, mw, hooks, beats = (
        max(runs[k]) for k in ("raw", "plain", "stored", "mw", "hooks", "beats")
    )
    print(f"  raw asyncio.Queue     {raw:>10,.0f} msgs/s")
    print(f"  paota (no store)      {plain:>10,.0f} tasks/s   ratio to raw {plain / raw:.2f}")
    print(f"  paota + memory store  {stored:>10,.0f} tasks/s   ratio to raw {stored / raw:.2f}")
    print(f"  paota + 3 middlewares {mw:>10,.0f} tasks/s   ratio to paota {mw / plain:.2f}")
    print(f"  paota + 3 with hooks  {hooks:>10,.0f} tasks/s   ratio to paota {hooks / plain:.2f}")
    print(
        f"  + store + heartbeat   {beats:>10,.0f} tasks/s   ratio to + store {beats / stored:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
