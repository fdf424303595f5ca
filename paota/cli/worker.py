"""``paota worker MODULE:POOL``: run a pool defined in your code until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging

from paota.cli._common import int_in, load_pool, parse_queues

NAME = "worker"
HELP = "run the worker pool defined in a module"
DESCRIPTION = (
    "Run a WorkerPool defined in your code until SIGINT/SIGTERM. TARGET is MODULE:POOL, "
    "where POOL is a WorkerPool object (or a function returning one) in MODULE."
)

logger = logging.getLogger("paota.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("target", metavar="MODULE:POOL")
    parser.add_argument(
        "--concurrency", type=int_in(1), default=None, help="override the pool's concurrency"
    )
    parser.add_argument(
        "--queues",
        type=parse_queues,
        default=None,
        metavar="QUEUE[=N],...",
        help="consume these queues (comma-separated); a name alone takes the pool's concurrency, "
        "NAME=N runs at most N of that queue at once (default: the pool's queues)",
    )


async def run(args: argparse.Namespace) -> int:
    pool = load_pool(args.target)
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
