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
    if config.broker == "memory":
        # the task would live in this process's memory and vanish when the command ends
        logger.error(
            "paota send: the broker is the in-memory one (PAOTA_BROKER unset or 'memory'), so the "
            "task would vanish when this command ends and no worker would run it; set "
            "PAOTA_BROKER=amqp and PAOTA_AMQP_URL=amqp://... to send to your workers' RabbitMQ"
        )
        return 2
    if args.wait is not None and config.store in ("", "memory"):
        # checked before publishing: failing after it would invite a resend, and a duplicate
        logger.error(
            "paota send --wait: results are read from the store the worker writes, and %s; set "
            "PAOTA_STORE=mongodb and PAOTA_MONGO_URI (the worker's too), or send without --wait. "
            "Nothing was sent",
            "no store is configured (PAOTA_STORE unset)"
            if not config.store
            else "the memory store lives in this process only",
        )
        return 2
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
        if args.wait is not None:
            result = await handle.result(timeout=args.wait)
            print(json.dumps(result, default=repr))
    return 0
