"""``paota worker --processes N``: a supervisor and its worker processes, for real.

On RabbitMQ (the session's container): a SIGKILLed child is replaced and every task still runs
(only those the killed child had started run twice); ``--max-tasks-per-child`` recycles children
after exactly that many tasks, losing and repeating none; SIGTERM lets every child finish what it
started and returns the rest to the queue; a second SIGINT stops everything at once and the queue
gets every unfinished task back. On the memory broker (no server needed): a child that cannot
start stops the supervisor with status 2, ``--max-memory-per-child`` recycles, ``--reload``
replaces the children when a file changes, and children stop when their supervisor is killed.

Runs are counted from a file the task appends to (``e2e_helpers/supervised_app.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from paota import Client, Config, Signature
from paota.core.message import Arg
from tests.integration.processes import ROOT, paota_command, process_env

pytestmark = pytest.mark.integration

APP = "tests.integration.e2e_helpers.supervised_app:pool"


# --- helpers -------------------------------------------------------------------------------------


def supervised_env(config: Config, runs: Path, **extra: str) -> dict[str, str]:
    """The variables that give a worker process the test's topology and the runs file."""
    return process_env(config, SUP_RUNS=str(runs), **extra)


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def exactly(n: int, parent: int) -> set[int]:
    """The children of ``parent`` when there are ``n`` (else an empty set)."""
    found = children_of(parent)
    return found if len(found) == n else set()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Runs:
    """The runs file: ``start``/``end`` lines with the process id and the task id."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[str, int, str]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            what, pid, task_id = line.split()
            out.append((what, int(pid), task_id))
        return out

    def ids(self, what: str) -> Counter[str]:
        return Counter(task_id for w, _, task_id in self.lines() if w == what)

    def pids(self, what: str = "end") -> Counter[int]:
        return Counter(pid for w, pid, _ in self.lines() if w == what)


async def eventually(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.05)


async def ready_count(config: Config) -> int:
    """Messages ready in the test's task queue, as RabbitMQ counts them."""
    import aiormq

    connection = await aiormq.connect(config.amqp.url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(config.task_queue_name, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


#: Where each supervisor started by the fixture logs (its children log there too), by pid.
LOGS: dict[int, Path] = {}


@pytest.fixture
async def supervisors(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[asyncio.subprocess.Process]]]:
    """``await supervisors(*args, env=..., cwd=...)`` starts ``paota worker ...`` logging to a
    file (a pipe nobody reads would block it); every one still running at the end is killed with
    its children."""
    started: list[asyncio.subprocess.Process] = []

    async def start(
        *args: str, env: dict[str, str], cwd: Path | None = None
    ) -> asyncio.subprocess.Process:
        log = tmp_path / f"supervisor-{len(started)}.log"
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *paota_command(),
                "worker",
                *args,
                env=env,
                cwd=str(cwd or ROOT),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
            )
        LOGS[process.pid] = log
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            for child in children_of(process.pid):
                os.kill(child, signal.SIGKILL)
            process.kill()
        await process.wait()
        LOGS.pop(process.pid, None)


async def stopped(process: asyncio.subprocess.Process, timeout_s: float) -> tuple[int, str]:
    """Wait for ``process`` to exit: (exit status, what it and its children logged)."""
    status = await asyncio.wait_for(process.wait(), timeout_s)
    return status, LOGS[process.pid].read_text(errors="replace")


def work(sleep_s: float) -> Signature:
    return Signature("sup.work", args=[Arg("sleep_s", "float64", sleep_s)])


# --- on RabbitMQ ---------------------------------------------------------------------------------


async def test_a_killed_child_is_replaced_and_no_task_is_lost(
    make_config: Callable[..., Config], supervisors: Any, tmp_path: Path
) -> None:
    config = make_config()
    runs = Runs(tmp_path / "runs.txt")
    # given: a supervisor of two worker processes, and 300 tasks of 50 ms
    supervisor = await supervisors("--processes", "2", APP, env=supervised_env(config, runs.path))
    first = await eventually(lambda: exactly(2, supervisor.pid), 60, "two children")
    async with Client(config) as client:
        handles = await client.send_many([work(0.05) for _ in range(300)])
    ids = {h.id for h in handles}

    # when: one child is killed while it runs tasks
    await eventually(lambda: len(runs.ids("end")) >= 40, 60, "40 tasks done")
    victim = max(first, key=lambda pid: runs.pids("start")[pid])
    os.kill(victim, signal.SIGKILL)

    # then: another child takes its place
    replaced = await eventually(
        lambda: victim not in (c := exactly(2, supervisor.pid)) and c, 60, "a replacement child"
    )
    assert len(replaced - first) == 1
    # and every task ran to its end; only those the killed child had not finished ran again
    await eventually(lambda: set(runs.ids("end")) == ids, 120, "every task ended")
    unfinished = {t for w, p, t in runs.lines() if p == victim and w == "start"} - {
        t for w, p, t in runs.lines() if p == victim and w == "end"
    }
    again = {t for t, n in runs.ids("start").items() if n > 1}
    assert again <= unfinished
    assert runs.pids("start").keys() - first == replaced - first  # the new child ran tasks too
    assert await ready_count(config) == 0

    supervisor.send_signal(signal.SIGTERM)
    status, err = await stopped(supervisor, 60)
    assert status == 0, err
    assert f"worker process {victim} (slot" in err and "killed by SIGKILL" in err


