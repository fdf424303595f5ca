"""Limits across processes: three ``paota worker`` processes on RabbitMQ share a global
``max_concurrency`` and ``rate`` through the MongoDB store; and a global limit when MongoDB dies.

Every run reports when it began and ended (wall clock, one machine) and the start the rate limit
granted it; from those the test checks the combined concurrency and start rate, and that the
throttling cost no retry and parked nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import statistics
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiormq
import pytest

from paota import (
    Arg,
    Client,
    Config,
    MongoConfig,
    ParkQueue,
    Signature,
    TaskStatus,
    WorkerPool,
    current_task,
)
from paota.brokers.memory import MemoryBroker
from paota.middleware.limits import GRANTED_KEY, LimitsMiddleware
from paota.stores.mongo import MongoStore

pytestmark = pytest.mark.integration

TASK = "limits.e2e"
MAX_CONCURRENCY = 3
RATE = "10/s"
INTERVAL_S = 0.1
TASKS = 60
WORKERS = 3

APP = textwrap.dedent(
    f"""
    import asyncio
    import os
    import time

    from paota import Config, WorkerPool, current_task
    from paota.middleware.limits import GRANTED_KEY, LimitsMiddleware

    # The store is healthy here: its calls get 30 s, not the default 2 s, which mongoeco (pure
    # Python) overran under the stress CPU hog (stress run of 2026-12-07: four fail-closed
    # episodes on a healthy store). The outage test below keeps the default.
    pool = WorkerPool(
        Config.from_env(),
        concurrency=4,
        name=os.environ["LIMITS_WORKER"],
        middleware=[LimitsMiddleware(store_timeout_s=30.0)],
    )
    DURATIONS_S = (0.1, 0.2, 0.6)  # 3 at once allow ~10 starts/s: both limits bite

    @pool.task(
        name={TASK!r}, max_concurrency={MAX_CONCURRENCY}, rate={RATE!r}, limit_scope="global"
    )
    async def limited(n: int) -> dict:
        begun = time.time()
        task = current_task()
        granted = task.data[GRANTED_KEY]
        await asyncio.sleep(DURATIONS_S[n % len(DURATIONS_S)])
        return {{
            "n": n,
            "worker": task.worker,
            "attempt": task.attempt,
            "admitted": task.started_at.timestamp(),  # when the limiter let it through
            "begun": begun,
            "ended": time.time(),
            "granted": granted.timestamp(),
        }}
    """
)


def worker_env(config: Config, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    env.update(
        PAOTA_BROKER="amqp",
        PAOTA_AMQP_URL=config.amqp.url,
        PAOTA_QUEUE_NAME=config.task_queue_name,
        PAOTA_AMQP_EXCHANGE=config.amqp.exchange,
        PAOTA_AMQP_DELAYED_QUEUE=config.amqp.delayed_queue,
        PAOTA_AMQP_DELAY_LADDER=config.amqp.delay_ladder,
        PAOTA_AMQP_FAILED_QUEUE=config.amqp.failed_queue,
        PAOTA_AMQP_TIMEOUT_QUEUE=config.amqp.timeout_queue,
        PAOTA_STORE="mongodb",
        PAOTA_MONGO_URI=config.mongo.uri,
        PAOTA_MONGO_DB=config.mongo.database,
        LIMITS_WORKER=name,
    )
    return env


class Worker:
    """One ``paota worker`` process; its log is kept (and read for the line saying it consumes)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.log: list[str] = []
        self.consuming = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if "consuming" in line:
                self.consuming.set()

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.wait_for(self._reader, 10)
        return self.process.returncode or 0


@pytest.fixture
async def database(mongo_uri: str) -> AsyncIterator[str]:
    name = f"paota_limits_{uuid.uuid4().hex[:10]}"
    yield name
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, serverSelectionTimeoutMS=5000
    )
    try:
        await client.drop_database(name)
    finally:
        await client.close()


