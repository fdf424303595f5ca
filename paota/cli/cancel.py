"""``paota cancel TASK_ID...``: cancel tasks, queued, delayed or running."""

from __future__ import annotations

import argparse

from paota.client import Client
from paota.core.config import Config

NAME = "cancel"
HELP = "cancel tasks by id (queued, delayed or running)"
DESCRIPTION = (
    "Record each task as CANCELLED in the store (PAOTA_STORE must name one: the cancellation is "
    "durable, so a worker that gets the message later, even one started afterwards, acknowledges "
    "it without running it) and tell running workers over the broker's control channel (a "
    "running async task gets CancelledError; a sync task sees current_task().cancelled). Exit "
    "status 0 when every task is cancelled now, 3 when some had finished already."
)

#: The exit status when a task had finished before it could be cancelled.
ALREADY_FINISHED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("task_ids", nargs="+", metavar="TASK_ID", help="the id of a task")
    parser.add_argument(
        "--reason", default=None, help='why (default: "cancelled by <this process>")'
    )


async def run(args: argparse.Namespace) -> int:
    config = Config.from_env()
    status = 0
    async with Client(config) as client:
        for task_id in args.task_ids:
            if await client.cancel(task_id, reason=args.reason):
                print(f"task {task_id} cancelled")
                continue
            state = await client.require_store().get(task_id)
            finished = state.status.value if state is not None else "finished"
            print(f"task {task_id} not cancelled: it had finished already ({finished})")
            status = ALREADY_FINISHED
    return status