async def test_recycling_by_task_count_runs_exactly_that_many_per_child(
    make_config: Callable[..., Config], supervisors: Any, tmp_path: Path
) -> None:
    config = make_config()
    runs = Runs(tmp_path / "runs.txt")
    # given: one worker process (one task at a time) recycled every 10 tasks
    env = supervised_env(config, runs.path, SUP_CONCURRENCY="1")
    supervisor = await supervisors("--processes", "1", "--max-tasks-per-child", "10", APP, env=env)
    await eventually(lambda: children_of(supervisor.pid), 60, "a child")
    # when: 35 tasks are sent
    async with Client(config) as client:
        handles = await client.send_many([work(0.01) for _ in range(35)])

    # then: each ran once, in four processes of 10, 10, 10 and 5 tasks
    await eventually(lambda: len(runs.ids("end")) == 35, 120, "35 tasks ended")
    assert runs.ids("start") == Counter({h.id: 1 for h in handles})
    per_child = [
        n for _, n in sorted(runs.pids().items(), key=lambda item: _first_line(runs, item[0]))
    ]
    assert per_child == [10, 10, 10, 5]
    # and the recycled processes are gone, one runs on
    await eventually(lambda: len(children_of(supervisor.pid)) == 1, 30, "one child left")
    for pid in list(runs.pids())[:3]:
        assert not alive(pid)
    supervisor.send_signal(signal.SIGTERM)
    status, err = await stopped(supervisor, 60)
    assert status == 0, err
    assert err.count("recycles (started 10 tasks (--max-tasks-per-child 10))") == 3


def _first_line(runs: Runs, pid: int) -> int:
    return next(i for i, (_, p, _) in enumerate(runs.lines()) if p == pid)


async def test_sigterm_drains_every_child_and_returns_the_rest_to_the_queue(
    make_config: Callable[..., Config], supervisors: Any, tmp_path: Path
) -> None:
    config = make_config()
    runs = Runs(tmp_path / "runs.txt")
    # given: two worker processes running two 1.5 s tasks each, 16 more waiting
    env = supervised_env(config, runs.path, SUP_CONCURRENCY="2")
    supervisor = await supervisors("--processes", "2", APP, env=env)
    await eventually(lambda: len(children_of(supervisor.pid)) == 2, 60, "two children")
    async with Client(config) as client:
        await client.send_many([work(1.5) for _ in range(20)])
    await eventually(lambda: len(runs.ids("start")) == 4, 60, "four tasks running")
    children = children_of(supervisor.pid)

    # when: the supervisor gets SIGTERM
    supervisor.send_signal(signal.SIGTERM)
    status, err = await stopped(supervisor, 60)

    # then: every started task finished, the children are gone, the rest is back in the queue
    assert status == 0, err
    started, ended = runs.ids("start"), runs.ids("end")
    assert started == ended and len(ended) == 4
    assert not any(alive(pid) for pid in children)
    assert await eventually(
        lambda: _ready_is(config, 20 - len(ended)), 30, "the rest back in the queue"
    )


async def _ready_is(config: Config, expected: int) -> bool:
    return await ready_count(config) == expected


async def test_a_second_sigint_stops_at_once_and_the_queue_gets_every_task_back(
    make_config: Callable[..., Config], supervisors: Any, tmp_path: Path
) -> None:
    config = make_config()
    runs = Runs(tmp_path / "runs.txt")
    env = supervised_env(config, runs.path, SUP_CONCURRENCY="2")
    supervisor = await supervisors("--processes", "2", APP, env=env)
    await eventually(lambda: len(children_of(supervisor.pid)) == 2, 60, "two children")
    async with Client(config) as client:
        await client.send_many([work(60) for _ in range(10)])
    await eventually(lambda: len(runs.ids("start")) == 4, 60, "four tasks running")
    children = children_of(supervisor.pid)

    # when: SIGINT, then SIGINT again
    supervisor.send_signal(signal.SIGINT)
    await asyncio.sleep(0.5)
    began = time.monotonic()
    supervisor.send_signal(signal.SIGINT)
    status, err = await stopped(supervisor, 30)

    # then: it stops at once (not after the 60 s tasks), killing its children
    assert status == 130, err
    assert time.monotonic() - began < 10
    assert not any(alive(pid) for pid in children)
    assert not runs.ids("end")
    assert await eventually(lambda: _ready_is(config, 10), 60, "every task back in the queue")


