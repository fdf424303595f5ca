"""Delay ladders on a broker of the test's own (a container): ``paota ladders`` lists them and
deletes an unused one safely, and a run of the suite leaves nothing behind on a broker it does not
own.

- Two ladders, one in use (a worker on its hold queue), one with a delayed message waiting: the
  list shows both with their state and last use; deleting either is refused; once the message is
  gone and the worker stopped, deletion takes every queue and exchange of the ladder and nothing
  else.
- Integration tests and the AMQP benchmark run against a vhost of their own on that broker: when
  they end, the vhost holds no queue and no exchange but RabbitMQ's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import aiormq
import pytest

from paota.brokers.amqp import AMQPBroker
from paota.brokers.amqp.ladder import Ladder
from paota.core.config import AMQPConfig, Config
from paota.core.protocols import OutgoingMessage
from tests.integration.containers import RabbitNode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NodeFactory = Callable[..., RabbitNode]


def _config(url: str, ladder: str) -> Config:
    tag = uuid.uuid4().hex[:8]
    return Config(
        broker="amqp",
        task_queue_name=f"ladders_tasks_{tag}",
        amqp=AMQPConfig(
            url=url,
            exchange=f"ladders_exchange_{tag}",
            delayed_queue=f"ladders_delayed_{tag}",
            failed_queue=f"ladders_failed_{tag}",
            timeout_queue=f"ladders_timeout_{tag}",
            delay_ladder=ladder,
            connection_timeout_s=15.0,
        ),
    )


def _paota(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PAOTA_BROKER": "amqp",
        "PAOTA_AMQP_URL": url,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "paota", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _listed(url: str, *names: str) -> dict[str, dict[str, object]]:
    args = [arg for name in names for arg in ("--name", name)]
    result = _paota(url, "ladders", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {f"{row['name']}/{row['mode']}/{row['queue_type']}": row for row in rows}


def _own(node: RabbitNode, kind: str) -> set[str]:
    names = node.ctl(f"list_{kind}", "-q", "name").split()
    return {name for name in names if not name.startswith("amq.") and name != "name"}


async def test_the_ladders_command_lists_two_ladders_and_deletes_only_an_unused_one(
    rabbit_node: NodeFactory,
) -> None:
    node = await asyncio.to_thread(rabbit_node)
    busy_name, waiting_name = f"busy_{uuid.uuid4().hex[:6]}", f"waiting_{uuid.uuid4().hex[:6]}"
    busy, waiting = _config(node.url, busy_name), _config(node.url, waiting_name)
    before_queues = await asyncio.to_thread(_own, node, "queues")
    worker = AMQPBroker(busy, worker_name="ladders-worker")
    await worker.connect()
    worker.consume(busy.task_queue_name, prefetch=10)  # holds the busy ladder's last stretch
    async with AMQPBroker(waiting, worker_name="ladders-producer") as producer:
        await producer.publish(OutgoingMessage(b"x", "", message_id="w1", delay_s=5.0))
    hold = worker.hold
    assert hold is not None
    try:
        # the list shows both, with what waits, who holds and the last use
        rows = await asyncio.to_thread(_listed, node.url, busy_name, waiting_name)
        assert set(rows) == {f"{busy_name}/hold/quorum", f"{waiting_name}/hold/quorum"}
        busy_row, waiting_row = (
            rows[f"{busy_name}/hold/quorum"],
            rows[f"{waiting_name}/hold/quorum"],
        )
        assert busy_row["consumers"] == 1 and busy_row["queues"] == busy_row["of"] == 18
        assert waiting_row["waiting"] == 1 and waiting_row["consumers"] == 0
        assert isinstance(waiting_row["last_use"], dict)
        assert waiting_row["last_use"]["worker"] == "ladders-producer"
        # deleting either is refused, and says why
        for name, why in ((busy_name, "consume its hold queue"), (waiting_name, "wait in it")):
            result = await asyncio.to_thread(_paota, node.url, "ladders", "delete", name)
            assert result.returncode == 1, result.stdout + result.stderr
            assert why in result.stderr and "--force" in result.stderr
    finally:
        await worker.close()
    # once the waiting message is gone, its ladder goes: every queue and exchange of it
    connection = await aiormq.connect(node.url)
    try:
        channel = await connection.channel()
        await channel.queue_purge(
            Ladder.build(waiting_name, mode="hold", queue_type="quorum").hold_queue
        )
    finally:
        await connection.close()
    result = await asyncio.to_thread(_paota, node.url, "ladders", "delete", waiting_name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "18 queue(s)" in result.stdout
    queues = await asyncio.to_thread(_own, node, "queues")
    exchanges = await asyncio.to_thread(_own, node, "exchanges")
    assert not {q for q in queues if q.startswith(f"{waiting_name}.")}
    assert not {e for e in exchanges if e.startswith(f"{waiting_name}.")}
    # the busy one stays until its worker is gone; then it goes too
    assert {q for q in queues if q.startswith(f"{busy_name}.")}
    result = await asyncio.to_thread(_paota, node.url, "ladders", "delete", busy_name)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = await asyncio.to_thread(_listed, node.url, busy_name, waiting_name)
    assert rows == {}
    left = await asyncio.to_thread(_own, node, "queues")
    assert not {q for q in left - before_queues if q.startswith((busy_name, waiting_name))}


@pytest.mark.timeout(900)
async def test_a_run_of_tests_and_benchmark_leaves_nothing_on_a_broker_it_does_not_own(
    rabbit_node: NodeFactory,
) -> None:
    node = await asyncio.to_thread(rabbit_node)
    vhost = f"shared_{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(node.ctl, "add_vhost", vhost)
    await asyncio.to_thread(node.ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    url = f"{node.url.rstrip('/')}/{vhost}"
    env = {**os.environ, "PAOTA_TEST_AMQP_URL": url, "PYTHONPATH": str(ROOT)}

    async def python(*args: str, timeout_s: float) -> None:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    await python(
        *("-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"),
        "tests/integration/test_delay_hold.py",
        *("tests/integration/test_amqp_pool.py", "-k", "not restart"),
        timeout_s=600,
    )
    await python(
        *("bench/amqp.py", "--url", url, "--tasks", "200", "--rounds", "1"),
        *("--delayed-tasks", "100", "--processes", "0", "--pause", "0"),
        timeout_s=300,
    )
    queues = node.ctl("list_queues", "-p", vhost, "-q", "name").split()
    exchanges = node.ctl("list_exchanges", "-p", vhost, "-q", "name").split()
    assert [q for q in queues if q != "name"] == []
    assert [e for e in exchanges if e and e != "name" and not e.startswith("amq.")] == []
