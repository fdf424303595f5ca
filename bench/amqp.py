"""paota on RabbitMQ against a raw aiormq ceiling, in one run on the same broker.

  (a) publish N no-op tasks: paota ``send_task`` (``--window`` calls in flight) against raw aiormq
      ``basic_publish`` on a confirm channel with the same number of publishes in flight;
  (b) drain them: one WorkerPool (concurrency 100, prefetch 100) against a raw aiormq consumer
      with ``basic_qos(100)`` and one ``basic_ack`` per message.

Prints messages/s for each and paota's ratio to raw. Each run uses fresh queue names and deletes
them afterwards.

    python bench/amqp.py [--url amqp://guest:guest@127.0.0.1:5672/] [--tasks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from collections.abc import Awaitable, Callable

import aiormq
from aiormq.abc import DeliveredMessage

from paota import AMQPConfig, Config, Signature, WorkerPool
from paota.core.signature import encode_message

PREFETCH = 100


async def in_windows(n: int, window: int, make: Callable[[], Awaitable[object]]) -> None:
    """Run ``n`` awaitables with at most ``window`` in flight."""
    for first in range(0, n, window):
        await asyncio.gather(*(make() for _ in range(min(window, n - first))))


async def raw_run(url: str, n: int, window: int) -> tuple[float, float]:
    queue = f"bench_raw_{uuid.uuid4().hex[:8]}"
    body = encode_message(Signature("Noop", uuid="task_" + "0" * 36)).body
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True)
        props = aiormq.spec.Basic.Properties(delivery_mode=2, content_type="application/json")
        t0 = time.perf_counter()
        await in_windows(
            n, window, lambda: channel.basic_publish(body, routing_key=queue, properties=props)
        )
        publish_rate = n / (time.perf_counter() - t0)

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

        t0 = time.perf_counter()
        consume_ok = await consumer_channel.basic_consume(queue, on_message)
        await done.wait()
        consume_rate = n / (time.perf_counter() - t0)
        await consumer_channel.basic_cancel(consume_ok.consumer_tag)
        await channel.queue_delete(queue)
        return publish_rate, consume_rate
    finally:
        await connection.close()


async def paota_run(url: str, n: int, window: int) -> tuple[float, float]:
    suffix = uuid.uuid4().hex[:8]
    config = Config(
        broker="amqp",
        task_queue_name=f"bench_paota_{suffix}",
        amqp=AMQPConfig(
            url=url,
            exchange=f"bench_exchange_{suffix}",
            delayed_queue=f"bench_delayed_{suffix}",
            failed_queue=f"bench_failed_{suffix}",
            timeout_queue=f"bench_timeout_{suffix}",
            prefetch_count=PREFETCH,
        ),
    )
    producer = WorkerPool(config, name="bench-producer")
    async with producer:
        sig = Signature("Noop")
        t0 = time.perf_counter()
        await in_windows(n, window, lambda: producer.send_task(sig))
        publish_rate = n / (time.perf_counter() - t0)

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
        t0 = time.perf_counter()
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await done.wait()
        consume_rate = n / (time.perf_counter() - t0)
        await pool.stop()
        await worker
    await _delete_topology(url, config)
    return publish_rate, consume_rate


async def _delete_topology(url: str, config: Config) -> None:
    from paota.brokers.amqp.topology import Topology

    queues, exchanges = Topology.from_config(config).names()
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
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
    args = parser.parse_args()
    n = args.tasks
    print(
        f"paota AMQP benchmark: {n} no-op tasks, {args.window} publishes in flight, prefetch {PREFETCH}"
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    raw_pub, raw_con = await raw_run(args.url, n, args.window)
    paota_pub, paota_con = await paota_run(args.url, n, args.window)
    for what, raw, ours in (("publish", raw_pub, paota_pub), ("consume", raw_con, paota_con)):
        print(
            f"  {what}  raw {raw:>9,.0f} msgs/s   paota {ours:>9,.0f} tasks/s   ratio {ours / raw:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
