"""Chaos on the worker (issue 7): a worker process (``paota worker``) is SIGKILLed in the middle
of tasks three times, a new one started each time; every task (immediate and delayed) runs, the
ones the dead workers held again (at-least-once), none lost.

Runs are counted across processes: the tasks append one line per run to a file
(``e2e_helpers/chaos_worker.py``). The broker is not broken here, so the session's broker serves
(``make_config``: queues of the test's own).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paota import Config, WorkerPool
from tests.integration.chaos_helpers import ChaosCount, FileRuns, plan, send_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MakeConfig = Callable[..., Config]
HELPERS = Path(__file__).with_name("e2e_helpers")


def worker_env(config: Config, tmp_path: Path, *, sleep_s: float) -> dict[str, str]:
    """The environment of a worker process: ``config`` as ``PAOTA_*`` variables, and where the
    task writes its lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    amqp = config.amqp
    env.update(
        PAOTA_BROKER="amqp",
        PAOTA_AMQP_URL=amqp.url,
        PAOTA_QUEUE_NAME=config.task_queue_name,
        PAOTA_AMQP_EXCHANGE=amqp.exchange,
        PAOTA_AMQP_DELAYED_QUEUE=amqp.delayed_queue,
        PAOTA_AMQP_DELAY_LADDER=amqp.delay_ladder,
        PAOTA_AMQP_FAILED_QUEUE=amqp.failed_queue,
        PAOTA_AMQP_TIMEOUT_QUEUE=amqp.timeout_queue,
        PAOTA_AMQP_CONNECTION_TIMEOUT=str(amqp.connection_timeout_s),
        PAOTA_CHAOS_RUNS=str(tmp_path / "runs.txt"),
        PAOTA_CHAOS_STARTS=str(tmp_path / "starts.txt"),
        PAOTA_CHAOS_SLEEP_S=str(sleep_s),
    )
    return env


class Workers:
    """Worker processes started by the test; whatever is still alive at the end is killed."""

    def __init__(self, env: dict[str, str], log_dir: Path, concurrency: int) -> None:
        self._env = env
        self._log_dir = log_dir
        self._concurrency = concurrency
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        with open(self._log_dir / f"worker{n}.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "paota",
                    "worker",
                    "chaos_worker:pool",
                    "--concurrency",
                    str(self._concurrency),
                ],
                cwd=HELPERS,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        text = (self._log_dir / f"worker{self.procs.index(proc)}.log").read_text(errors="replace")
        return text[-3000:]

    def last_log(self) -> str:
        """The end of the newest worker's log."""
        return self.log(self.procs[-1])

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.mark.timeout(300)
async def test_worker_sigkill_mid_task_three_times_loses_nothing(
    make_config: MakeConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given 4,000 confirmed tasks (half with ETAs 0.5-15 s) and a worker process running them,
    # 20 at a time, each for 50 ms
    config = make_config()
    total = 4000
    async with WorkerPool(config, name="chaos-producer") as producer:
        sent = await send_all(producer, plan(total, delayed_fraction=0.5, delay_s=(0.5, 15.0)))
    assert len(sent.confirmed) == total
    runs = FileRuns(tmp_path / "runs.txt")
    starts = FileRuns(tmp_path / "starts.txt")
    workers = Workers(worker_env(config, tmp_path, sleep_s=0.05), tmp_path, concurrency=20)
    try:
        worker = workers.start()

        # when the worker is SIGKILLed three times in the middle of tasks (at 20%, 40% and 60%
        # done, each while it has tasks started and not finished), and a new worker started each
        # time. A kill that still lands between tasks (all of them finished in the instant before
        # it, likelier on a loaded machine) does not count: the worker is killed again later.
        recover_s: list[float] = []
        interrupted: list[int] = []
        waiting: list[int] = []

        def in_flight(pid: int) -> set[str]:
            ran_there = {task_id for task_id, p, _ in runs.lines() if p == pid}
            return {task_id for task_id, p, _ in starts.lines() if p == pid} - ran_there

        while sum(1 for n in interrupted if n > 0) < 3:
            assert len(interrupted) < 8, f"8 kills, too few mid-task: {interrupted}"
            fraction = min(0.2 * (len(interrupted) + 1), 0.8)
            await wait_until(
                lambda fraction=fraction: len(runs.counts()) >= total * fraction,
                120,
                lambda: f"only {len(runs.counts())} tasks ran; worker log:\n{workers.last_log()}",
                poll_s=0.1,
            )
            pid = worker.pid
            await wait_until(
                lambda pid=pid: bool(in_flight(pid)),
                120,
                lambda: f"the worker runs no task; its log:\n{workers.last_log()}",
                poll_s=0.005,
            )
            assert worker.poll() is None, workers.log(worker)
            waiting.append(sent.delayed_waiting())
            worker.kill()
            fault_at = time.time()
            await asyncio.to_thread(worker.wait, 30)
            # tasks the dead worker had started and not finished: the kill landed mid-task
            interrupted.append(len(in_flight(pid)))
            worker = workers.start()
            new_pid = worker.pid
            await wait_until(
                lambda new_pid=new_pid: runs.first_by(new_pid) is not None,
                60,
                lambda: f"the new worker ran nothing; its log:\n{workers.last_log()}",
                poll_s=0.1,
            )
            first = runs.first_by(new_pid)
            assert first is not None
            recover_s.append(first - fault_at)

        # then every task runs, the ones the killed workers held again
        await wait_until(
            lambda: set(sent.confirmed) <= set(runs.counts()),
            120,
            lambda: f"{total - len(runs.counts())} tasks never ran",
            poll_s=0.2,
        )
        # and the last worker stops cleanly on SIGTERM
        worker.terminate()
        assert await asyncio.to_thread(worker.wait, 60) == 0, workers.log(worker)
    finally:
        await asyncio.to_thread(workers.close)

    count = ChaosCount.of(
        "worker-sigkill",
        sent.confirmed,
        runs.counts(),
        recover_s,
        kills=len(interrupted),
        interrupted_mid_task=",".join(map(str, interrupted)),
        delayed_waiting_at_kills=",".join(map(str, waiting)),
    ).report(capsys)
    assert count.lost == 0
    # only the deliveries a killed worker held unacked come back: a prefetch window per kill
    assert count.duplicates <= len(interrupted) * config.amqp.prefetch_count