# --- on the memory broker: the supervisor alone --------------------------------------------------


def memory_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    env.update(PYTHONPATH=str(ROOT), PAOTA_BROKER="memory", **extra)
    return env


async def test_a_child_that_cannot_start_stops_the_supervisor_with_status_2(
    supervisors: Any,
) -> None:
    supervisor = await supervisors("--processes", "2", "no_such_module:pool", env=memory_env())
    status, err = await stopped(supervisor, 60)
    assert status == 2, err
    assert "cannot import 'no_such_module'" in err
    assert "could not start (configuration error, exit status 2); stopping" in err


MEMORY_APP = """
from paota import Config, WorkerPool

pool = WorkerPool(Config(), concurrency=2, name="reloadable")


@pool.task(name="noop")
async def noop() -> None: ...
"""


async def test_max_memory_per_child_recycles_a_child_that_holds_more(
    supervisors: Any, tmp_path: Path
) -> None:
    (tmp_path / "mem_app.py").write_text(MEMORY_APP)
    # every worker process holds more than 1 MiB: each is recycled about a second after it starts
    supervisor = await supervisors(
        "--max-memory-per-child", "1", "mem_app:pool", env=memory_env(), cwd=tmp_path
    )
    seen: set[int] = set()

    def three_children_seen() -> bool:
        seen.update(children_of(supervisor.pid))
        return len(seen) >= 3

    await eventually(three_children_seen, 60, "three children one after the other")
    supervisor.send_signal(signal.SIGTERM)
    status, err = await stopped(supervisor, 60)
    assert status == 0, err
    assert "more than --max-memory-per-child 1.0 MiB" in err


async def test_reload_replaces_the_children_when_a_python_file_changes(
    supervisors: Any, tmp_path: Path
) -> None:
    import watchfiles  # noqa: F401  (paota[reload]; part of the test extra: never skipped)

    app = tmp_path / "reload_app.py"
    app.write_text(MEMORY_APP)
    supervisor = await supervisors(
        "--reload", "--reload-dir", str(tmp_path), "reload_app:pool", env=memory_env(), cwd=tmp_path
    )
    [first] = await eventually(lambda: children_of(supervisor.pid), 60, "a child")

    # a broken change: the child cannot start, the supervisor waits for the next change. The
    # watcher starts in the background and says nothing when it is ready: a change it did not
    # see yet is made again, each a little different, until the first child is replaced
    for attempt in range(60):
        app.write_text(MEMORY_APP + f"\nthis is not python # {attempt}\n")
        with contextlib.suppress(AssertionError):
            await eventually(lambda: not alive(first), 1, "the first child replaced")
            break
    else:
        raise AssertionError("the first child was never replaced: no change was seen")
    await eventually(
        lambda: "waiting for a code change" in LOGS[supervisor.pid].read_text(),
        30,
        "the broken child refused",
    )
    # the fix: a child runs again
    app.write_text(MEMORY_APP + "\n# fixed\n")

    def running_again() -> set[int]:
        children = children_of(supervisor.pid)
        return children if len(children) == 1 and first not in children else set()

    [second] = await eventually(running_again, 30, "a child of the fixed code")
    await asyncio.sleep(1.0)
    assert children_of(supervisor.pid) == {second}  # it stays up
    supervisor.send_signal(signal.SIGTERM)
    status, err = await stopped(supervisor, 60)
    assert status == 0, err
    assert "reload_app.py changed; replacing the worker processes" in err
    assert "waiting for a code change" in err


async def test_children_stop_when_their_supervisor_is_killed(
    supervisors: Any, tmp_path: Path
) -> None:
    (tmp_path / "orphan_app.py").write_text(MEMORY_APP)
    supervisor = await supervisors(
        "--processes", "2", "orphan_app:pool", env=memory_env(), cwd=tmp_path
    )
    children = await eventually(lambda: exactly(2, supervisor.pid), 60, "two children")
    await asyncio.sleep(1.0)  # both consume
    supervisor.kill()
    await supervisor.wait()
    await eventually(lambda: not any(alive(pid) for pid in children), 30, "the children gone")
