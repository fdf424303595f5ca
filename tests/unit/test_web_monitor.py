"""The dashboard's charts: workers count runs per queue in their heartbeat records, and the web
process's :class:`~paota.web.monitor.Monitor` turns two samples into rates, runtime percentiles,
depths and parked counts; all on a virtual clock, each sample taken by the test."""

from __future__ import annotations

import asyncio

import httpx

from paota import Config, ManualClock, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.middleware.counters import RUNTIME_BOUNDS_MS, QueueCounters, percentile
from paota.middleware.heartbeat import HeartbeatMiddleware
from paota.stores.memory import MemoryStore
from paota.web import create_app
from paota.web.monitor import Monitor


def test_percentiles_interpolate_within_the_runtime_buckets() -> None:
    buckets = [0] * (len(RUNTIME_BOUNDS_MS) + 1)
    assert percentile(buckets, 0.5) is None
    index = RUNTIME_BOUNDS_MS.index(250)  # the (100, 250] ms bucket
    buckets[index] = 10
    assert percentile(buckets, 0.5) == 175.0  # halfway through the bucket
    assert percentile(buckets, 1.0) == 250.0
    buckets[-1] = 10  # runs over the last bound: the open bucket
    assert percentile(buckets, 0.99) is not None and percentile(buckets, 0.99) > 300_000  # type: ignore[operator]


async def test_the_charts_show_rates_percentiles_depths_and_parked_counts() -> None:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    heartbeat = HeartbeatMiddleware(5.0)
    pool = WorkerPool(
        Config(),
        4,
        "charts",
        broker=broker,
        store=MemoryStore(clock=clock),
        clock=clock,
        middleware=[heartbeat],
        queues={"paota_tasks": 4, "images": 2},
    )

    @pool.task(retry_count=0)
    async def work(ms: int, fail: bool = False) -> int:
        clock.advance(ms / 1000)  # the run takes ms of virtual time
        if fail:
            raise ValueError("no")
        return ms

    @pool.task(queue="images")
    async def resize(n: int) -> int:
        clock.advance(0.004)
        return n

    @pool.task(queue="later")  # a queue this pool does not consume: its messages wait
    async def report(n: int) -> int:
        return n

    monitor = Monitor(pool, interval_s=5.0, now=clock.now)
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await broker.run_until_idle()
        assert await monitor.sample() is not None  # the baseline
        # when 8 runs of 200 ms succeed, 2 fail, 5 images are resized, and 3 reports wait
        for _ in range(8):
            await work.send(200)
        for _ in range(2):
            await work.send(20, True)
        for n in range(5):
            await resize.send(n)
        for n in range(3):
            await report.send(n)
        await broker.run_until_idle()
        await heartbeat.beat()
        sample = await monitor.sample()
        clock.advance(5)  # no beat since
        early = await monitor.sample()
        await pool.stop()
        await worker
        clock.advance(5)
        later = await monitor.sample()  # the worker is gone
    # then the sample has the rates of the worker's last beat interval (the runs' own 1.66 s of
    # virtual time, between its first beat and the one after the runs), per queue
    assert sample is not None and early is not None
    shown = sample.to_json()
    main, images = shown["queues"]["paota_tasks"], shown["queues"]["images"]
    beat_s = 1.66
    assert (main["succeeded_per_s"], main["failed_per_s"], main["runs_per_s"]) == (
        round(8 / beat_s, 3),
        round(2 / beat_s, 3),
        round(10 / beat_s, 3),
    )
    assert 100 < main["p50_ms"] <= 250 and main["p95_ms"] <= 250
    assert images["succeeded_per_s"] == round(5 / beat_s, 3)
    assert images["p50_ms"] <= 5 and shown["queues"]["later"]["ready"] == 3
    assert shown["parked"] == {"failed": 2, "timeout": 0}
    # and a sample between two beats shows the same rates, not nothing
    assert early.to_json()["queues"]["paota_tasks"]["runs_per_s"] == main["runs_per_s"]
    # and a worker that is gone leaves no rate behind
    assert later is not None and later.workers == 0
    assert all(q["runs_per_s"] == 0 for q in later.to_json()["queues"].values())
    assert len(monitor.to_json()["samples"]) == 4


async def test_the_monitor_endpoint_answers_the_samples() -> None:
    clock = ManualClock()
    pool = WorkerPool(Config(), broker=MemoryBroker(clock=clock), store=MemoryStore(clock=clock))
    app = create_app(pool, token="monitor-token-0123456789", monitor_interval_s=1.0)
    monitor: Monitor = app.state.paota_monitor
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://paota") as http:
        auth = {"Authorization": "Bearer monitor-token-0123456789"}
        await pool.connect()
        await monitor.sample()
        await monitor.sample()
        body = (await http.get("/api/monitor", headers=auth)).json()
    assert body["interval_s"] == 1.0 and body["window_s"] == 3600.0
    assert len(body["samples"]) == 2
    await pool.close()


def test_counters_count_what_ran_and_not_what_was_deferred() -> None:
    from datetime import UTC, datetime, timedelta

    from paota import Defer, Succeeded

    counters = QueueCounters()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    counters.count("q", Succeeded(1), now - timedelta(milliseconds=3), now)
    counters.count("q", Defer(1.0, "throttled"), None, now)
    [(queue, counts)] = counters.snapshot().items()
    assert queue == "q" and counts["succeeded"] == 1 and sum(counts["runtime_ms"]) == 1
    assert counts["runtime_ms"][RUNTIME_BOUNDS_MS.index(5)] == 1