async def queue_depth(config: Config, queue: str) -> int:
    connection = await aiormq.connect(config.amqp.url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


def most_in_one_window(times: list[float], window_s: float) -> int:
    """The most of ``times`` in any window ``[t, t + window_s)``."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered[i:] if u < t + window_s) for i, t in enumerate(ordered))


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans ``[begun, ended)`` that overlap at one instant."""
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in events:  # an end sorts before a begin at the same instant
        now += step
        peak = max(peak, now)
    return peak


async def test_three_workers_sharing_mongodb_keep_the_combined_limits(
    make_config: Any, mongo_uri: str, database: str, tmp_path: Path
) -> None:
    # given three worker processes on one RabbitMQ queue, sharing a MongoDB store, with a task
    # limited to 3 runs at once and 10 starts a second across all of them
    config = make_config(
        config_fields={"store": "mongodb", "mongo": MongoConfig(uri=mongo_uri, database=database)}
    )
    (tmp_path / "limits_app.py").write_text(APP)
    workers = []
    try:
        for i in range(WORKERS):
            name = f"limits-worker-{i}"
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "paota",
                "worker",
                "limits_app:pool",
                cwd=tmp_path,
                env=worker_env(config, name),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            workers.append(Worker(name, process))
        for worker in workers:
            try:
                await asyncio.wait_for(worker.consuming.wait(), 60)
            except TimeoutError:
                pytest.fail(f"{worker.name} did not start:\n" + "\n".join(worker.log))

        # when a producer sends 60 tasks at once and waits for their results
        producer = WorkerPool(config, name="limits-producer")
        async with producer:
            sent = time.time()
            handles = [
                await producer.send_task(Signature(TASK, args=[Arg("n", "int", n)]))
                for n in range(TASKS)
            ]
            results = [await h.result(timeout=90) for h in handles]
            states = [await h.state() for h in handles]
    finally:
        codes = [await worker.stop() for worker in workers]
    assert codes == [0] * WORKERS, "\n".join(line for w in workers for line in w.log)

    # then every task ran once, on its first attempt, and succeeded
    assert sorted(r["n"] for r in results) == list(range(TASKS))
    assert {r["attempt"] for r in results} == {0}
    for state in states:
        assert state is not None and state.status is TaskStatus.SUCCEEDED
        assert state.attempts == 0
    ran_on = {r["worker"] for r in results}
    assert len(ran_on) >= 2, ran_on
    # never more than 3 runs at once, across the three processes (whether 3 ever overlapped
    # depends on how fast a loaded machine starts them: not asserted, shown)
    spans = [(r["begun"], r["ended"]) for r in results]
    peak = most_at_once(spans)
    print(f"limits: at most {peak} runs at once (limit {MAX_CONCURRENCY})")
    assert peak <= MAX_CONCURRENCY
    # the starts granted are at least 0.1 s apart: never more than 10 in any second
    grants = sorted(r["granted"] for r in results)
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) >= INTERVAL_S - 1e-6, min(gaps)
    assert most_in_one_window(grants, 1.0) <= 10
    # each run was let through when its grant came due, a little later: its copy arrived at most
    # the tolerance late (one interval here; else it would have taken a new grant, at most 1 s
    # in any case), then took its slot (a few round trips to MongoDB, each bounded by the
    # limiter's 2 s store timeout); the run's first line follows the pool's STARTED write
    admitted = sorted(r["admitted"] - r["granted"] for r in results)
    assert admitted[0] >= -0.002 and admitted[-1] <= 1.0 + 2.0, admitted
    lateness = sorted(r["begun"] - r["granted"] for r in results)
    assert all(r["admitted"] <= r["begun"] for r in results)
    # so the runs themselves keep the limit's pace: 60 starts take 5.9 s or more; within a
    # second they bunch only by the spread of that latency (printed below)
    begun = sorted(r["begun"] for r in results)
    assert begun[-1] - begun[0] >= (TASKS - 1) * INTERVAL_S - 0.05
    # the throttling went through the broker's delay: nothing parked, nothing left behind
    assert await queue_depth(config, config.amqp.failed_queue) == 0
    assert await queue_depth(config, config.amqp.timeout_queue) == 0
    assert await queue_depth(config, config.task_queue_name) == 0
    warnings = [line for w in workers for line in w.log if " WARNING " in line or " ERROR " in line]
    assert warnings == []
    summaries = [
        line.split(": ", 1)[1] for w in workers for line in w.log if "runs started" in line
    ]
    assert len(summaries) == WORKERS
    print(
        "\n".join(["", *summaries]),
        f"\nlimits e2e: {TASKS} tasks on {len(ran_on)} workers in {time.time() - sent:.1f}s; "
        f"starts {begun[-1] - begun[0]:.2f}s first to last; most at once "
        f"{most_at_once(spans)}; most granted in 1 s {most_in_one_window(grants, 1.0)}, most "
        f"begun in 1 s {most_in_one_window(begun, 1.0)}; from the grant to being let through: "
        f"median {statistics.median(admitted) * 1000:.1f} ms, max {admitted[-1] * 1000:.1f} ms; "
        f"to the run's first line: median {statistics.median(lateness) * 1000:.1f} ms, max "
        f"{lateness[-1] * 1000:.1f} ms",
    )


