"""Metrics, traces and heartbeats of real worker processes: two ``paota worker`` processes on
RabbitMQ with the MongoDB store, sharing one metrics port (PROMETHEUS_MULTIPROC_DIR), traced into
files; the test is the producer, traced with the SDK's in-memory exporter.

Given 40 tasks that succeed and 5 that fail twice (one retry through the delay ladder), the scrape
reports exact totals whichever process answers, the workers' spans are children of the test's
send spans through the AMQP headers (retries included), ``paota workers`` lists both processes,
a SIGKILLed worker ages out of the list within three heartbeat intervals and its counts stay in
the totals, and a stopped worker leaves the list at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paota import Client, Config, MongoConfig, TaskFailedError
from paota.middleware.heartbeat import list_workers
from paota.middleware.tracing import TracingMiddleware
from paota.stores.mongo.store import MongoStore
from tests.integration.conftest import MongoDatabase
from tests.integration.containers import free_port
from tests.integration.processes import paota_command, process_env

pytestmark = pytest.mark.integration

APP = "tests.integration.e2e_helpers.observe_app:pool"
HEARTBEAT_S = 0.5
OK, FAILING = 40, 5


@pytest.fixture
def database(mongo_db: MongoDatabase) -> str:
    """A fresh database name, dropped after the test."""
    return mongo_db.name


def mongo_config(make_config: Callable[..., Config], mongo_uri: str, database: str) -> Config:
    """The test's topology with the MongoDB store on ``database``."""
    return make_config(
        config_fields={"store": "mongodb", "mongo": MongoConfig(uri=mongo_uri, database=database)}
    )


async def workers_alive(store: MongoStore, count: int) -> list[dict[str, Any]] | None:
    """The worker records in ``store`` once there are ``count`` of them, else None."""
    found = await list_workers(store)
    return found if len(found) == count else None


def worker_env(config: Config, mongo_uri: str, database: str, **extra: str) -> dict[str, str]:
    """The variables that give a ``paota worker`` process the test's topology and store."""
    return process_env(
        config,
        PAOTA_STORE="mongodb",
        PAOTA_MONGO_URI=mongo_uri,
        PAOTA_MONGO_DB=database,
        PAOTA_HEARTBEAT_INTERVAL=str(HEARTBEAT_S),
        **extra,
    )


async def scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK"), head
    return body


