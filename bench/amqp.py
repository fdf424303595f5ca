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
cores). Each run uses fresh queue names and deletes them afterwards, except the delay ladders:
there is one per queue type, ``paota_bench_ladder.q00`` .. (quorum, also declared by the immediate
runs) and ``paota_bench_ladder.l00`` .. (classic), declared by the first run and kept for the next
ones (deleting many at-least-once quorum queues at once strands RabbitMQ's dead-letter workers,
rabbitmq-server#16652; :func:`paota.brokers.amqp.topology.delete_ladder` deletes one queue at a
time).

Then the cost of the delay ladder's queue type (``amqp.delay_queue_type``):

  (c) ``--delayed-tasks`` no-op tasks (default 5,000), each sent with ``send_task`` and
      ``eta = now + --delay`` (default 1 s), ``--window`` in flight, while one WorkerPool
      (concurrency 100, prefetch 100) consumes them; once on the classic ladder, once on the
      quorum one. Reported: the publish rate (confirmed; the client's CPU includes the pool's,
      which runs meanwhile), the drain rate (tasks / time from the first run to the last), the
      extra latency (the last run after the latest ETA, i.e. after the last publish plus the
      delay) and each task's lateness after its ETA (median and 99th percentile). With
      ``--broker-pid`` (RabbitMQ's ``beam.smp`` on this machine), also RabbitMQ's CPU time per
      task from the first publish to the last run, read from ``/proc``: a figure that depends less
      on what else the machine runs than the rates do (it counts whatever else the broker serves).

Same warm-up, rounds (alternating which queue type goes first) and pauses; then the best of each
figure (the highest rate, the lowest latency) and the ratio quorum/classic.

    python bench/amqp.py [--url amqp://guest:guest@127.0.0.1:5672/] [--tasks 20000] [--rounds 3]
                         [--delayed-tasks 5000] [--delay 1.0] [--broker-pid PID]
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
from datetime import UTC, datetime, timedelta

import aiormq
from aiormq.abc import DeliveredMessage

from paota import AMQPConfig, Config, Signature, WorkerPool
from paota.brokers.amqp.topology import DELAY_QUEUE_TYPES, Topology
from paota.core.signature import encode_message

PREFETCH = 100
#: The delay ladders' name prefix, the same in every run: ladders are kept, not deleted per run.
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
            tag = message.delivery_tag
            assert tag is not None  # always set on a delivery
            await consumer_channel.basic_ack(tag)
            count += 1
            if count == n:
                done.set()

        timer.start()
        consume_ok = await consumer_channel.basic_consume(queue, on_message)
        await done.wait()
        consume_rate = timer.rate(n)
        assert consume_ok.consumer_tag is not None
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


@dataclass
class Delayed:
    """One delayed run: the publish rate; the drain rate (tasks per second from the first run to
    the last); the extra latency (the last run after the latest ETA) and the lateness of a task
    after its ETA (median, 99th percentile), in seconds; deliveries the pool found early and
    delayed again (0 when the ladder never delivers before the ETA)."""

    publish: Rate
    drain_per_s: float
    extra_s: float
    late_p50_s: float
    late_p99_s: float
    redelayed: int
    broker_cpu_us: float | None

    def __str__(self) -> str:
        text = (
            f"publish {self.publish}   drain {self.drain_per_s:>7,.0f}/s   "
            f"extra {self.extra_s:6.3f} s   late p50 {self.late_p50_s:.3f} s "
            f"p99 {self.late_p99_s:.3f} s"
        )
        if self.broker_cpu_us is not None:
            text += f"   broker {self.broker_cpu_us:5.0f} us cpu"
        if self.redelayed:
            text += f"   re-delayed {self.redelayed}"
        return text


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) that process ``pid`` has used so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        # After "pid (comm)": state is field 3, utime and stime are fields 14 and 15.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def delayed_run(
    url: str, n: int, window: int, delay_s: float, queue_type: str, broker_pid: int | None
) -> Delayed:
    """Send ``n`` tasks due ``delay_s`` after their publish through the ``queue_type`` ladder
    while one WorkerPool consumes them; ``broker_pid``: RabbitMQ's process, to read its CPU."""
    config = bench_config(url, queue_type)
    pool = WorkerPool(config, concurrency=PREFETCH, name="bench-delayed-worker")
    producer = WorkerPool(config, name="bench-delayed-producer")
    done = asyncio.Event()
    lateness: list[float] = []
    first_run = last_run = broker_cpu_s = 0.0

    @pool.task(name="Noop")
    async def noop(sig: Signature) -> None:
        nonlocal first_run, last_run, broker_cpu_s
        now = time.time()
        if not lateness:
            first_run = now
        lateness.append(now - sig.eta.timestamp() if sig.eta is not None else float("nan"))
        if len(lateness) == n:
            last_run = now
            if broker_pid is not None:
                broker_cpu_s += process_cpu_s(broker_pid)
            done.set()

    base = Signature("Noop")
    delay = timedelta(seconds=delay_s)
    latest_eta = datetime.now(UTC)

    def send() -> Awaitable[object]:
        nonlocal latest_eta
        latest_eta = datetime.now(UTC) + delay
        return producer.send_task(base.replace(eta=latest_eta))

    timeout_s = delay_s + max(120.0, n / 20)
    async with pool, producer:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        try:
            if broker_pid is not None:
                broker_cpu_s = -process_cpu_s(broker_pid)
            timer = Timer()
            timer.start()
            await in_windows(n, window, send)
            publish_rate = timer.rate(n)
            try:
                await asyncio.wait_for(done.wait(), timeout_s)
            except TimeoutError:
                # The task queue is kept: stragglers still coming down the ladder land there.
                raise RuntimeError(
                    f"{queue_type} ladder: {len(lateness)} of {n} delayed tasks ran within "
                    f"{timeout_s:g} s; task queue {config.task_queue_name!r} left in place"
                ) from None
        finally:
            await pool.stop()
            await worker
    await _delete_topology(url, config)
    ordered = sorted(lateness)
    return Delayed(
        publish=publish_rate,
        drain_per_s=n / max(last_run - first_run, 1e-9),
        extra_s=last_run - latest_eta.timestamp(),
        late_p50_s=_quantile(ordered, 0.50),
        late_p99_s=_quantile(ordered, 0.99),
        redelayed=pool.stats.deferred,
        broker_cpu_us=broker_cpu_s / n * 1e6 if broker_pid is not None else None,
    )


