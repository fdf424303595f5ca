"""The ``paota`` command: ``worker``, ``send``, ``demo``, ``requeue``.

Configuration comes from the ``PAOTA_*`` environment variables (see ``Config.from_env``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from paota.core.config import Config
from paota.core.errors import ConfigError, PaotaError
from paota.core.message import Arg, Signature
from paota.core.pool import WorkerPool
from paota.core.protocols import ParkQueue
from paota.core.state import TaskStatus

__all__ = ["main"]

logger = logging.getLogger("paota.cli")

_INT_TYPES = {
    "int",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
}
_FLOAT_TYPES = {"float32", "float64"}
DEMO_TASK = "paota.demo.noop"
_MAX_SECONDS = 10 * 365 * 86400.0
_INT32_MAX = 2**31 - 1


def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer within ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected {allowed}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 up to 10 years."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 <= value <= _MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: expected 0..{_MAX_SECONDS:g}")
    return value


def parse_arg(text: str) -> Arg:
    """``[NAME:]TYPE=VALUE`` -> :class:`Arg`; the value is parsed by its Go type
    (``int``..., ``float64``, ``bool``, ``string``; anything else as JSON)."""
    spec, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(
            f"--arg {text!r} is not valid: expected [NAME:]TYPE=VALUE, e.g. int=5, "
            'name:string=Ada, tags:[]string=\'["a","b"]\''
        )
    name, _, type_ = spec.rpartition(":")
    type_ = type_.strip()
    try:
        value: Any
        if type_ in _INT_TYPES:
            value = int(raw)
        elif type_ in _FLOAT_TYPES:
            value = float(raw)
        elif type_ == "bool":
            lowered = raw.strip().lower()
            if lowered not in {"true", "false", "1", "0"}:
                raise ValueError("expected true or false")
            value = lowered in {"true", "1"}
        elif type_ == "string":
            value = raw
        else:
            value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"--arg {text!r}: value {raw!r} is not a valid {type_}: {exc}") from None
    return Arg(name, type_, value)


def parse_queues(text: str) -> dict[str, int | None]:
    """``--queues``: ``a,b=5``: names, each optionally with its concurrency (None: the pool's)."""
    named: dict[str, int | None] = {}
    for part in text.split(","):
        name, sep, count = part.strip().partition("=")
        name = name.strip()
        if not name:
            raise argparse.ArgumentTypeError(f"{text!r}: an empty queue name")
        named[name] = _int_in(1)(count.strip()) if sep else None
    return named


def _load_pool(target: str) -> WorkerPool:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"worker target {target!r} is not valid: expected MODULE:POOL, e.g. app.tasks:pool"
        )
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"worker target {target!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"worker target {target!r}: {module_name} has no attribute {attr!r}"
            ) from None
    if callable(obj) and not isinstance(obj, WorkerPool):
        obj = obj()
    if not isinstance(obj, WorkerPool):
        raise ConfigError(
            f"worker target {target!r} is a {type(obj).__name__}, expected a paota.WorkerPool "
            "(or a function returning one)"
        )
    return obj


async def _worker(args: argparse.Namespace) -> int:
    pool = _load_pool(args.target)
    if args.concurrency is not None:
        pool.concurrency = args.concurrency
    if args.queues is not None:
        pool.queues = args.queues
    if pool.config.broker == "memory":
        logger.warning(
            "worker %s runs on the in-memory broker: only tasks sent from this same process will "
            "reach it. Set PAOTA_BROKER=amqp and PAOTA_AMQP_URL to share a queue across processes.",
            pool.name,
        )
    async with pool:
        await pool.start()
    return 0


async def _send(args: argparse.Namespace) -> int:
    config = Config.from_env()
    sig = Signature(
        args.name,
        args=tuple(parse_arg(a) for a in args.arg),
        retry_count=args.retry_count,
        priority=args.priority,
        task_timeout=args.task_timeout,
        ignore_when_task_not_registered=args.ignore_unregistered,
    )
    pool = WorkerPool(config, name="paota-send")
    async with pool:
        if args.delay:
            sig = sig.replace(eta=pool.clock.now() + timedelta(seconds=args.delay))
        handle = await pool.send_task(sig)
        print(handle.id)
        if config.broker == "memory":
            logger.warning(
                "sent to the in-memory broker of this process only: no worker will see it"
            )
        if args.wait is not None:
            result = await handle.result(timeout=args.wait)
            print(json.dumps(result, default=repr))
    return 0


