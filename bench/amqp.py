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
cores). Each run uses fresh queue names and deletes them afterwards, except the delay ladders
(``paota_bench_ladder.*``, one per mode and queue type), shared by the runs and deleted at the end,
one queue at a time (deleting many at-least-once quorum queues at once strands RabbitMQ's
dead-letter workers, rabbitmq-server#16652).

Then delayed tasks, through each ladder (:data:`LADDERS`: ``amqp.delay_mode`` and
``amqp.delay_queue_type``):

  (c) ``--delayed-tasks`` no-op tasks (default 5,000), each sent with ``send_task`` and
      ``eta = now + --delay`` (default 1 s), ``--window`` in flight, while one WorkerPool
      (concurrency 100, prefetch 100) consumes them; on the 30-level ladder of before
      (``"ladder"`` mode, quorum and classic) and through the hold queue (``"hold"``, the
      default). Reported: the publish rate (confirmed; the client's CPU includes the pool's,
      which runs meanwhile), the drain rate (tasks / time from the first run to the last), the
      extra latency (the last run after the latest ETA, i.e. after the last publish plus the
      delay) and each task's lateness after its ETA (median and 99th percentile). With
      ``--broker-pid`` (RabbitMQ's ``beam.smp`` on this machine), also RabbitMQ's CPU time per
      task from the first publish to the last run, read from ``/proc``: a figure that depends less
      on what else the machine runs than the rates do (it counts whatever else the broker serves).

Same warm-up, rounds (rotating which ladder goes first) and pauses; then the best of each figure
(the highest rate, the lowest latency) and the ratio of each to the ladder of before (quorum).
The ladders are deleted at the end of the run, one queue at a time.

Then the batch send and the processes (issue 11):

  (d) batch send: N no-op tasks in one ``client.send_many(signatures)`` (``--window`` sends in
      flight, sliding), against raw confirmed publishing of (a) and ``send_task`` in windows; and
      a plain ``await send_task(...)`` loop on a tenth of the tasks, one round trip per task.
  (e) drain with ``paota worker amqp_worker:pool --processes P`` (``bench/amqp_worker.py``: the
      supervisor and P worker processes, concurrency 100, prefetch 100 each), P = 1 and P =
      ``--processes`` (default: one per core). The queue is filled first; each worker process
      holds its first deliveries until every one consumes, so start-up is not counted; the rate
      is the tasks over the time from that moment to the last task's end. Reported with the
      worker processes' CPU per task and each one's resident memory (now and peak, ``VmRSS`` /
      ``VmHWM``), and the ratios P / 1 and to the raw consumer of (b).

Every section prints its rounds, then the best (and the median) of each side.

    python bench/amqp.py [--url amqp://guest:guest@127.0.0.1:5672/] [--tasks 20000] [--rounds 3]
                         [--delayed-tasks 5000] [--delay 1.0] [--broker-pid PID] [--processes P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiormq
from aiormq.abc import DeliveredMessage

from paota import AMQPConfig, Client, Config, Signature, WorkerPool
from paota.brokers.amqp.control import control_exchange_name
from paota.brokers.amqp.topology import Topology, delete_ladder
from paota.core.message import encode_message

PREFETCH = 100
HERE = Path(__file__).resolve().parent
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


def bench_config(url: str, delay_queue_type: str = "quorum", delay_mode: str = "hold") -> Config:
    """A config with fresh queue and exchange names, on the shared ``delay_queue_type`` ladder
    of ``delay_mode``."""
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
            delay_mode=delay_mode,
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
        for exchange in [*exchanges, control_exchange_name(config.amqp.exchange)]:
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


#: The ladders the delayed section compares: (label, delay_mode, delay_queue_type). The first is
#: the reference of the ratios (the default before the hold queue).
LADDERS = (
    ("ladder-quorum", "ladder", "quorum"),
    ("ladder-classic", "ladder", "classic"),
    ("hold-quorum", "hold", "quorum"),
)


async def delayed_run(
    url: str, n: int, window: int, delay_s: float, ladder: str, broker_pid: int | None
) -> Delayed:
    """Send ``n`` tasks due ``delay_s`` after their publish through ``ladder`` (a label of
    :data:`LADDERS`) while one WorkerPool consumes them; ``broker_pid``: RabbitMQ's process, to
    read its CPU."""
    _, mode, queue_type = next(item for item in LADDERS if item[0] == ladder)
    config = bench_config(url, queue_type, mode)
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
                    f"{ladder}: {len(lateness)} of {n} delayed tasks ran within "
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


def _compare(label: str, best: dict[str, float], unit: str) -> None:
    shown = f"{{:>9,.0f}}{unit}" if unit != " s" else f"{{:9.3f}}{unit}"
    reference = best[LADDERS[0][0]]
    cells = "   ".join(f"{name} {shown.format(value)}" for name, value in best.items())
    ratios = ", ".join(
        f"{name} {value / reference:.2f}" if reference else f"{name} -"
        for name, value in best.items()
        if name != LADDERS[0][0]
    )
    print(f"  {label:<13} {cells}   (to {LADDERS[0][0]}: {ratios})")


async def delayed_section(
    url: str,
    n: int,
    window: int,
    delay_s: float,
    rounds: int,
    pause_s: float,
    broker_pid: int | None,
) -> None:
    names = [name for name, _, _ in LADDERS]
    print(
        f"delayed: {n} no-op tasks with eta = now + {delay_s:g} s, {window} publishes in flight, "
        f"consumed meanwhile by one WorkerPool (concurrency {PREFETCH}, prefetch {PREFETCH}), "
        f"ladders {', '.join(names)}, best of {rounds} rounds"
    )
    warm_up = max(1, n // 10)
    for name in names:
        await delayed_run(url, warm_up, min(window, warm_up), delay_s, name, broker_pid)
    runs: dict[str, list[Delayed]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            await asyncio.sleep(pause_s)
            run = await delayed_run(url, n, window, delay_s, name, broker_pid)
            runs[name].append(run)
            print(f"  round {round_ + 1} {name:<14}  {run}")
    _compare("publish", {k: max(r.publish.per_s for r in runs[k]) for k in names}, "/s")
    _compare("drain", {k: max(r.drain_per_s for r in runs[k]) for k in names}, "/s")
    seconds: tuple[tuple[str, Callable[[Delayed], float]], ...] = (
        ("extra latency", lambda r: r.extra_s),
        ("late p50", lambda r: r.late_p50_s),
        ("late p99", lambda r: r.late_p99_s),
    )
    for label, figure in seconds:
        _compare(label, {k: min(map(figure, runs[k])) for k in names}, " s")
    if broker_pid is not None:
        cpu = {k: min(r.broker_cpu_us or 0.0 for r in runs[k]) for k in names}
        _compare("broker cpu", cpu, " us")


async def delete_ladders(url: str) -> None:
    """Delete the bench's delay ladders, one queue at a time (rabbitmq-server#16652)."""
    connection = await aiormq.connect(url)
    try:
        for _, mode, queue_type in LADDERS:
            topology = Topology.from_config(bench_config(url, queue_type, mode))
            await delete_ladder(await connection.channel(), topology)
    finally:
        await connection.close()


# --- batch send -----------------------------------------------------------------------------------


async def batch_run(url: str, n: int, window: int) -> Rate:
    """``n`` no-op tasks in one ``send_many``, ``window`` sends in flight."""
    config = bench_config(url)
    async with Client(config, name="bench-batch") as producer:
        signatures = [Signature("Noop") for _ in range(n)]
        timer = Timer()
        timer.start()
        handles = await producer.send_many(signatures, window=window)
        rate = timer.rate(n)
        assert len(handles) == n
    await _delete_topology(url, config)
    return rate


async def sequential_run(url: str, n: int) -> Rate:
    """``n`` no-op tasks sent one after the other: ``await send_task(...)`` in a loop."""
    config = bench_config(url)
    async with Client(config, name="bench-sequential") as producer:
        sig = Signature("Noop")
        timer = Timer()
        timer.start()
        for _ in range(n):
            await producer.send_task(sig)
        rate = timer.rate(n)
    await _delete_topology(url, config)
    return rate


async def batch_section(
    url: str, n: int, window: int, rounds: int, pause_s: float, raw_publish: Rate | None
) -> None:
    print(
        f"batch send: {n} no-op tasks in one send_many ({window} in flight), best of {rounds} "
        f"rounds; a plain send loop on {max(1, n // 10)}"
    )
    await batch_run(url, max(1, n // 10), window)
    batches: list[Rate] = []
    for round_ in range(rounds):
        await asyncio.sleep(pause_s)
        rate = await batch_run(url, n, window)
        batches.append(rate)
        print(f"  round {round_ + 1} send_many  {rate}")
    await asyncio.sleep(pause_s)
    sequential = await sequential_run(url, max(1, n // 10))
    best = max(batches, key=lambda r: r.per_s)
    median = statistics.median(r.per_s for r in batches)
    line = f"  send_many {best} (median {median:,.0f}/s)   send loop {sequential}"
    line += f"   send_many/loop {best.per_s / sequential.per_s:.1f}"
    if raw_publish is not None:
        line += f"   ratio to raw publish {best.per_s / raw_publish.per_s:.2f}"
    print(line)


# --- several worker processes --------------------------------------------------------------------


@dataclass
class Drain:
    """One drain by supervised worker processes: the rate (tasks per second), the worker
    processes' CPU per task, and the largest resident memory of one of them, now and at peak."""

    per_s: float
    cpu_us: float
    rss_mib: float
    hwm_mib: float
    broker_cpu_us: float | None = None

    def __str__(self) -> str:
        text = (
            f"{self.per_s:>9,.0f}/s {self.cpu_us:5.1f} us cpu   rss {self.rss_mib:4.1f} MiB "
            f"(peak {self.hwm_mib:4.1f} MiB) per process"
        )
        if self.broker_cpu_us is not None:
            text += f"   broker {self.broker_cpu_us:5.1f} us cpu"
        return text


def worker_env(config: Config, directory: str) -> dict[str, str]:
    """The environment of ``paota worker amqp_worker:pool`` for ``config``'s topology (and the
    caller's ``PAOTA_UVLOOP``: ``PAOTA_UVLOOP=0 python bench/amqp.py`` measures asyncio's loop)."""
    amqp = config.amqp
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_") or k == "PAOTA_UVLOOP"}
    env.update(
        PAOTA_BROKER="amqp",
        PAOTA_AMQP_URL=amqp.url,
        PAOTA_AMQP_EXCHANGE=amqp.exchange,
        PAOTA_AMQP_DELAYED_QUEUE=amqp.delayed_queue,
        PAOTA_AMQP_DELAY_LADDER=amqp.delay_ladder,
        PAOTA_AMQP_DELAY_QUEUE_TYPE=amqp.delay_queue_type,
        PAOTA_AMQP_FAILED_QUEUE=amqp.failed_queue,
        PAOTA_AMQP_TIMEOUT_QUEUE=amqp.timeout_queue,
        PAOTA_AMQP_PREFETCH_COUNT=str(PREFETCH),
        PAOTA_QUEUE_NAME=config.task_queue_name,
        PYTHONPATH=os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        BENCH_DIR=directory,
    )
    return env


def _files(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern))


def _progress(folder: Path) -> list[dict[str, float]]:
    """What each worker process last reported (``bench/amqp_worker.py``)."""
    progress = []
    for path in folder.glob("progress-*.json"):
        try:
            progress.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # replaced as it was read
    return progress


async def processes_run(
    url: str, n: int, processes: int, window: int, pause_s: float, broker_pid: int | None = None
) -> Drain:
    """Fill a queue with ``n`` tasks, then drain it with ``paota worker --processes``;
    ``broker_pid``: RabbitMQ's process, to read its CPU per task too."""
    config = bench_config(url)
    async with Client(config, name="bench-filler") as producer:
        await producer.send_many([Signature("Noop") for _ in range(n)], window=window)
    await asyncio.sleep(pause_s)
    with tempfile.TemporaryDirectory(prefix="paota-bench-") as directory:
        folder = Path(directory)
        supervisor = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "paota",
            "--log-level",
            "WARNING",
            "worker",
            "--processes",
            str(processes),
            "amqp_worker:pool",
            env=worker_env(config, directory),
            cwd=str(HERE),
            stdout=asyncio.subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while len(holding := _files(folder, "holding-*")) < processes:
                if time.monotonic() > deadline or supervisor.returncode is not None:
                    raise RuntimeError(f"{len(holding)} of {processes} worker processes consume")
                await asyncio.sleep(0.01)
            pids = [int(path.name.split("-")[1]) for path in holding]
            cpu_s = -sum(process_cpu_s(pid) for pid in pids)
            broker_s = -process_cpu_s(broker_pid) if broker_pid is not None else 0.0
            started = time.time()
            (folder / "go").touch()
            deadline = time.monotonic() + max(120.0, n / 100)
            while True:
                progress = _progress(folder)
                if sum(p["count"] for p in progress) >= n:
                    break
                if time.monotonic() > deadline:
                    done = sum(p["count"] for p in progress)
                    raise RuntimeError(f"{done} of {n} tasks ran with {processes} processes")
                await asyncio.sleep(0.02)
            cpu_s += sum(process_cpu_s(pid) for pid in pids)
            if broker_pid is not None:
                broker_s += process_cpu_s(broker_pid)
            finished = max(p["last"] for p in progress)
        finally:
            if supervisor.returncode is None:
                supervisor.send_signal(signal.SIGTERM)
            await asyncio.wait_for(supervisor.wait(), 120)
    await _delete_topology(url, config)
    return Drain(
        per_s=n / (finished - started),
        cpu_us=cpu_s / n * 1e6,
        rss_mib=max(p["rss"] for p in progress) / 1024,
        hwm_mib=max(p["hwm"] for p in progress) / 1024,
        broker_cpu_us=broker_s / n * 1e6 if broker_pid is not None else None,
    )


async def processes_section(
    url: str,
    n: int,
    processes: int,
    window: int,
    rounds: int,
    pause_s: float,
    raw_consume: Rate | None,
    broker_pid: int | None = None,
) -> None:
    counts = sorted({1, processes})
    print(
        f"processes: {n} no-op tasks drained by paota worker --processes P (concurrency "
        f"{PREFETCH}, prefetch {PREFETCH} each), P in {counts}, best of {rounds} rounds"
    )
    await processes_run(url, max(PREFETCH * processes * 2, n // 10), processes, window, 0.0)
    runs: dict[int, list[Drain]] = {p: [] for p in counts}
    for round_ in range(rounds):
        for p in counts if round_ % 2 == 0 else reversed(counts):
            await asyncio.sleep(pause_s)
            run = await processes_run(url, n, p, window, pause_s, broker_pid)
            runs[p].append(run)
            print(f"  round {round_ + 1} {p} process{'es' if p > 1 else '  '}  {run}")
    best = {p: max(runs[p], key=lambda r: r.per_s) for p in counts}
    for p in counts:
        median = statistics.median(r.per_s for r in runs[p])
        line = f"  {p} process{'es' if p > 1 else '  '}  {best[p]}   (median {median:,.0f}/s)"
        if raw_consume is not None:
            line += f"   ratio to raw consume {best[p].per_s / raw_consume.per_s:.2f}"
        print(line)
    if len(counts) > 1:
        one, many = best[1].per_s, best[processes].per_s
        medians = {p: statistics.median(r.per_s for r in runs[p]) for p in counts}
        print(
            f"  {processes} processes / 1 process: best {many / one:.2f}   median "
            f"{medians[processes] / medians[1]:.2f}"
        )
    for p in counts:
        brokers = [r.broker_cpu_us for r in runs[p] if r.broker_cpu_us is not None]
        if brokers:
            # What the cores allow: every task costs the workers' CPU and the broker's, and the
            # machine has os.cpu_count() cores for both (and whatever else it runs). Medians of
            # the rounds: the CPU per task varies less than the rates, but it varies.
            workers = statistics.median(r.cpu_us for r in runs[p])
            broker = statistics.median(brokers)
            total = workers + broker
            cores = os.cpu_count() or 1
            print(
                f"  {p} process{'es' if p > 1 else '  '}  cpu per task (medians): workers "
                f"{workers:.1f} + broker {broker:.1f} = {total:.1f} us; {cores} cores allow at "
                f"most {cores * 1e6 / total:,.0f}/s, {p} process{'es' if p > 1 else ''} at most "
                f"{min(cores, p) * 1e6 / workers:,.0f}/s"
            )


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
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes of the processes section, beside one (default: one per core; "
        "0 skips the section)",
    )
    parser.add_argument(
        "--sections",
        default="immediate,batch,processes,delayed",
        help="the sections to run, comma-separated (default: all of "
        "immediate,batch,processes,delayed)",
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
    sections = {name.strip() for name in args.sections.split(",") if name.strip()}
    unknown = sections - {"immediate", "batch", "processes", "delayed"}
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; expected immediate,batch,...")
    try:
        best: dict[tuple[str, str], Rate] = {}
        if "immediate" in sections:
            best = await immediate_section(args.url, n, window, args.rounds, pause_s)
        if "batch" in sections:
            await batch_section(
                args.url, n, window, args.rounds, pause_s, best.get(("raw", "publish"))
            )
        if "processes" in sections and args.processes > 0:
            await processes_section(
                args.url,
                n,
                args.processes,
                window,
                args.rounds,
                pause_s,
                best.get(("raw", "consume")),
                args.broker_pid,
            )
        if "delayed" in sections and args.delayed_tasks > 0:
            await delayed_section(
                args.url,
                args.delayed_tasks,
                window,
                args.delay,
                args.rounds,
                pause_s,
                args.broker_pid,
            )
    finally:
        await delete_ladders(args.url)


async def immediate_section(
    url: str, n: int, window: int, rounds: int, pause_s: float
) -> dict[tuple[str, str], Rate]:
    """(a) and (b): the best rate of each (side, what), after printing the rounds."""
    runs = {"raw": raw_run, "paota": paota_run}
    warm_up = max(1, n // 10)
    for run in runs.values():
        await run(url, warm_up, min(window, warm_up), 0.0)
    seen: dict[tuple[str, str], list[Rate]] = {}
    for round_ in range(rounds):
        order = ["raw", "paota"] if round_ % 2 == 0 else ["paota", "raw"]
        for side in order:
            await asyncio.sleep(pause_s)
            rates = await runs[side](url, n, window, pause_s)
            print(f"  round {round_ + 1} {side:<5}  publish {rates[0]}   consume {rates[1]}")
            for what, rate in zip(("publish", "consume"), rates, strict=True):
                seen.setdefault((side, what), []).append(rate)
    best = {key: max(rates, key=lambda r: r.per_s) for key, rates in seen.items()}
    for what in ("publish", "consume"):
        raw, ours = best[("raw", what)], best[("paota", what)]
        medians = [statistics.median(r.per_s for r in seen[(side, what)]) for side in runs]
        print(
            f"  {what}  raw {raw}   paota {ours}   ratio {ours.per_s / raw.per_s:.2f}   "
            f"(medians {medians[0]:,.0f}/s and {medians[1]:,.0f}/s: {medians[1] / medians[0]:.2f})"
        )
    return best


if __name__ == "__main__":
    asyncio.run(main())
