"""paota on RabbitMQ against a raw aiormq ceiling, in one run on the same broker.

  (a) publish N no-op tasks: paota ``send_task`` (``--window`` calls in flight) against raw aiormq
      ``basic_publish`` on a confirm channel with the same number of publishes in flight;
  (b) drain them: one WorkerPool (concurrency 100, prefetch 100) against a raw aiormq consumer
      with ``basic_qos(100)`` and one ``basic_ack`` per message.

Both sides are measured the same way: ``--rounds`` rounds (default 3), each running raw and paota
(which goes first alternates between rounds), after a warm-up round of a tenth of the tasks that is
not counted. Between two measured phases the benchmark pauses ``--pause`` seconds (default 2) so
that RabbitMQ finishes deleting the previous queue (on a small machine that work otherwise lands in
the next measurement). Prints every round, then the best rate of each side and paota's ratio to
raw, with the client's CPU time per message (``time.process_time``: RabbitMQ runs on the same
cores). Each run uses fresh queue names and deletes them afterwards, except the delay ladder: every
run declares the same quorum ladder, ``paota_bench_ladder.q00`` .., and keeps it (deleting many
at-least-once quorum queues at once strands RabbitMQ's dead-letter workers, rabbitmq-server#16652;
:func:`paota.brokers.amqp.topology.delete_ladder` deletes one queue at a time).

    python bench/amqp.py [--url amqp://guest:guest@127.0.0.1:5672/] [--tasks 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiormq
from aiormq.abc import DeliveredMessage

from paota import AMQPConfig, Config, Signature, WorkerPool
from paota.brokers.amqp.topology import Topology
from paota.core.signature import encode_message

PREFETCH = 100
#: The delay ladder's name prefix, the same in every run: the ladder is kept, not deleted per run.
LADDER = "paota_bench_ladder"


@dataclass
class Rate:
    """One measured phase: messages per second, and the client's CPU seconds per message."""

    per_s: float
    cpu_us: float

    def __str__(self) -> str:
        return f"{self.per_s:>9,.0f}/s {self.cpu_us:5.1f} us cpu"


class Timer:
    """Wall and process time from :meth:`start` to :meth:`rate`."""

    def __init__(self) -> None:
        self._wall = self._cpu = 0.0

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def rate(self, n: int) -> Rate:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        return Rate(n / wall, cpu / n * 1e6)


async def in_windows(n: int, window: int, make: Callable[[], Awaitable[object]]) -> None:
    """Run ``n`` awaitables with at most ``window`` in flight."""
    for first in range(0, n, window):
        await asyncio.gather(*(make() for _ in range(min(window, n - first))))


async def raw_run(url: str, n: int, window: int, pause_s: float) -> tuple[Rate, Rate]:
    queue = f"bench_raw_{uuid.uuid4().hex[:8]}"
    body = encode_message(Signature("Noop", uuid="task_" + "0" * 36)).body
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True)
        props = aiormq.spec.Basic.Properties(delivery_mode=2, content_type="application/json")
        timer = Timer()
        timer.start()
        await in_windows(
            n, window, lambda: channel.basic_publish(body, routing_key=queue, properties=props)
        )
        publish_rate = timer.rate(n)
        await asyncio.sleep(pause_s)

        consumer_channel = await connection.channel()
        await consumer_channel.basic_qos(prefetch_count=PREFETCH)
        done = asyncio.Event()
        count = 0

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal count
            await consumer_channel.basic_ack(message.delivery_tag)
            count += 1
            if count == n:
                done.set()

        timer.start()
        consume_ok = await consumer_channel.basic_consume(queue, on_message)
        await done.wait()
        consume_rate = timer.rate(n)
        await consumer_channel.basic_cancel(consume_ok.consumer_tag)
        await channel.queue_delete(queue)
        return publish_rate, consume_rate
    finally:
        await connection.close()


def bench_config(url: str, delay_queue_type: str = "quorum") -> Config:
    """A config with fresh queue and exchange names, on the shared ``delay_queue_type`` ladder."""
    suffix = uuid.uuid4().hex[:8]
    return Config(
        broker="amqp",
        task_queue_name=f"bench_paota_{suffix}",
        amqp=AMQPConfig(
            url=url,
            exchange=f"bench_exchange_{suffix}",
            delayed_queue=f"bench_delayed_{suffix}",
            delay_ladder=LADDER,
            delay_queue_type=delay_queue_type,
            failed_queue=f"bench_failed_{suffix}",
            timeout_queue=f"bench_timeout_{suffix}",
            prefetch_count=PREFETCH,
        ),
    )


async def paota_run(url: str, n: int, window: int, pause_s: float) -> tuple[Rate, Rate]:
    config = bench_config(url)
    producer = WorkerPool(config, name="bench-producer")
    async with producer:
        sig = Signature("Noop")
        timer = Timer()
        timer.start()
        await in_windows(n, window, lambda: producer.send_task(sig))
        publish_rate = timer.rate(n)
    await asyncio.sleep(pause_s)

    pool = WorkerPool(config, concurrency=PREFETCH, name="bench-worker")
    done = asyncio.Event()
    count = 0

    @pool.task(name="Noop")
    async def noop(sig: Signature) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async with pool:
        timer.start()
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await done.wait()
        consume_rate = timer.rate(n)
        await pool.stop()
        await worker
    await _delete_topology(url, config)
    return publish_rate, consume_rate


async def _delete_topology(url: str, config: Config) -> None:
    """Delete the queues and exchanges of ``config``'s run, but not the shared delay ladder."""
    topology = Topology.from_config(config)
    shared = {*topology.ladder_queues, topology.delivery_exchange}
    queues, exchanges = topology.names()
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for queue in queues:
            if queue not in shared:
                await channel.queue_delete(queue)
        for exchange in exchanges:
            if exchange not in shared:
                await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_url = (
        os.environ.get("PAOTA_BENCH_AMQP_URL")
        or os.environ.get("PAOTA_TEST_AMQP_URL")
        or "amqp://guest:guest@127.0.0.1:5672/"
    )
    parser.add_argument("--url", default=default_url)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument(
        "--window", type=int, default=1000, help="publishes in flight (default 1000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument(
        "--pause", type=float, default=2.0, help="seconds between measured phases (default 2)"
    )
    args = parser.parse_args()
    n, window, pause_s = args.tasks, args.window, args.pause
    print(
        f"paota AMQP benchmark: {n} no-op tasks, {window} publishes in flight, prefetch {PREFETCH}, "
        f"best of {args.rounds} rounds"
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    runs = {"raw": raw_run, "paota": paota_run}
    warm_up = max(1, n // 10)
    for side in runs.values():
        await side(args.url, warm_up, min(window, warm_up), 0.0)
    best: dict[tuple[str, str], Rate] = {}
    for round_ in range(args.rounds):
        order = ["raw", "paota"] if round_ % 2 == 0 else ["paota", "raw"]
        for side in order:
            await asyncio.sleep(pause_s)
            rates = await runs[side](args.url, n, window, pause_s)
            print(f"  round {round_ + 1} {side:<5}  publish {rates[0]}   consume {rates[1]}")
            for what, rate in zip(("publish", "consume"), rates, strict=True):
                kept = best.get((side, what))
                if kept is None or rate.per_s > kept.per_s:
                    best[(side, what)] = rate
    for what in ("publish", "consume"):
        raw, ours = best[("raw", what)], best[("paota", what)]
        print(f"  {what}  raw {raw}   paota {ours}   ratio {ours.per_s / raw.per_s:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
