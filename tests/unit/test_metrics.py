"""Prometheus metrics: exact counts for tasks with known outcomes, on the memory broker (virtual
clock), and a scrape over HTTP; several processes sharing one directory and one port."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from paota import (
    Cancelled,
    Config,
    ConfigError,
    Defer,
    ManualClock,
    Middleware,
    Outcome,
    Signature,
    TaskContext,
    WorkerPool,
)
from paota.brokers.memory import MemoryBroker
from paota.core.message import encode_message
from paota.middleware.metrics import PrometheusMiddleware, install, serve_metrics
from paota.stores.memory import MemoryStore
from tests.waiting import until

Q = "paota_tasks"


class Gate(Middleware):
    """Cancels ``doomed``; throttles ``limited`` once (a Defer with reason "throttled")."""

    def __init__(self) -> None:
        self.throttled: set[str] = set()

    async def admit(self, task: TaskContext) -> Outcome | None:
        if task.name == "doomed":
            return Cancelled("by the test")
        if task.name == "limited" and task.id not in self.throttled:
            self.throttled.add(task.id)
            return Defer(0.5, "throttled")
        return None


def value(metrics: PrometheusMiddleware, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def outcomes(metrics: PrometheusMiddleware) -> dict[tuple[str, str], float]:
    """Every non-zero ``paota_tasks_total`` sample as {(task, outcome): count}."""
    found: dict[tuple[str, str], float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "paota_tasks_total" and sample.value:
                found[(sample.labels["task"], sample.labels["outcome"])] = sample.value
    return found


@pytest.fixture
async def rig() -> AsyncIterator[tuple[WorkerPool, PrometheusMiddleware, MemoryBroker]]:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    metrics = PrometheusMiddleware()
    pool = WorkerPool(
        Config(unknown_task_max_returns=1),
        4,
        "metrics-test",
        broker=broker,
        store=MemoryStore(clock=clock),
        clock=clock,
        middleware=[metrics, Gate()],
    )
    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    await asyncio.sleep(0)
    yield pool, metrics, broker
    await pool.close()
    await asyncio.wait_for(worker, 10)


async def test_counters_match_known_outcomes_exactly(
    rig: tuple[WorkerPool, PrometheusMiddleware, MemoryBroker],
) -> None:
    pool, metrics, broker = rig
    clock = pool.clock
    assert isinstance(clock, ManualClock)

    @pool.task
    async def ok() -> str:
        return "ok"

    @pool.task(retry_count=2)
    async def flaky() -> None:
        raise ValueError("always")

    @pool.task(time_limit_s=0.05)
    async def slow() -> None:
        await asyncio.sleep(10)  # sleep-ok: cancelled

    @pool.task
    async def doomed() -> None: ...

    @pool.task
    async def limited() -> str:
        return "ran"

    # given: sends with known outcomes
    for _ in range(3):
        await ok.send()
    await flaky.send()
    await slow.send()
    await doomed.send()
    await limited.send()
    late = Signature("ok", created_at=clock.now() - timedelta(seconds=30))
    await pool.send_task(late)  # waited 30 s in the queue before it starts
    expired = Signature("ok", task_timeout=1, created_at=clock.now() - timedelta(seconds=5))
    await pool.send_task(expired)  # past its start deadline: parked, never runs
    await pool.send_task(Signature("nope"))  # unknown: returned once, then parked
    await pool.send_task(Signature("nope", ignore_when_task_not_registered=True))  # dropped
    await broker.publish_raw(b"not a task")  # undecodable
    early = Signature("ok", uuid="task_early", eta=clock.now() + timedelta(seconds=60))
    wire = encode_message(early)
    await broker.publish_raw(wire.body, wire.headers)  # before its ETA: deferred, then runs
    # when: everything settles
    await broker.run_until_idle()
    # a redelivery of the finished early task: a duplicate, acked without running
    await broker.publish_raw(wire.body, wire.headers)
    await broker.run_until_idle()

    # then: every outcome is counted exactly once per delivery
    assert outcomes(metrics) == {
        ("ok", "succeeded"): 5.0,  # 3 + late + early
        ("ok", "timed_out"): 1.0,
        ("ok", "deferred"): 1.0,
        ("ok", "duplicate"): 1.0,
        ("flaky", "retried"): 2.0,
        ("flaky", "failed"): 1.0,
        ("slow", "timed_out"): 1.0,
        ("doomed", "cancelled"): 1.0,
        ("limited", "throttled"): 1.0,
        ("limited", "succeeded"): 1.0,
        ("(unregistered)", "returned"): 1.0,
        ("(unregistered)", "failed"): 1.0,
        ("(unregistered)", "dropped"): 1.0,
        ("(undecodable)", "failed"): 1.0,
    }
    parked = {
        (task, reason): value(
            metrics, "paota_tasks_parked_total", queue=Q, task=task, reason=reason
        )
        for task, reason in [
            ("flaky", "retries-exhausted"),
            ("slow", "exec-timeout"),
            ("ok", "start-deadline"),
            ("(unregistered)", "unknown-task"),
            ("(undecodable)", "undecodable"),
        ]
    }
    assert set(parked.values()) == {1.0}
    # the pool's own counters agree
    stats = pool.stats
    assert (stats.succeeded, stats.retried, stats.failed, stats.timed_out) == (6, 2, 3, 2)
    # runs: every attempt is timed once; only runs are (not deferrals, parks before a run...)
    assert value(metrics, "paota_task_duration_seconds_count", queue=Q, task="ok") == 5
    assert value(metrics, "paota_task_duration_seconds_count", queue=Q, task="flaky") == 3
    assert value(metrics, "paota_task_duration_seconds_count", queue=Q, task="slow") == 1
    assert value(metrics, "paota_task_duration_seconds_count", queue=Q, task="doomed") == 0
    slow_s = value(metrics, "paota_task_duration_seconds_sum", queue=Q, task="slow")
    assert 0.05 <= slow_s < 2.0
    # the wait in the queue: 30 s for the late one, nothing for the others (virtual clock)
    assert value(metrics, "paota_task_queue_wait_seconds_count", queue=Q, task="ok") == 5
    assert value(metrics, "paota_task_queue_wait_seconds_sum", queue=Q, task="ok") == 30.0
    assert (
        value(metrics, "paota_task_queue_wait_seconds_bucket", queue=Q, task="ok", le="10.0") == 4
    )
    # publishes: the new tasks this pool sent (raw publishes and retry copies are not sends)
    assert value(metrics, "paota_messages_published_total", queue=Q, task="ok") == 5
    assert value(metrics, "paota_messages_published_total", queue=Q, task="nope") == 2
    assert value(metrics, "paota_tasks_in_progress", queue=Q, task="ok") == 0


async def test_in_progress_counts_runs_going_on(
    rig: tuple[WorkerPool, PrometheusMiddleware, MemoryBroker],
) -> None:
    pool, metrics, broker = rig
    release = asyncio.Event()
    started = asyncio.Event()

    @pool.task
    async def held() -> None:
        started.set()
        await release.wait()

    await held.send()
    await held.send()
    await asyncio.wait_for(started.wait(), 5)
    await until(
        lambda: value(metrics, "paota_tasks_in_progress", queue=Q, task="held") == 2,
        what="two held tasks in progress",
    )
    release.set()
    await broker.run_until_idle()
    assert value(metrics, "paota_tasks_in_progress", queue=Q, task="held") == 0


async def scrape(port: int, path: str = "/metrics", method: str = "GET") -> tuple[str, str]:
    """(status line, body) of one HTTP request to 127.0.0.1:port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_a_scrape_over_http_has_counts_and_queue_depths(
    rig: tuple[WorkerPool, PrometheusMiddleware, MemoryBroker],
) -> None:
    pool, metrics, broker = rig

    @pool.task
    async def ok() -> None: ...

    @pool.task
    async def bad() -> None:
        raise RuntimeError("no")

    for _ in range(4):
        await ok.send()
    await bad.send()
    await bad.send()
    await broker.run_until_idle()
    await broker.publish_raw(b"", queue="backlog")  # a queue nobody consumes

    async with serve_metrics(metrics, port=0, host="127.0.0.1") as server:
        status, body = await scrape(server.port)
        assert status == "HTTP/1.1 200 OK"
        assert f'paota_tasks_total{{outcome="succeeded",queue="{Q}",task="ok"}} 4.0' in body
        assert f'paota_tasks_total{{outcome="failed",queue="{Q}",task="bad"}} 2.0' in body
        assert f'paota_queue_messages_ready{{queue="{Q}"}} 0.0' in body
        assert (
            'paota_parked_messages_ready{parking="failed",queue="paota_task_failed_queue"} 2.0'
            in body
        )
        assert (
            'paota_parked_messages_ready{parking="timeout",queue="paota_task_timeout_queue"} 0.0'
            in body
        )
        assert (await scrape(server.port, "/nothing"))[0] == "HTTP/1.1 404 Not Found"
        assert (await scrape(server.port, method="POST"))[0] == "HTTP/1.1 405 Method Not Allowed"

    # the memory broker's depths, as the capability reports them
    assert await broker.queue_depths(["backlog"]) == {
        Q: 0,
        "paota_task_failed_queue": 2,
        "paota_task_timeout_queue": 0,
        "backlog": 1,
    }


