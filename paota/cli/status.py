"""``paota status TASK_ID`` / ``paota result TASK_ID``: a task's record or its result, from the
store."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from typing import Any

from paota.cli._common import seconds
from paota.client import Client
from paota.core.errors import ConfigError, ResultTimeoutError, TaskFailedError
from paota.core.state import TaskState

NAME = "status"
HELP = "a task's state from the store (--wait: until it finishes)"
DESCRIPTION = (
    "Print a task's record from the store (PAOTA_STORE must name the store the workers write) as "
    "JSON: status, attempts, error, worker, times. --wait S waits up to S seconds for it to "
    "finish. Exit status 0 when found (and finished, with --wait), 4 when no task has the id, 5 "
    "when --wait ran out."
)
#: Exit statuses: no record of that id; --wait ran out before the task finished.
NOT_FOUND = 4
NOT_FINISHED = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("task_id", metavar="TASK_ID", help="the id of a task")
    parser.add_argument(
        "--wait", type=seconds, default=None, metavar="SECONDS", help="wait for the task to finish"
    )


def client() -> Client:
    """A client of the configured broker and store; a ConfigError when there is no store."""
    found = Client(name="paota-status")
    if found.config.store in ("", "memory"):
        raise ConfigError(
            "task states are read from the store the workers write: set PAOTA_STORE=mongodb and "
            "PAOTA_MONGO_URI (the memory store lives in one process only)"
        )
    return found


def shown(state: TaskState) -> dict[str, Any]:
    """The record as JSON-ready fields (times as RFC 3339), without the args."""
    fields = dataclasses.asdict(state)
    fields.pop("args", None)
    fields["status"] = state.status.value
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in fields.items()}


async def run(args: argparse.Namespace) -> int:
    async with client() as found:
        store = found.require_store()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (args.wait or 0.0)
        delay_s = 0.05
        while True:
            state = await store.get(args.task_id)
            if state is not None and (args.wait is None or state.status.is_final):
                print(json.dumps(shown(state), default=repr))
                return 0
            if args.wait is None or loop.time() >= deadline:
                break
            await asyncio.sleep(min(delay_s, max(0.0, deadline - loop.time())))
            delay_s = min(delay_s * 2, 1.0)
    if state is None:
        print(f"paota status: no task {args.task_id} in the store", flush=True)
        return NOT_FOUND
    print(json.dumps(shown(state), default=repr))
    return NOT_FINISHED


async def result(args: argparse.Namespace) -> int:
    """``paota result``: the result as JSON, or the error (exit 1)."""
    async with client() as found:
        if await found.require_store().get(args.task_id) is None and not args.wait:
            print(f"paota result: no task {args.task_id} in the store")
            return NOT_FOUND
        try:
            value = await found.result(args.task_id, timeout=args.wait or 0.001)
        except TaskFailedError as exc:
            print(f"paota result: {exc}")
            return 1
        except ResultTimeoutError as exc:
            print(f"paota result: {exc}")
            return NOT_FINISHED
    print(json.dumps(value, default=repr))
    return 0
