"""``paota schedules``: list schedules with their next fire times; add, pause, resume, remove."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from paota.cli._common import int_in, load_pool, parse_arg, seconds
from paota.core.config import Config
from paota.core.errors import ConfigError
from paota.core.factory import make_store

NAME = "schedules"
HELP = "list, add, pause, resume or remove periodic schedules"
DESCRIPTION = (
    "Without an action, list every schedule with its next fire times: the runtime ones in the "
    "store (PAOTA_STORE), and with --target MODULE:POOL the pool's @periodic ones too. Runtime "
    "schedules are added, paused, resumed and removed in the store, and every scheduler sharing "
    "it follows within its refresh time (5 s by default)."
)

logger = logging.getLogger("paota.cli")


def _listing_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Given before or after the action word: a subparser's own default would overwrite the
    # top-level value, so only the top level has defaults.
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--target",
        metavar="MODULE:POOL",
        default=None if top else default,
        help="include the @periodic schedules of this pool (and use its store)",
    )
    if parser.prog.endswith(("schedules", "list")):
        parser.add_argument(
            "--next",
            type=int_in(1, 100),
            default=1 if top else default,
            metavar="N",
            help="show the next N fire times (default 1)",
        )
        parser.add_argument(
            "--json", action="store_true", default=False if top else default, help="print JSON"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options and actions."""
    _listing_options(parser, top=True)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    _listing_options(actions.add_parser("list", help="list schedules (the default)"), top=False)
    add = actions.add_parser("add", help="add a runtime schedule")
    _listing_options(add, top=False)
    add.add_argument("id", help="the schedule's id (letters, digits, _ . @ / -)")
    add.add_argument("--task", required=True, help="the name of the task to send")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron", help="a cron expression, e.g. '*/5 * * * *' (6 fields: seconds first)"
    )
    when.add_argument("--every", type=seconds, metavar="SECONDS", help="an interval in seconds")
    add.add_argument("--tz", default="UTC", help="the IANA time zone (default UTC)")
    add.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="[NAME:]TYPE=VALUE",
        help="an argument, as for paota send (repeatable)",
    )
    add.add_argument("--queue", default=None, help="the queue (default: the task queue)")
    add.add_argument(
        "--misfire-grace",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="how late a missed slot may still run (default 60)",
    )
    add.add_argument(
        "--no-catch-up", action="store_true", help="run only slots seen on time (within 5 s)"
    )
    add.add_argument("--replace", action="store_true", help="replace a schedule with this id")
    for action, text in (
        ("pause", "pause a schedule (its slots are skipped until it is resumed)"),
        ("resume", "resume a paused schedule"),
        ("remove", "remove a runtime schedule"),
    ):
        sub = actions.add_parser(action, help=text)
        _listing_options(sub, top=False)
        sub.add_argument("id", help="the schedule's id")


async def run(args: argparse.Namespace) -> int:
    from paota.scheduler import Schedules

    action = args.action or "list"
    target = getattr(args, "target", None)
    code: list[Any] = []
    if target:
        pool = load_pool(target)
        config = pool.config
        store = pool.store
        code = pool.schedules
        clock = pool.clock
    else:
        config = Config.from_env()
        store = make_store(config)
        clock = None
    if store is None:
        raise ConfigError(
            "paota schedules needs a store: set PAOTA_STORE=mongodb (and PAOTA_MONGO_URI), where "
            "the schedulers keep their schedules"
        )
    if config.store == "memory" and action != "list":
        raise ConfigError(
            f"paota schedules {action}: the memory store lives in this process only, so no "
            "scheduler would see the change; set PAOTA_STORE=mongodb (and PAOTA_MONGO_URI)"
        )
    await store.connect()
    try:
        book = Schedules(store, code=code, clock=clock)
        if action == "list":
            return await _list(book, count=args.next, as_json=args.json)
        if action == "add":
            await book.add(_schedule_from(args), replace=args.replace)
        elif action == "pause":
            await book.pause(args.id)
        elif action == "resume":
            await book.resume(args.id)
        elif action == "remove":
            await book.remove(args.id)
        print(f"schedule {args.id}: {action} done")
        return 0
    finally:
        await store.close()


def _schedule_from(args: argparse.Namespace) -> Any:
    from paota.core.message import Signature
    from paota.scheduler import Schedule
    from paota.scheduler.schedule import make_trigger

    trigger = make_trigger(args.cron, args.every, args.tz, None)
    template = Signature(args.task, args=tuple(parse_arg(a) for a in args.arg))
    return Schedule(
        args.id,
        trigger,
        template,
        queue=args.queue,
        misfire_grace_s=args.misfire_grace,
        catch_up=not args.no_catch_up,
        source="runtime",
    )


async def _list(book: Any, *, count: int, as_json: bool) -> int:
    infos = await book.list(count=count)
    if as_json:
        json.dump([info.to_json() for info in infos], sys.stdout, indent=2)
        print()
        return 0
    if not infos:
        print("no schedules")
        return 0
    rows = [("ID", "TASK", "WHEN", "STATE", "NEXT", "LAST SENT")]
    for info in infos:
        s = info.schedule
        upcoming = ", ".join(t.isoformat() for t in info.next_slots) or "-"
        state = "paused" if s.paused else "active"
        last = "-" if info.last_slot is None else info.last_slot.isoformat()
        rows.append((s.id, s.task, f"{s.trigger.describe()} ({s.source})", state, upcoming, last))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
    return 0