async def test_a_port_in_use_is_a_clear_error() -> None:
    metrics = PrometheusMiddleware()
    async with serve_metrics(metrics, port=0, host="127.0.0.1") as server:
        with pytest.raises(
            ConfigError,
            match=r"metrics port \d+ on 127.0.0.1 cannot be opened.*"
            r"PROMETHEUS_MULTIPROC_DIR",
        ):
            async with serve_metrics(PrometheusMiddleware(), port=server.port, host="127.0.0.1"):
                pass
    with pytest.raises(ConfigError, match="metrics port 70000 is not valid"):
        async with serve_metrics(metrics, port=70000):
            pass


def test_install_adds_the_middleware_once() -> None:
    pool = WorkerPool(Config(), name="install")
    first = install(pool)
    assert install(pool) is first
    assert list(pool.middleware) == [first]


# --- several processes -----------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from paota import Config, WorkerPool
    from paota.middleware.metrics import PrometheusMiddleware, serve_metrics

    async def main(port: int, count: int, stuck: bool) -> None:
        metrics = PrometheusMiddleware()
        pool = WorkerPool(Config(store="memory"), middleware=[metrics], name="child")

        @pool.task
        async def work() -> None: ...

        @pool.task
        async def hang() -> None:
            print("running", flush=True)
            await asyncio.Event().wait()

        async with pool, serve_metrics(metrics, port=port, host="127.0.0.1"):
            worker = asyncio.create_task(pool.start(install_signal_handlers=False))
            if stuck:
                await hang.send()  # runs until the test kills this process
            handles = [await work.send() for _ in range(count)]
            for handle in handles:
                await handle.result(timeout=10)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # serve until the test is done
            await pool.stop()
            await worker

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "stuck"))
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_processes_sharing_a_multiprocess_dir_report_their_sum_on_one_port(
    tmp_path: Path,
) -> None:
    # given: three worker processes, one shared PROMETHEUS_MULTIPROC_DIR, one port; the last
    # one has a run in progress when it is killed
    shared = tmp_path / "prom"
    shared.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(port), str(n), mode],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, mode in [(3, "-"), (5, "-"), (7, "stuck")]
    ]
    work = f'queue="{Q}",task="work"'
    try:
        assert children[2].stdout is not None
        assert children[2].stdout.readline().strip() == "running"
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        # when: scraping the port several times (the kernel picks a process each time)
        bodies = [asyncio.run(scrape(port))[1] for _ in range(6)]
        # then: every answer is the sum over the processes
        for body in bodies:
            assert f'paota_tasks_total{{outcome="succeeded",{work}}} 15.0' in body, body
            assert f"paota_task_duration_seconds_count{{{work}}} 15.0" in body
            assert f'paota_tasks_in_progress{{queue="{Q}",task="hang"}} 1.0' in body
        # when: the process with the run in progress dies without a word
        children[2].kill()
        children[2].wait(timeout=10)
        body = asyncio.run(scrape(port))[1]
        # then: its run is no longer in progress (the dead process's gauge is dropped at the
        # scrape), and what it did still counts
        assert f'paota_tasks_in_progress{{queue="{Q}",task="hang"}}' not in body
        assert f'paota_tasks_total{{outcome="succeeded",{work}}} 15.0' in body
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            child.wait(timeout=30)
            if child.stdout is not None:
                child.stdout.close()
    assert [child.returncode for child in children[:2]] == [0, 0]


def test_import_paota_and_its_cli_imports_neither_prometheus_nor_opentelemetry() -> None:
    code = (
        "import sys, paota, paota.cli; paota.cli._commands(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
