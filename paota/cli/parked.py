"""``paota parked [failed|timeout]``: what waits in a parking queue, and why."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from paota.cli._common import add_reason, int_in
from paota.client import Client
from paota.core.errors import DecodeError
from paota.core.message import decode_message
from paota.core.protocols import Message, OutgoingMessage, ParkQueue, header_text

NAME = "parked"
HELP = "list the messages of a parking queue with their reasons"
DESCRIPTION = (
    "List what waits in a parking queue (default: failed), oldest first: the task id and name, "
    "why it was parked, when, by which worker, and the error; then the count by reason. Nothing "
    "moves (paota requeue moves them back)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "queue", nargs="?", default="failed", choices=[q.value for q in ParkQueue], metavar="QUEUE"
    )
    add_reason(parser, "messages")
    parser.add_argument("--limit", type=int_in(1), default=50, help="list at most N (50)")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")


def _item(message: Message) -> dict[str, Any]:
    headers = message.headers
    try:
        sig = decode_message(message.body, headers)
        task_id, name = sig.uuid, sig.name
    except DecodeError:
        task_id, name = message.message_id or "", "(undecodable)"
    return {
        "id": task_id,
        "name": name,
        "reason": header_text(headers.get("x-paota-reason")) or "(parked by another library)",
        "parked_at": header_text(headers.get("x-paota-parked-at")),
        "worker": header_text(headers.get("x-paota-worker")),
        "origin_queue": header_text(headers.get("x-paota-origin-queue")),
        "error": header_text(headers.get("x-paota-error")),
        "bytes": len(message.body),
    }


async def run(args: argparse.Namespace) -> int:
    queue = ParkQueue(args.queue)
    by_reason: Counter[str] = Counter()
    items: list[dict[str, Any]] = []

    def look(message: Message) -> OutgoingMessage | None:
        item = _item(message)
        by_reason[item["reason"]] += 1
        if len(items) < args.limit and args.reason in (None, item["reason"]):
            items.append(item)
        return None  # only looking: every message stays parked

    async with Client(name="paota-parked") as client:
        await client.broker.replay_parked(queue, look)
        name = client.broker.parking_queue(queue)
    for item in items:
        if args.json:
            print(json.dumps(item))
        else:
            error = item["error"] if len(item["error"]) <= 100 else item["error"][:99] + "…"
            print(
                f"{item['parked_at'] or '-':32} {item['reason']:18} {item['id']} "
                f"({item['name']}) {error}"
            )
    total = sum(by_reason.values())
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())) or "empty"
    summary = f"{name}: {total} parked ({counts})"
    if not args.json:
        print(summary)
    return 0