async def _requeue(args: argparse.Namespace) -> int:
    config = Config.from_env()
    pool = WorkerPool(config, name="paota-requeue")
    async with pool:
        moved = await pool.requeue_parked(
            ParkQueue(args.source), reason=args.reason, limit=args.limit
        )
    print(
        f"moved {moved} message(s) from the {args.source} queue back to the queues they came from"
    )
    return 0


async def _demo(args: argparse.Namespace) -> int:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paota",
        description="paota: an asyncio task queue. Configured by PAOTA_* environment variables "
        "(PAOTA_BROKER=memory|amqp, PAOTA_AMQP_URL, PAOTA_STORE=memory|mongodb, PAOTA_MONGO_URI, ...).",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser(
        "worker",
        help="run the worker pool defined in a module",
        description=(
            "Run a WorkerPool defined in your code until SIGINT/SIGTERM. TARGET is MODULE:POOL, "
            "where POOL is a WorkerPool object (or a function returning one) in MODULE."
        ),
    )
    worker.add_argument("target", metavar="MODULE:POOL")
    worker.add_argument(
        "--concurrency", type=_int_in(1), default=None, help="override the pool's concurrency"
    )
    worker.add_argument(
        "--queues",
        type=parse_queues,
        default=None,
        metavar="QUEUE[=N],...",
        help="consume these queues (comma-separated); a name alone takes the pool's concurrency, "
        "NAME=N runs at most N of that queue at once (default: the pool's queues)",
    )

    send = sub.add_parser(
        "send",
        help="publish one task",
        description=("Publish one task with the configured broker; prints its id."),
    )
    send.add_argument("name", help="task name")
    send.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="[NAME:]TYPE=VALUE",
        help="an argument, e.g. int=5, who:string=Ada, tags:[]string='[\"a\"]' (repeatable)",
    )
    send.add_argument(
        "--retry-count",
        type=_int_in(0, _INT32_MAX),
        default=0,
        help="retries on failure (default 0)",
    )
    send.add_argument(
        "--priority", type=_int_in(0, 255), default=0, help="AMQP priority 0..255 (default 0)"
    )
    send.add_argument(
        "--task-timeout",
        type=_int_in(0, _INT32_MAX),
        default=0,
        help="start deadline in seconds (0: none)",
    )
    send.add_argument(
        "--delay", type=_seconds, default=0.0, help="run no earlier than this many seconds from now"
    )
    send.add_argument(
        "--ignore-unregistered",
        action="store_true",
        help="drop the task if no worker knows it (Go IgnoreWhenTaskNotRegistered)",
    )
    send.add_argument(
        "--wait",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for the result (needs a store shared with the worker)",
    )

    demo = sub.add_parser(
        "demo",
        help="run N no-op tasks through a pool and report throughput",
        description=(
            "Start a worker pool on the configured broker (default: the in-memory one) with a store "
            "(default: memory), send N no-op tasks, show progress and a summary."
        ),
    )
    demo.add_argument(
        "--tasks", type=_int_in(1), default=10_000, help="number of tasks (default 10000)"
    )
    demo.add_argument(
        "--concurrency", type=_int_in(1), default=100, help="worker concurrency (default 100)"
    )

    requeue = sub.add_parser(
        "requeue",
        help="move parked messages back to the task queue",
        description=(
            "Move messages from the failed or timeout queue back to the task queue, retries reset."
        ),
    )
    requeue.add_argument(
        "--from", dest="source", choices=[q.value for q in ParkQueue], required=True
    )
    requeue.add_argument(
        "--reason",
        default=None,
        help="only messages with this x-paota-reason (e.g. retries-exhausted)",
    )
    requeue.add_argument("--limit", type=_int_in(1), default=None, help="move at most this many")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``paota`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo" and args.log_level == "INFO":
        logging.getLogger("paota").setLevel(logging.WARNING)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # aiormq logs every refused reconnect at ERROR with a traceback; paota's broker already
        # says what happens, once per backoff step.
        logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    commands = {"worker": _worker, "send": _send, "demo": _demo, "requeue": _requeue}
    try:
        return asyncio.run(commands[args.command](args))
    except ConfigError as exc:
        print(f"paota: configuration error: {exc}", file=sys.stderr)
        return 2
    except PaotaError as exc:
        print(f"paota: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
