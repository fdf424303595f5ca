"""The worker pool on a real RabbitMQ, beyond the pool contract (which runs on RabbitMQ in
test_pool_contract_amqp.py): priority queues, Go-encoded messages, the CLI in separate processes,
and a broker restart in the middle of 2,000 tasks (on a broker of the test's own,
``rabbit_node``)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiormq
import pytest

from paota import Config, Signature, WorkerPool
from paota.stores.memory import MemoryStore
from tests.integration.chaos_helpers import chaos_config
from tests.integration.containers import RabbitNode

pytestmark = pytest.mark.integration

VECTORS = Path(__file__).resolve().parents[1] / "unit" / "vectors" / "go-paota"

MakeConfig = Callable[..., Config]


async def get_parked(
    config: Config, queue: str, *, count: int, timeout_s: float = 20.0
) -> list[Any]:
    """Read (and ack) ``count`` messages from a parking queue, waiting up to ``timeout_s``."""
    connection = await aiormq.connect(config.amqp.url)
    try:
        channel = await connection.channel()
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            message = await channel.basic_get(queue, no_ack=True)
            if message.delivery_tag is None or message.body is None:
                assert time.monotonic() < deadline, (
                    f"only {len(found)} of {count} parked in {queue}"
                )
                await asyncio.sleep(0.1)
                continue
            found.append(message)
        return found
    finally:
        await connection.close()


async def publish_raw(config: Config, body: bytes, headers: dict[str, Any] | None = None) -> None:
    """Publish bytes as another producer would: to the exchange with the binding key."""
    connection = await aiormq.connect(config.amqp.url)
    try:
        channel = await connection.channel()
        await channel.confirm_delivery()
        await channel.basic_publish(
            body,
            exchange=config.amqp.exchange,
            routing_key=config.amqp.binding_key,
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json", delivery_mode=2, headers=headers
            ),
        )
    finally:
        await connection.close()


def header(message: Any, name: str) -> str:
    value = message.header.properties.headers[name]
    return value.decode() if isinstance(value, bytes) else str(value)


# --- priorities --------------------------------------------------------------------------------


async def test_priorities_reach_the_pool_highest_first(
    make_config: MakeConfig, running: Any
) -> None:
    config = make_config(queue_declare_args={"x-max-priority": 10})
    producer = WorkerPool(config, name="producer")
    async with producer:
        for priority in (1, 9, 5):
            await producer.send_task(Signature("prio", priority=priority))
    order: list[int] = []
    pool = WorkerPool(config, concurrency=1, name="prio-pool")
    pool.register_tasks({"prio": lambda sig: order.append(sig.priority)})
    # prefetch 1: the broker, not the pool, decides the order
    from dataclasses import replace

    pool.config = replace(config, amqp=replace(config.amqp, prefetch_count=1))
    await running(pool)
    deadline = time.monotonic() + 10
    while len(order) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert order == [9, 5, 1]


# --- Go interop --------------------------------------------------------------------------------


async def test_go_encoded_messages_in_both_modes_run_in_a_python_pool(
    make_config: MakeConfig, running: Any
) -> None:
    config = make_config()
    pool = WorkerPool(config, concurrency=2, name="go-interop", store=MemoryStore())
    got: dict[str, Signature] = {}

    def record(sig: Signature) -> None:
        got[sig.uuid] = sig

    pool.register_tasks({"Print": record, "ResizeImage": record})
    await running(pool)
    # JSON mode: the exact bytes of Go's encoder
    await publish_raw(config, (VECTORS / "minimal.json").read_bytes())
    # (full.json has a 30 s start deadline from 2026-11-27: it decodes, and is parked as expired)
    await publish_raw(config, (VECTORS / "full.json").read_bytes())
    # header mode: raw args as the body, metadata in headers as Go's publisher sends them
    now = int(time.time())
    headers = {
        "uuid": "task_go_header_mode",
        "task_name": "Print",
        "retry_count": 2,
        "retry_timeout": 0,
        "timeout": 0,
        "wait_time": 0,
        "retries_done": 0,
        "ignore_if_unregistered": False,
        "created_at": now,
    }
    await publish_raw(config, b'{"id":"1","name":"John Doe"}', headers)
    deadline = time.monotonic() + 15
    while len(got) < 2:
        assert time.monotonic() < deadline, f"only {sorted(got)} arrived"
        await asyncio.sleep(0.05)
    json_mode = got["task_8c0e7d2a-4f6b-4f57-9d1e-0b9f3c6a2e11"]
    assert json_mode.name == "Print"
    assert json_mode.retry_count == 10 and json_mode.ignore_when_task_not_registered
    assert json.loads(json_mode.args[0].value)["name"] == "John Doe"
    header_mode = got["task_go_header_mode"]
    assert header_mode.raw_args == b'{"id":"1","name":"John Doe"}'
    assert header_mode.retry_count == 2
    assert header_mode.created_at == datetime.fromtimestamp(now, UTC)
    [expired] = await get_parked(config, config.amqp.timeout_queue, count=1)
    assert header(expired, "x-paota-reason") == "start-deadline"
    assert expired.body == (VECTORS / "full.json").read_bytes()


# --- the CLI over RabbitMQ ---------------------------------------------------------------------


def _cli_env(config: Config) -> dict[str, str]:
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
    )
    return env


def test_demo_over_rabbitmq(make_config: MakeConfig) -> None:
    env = _cli_env(make_config())
    result = subprocess.run(
        [sys.executable, "-m", "paota", "demo", "--tasks", "2000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "2000 tasks in" in result.stdout
    assert "states (from the store): SUCCEEDED 2000" in result.stdout


def test_worker_and_send_in_separate_processes(make_config: MakeConfig, tmp_path: Path) -> None:
    env = _cli_env(make_config())
    out = tmp_path / "out.txt"
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            f"""
            from paota import Config, WorkerPool
            pool = WorkerPool(Config.from_env(), concurrency=2, name="cli-worker")

            @pool.task(name="Greet")
            def greet(sig):
                with open({str(out)!r}, "a") as f:
                    f.write(f"{{sig.uuid}} hello {{sig.arg('who')}}\\n")
            """
        )
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "paota", "worker", "app:pool"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sent = subprocess.run(
            [sys.executable, "-m", "paota", "send", "Greet", "--arg", "who:string=Ada"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.strip()
        deadline = time.monotonic() + 30
        while not (out.exists() and task_id in out.read_text()):
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "the worker did not run the task"
            time.sleep(0.1)
        assert out.read_text() == f"{task_id} hello Ada\n"
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err


# --- RabbitMQ restart --------------------------------------------------------------------------


async def _ctl(node: RabbitNode, *args: str) -> None:
    """``rabbitmqctl ARGS`` against ``node``, in a thread."""
    await asyncio.wait_for(asyncio.to_thread(node.ctl, *args), 120)


async def test_rabbitmq_restart_in_the_middle_of_2000_tasks_loses_nothing(
    rabbit_node: Callable[..., RabbitNode], running: Any
) -> None:
    # a broker of the test's own: it is stopped and started (rabbitmqctl stop_app / start_app)
    node = await asyncio.to_thread(rabbit_node)
    config = chaos_config(node.url)
    total = 2000
    seen: collections.Counter[str] = collections.Counter()

    pool = WorkerPool(config, concurrency=20, name="restart-pool")

    @pool.task
    async def work(sig: Signature) -> None:
        await asyncio.sleep(0.05)  # ~400 tasks/s: the restart lands in the middle
        seen[sig.uuid] += 1

    # given 2,000 durable tasks
    producer = WorkerPool(config, name="producer")
    async with producer:
        sent = [
            (await producer.send_task(Signature("work", uuid=f"task_{i:05d}"))).id
            for i in range(total)
        ]
    await running(pool)
    deadline = time.monotonic() + 60
    while len(seen) < total // 4:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    # when RabbitMQ stops and starts in the middle of them
    await _ctl(node, "stop_app")
    processed_before = len(seen)
    assert processed_before < total, "all tasks ran before the restart: make them slower"
    await asyncio.sleep(1.0)
    await _ctl(node, "start_app")
    await _ctl(node, "await_startup")
    # then every task runs (at least once), without restarting the pool
    deadline = time.monotonic() + 120
    while len(seen) < total:
        assert time.monotonic() < deadline, f"{total - len(seen)} tasks lost after the restart"
        await asyncio.sleep(0.1)
    assert set(seen) == set(sent)
    duplicates = sum(count - 1 for count in seen.values())
    print(
        f"\nrestart: {processed_before} tasks done before the restart, all {total} after; "
        f"{duplicates} ran twice (in flight at the restart: at-least-once)"
    )
    # Only unacked deliveries can come back, and RabbitMQ caps those at the prefetch count: the
    # running tasks, and finished ones whose ack was still in the socket buffer when it died.
    assert duplicates <= config.amqp.prefetch_count


async def test_requeue_command_replays_parked_tasks_after_a_fix(
    make_config: MakeConfig, running: Any
) -> None:
    # given a task parked after exhausting its retries
    config = make_config()
    pool = WorkerPool(config, concurrency=2, name="requeue-pool", store=MemoryStore())
    fixed = False

    @pool.task
    async def needs_fix(sig: Signature) -> str:
        if not fixed:
            raise RuntimeError("bug")
        return "fixed"

    await running(pool)
    handle = await pool.send_task(Signature("needs_fix"))
    deadline = time.monotonic() + 10
    while pool.stats.failed < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # when the bug is fixed and the parked task requeued by the CLI
    fixed = True
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "paota",
            "requeue",
            "--from",
            "failed",
            "--reason",
            "retries-exhausted",
        ],
        capture_output=True,
        text=True,
        env=_cli_env(config),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "moved 1 message" in result.stdout
    # then it runs again, to success
    deadline = time.monotonic() + 10
    while pool.stats.succeeded < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    state = await handle.state()
    assert state is not None and state.result == "fixed"
