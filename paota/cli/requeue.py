"""``paota requeue --from failed|timeout``: replay parked messages."""

from __future__ import annotations

import argparse

from paota.cli._common import add_reason, int_in
from paota.core.config import Config
from paota.core.protocols import ParkQueue
from paota.pool import WorkerPool

NAME = "requeue"
HELP = "move parked messages back to the queues they came from"
DESCRIPTION = (
    "Move messages from the failed or timeout queue back to the queue each came from (the task "
    "queue for messages parked by the Go library), retries reset, as new runs."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--from", dest="source", choices=[q.value for q in ParkQueue], required=True
    )
    add_reason(parser, "messages")
    parser.add_argument("--limit", type=int_in(1), default=None, help="move at most this many")


async def run(args: argparse.Namespace) -> int:
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
