"""``paota schedules`` and ``paota scheduler``, and ``paota worker --scheduler``, on the memory
backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from paota.cli import main
from tests.waiting import read_until

APP = """
from paota import Config, WorkerPool, current_task

pool = WorkerPool(Config(store="memory"), name="app")


@pool.periodic("0 9 * * MON-FRI", tz="Europe/Berlin")
async def standup() -> None: ...


@pool.periodic(every=0.2, id="often")
async def often() -> None:
    with open("runs.txt", "a") as out:
        print(current_task().id, current_task().scheduled_at.isoformat(), file=out, flush=True)
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    return tmp_path


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    return {**base, **(extra or {})}


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paota", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        cwd=cwd,
        timeout=60,
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "paota", *args],
        env=clean_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["scheduler"],
        ["schedules"],
        ["schedules", "list"],
        ["schedules", "add"],
        ["schedules", "pause"],
        ["schedules", "resume"],
        ["schedules", "remove"],
    ],
)
def test_every_scheduling_command_has_help(command: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0


def test_schedules_lists_a_pools_schedules_with_their_next_fire_times(app: Path) -> None:
    result = run("schedules", "--target", "app:pool", "list", "--next", "3", "--json", cwd=app)
    assert result.returncode == 0, result.stderr
    listed = {s["id"]: s for s in json.loads(result.stdout)}
    assert set(listed) == {"standup", "often"}
    standup = listed["standup"]
    assert standup["trigger"] == {"cron": "0 9 * * MON-FRI", "tz": "Europe/Berlin"}
    assert (standup["source"], standup["paused"], standup["last_slot"]) == ("code", False, None)
    assert len(standup["next"]) == 3
    for text in standup["next"]:
        assert text[10:19] == "T09:00:00" and text[-6:] in ("+01:00", "+02:00")
    # the table form
    table = run("schedules", "--target", "app:pool", cwd=app)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "TASK", "WHEN"]
    assert rows[0].startswith(
        "standup  standup  cron '0 9 * * MON-FRI' Europe/Berlin (code)  active"
    )


def test_changing_schedules_needs_a_shared_store(app: Path) -> None:
    result = run("schedules", "add", "nightly", "--task", "report", "--cron", "0 2 * * *", cwd=app)
    assert result.returncode == 2
    assert "needs a store: set PAOTA_STORE=mongodb" in result.stderr
    result = run("schedules", "pause", "often", cwd=app, env={"PAOTA_STORE": "memory"})
    assert result.returncode == 2
    assert "the memory store lives in this process only" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_cron_expression_is_refused_naming_it(app: Path) -> None:
    (app / "bad.py").write_text(
        "from paota import WorkerPool\npool = WorkerPool()\n\n"
        "@pool.periodic('0 25 * * *')\nasync def late() -> None: ...\n"
    )
    result = run("scheduler", "bad:pool", cwd=app)
    assert result.returncode == 2
    assert "cron expression '0 25 * * *' is not valid (Bad hour)" in result.stderr
    assert "Traceback" not in result.stderr


def _until_runs(proc: subprocess.Popen[str], runs: Path, count: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    lines: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        lines = runs.read_text().splitlines() if runs.exists() else []
        if len(lines) >= count:
            break
        time.sleep(0.05)  # sleep-ok: poll
    return lines


def test_a_worker_with_scheduler_sends_and_runs_its_periodic_tasks(app: Path) -> None:
    proc = start("worker", "app:pool", "--scheduler", cwd=app)
    try:
        lines = _until_runs(proc, app / "runs.txt", 3, 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(lines) >= 3, err
    ids = [line.split()[0] for line in lines]
    assert len(set(ids)) == len(ids) and all(i.startswith("sched:often:") for i in ids)


def test_the_scheduler_command_sends_until_sigterm(app: Path) -> None:
    proc = start("scheduler", "app:pool", "--name", "cli-scheduler", cwd=app)
    assert proc.stderr is not None
    # the first send is logged: read the log up to it
    marker = "of schedule 'often' as task sched:often:"
    head = read_until(proc.stderr, marker, "the scheduler ended before sending")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    err = head + err
    assert proc.returncode == 0, err
    assert "scheduler cli-scheduler started with 2 schedule(s)" in err
    assert "sends to the in-memory broker of this process" in err
    assert "sent slot" in err and "of schedule 'often' as task sched:often:" in err
    assert not (app / "runs.txt").exists()  # a scheduler runs no task
