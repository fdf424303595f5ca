"""``paota scheduler MODULE:POOL``: send the slots of the pool's periodic tasks, run nothing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from paota.cli._common import load_pool, seconds

NAME = "scheduler"
HELP = "send the periodic tasks of a pool (runs no task)"
DESCRIPTION = (
    "Send each slot of the periodic tasks (@pool.periodic) of the WorkerPool MODULE:POOL, and of "
    "the runtime schedules in the store, until SIGINT/SIGTERM. Any number of schedulers may run "
    "on a shared store (PAOTA_STORE=mongodb): each slot is sent once. Without one, a second "
    "scheduler refuses to start (the first holds a lock on the broker)."
)

logger = logging.getLogger("paota.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("target", metavar="MODULE:POOL")
    parser.add_argument(
        "--name", default="", help="this scheduler's name in claims and logs (default: its host)"
    )
    parser.add_argument(
        "--refresh",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often runtime schedules are read from the store (default 5)",
    )


async def run(args: argparse.Namespace) -> int:
    from paota.scheduler import Scheduler

    pool = load_pool(args.target)
    scheduler = Scheduler(pool, name=args.name, refresh_s=max(args.refresh, 0.1))
    if pool.config.broker == "memory":
        logger.warning(
            "scheduler %s sends to the in-memory broker of this process: no worker elsewhere "
            "will see the tasks. Set PAOTA_BROKER=amqp and PAOTA_AMQP_URL.",
            scheduler.name,
        )
    loop = asyncio.get_running_loop()
    async with pool:
        await scheduler.start()  # a SchedulerError says why it may not run (exit status 1)
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, lambda: asyncio.ensure_future(scheduler.stop()))
        try:
            await scheduler.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
    logger.info(
        "scheduler %s stopped after sending %d slot(s)", scheduler.name, len(scheduler.sent)
    )
    return 0
