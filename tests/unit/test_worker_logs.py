"""The lines a worker is operated by (issue 17): one INFO line per succeeded task on
``paota.tasks`` with its duration and a short result, and ``--log-format json`` for shippers."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from paota import Config, ManualClock, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.cli._logging import JsonFormatter, levels_text, log_levels


async def test_a_succeeded_task_logs_one_info_line_with_time_and_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    pool = WorkerPool(Config(), 2, "logs", broker=broker, clock=clock)

    @pool.task(name="add")
    async def add(a: int, b: int) -> int:
        clock.advance(0.0123)  # the run takes 12.3 ms of the pool's clock
        return a + b

    @pool.task(name="big")
    async def big() -> str:
        return "x" * 10_000

    caplog.set_level(logging.INFO, logger="paota.tasks")
    async with pool:
        handle = await add.send(2, 3)
        await big.send()
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await broker.run_until_idle(timeout_s=30)
        await pool.stop()
        await worker
    lines = [r for r in caplog.records if r.name == "paota.tasks"]
    assert len(lines) == 2
    first = next(r for r in lines if "(add)" in r.getMessage())
    assert first.getMessage() == f"task {handle.id} (add) succeeded in 12.3 ms: 5"
    assert first.levelname == "INFO" and first.task_id == handle.id  # type: ignore[attr-defined]
    second = next(r for r in lines if "(big)" in r.getMessage())
    assert len(second.getMessage()) < 250 and "characters, cut to 100" in second.getMessage()


def test_json_lines_carry_the_task_fields() -> None:
    record = logging.LogRecord("paota.tasks", logging.INFO, "f.py", 1, "task %s ok", ("t1",), None)
    record.task_id, record.task_name = "t1", "add"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "task t1 ok" and line["level"] == "INFO"
    assert (line["task_id"], line["task_name"], line["logger"]) == ("t1", "add", "paota.tasks")
    assert line["time"].endswith("+00:00")


def test_log_levels_round_trip() -> None:
    levels = log_levels("info, aiormq=DEBUG,paota.tasks=warning")
    assert levels == {"": logging.INFO, "aiormq": logging.DEBUG, "paota.tasks": logging.WARNING}
    assert log_levels(levels_text(levels)) == levels


STUCK = """
import asyncio, logging
from paota import WorkerPool
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
pool = WorkerPool(name="stuck")

@pool.task(name="stuck")
async def stuck() -> None:
    print("running", flush=True)
    await asyncio.Event().wait()

async def main() -> None:
    async with pool:
        await stuck.send()
        await pool.start()
        print("ready again:", pool.broker.ready_count, flush=True)

asyncio.run(main())
"""


def test_ctrl_c_says_what_it_waits_for_and_a_second_one_stops_at_once(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.waiting import read_until

    (tmp_path / "stuck.py").write_text(STUCK)
    child = subprocess.Popen(
        [sys.executable, "stuck.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        assert child.stdout.readline().strip() == "running"
        child.send_signal(signal.SIGINT)
        first = read_until(child.stderr, "Ctrl-C again", "the first SIGINT was not reported")
        assert "waiting for 1 running task(s), at most 30 s" in first
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    # the second stops at once: the stuck run goes back to its queue, no traceback
    assert child.returncode == 0, err
    assert "received again: stopping now, 1 running task(s) go back" in err
    assert "ready again: 1" in out
    assert "Traceback" not in err and "destroyed but it is pending" not in err
