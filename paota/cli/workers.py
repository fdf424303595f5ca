"""``paota workers``: list the workers that recorded a heartbeat in the store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from paota.core.config import Config
from paota.core.errors import ConfigError
from paota.core.factory import make_store
from paota.middleware.heartbeat import list_workers

NAME = "workers"
HELP = "list the running workers (their heartbeats in the store)"
DESCRIPTION = (
    "List the worker processes that recorded a heartbeat in the store (PAOTA_STORE=mongodb): "
    "name, host, pid, queues and their concurrency, tasks running, start and last heartbeat. A "
    "worker that stops deletes its record; one that died disappears within three heartbeat "
    "intervals (PAOTA_HEARTBEAT_INTERVAL, 10 s by default)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument(
        "--json", action="store_true", help="print the records as JSON, one object per line"
    )


async def run(args: argparse.Namespace) -> int:
    config = Config.from_env()
    store = make_store(config)
    if store is None:
        raise ConfigError(
            "paota workers reads the workers' heartbeats from the store, and none is configured: "
            "set PAOTA_STORE=mongodb (and PAOTA_MONGO_URI), as the workers have it"
        )
    if config.store == "memory":
        print(
            "paota: the memory store lives inside one process: no worker's heartbeat can be seen "
            "from here. Set PAOTA_STORE=mongodb to share the store with the workers.",
            file=sys.stderr,
        )
    async with store:
        workers = await list_workers(store)
    if args.json:
        for doc in workers:
            print(json.dumps(doc, sort_keys=True, default=str))
        return 0
    if not workers:
        print("no workers recorded")
        return 0
    now = datetime.now(UTC)
    rows = [_row(doc, now) for doc in workers]
    header = ("NAME", "HOST", "PID", "QUEUES", "RUNNING", "STARTED", "LAST SEEN")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _row(doc: dict[str, Any], now: datetime) -> tuple[str, ...]:
    queues = doc.get("queues")
    queue_text = (
        ",".join(f"{q}={c}" for q, c in queues.items()) if isinstance(queues, dict) else "?"
    )
    concurrency = doc.get("concurrency", "?")
    running = f"{doc.get('running', '?')}/{concurrency}"
    seen = _parse(doc.get("last_seen"))
    interval = doc.get("interval_s")
    if seen is None:
        last_seen = "?"
    else:
        ago_s = max(0.0, (now - seen).total_seconds())
        late = isinstance(interval, int | float) and ago_s > 1.5 * interval
        last_seen = f"{ago_s:.0f}s ago" + (" (late)" if late else "")
    started = _parse(doc.get("started_at"))
    return (
        str(doc.get("name", "?")),
        str(doc.get("host", "?")),
        str(doc.get("pid", "?")),
        queue_text,
        running,
        started.strftime("%Y-%m-%d %H:%M:%S") if started is not None else "?",
        last_seen,
    )


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