def _compare(label: str, classic: float, quorum: float, unit: str) -> None:
    ratio = quorum / classic if classic else float("inf")
    shown = f"{{:>9,.0f}}{unit}" if unit != " s" else f"{{:9.3f}}{unit}"
    print(
        f"  {label:<13} classic {shown.format(classic)}   quorum {shown.format(quorum)}   "
        f"ratio quorum/classic {ratio:.2f}"
    )


async def delayed_section(
    url: str,
    n: int,
    window: int,
    delay_s: float,
    rounds: int,
    pause_s: float,
    broker_pid: int | None,
) -> None:
    print(
        f"delayed: {n} no-op tasks with eta = now + {delay_s:g} s, {window} publishes in flight, "
        f"consumed meanwhile by one WorkerPool (concurrency {PREFETCH}, prefetch {PREFETCH}), "
        f"classic and quorum ladders, best of {rounds} rounds"
    )
    warm_up = max(1, n // 10)
    for kind in DELAY_QUEUE_TYPES:
        await delayed_run(url, warm_up, min(window, warm_up), delay_s, kind, broker_pid)
    runs: dict[str, list[Delayed]] = {kind: [] for kind in DELAY_QUEUE_TYPES}
    for round_ in range(rounds):
        order = ["classic", "quorum"] if round_ % 2 == 0 else ["quorum", "classic"]
        for kind in order:
            await asyncio.sleep(pause_s)
            run = await delayed_run(url, n, window, delay_s, kind, broker_pid)
            runs[kind].append(run)
            print(f"  round {round_ + 1} {kind:<7}  {run}")
    best_publish = {kind: max(runs[kind], key=lambda r: r.publish.per_s).publish for kind in runs}
    classic, quorum = best_publish["classic"], best_publish["quorum"]
    print(
        f"  {'publish':<13} classic {classic}   quorum {quorum}   "
        f"ratio quorum/classic {quorum.per_s / classic.per_s:.2f}"
    )
    best_drain = {kind: max(r.drain_per_s for r in runs[kind]) for kind in runs}
    _compare("drain", best_drain["classic"], best_drain["quorum"], "/s")
    seconds: tuple[tuple[str, Callable[[Delayed], float]], ...] = (
        ("extra latency", lambda r: r.extra_s),
        ("late p50", lambda r: r.late_p50_s),
        ("late p99", lambda r: r.late_p99_s),
    )
    for label, figure in seconds:
        best = {kind: min(map(figure, runs[kind])) for kind in runs}
        _compare(label, best["classic"], best["quorum"], " s")
    if broker_pid is not None:
        cpu = {kind: min(r.broker_cpu_us or 0.0 for r in runs[kind]) for kind in runs}
        _compare("broker cpu", cpu["classic"], cpu["quorum"], " us")


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
    parser.add_argument(
        "--delayed-tasks",
        type=int,
        default=5_000,
        help="delayed tasks per run (default 5000; 0 skips the delayed section)",
    )
    parser.add_argument(
        "--delay", type=float, default=1.0, help="delay of the delayed tasks, seconds (default 1)"
    )
    parser.add_argument(
        "--broker-pid",
        type=int,
        default=None,
        help="RabbitMQ's process id on this machine: also report its CPU per delayed task",
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
    for run in runs.values():
        await run(args.url, warm_up, min(window, warm_up), 0.0)
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
    if args.delayed_tasks > 0:
        await delayed_section(
            args.url,
            args.delayed_tasks,
            window,
            args.delay,
            args.rounds,
            pause_s,
            args.broker_pid,
        )


if __name__ == "__main__":
    asyncio.run(main())
