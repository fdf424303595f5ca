"""What one delay ladder costs a RabbitMQ node: queues, exchanges, bindings, Erlang processes,
file handles and memory, at rest and with a burst of delayed messages waiting in it.

For each ladder (``hold``/``ladder`` mode, quorum/classic), on a ladder name of its own: read the
node's figures, declare the ladder alone (as a broker declares it) and disconnect, read them again,
publish ``--burst`` delayed messages (``--delay`` seconds: they wait in the ladder, nothing
consumes them) and disconnect, read again, then delete the ladder one queue at a time and check
the node is back where it began.
The node's figures come from ``rabbitmqctl`` (``--ctl``, e.g. ``"docker exec NODE rabbitmqctl"``)::

    python bench/ladder_footprint.py [--url amqp://guest:guest@127.0.0.1:5672/] [--ctl rabbitmqctl]
                                     [--burst 5000] [--delay 60]

Figures are deltas against the node before the ladder; memory is ``erlang:memory(total)``, file
handles ``file_handle_cache:info([total_used])`` (RabbitMQ 3.10-3.11; later releases have no file
handle cache and report ``-``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import subprocess
import time
import uuid

import aiormq

from paota.brokers.amqp.hold import due_headers
from paota.brokers.amqp.ladder import Ladder
from paota.brokers.amqp.ladders import delete_ladder_queues
from paota.brokers.amqp.topology import Topology, declare

KINDS = (("hold", "quorum"), ("hold", "classic"), ("ladder", "quorum"), ("ladder", "classic"))


def _ctl(ctl: list[str], *args: str) -> str:
    return subprocess.run([*ctl, *args], capture_output=True, text=True, timeout=120).stdout


def _eval(ctl: list[str], expression: str) -> str:
    return _ctl(ctl, "eval", expression).strip()


def figures(ctl: list[str]) -> dict[str, float | None]:
    """The node's counts now."""
    queues = [q for q in _ctl(ctl, "list_queues", "-q", "name").split() if q != "name"]
    exchanges = [e for e in _ctl(ctl, "list_exchanges", "-q", "name").split() if e != "name"]
    bindings = _ctl(ctl, "list_bindings", "-q", "source_name").splitlines()
    processes = _eval(ctl, "erlang:system_info(process_count).")
    memory = _eval(ctl, "erlang:memory(total).")
    handles = _eval(ctl, "catch proplists:get_value(total_used, file_handle_cache:info()).")
    return {
        "queues": len(queues),
        "exchanges": len(exchanges),
        "bindings": len(bindings),
        "processes": float(processes) if processes.isdigit() else None,
        "memory_mib": int(memory) / 2**20 if memory.isdigit() else None,
        "file_handles": float(handles) if re.fullmatch(r"\d+", handles) else None,
    }


def delta(after: dict[str, float | None], before: dict[str, float | None]) -> dict[str, str]:
    shown = {}
    for key, value in after.items():
        base = before.get(key)
        if value is None or base is None:
            shown[key] = "-"
        elif key == "memory_mib":
            shown[key] = f"{value - base:+.1f}"
        else:
            shown[key] = f"{value - base:+.0f}"
    return shown


async def _settle(ctl: list[str]) -> dict[str, float | None]:
    await asyncio.sleep(2.0)
    _eval(ctl, "[erlang:garbage_collect(P) || P <- erlang:processes()], ok.")
    return figures(ctl)


async def measure(
    url: str, ctl: list[str], mode: str, queue_type: str, burst: int, delay_s: float
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(at rest, with the burst waiting, after deleting) as deltas to the node before: the ladder
    alone (its queues, exchanges and bindings, declared as a broker declares them), measured with
    no client connected."""
    ladder = Ladder.build(f"footprint_{uuid.uuid4().hex[:6]}", mode=mode, queue_type=queue_type)
    alone = Topology(
        exchange="",
        routing_key="",
        task_queue="",
        failed_queue="",
        timeout_queue="",
        ladder=ladder,
        exchanges=tuple(ladder.exchanges()),
        queues=tuple(ladder.queues()),
        queue_bindings=tuple(ladder.queue_bindings()),
        exchange_bindings=tuple(ladder.exchange_bindings()),
    )
    before = await _settle(ctl)
    connection = await aiormq.connect(url)
    try:
        await declare(await connection.channel(), alone, timeout_s=30.0)
    finally:
        await connection.close()
    rest = await _settle(ctl)
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        delay_ms = int(delay_s * 1000)
        exchange, key = ladder.route(delay_ms, "footprint_nowhere")
        headers = due_headers(None, "footprint_nowhere", int(time.time() * 1000) + delay_ms)
        props = aiormq.spec.Basic.Properties(headers=headers, delivery_mode=2)
        for start in range(0, burst, 500):
            await asyncio.gather(
                *(
                    channel.basic_publish(
                        b"{}", exchange=exchange, routing_key=key, properties=props
                    )
                    for _ in range(start, min(burst, start + 500))
                )
            )
    finally:
        await connection.close()
    loaded = await _settle(ctl)
    connection = await aiormq.connect(url)
    try:
        await delete_ladder_queues(connection, ladder, force=True, pause_s=0.2)
    finally:
        await connection.close()
    after = await _settle(ctl)
    return delta(rest, before), delta(loaded, before), delta(after, before)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("PAOTA_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument("--ctl", default="rabbitmqctl", help="the rabbitmqctl command of the node")
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--delay", type=float, default=60.0)
    args = parser.parse_args()
    ctl = shlex.split(args.ctl)
    version = _eval(ctl, "rabbit_misc:version().").strip('"')
    print(
        f"RabbitMQ {version}: one ladder's footprint (deltas, no client connected), then with "
        f"{args.burst} messages delayed {args.delay:g} s waiting in it"
    )
    keys = ("queues", "exchanges", "bindings", "processes", "file_handles", "memory_mib")
    print("| ladder | state | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for mode, queue_type in KINDS:
        started = time.monotonic()
        rest, loaded, after = await measure(args.url, ctl, mode, queue_type, args.burst, args.delay)
        for state, row in (
            ("at rest", rest),
            (f"{args.burst} waiting", loaded),
            ("deleted", after),
        ):
            print(f"| {mode}, {queue_type} | {state} | " + " | ".join(row[k] for k in keys) + " |")
        print(f"<!-- {mode}/{queue_type}: {time.monotonic() - started:.0f} s -->")


if __name__ == "__main__":
    asyncio.run(main())
