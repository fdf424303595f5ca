"""``paota demo``: N no-op tasks through a pool, with progress and a summary."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import time

from paota.cli._common import int_in
from paota.core.config import Config
from paota.core.message import Signature
from paota.core.state import TaskStatus
from paota.pool import WorkerPool

NAME = "demo"
HELP = "run N no-op tasks through a pool and report throughput"
DESCRIPTION = (
    "Start a worker pool on the configured broker (default: the in-memory one) with a store "
    "(default: memory), send N no-op tasks, show progress and a summary."
)
DEMO_TASK = "paota.demo.noop"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--tasks", type=int_in(1), default=10_000, help="number of tasks (default 10000)"
    )
    parser.add_argument(
        "--concurrency", type=int_in(1), default=100, help="worker concurrency (default 100)"
    )


async def run(args: argparse.Namespace) -> int:
    config = Config.from_env()
    if not config.store:
        config = dataclasses.replace(config, store="memory")
    total = args.tasks
    pool = WorkerPool(config, concurrency=args.concurrency, name="paota-demo")
    done = 0
    finished = asyncio.Event()

    @pool.task(name=DEMO_TASK)
    async def noop(sig: Signature) -> None:
        nonlocal done
        done += 1
        if done >= total:
            finished.set()

    out = sys.stderr
    tty = out.isatty()
    print(
        f"paota demo: {total} no-op tasks, concurrency {args.concurrency}, "
        f"broker {config.broker}, store {config.store}",
        file=out,
    )
    async with pool:
        worker = asyncio.create_task(pool.start())
        t0 = time.perf_counter()

        async def send_all() -> None:
            batch = 500
            for first in range(0, total, batch):
                count = min(batch, total - first)
                await asyncio.gather(*(pool.send_task(Signature(DEMO_TASK)) for _ in range(count)))

        sender = asyncio.create_task(send_all())
        next_report = 0.0
        while not finished.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(finished.wait(), 0.25)
            if sender.done() and sender.exception() is not None:
                break
            if worker.done():
                break
            elapsed = time.perf_counter() - t0
            if tty or elapsed >= next_report:
                line = f"  {elapsed:6.1f}s  done {done}/{total}  ({done / max(elapsed, 1e-9):,.0f} tasks/s)"
                print("\r" + line if tty else line, end="" if tty else "\n", file=out, flush=True)
                next_report = elapsed + 1.0
        elapsed = time.perf_counter() - t0
        if tty:
            print(file=out)
        if worker.done() and not sender.done():
            # the pool stopped (Ctrl-C, SIGTERM): so does sending, at once
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            print(f"paota demo: stopped early, {done} of {total} tasks done", file=out)
        else:
            await sender
        await pool.stop()
        await worker
        counts: dict[str, int] = {}
        if pool.store is not None:
            for status in TaskStatus:
                found = await pool.store.list(status=status, name=DEMO_TASK, limit=total + 1)
                if found:
                    counts[status.value] = len(found)
    stats = pool.stats
    print(f"paota demo: {done} tasks in {elapsed:.2f}s: {done / max(elapsed, 1e-9):,.0f} tasks/s")
    if counts:
        print("states (from the store): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"failures: {stats.failed} failed, {stats.timed_out} timed out, {stats.retried} retried")
    return 0 if done >= total and stats.failed == 0 else 1