def sample(body: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a text exposition (labels in any order), or None."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for line in body.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        series, _, value = line.rpartition(" ")
        inner = series[len(name) :].strip("{}")
        if (set(inner.split(",")) if inner else set()) == want:
            return float(value)
    return None


async def eventually(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.1)


async def test_two_workers_report_exact_totals_link_traces_and_say_they_are_alive(
    make_config: Callable[..., Config], mongo_uri: str, database: str, tmp_path: Path
) -> None:
    config = mongo_config(make_config, mongo_uri, database)
    queue = config.task_queue_name
    prom = tmp_path / "prom"
    prom.mkdir()
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    port = free_port()
    # given: two worker processes sharing a metrics port and a PROMETHEUS_MULTIPROC_DIR
    workers = [
        await asyncio.create_subprocess_exec(
            *paota_command(),
            "worker",
            APP,
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
            env=worker_env(
                config,
                mongo_uri,
                database,
                PROMETHEUS_MULTIPROC_DIR=str(prom),
                OBSERVE_SPANS_DIR=str(spans_dir),
                OBSERVE_NAME=f"observer-{i}",
            ),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(2)
    ]
    store = MongoStore(config)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = Client(config, middleware=[TracingMiddleware(tracer_provider=provider)])
    try:
        await store.connect()

        records = await eventually(lambda: workers_alive(store, 2), 60, "two worker records")
        # then: each worker says who it is, where, and what it consumes
        assert sorted(r["name"] for r in records) == ["observer-0", "observer-1"]
        assert {r["pid"] for r in records} == {w.pid for w in workers}
        for record in records:
            assert record["host"] == socket.gethostname()
            assert record["queues"] == {queue: 4}
            assert record["concurrency"] == 4
            assert record["interval_s"] == HEARTBEAT_S and record["ttl_s"] == 3 * HEARTBEAT_S
        # and `paota workers` lists them from another process
        listing = await asyncio.create_subprocess_exec(
            *paota_command(),
            "workers",
            "--json",
            env=worker_env(config, mongo_uri, database),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(listing.communicate(), 60)
        assert listing.returncode == 0, err.decode()
        listed = [json.loads(line) for line in out.decode().splitlines()]
        assert sorted(r["pid"] for r in listed) == sorted(w.pid for w in workers)

        # when: the test sends 40 tasks that succeed and 5 that fail twice
        async with producer:
            oks = [await producer.send_task(_sig("obs.ok", n)) for n in range(OK)]
            fails = [
                await producer.send_task(_sig("obs.fail").replace(retry_count=1))
                for _ in range(FAILING)
            ]
            for handle in oks:
                assert await handle.result(timeout=60) is not None
            for handle in fails:
                with pytest.raises(TaskFailedError):
                    await handle.result(timeout=60)

        # then: whichever process answers, the scrape has the exact totals of both
        failed_queue = config.amqp.failed_queue

        async def settled() -> str | None:
            body = await scrape(port)
            parked = sample(
                body, "paota_parked_messages_ready", queue=failed_queue, parking="failed"
            )
            return body if parked == FAILING else None

        await eventually(settled, 30, "the parked messages counted by RabbitMQ")
        for _ in range(6):
            body = await scrape(port)
            total = {"queue": queue}
            assert (
                sample(body, "paota_tasks_total", **total, task="obs.ok", outcome="succeeded") == OK
            )
            assert (
                sample(body, "paota_tasks_total", **total, task="obs.fail", outcome="retried")
                == FAILING
            )
            assert (
                sample(body, "paota_tasks_total", **total, task="obs.fail", outcome="failed")
                == FAILING
            )
            assert (
                sample(
                    body,
                    "paota_tasks_parked_total",
                    **total,
                    task="obs.fail",
                    reason="retries-exhausted",
                )
                == FAILING
            )
            assert sample(body, "paota_task_duration_seconds_count", **total, task="obs.ok") == OK
            assert (
                sample(body, "paota_task_duration_seconds_count", **total, task="obs.fail")
                == 2 * FAILING
            )
            assert sample(body, "paota_tasks_in_progress", **total, task="obs.ok") == 0
            assert sample(body, "paota_queue_messages_ready", queue=queue) == 0
        per_process = {int(path.stem.rsplit("_", 1)[1]) for path in prom.glob("counter_*.db")}
        assert per_process == {w.pid for w in workers}  # both ran tasks

        # and every run is a child of the test's send span, through the AMQP headers
        sends = {
            s.attributes["messaging.message.id"]: s
            for s in exporter.get_finished_spans()
            if s.attributes is not None and s.name.startswith("send ")
        }
        runs = [
            json.loads(line)
            for path in spans_dir.glob("spans-*.jsonl")
            for line in path.read_text().splitlines()
        ]
        assert len(runs) == OK + 2 * FAILING
        for run in runs:
            send = sends[run["attributes"]["messaging.message.id"]]
            assert send.context is not None
            assert run["trace_id"] == f"{send.context.trace_id:032x}"
            assert run["parent_id"] == f"{send.context.span_id:016x}"
        attempts = sorted(
            (r["attributes"]["messaging.message.id"], r["attributes"]["paota.task.attempt"])
            for r in runs
            if r["name"] == "process obs.fail"
        )
        assert attempts == sorted((h.id, a) for h in fails for a in (0, 1))
        assert {r["status"] for r in runs if r["name"] == "process obs.fail"} == {"ERROR"}

        # when: one worker is killed without a word
        victim, survivor = workers
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        started = time.monotonic()

        async def one_left() -> list[dict[str, Any]] | None:
            found = await list_workers(store)
            return found if [r["pid"] for r in found] == [survivor.pid] else None

        await eventually(one_left, 3 * HEARTBEAT_S + 10, "the killed worker aged out")
        aged_s = time.monotonic() - started
        # then: it ages out within three intervals (and the reads' slack), and its counts stay
        assert aged_s <= 3 * HEARTBEAT_S + 5
        body = await scrape(port)
        assert (
            sample(body, "paota_tasks_total", queue=queue, task="obs.ok", outcome="succeeded") == OK
        )

        # when: the other one stops cleanly, its record goes at once
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(survivor.wait(), 60) == 0
        assert await list_workers(store) == []
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        await store.close()
        provider.shutdown()
    print(f"killed worker aged out after {aged_s:.2f}s (interval {HEARTBEAT_S}s)")


def _sig(name: str, *args: Any) -> Any:
    from paota import Arg, Signature

    return Signature(name, args=[Arg.of(a, "n") for a in args])


async def test_a_supervisor_gives_its_children_one_metrics_directory_and_port(
    make_config: Callable[..., Config], mongo_uri: str, database: str, tmp_path: Path
) -> None:
    # given `paota worker --processes 2 --metrics-port N` with no PROMETHEUS_MULTIPROC_DIR set
    config = mongo_config(make_config, mongo_uri, database)
    queue = config.task_queue_name
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    port = free_port()
    env = worker_env(
        config, mongo_uri, database, OBSERVE_SPANS_DIR=str(spans_dir), OBSERVE_NAME="supervised"
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    supervisor = await asyncio.create_subprocess_exec(
        *paota_command(),
        "worker",
        APP,
        "--processes",
        "2",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    store = MongoStore(config)
    try:
        await store.connect()

        alive = await eventually(lambda: workers_alive(store, 2), 60, "two child processes")
        children = {r["pid"] for r in alive}
        # when 60 tasks run, spread over the two children
        async with Client(config) as producer:
            handles = [await producer.send_task(_sig("obs.ok", n)) for n in range(60)]
            for handle in handles:
                assert await handle.result(timeout=60) is not None
        ran_by = {path.stem.removeprefix("spans-") for path in spans_dir.glob("spans-*.jsonl")}
        # then every scrape, whichever child answers it, reports the sum of both
        for _ in range(6):
            body = await scrape(port)
            assert (
                sample(body, "paota_tasks_total", queue=queue, task="obs.ok", outcome="succeeded")
                == 60
            ), body
        assert {int(pid) for pid in ran_by} <= children
    finally:
        if supervisor.returncode is None:
            supervisor.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(supervisor.communicate(), 60)
        await store.close()
    assert supervisor.returncode == 0, err.decode()[-3000:]
    print(f"children that ran tasks: {len(ran_by)} of 2")
