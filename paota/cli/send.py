"""``paota send NAME``: publish one task."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import timedelta

from paota.cli._common import INT32_MAX, int_in, parse_arg, seconds
from paota.core.config import Config
from paota.core.message import Signature
from paota.core.pool import WorkerPool

NAME = "send"
HELP = "publish one task"
DESCRIPTION = "Publish one task with the configured broker; prints its id."

logger = logging.getLogger("paota.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("name", help="task name")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="[NAME:]TYPE=VALUE",
        help="an argument, e.g. int=5, who:string=Ada, tags:[]string='[\"a\"]' (repeatable)",
    )
    parser.add_argument(
        "--retry-count",
        type=int_in(0, INT32_MAX),
        default=0,
        help="retries on failure (default 0)",
    )
    parser.add_argument(
        "--priority", type=int_in(0, 255), default=0, help="AMQP priority 0..255 (default 0)"
    )
    parser.add_argument(
        "--task-timeout",
        type=int_in(0, INT32_MAX),
        default=0,
        help="start deadline in seconds (0: none)",
    )
    parser.add_argument(
        "--delay", type=seconds, default=0.0, help="run no earlier than this many seconds from now"
    )
    parser.add_argument(
        "--queue", default=None, help="the queue to send to (default: the task queue)"
    )
    parser.add_argument(
        "--ignore-unregistered",
        action="store_true",
        help="drop the task if no worker knows it (Go IgnoreWhenTaskNotRegistered)",
    )
    parser.add_argument(
        "--wait",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for the result (needs a store shared with the worker)",
    )


async def run(args: argparse.Namespace) -> int:
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
        handle = await pool.send_task(sig, queue=args.queue)
        print(handle.id)
        if config.broker == "memory":
            logger.warning(
                "sent to the in-memory broker of this process only: no worker will see it"
            )
        if args.wait is not None:
            result = await handle.result(timeout=args.wait)
            print(json.dumps(result, default=repr))
    return 0