async def test_mongodb_start_reservations_are_never_closer_than_the_interval(
    mongo_uri: str, database: str
) -> None:
    # given reservations made with times that have microseconds (BSON keeps milliseconds)
    config = Config(store="mongodb", mongo=MongoConfig(uri=mongo_uri, database=database))
    async with MongoStore(config) as store:
        now = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
        waits = await asyncio.gather(
            *(store.reserve_start("gaps", 0.0333337, now=now) for _ in range(15))
        )
        later = now + timedelta(seconds=0.5005)
        waits_later = [await store.reserve_start("gaps", 0.0333337, now=later) for _ in range(5)]
    starts = sorted(
        [now + timedelta(seconds=w) for w in waits]
        + [later + timedelta(seconds=w) for w in waits_later]
    )
    # then each start is at least the interval after the one before, to the microsecond
    for a, b in itertools.pairwise(starts):
        assert (b - a).total_seconds() >= 0.0333337 - 1e-6, (a, b)
    print(json.dumps({"first_gaps_ms": [round(w * 1000, 3) for w in sorted(waits)[:4]]}))


async def test_a_global_limit_fails_closed_while_mongodb_is_down(
    mongoeco_servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # given a pool (memory broker, real time) with a global limit in a MongoDB store
    server = mongoeco_servers(0)
    config = Config(
        store="mongodb", mongo=MongoConfig(uri=server.uri, database="limits_outage", timeout_s=1.0)
    )
    broker = MemoryBroker()
    limiter = LimitsMiddleware(store_timeout_s=0.5, seed=1)
    pool = WorkerPool(
        config, 8, "outage-pool", broker=broker, store=MongoStore(config), middleware=[limiter]
    )
    loop = asyncio.get_running_loop()
    spans: list[tuple[float, float]] = []
    grants: list[float] = []

    @pool.task(name="limited", max_concurrency=2, rate="5/s", limit_scope="global")
    async def limited(n: int) -> int:
        begun = loop.time()
        grants.append(current_task().data[GRANTED_KEY].timestamp())
        await asyncio.sleep(0.3)
        spans.append((begun, loop.time()))
        return n

    caplog.set_level(logging.INFO, logger="paota.middleware.limits")
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        # when MongoDB dies and 10 limited tasks arrive (from a producer without a store)
        server.kill()
        producer = Client(Config(), broker=broker)
        for n in range(10):
            await producer.send_task(Signature("limited", args=[Arg("n", "int", n)]))
        # then none runs while the store cannot grant it: they are deferred, not retried
        # (the pool's own store reads wait out the outage too, so not every delivery gets as far
        # as the limiter)
        deadline = loop.time() + 60
        while "limited" not in limiter.stats or limiter.stats["limited"].throttled_store < 1:
            assert loop.time() < deadline, f"no delivery reached the limiter: {limiter.stats}"
            await asyncio.sleep(0.05)
        stats = limiter.stats["limited"]
        await asyncio.sleep(2.0)  # more time in which none may run
        assert spans == [] and grants == []
        assert stats.started == 0
        assert all(d.retries_done == 0 for d in broker.delays)
        # and when MongoDB is back on the same port, they all run, within the limits
        mongoeco_servers(server.port)
        back = loop.time()
        deadline = back + 90
        while len(spans) < 10:
            assert loop.time() < deadline, f"only {len(spans)} of 10 ran after the store came back"
            await asyncio.sleep(0.1)
        print(
            f"\nlimits outage: first run {min(b for b, _ in spans) - back:.1f}s after the store "
            f"was back, last {max(e for _, e in spans) - back:.1f}s; {stats}"
        )
        await pool.stop()
        await worker
    assert most_at_once(spans) <= 2
    assert min(b - a for a, b in itertools.pairwise(sorted(grants))) >= 0.2 - 1e-6
    assert broker.parked(ParkQueue.FAILED) == [] and broker.parked(ParkQueue.TIMEOUT) == []
    # one WARNING per outage, one INFO when it was over (on a loaded machine the restarted store
    # may miss the 0.5 s budget again, a new outage: stress run 4 saw 9 of them)
    limits_log = [r for r in caplog.records if r.name == "paota.middleware.limits"]
    warned = [r for r in limits_log if r.levelno >= logging.WARNING]
    assert warned and all("fail closed" in r.getMessage() for r in warned)
    assert len([r for r in limits_log if "answers again" in r.getMessage()]) == len(warned)
