"""``paota result TASK_ID``: a task's result, from the store."""

from __future__ import annotations

import argparse

from paota.cli import status

NAME = "result"
HELP = "a task's result from the store (--wait: until it finishes)"
DESCRIPTION = (
    "Print a finished task's result as JSON (PAOTA_STORE must name the store the workers "
    "write). --wait S waits up to S seconds. Exit status 0 with the result, 1 when the task "
    "failed (the error is printed), 4 when no task has the id, 5 when it has not finished."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    status.add_arguments(parser)


async def run(args: argparse.Namespace) -> int:
    return await status.result(args)
