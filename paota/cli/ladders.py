"""``paota ladders [list|delete]``: the delay ladders of a vhost, and deleting an unused one."""

from __future__ import annotations

import argparse
import json
import sys

from paota.cli._common import UsageError
from paota.core.config import Config

NAME = "ladders"
HELP = "list the delay ladders on the broker's vhost; delete an unused one"
DESCRIPTION = (
    "List the delay ladders the configuration names (paota.delay, PAOTA_AMQP_DELAY_LADDER, "
    "PAOTA_AMQP_DELAYED_QUEUE) and any --name, in each mode and queue type that exists: its "
    "queues, the delayed messages waiting in it, the workers on its hold queue and its last use "
    "(who declared it last, when). 'delete NAME' deletes one ladder, one queue at a time, and "
    "refuses while messages wait in it or a worker uses it, unless --force (which loses them)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "action", nargs="?", default="list", choices=("list", "delete"), metavar="ACTION"
    )
    parser.add_argument("ladder", nargs="?", default=None, metavar="NAME", help="(delete) its name")
    parser.add_argument(
        "--name", action="append", default=[], help="(list) also look for a ladder of this name"
    )
    parser.add_argument("--mode", choices=("hold", "ladder"), help="(delete) only this mode")
    parser.add_argument(
        "--type", dest="queue_type", choices=("quorum", "classic"), help="(delete) only this type"
    )
    parser.add_argument("--force", action="store_true", help="(delete) even with messages in it")
    parser.add_argument("--json", action="store_true", help="(list) one JSON object a line")


def _when(state_last_use: dict[str, object] | None) -> str:
    if not state_last_use:
        return "last use unknown"
    return (
        f"last use {state_last_use.get('at', '?')} by {state_last_use.get('worker') or '-'} "
        f"on {state_last_use.get('host', '?')} (task queue {state_last_use.get('task_queue')!r})"
    )


async def run(args: argparse.Namespace) -> int:
    config = Config.from_env()
    if config.broker != "amqp":
        raise UsageError(
            f"paota ladders needs RabbitMQ (PAOTA_BROKER=amqp); PAOTA_BROKER is {config.broker!r}"
        )
    from paota.brokers.amqp.ladders import (
        LadderInUse,
        candidate_ladders,
        delete_ladder_queues,
        inspect_ladder,
    )

    if args.action == "delete" and not args.ladder:
        raise UsageError("paota ladders delete: name the ladder (paota ladders delete NAME)")
    names = [args.ladder] if args.action == "delete" else args.name
    ladders = candidate_ladders(config, names)
    if args.action == "delete":
        ladders = [
            ladder
            for ladder in ladders
            if ladder.name == args.ladder
            and args.mode in (None, ladder.mode)
            and args.queue_type in (None, ladder.queue_type)
        ]
    from paota.brokers.amqp.calls import open_connection
    from paota.core.settings import redact_url

    url = config.amqp.endpoints[0]
    connection = await open_connection(
        url,
        name="paota ladders",
        shown=redact_url(url),
        timeout_s=config.amqp.connection_timeout_s,
    )
    try:
        states = [await inspect_ladder(connection, ladder) for ladder in ladders]
        found = [state for state in states if state.exists]
        if args.action == "list":
            for state in found:
                if args.json:
                    print(json.dumps(state.as_dict()))
                    continue
                ladder = state.ladder
                print(
                    f"{ladder.name} ({ladder.mode}, {ladder.queue_type}): "
                    f"{state.present}/{state.total} queues, {state.waiting} waiting, "
                    f"{state.consumers} worker(s) holding; {_when(state.last_use)}"
                )
            if not found and not args.json:
                print("no delay ladder of these names on this vhost")
            return 0
        if not found:
            print(f"no delay ladder named {args.ladder!r} on this vhost")
            return 1
        status = 0
        for state in found:
            ladder = state.ladder
            try:
                deleted = await delete_ladder_queues(connection, ladder, force=args.force)
            except LadderInUse as exc:
                print(f"paota: {exc}", file=sys.stderr)
                status = 1
                continue
            print(
                f"deleted ladder {ladder.name} ({ladder.mode}, {ladder.queue_type}): "
                f"{deleted} queue(s)"
            )
        return status
    finally:
        await connection.close()
