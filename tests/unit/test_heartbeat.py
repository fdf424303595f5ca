"""Worker heartbeats: the record a running pool keeps in the store, how it ages out, which pools
install it, and ``paota workers``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from datetime import timedelta
from typing import Any

import pytest

from paota import Config, ConfigError, ManualClock, StoreError, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.cli import main
from paota.middleware.heartbeat import WORKER_KIND, HeartbeatMiddleware, list_workers
from paota.stores.memory import MemoryStore
from tests.waiting import until


class SharedStore:
    """A store other processes could read, as far as the pool can tell (not a MemoryStore):
    every call goes to a memory store."""

    shared = True  # what the pool asks (paota.core.capabilities)

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def __aenter__(self) -> SharedStore:
        await self.inner.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.close()


def make_pool(store: Any, clock: ManualClock, *, middleware: Any = (), **config: Any) -> WorkerPool:
    return WorkerPool(
        Config(**config),
        concurrency=3,
        name="hb",
        queues={"paota_tasks": 3, "emails": 2},
        broker=MemoryBroker(clock=clock),
        store=store,
        clock=clock,
        middleware=list(middleware),
    )


async def start(pool: WorkerPool) -> asyncio.Task[None]:
    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    for _ in range(50):
        await asyncio.sleep(0)
    return worker


async def test_a_running_pool_is_recorded_and_deleted_when_it_stops() -> None:
    clock = ManualClock()
    memory = MemoryStore(clock=clock)
    pool = make_pool(SharedStore(memory), clock)
    release = asyncio.Event()

    @pool.task
    async def held() -> None:
        await release.wait()

    worker = await start(pool)
    try:
        # given: a running pool with two runs going on
        await held.send()
        await held.send()
        for _ in range(50):
            await asyncio.sleep(0)
        [beat] = [m for m in pool._run_chain if isinstance(m, HeartbeatMiddleware)]
        clock.advance(10)
        await beat.beat()
        # when: a reader lists the workers
        [record] = await list_workers(memory)
        # then: the record says who and where it is, what it consumes and runs
        assert record["name"] == "hb"
        assert record["host"] == socket.gethostname()
        assert record["pid"] == os.getpid()
        assert record["queues"] == {"paota_tasks": 3, "emails": 2}
        assert record["concurrency"] == 5
        assert record["running"] == 2
        assert record["tasks"] == ["held"]
        assert record["interval_s"] == 10.0 and record["ttl_s"] == 30.0
        started = record["started_at"]
        assert record["last_seen"] == clock.now().isoformat()
        assert started == (clock.now() - timedelta(seconds=10)).isoformat()
        assert record["_key"] == beat.key and beat.key.startswith(f"{socket.gethostname()}:")
        release.set()
        # a pool that stopped is gone at once, not late
        await pool.stop()
        assert await list_workers(memory) == []
    finally:
        await pool.close()
        await asyncio.wait_for(worker, 10)


async def test_a_worker_that_stops_beating_ages_out_after_three_intervals() -> None:
    clock = ManualClock()
    memory = MemoryStore(clock=clock)
    pool = make_pool(SharedStore(memory), clock, heartbeat_interval_s=5)
    worker = await start(pool)
    try:
        [beat] = [m for m in pool._run_chain if isinstance(m, HeartbeatMiddleware)]
        assert (beat.interval_s, beat.ttl_s) == (5.0, 15.0)
        assert beat._task is not None
        beat._task.cancel()  # the worker "dies": nobody renews its record
        clock.advance(14.9)
        assert len(await list_workers(memory)) == 1
        clock.advance(0.2)
        assert await list_workers(memory) == []
    finally:
        await pool.close()
        await asyncio.wait_for(worker, 10)


async def test_the_pool_beats_every_interval() -> None:
    memory = MemoryStore()
    pool = WorkerPool(Config(), name="beats", store=memory, middleware=[HeartbeatMiddleware(0.02)])
    worker = await start(pool)
    try:
        [first] = await list_workers(memory)

        async def beaten_again() -> Any:
            [record] = await list_workers(memory)
            return record if record["last_seen"] != first["last_seen"] else None

        record = await until(beaten_again, what="a second heartbeat")
        assert record["last_seen"] > first["last_seen"]
        assert record["started_at"] == first["started_at"]
    finally:
        await pool.close()
        await asyncio.wait_for(worker, 10)


async def test_which_pools_record_heartbeats() -> None:
    clock = ManualClock()
    # a shared store: yes, once, even with the user's own HeartbeatMiddleware
    shared = make_pool(SharedStore(MemoryStore(clock=clock)), clock)
    own = make_pool(
        SharedStore(MemoryStore(clock=clock)), clock, middleware=[HeartbeatMiddleware(2)]
    )
    # turned off, the in-process memory store, or no store: no
    off = make_pool(SharedStore(MemoryStore(clock=clock)), clock, heartbeat_interval_s=0)
    memory = make_pool(MemoryStore(clock=clock), clock)
    none = make_pool(None, clock)
    counts = {}
    for label, pool in [
        ("shared", shared),
        ("own", own),
        ("off", off),
        ("memory", memory),
        ("none", none),
    ]:
        worker = await start(pool)
        beats = [m for m in pool._run_chain if isinstance(m, HeartbeatMiddleware)]
        counts[label] = [b.interval_s for b in beats]
        await pool.close()
        await asyncio.wait_for(worker, 10)
    assert counts == {"shared": [10.0], "own": [2.0], "off": [], "memory": [], "none": []}


async def test_a_store_outage_is_logged_once_and_never_stops_the_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="paota.middleware.heartbeat")
    clock = ManualClock()
    memory = MemoryStore(clock=clock)
    pool = make_pool(SharedStore(memory), clock)
    worker = await start(pool)
    try:
        [beat] = [m for m in pool._run_chain if isinstance(m, HeartbeatMiddleware)]

        async def down(*args: Any, **kwargs: Any) -> None:
            raise StoreError("store unreachable")

        real = memory.put_doc
        memory.put_doc = down  # type: ignore[method-assign]
        await beat.beat()
        await beat.beat()
        memory.put_doc = real  # type: ignore[method-assign]
        await beat.beat()
        warnings = [r for r in caplog.records if "heartbeat not recorded" in r.getMessage()]
        assert len(warnings) == 1
        assert any("heartbeats recorded again" in r.getMessage() for r in caplog.records)
        assert len(await list_workers(memory)) == 1
    finally:
        await pool.close()
        await asyncio.wait_for(worker, 10)


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ConfigError, match="interval_s=0 is not valid: expected > 0"):
        HeartbeatMiddleware(0)
    with pytest.raises(ConfigError, match=r"ttl_s=1 is not valid: expected .* longer than"):
        HeartbeatMiddleware(5, ttl_s=1)
    with pytest.raises(ConfigError, match="PAOTA_HEARTBEAT_INTERVAL='often' is not valid"):
        Config.from_env({"PAOTA_HEARTBEAT_INTERVAL": "often"})


async def test_list_workers_needs_a_coordination_store() -> None:
    with pytest.raises(ConfigError, match="has no Coordination capability"):
        await list_workers(object())


# --- paota workers ---------------------------------------------------------------------------


def test_paota_workers_prints_each_worker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    now = clock.now()

    async def fill() -> None:
        await store.connect()
        for pid, seen_s in [(11, 2), (12, 40)]:
            await store.put_doc(
                WORKER_KIND,
                f"box:{pid}:x",
                {
                    "name": "app",
                    "host": "box",
                    "pid": pid,
                    "queues": {"paota_tasks": 10, "emails": 2},
                    "concurrency": 12,
                    "running": 3,
                    "started_at": (now - timedelta(hours=1)).isoformat(),
                    "last_seen": (now - timedelta(seconds=seen_s)).isoformat(),
                    "interval_s": 10.0,
                },
                ttl_s=30,
            )

    asyncio.run(fill())
    monkeypatch.setattr("paota.cli.workers.make_store", lambda config: KeepOpen(store))
    monkeypatch.setattr("paota.cli.workers.datetime", _Frozen(now))
    monkeypatch.setenv("PAOTA_STORE", "mongodb")
    assert main(["workers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "HOST",
        "PID",
        "QUEUES",
        "RUNNING",
        "STARTED",
        "LAST",
        "SEEN",
    ]
    assert lines[1].split()[:5] == ["app", "box", "11", "paota_tasks=10,emails=2", "3/12"]
    assert lines[1].endswith("2s ago")
    assert lines[2].endswith("40s ago (late)")

    assert main(["workers", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["pid"] for r in records] == [11, 12]


class KeepOpen(SharedStore):
    """The CLI closes the store it opened; this one stays open for the next command."""

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class _Frozen:
    """Stands in for the datetime class in paota.cli.workers: now() is fixed."""

    def __init__(self, now: Any) -> None:
        self._now = now

    def now(self, tz: Any = None) -> Any:
        return self._now

    def fromisoformat(self, text: str) -> Any:
        from datetime import datetime

        return datetime.fromisoformat(text)


def test_paota_workers_without_a_shared_store_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PAOTA_STORE", raising=False)
    assert main(["workers"]) == 2
    assert "set PAOTA_STORE=mongodb" in capsys.readouterr().err
    monkeypatch.setenv("PAOTA_STORE", "memory")
    assert main(["workers"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "no workers recorded"
    assert "the memory store lives inside one process" in out.err
