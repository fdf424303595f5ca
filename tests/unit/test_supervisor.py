"""The supervisor's parts that need no processes: sizes, restart delays, the ``paota worker``
options, and the middleware of a supervised child (recycling after N tasks or beyond a memory
limit, stopping when the supervisor goes away), on the memory broker. The supervisor with real
processes is tested in ``tests/integration/test_supervisor.py``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from paota import Config, ConfigError, ManualClock, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.cli import main
from paota.core.middleware import MiddlewareChain
from paota.supervisor import (
    SupervisedChild,
    Supervisor,
    current_rss_bytes,
    parse_memory,
    restart_delay_s,
    supervised_child,
)

MiB = 1024**2


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("200", 200 * MiB),
        ("512MB", 512 * MiB),
        ("512 mib", 512 * MiB),
        ("1.5G", int(1.5 * 1024 * MiB)),
        ("2048KiB", 2 * MiB),
        ("1", MiB),
    ],
)
def test_memory_sizes_are_read_in_units_of_1024(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5", "10 parsecs", "200MBB", "0.5"])
def test_a_bad_memory_size_names_the_option_and_what_is_allowed(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--max-memory-per-child .* (expected a size|1MiB)"):
        parse_memory(text)


def test_restarts_of_a_crash_looping_child_back_off_up_to_30_seconds() -> None:
    assert [restart_delay_s(n) for n in range(1, 10)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]


def test_the_resident_memory_of_this_process_is_read() -> None:
    assert 5 * MiB < current_rss_bytes() < 4096 * MiB


def test_a_supervisor_needs_at_least_one_process() -> None:
    with pytest.raises(ConfigError, match=r"processes=0 is not valid: expected an integer >= 1"):
        Supervisor(lambda slot: ["true"], 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0"], "--processes: invalid int_in.* value: '0'|0 is out of range"),
        (["--processes", "many"], "--processes: .*'many' is not an integer"),
        (["--max-tasks-per-child", "0"], "--max-tasks-per-child: .*0 is out of range"),
        (["--max-memory-per-child", "lots"], "--max-memory-per-child: .*expected a size"),
    ],
)
def test_bad_supervisor_options_are_refused_with_what_is_allowed(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["worker", *argv, "app:pool"])
    assert exit_.value.code == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_reload_dir_without_reload_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--processes", "1", "--reload-dir", ".", "app:pool"]) == 2
    assert "--reload-dir is valid with --reload only" in capsys.readouterr().err


def test_a_reload_dir_must_be_a_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--reload", "--reload-dir", "/no/such/dir", "app:pool"]) == 2
    assert "--reload-dir '/no/such/dir' is not a directory" in capsys.readouterr().err


def test_supervised_is_only_for_a_supervisor_s_children(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAOTA_SUPERVISOR_FD", raising=False)
    monkeypatch.delenv("PAOTA_SUPERVISOR_ARGS", raising=False)
    assert main(["worker", "--supervised", "app:pool"]) == 2
    assert "run paota worker --processes N instead" in capsys.readouterr().err


# --- a supervised child, in process --------------------------------------------------------------


class Link:
    """The supervisor's end of a child's link: the messages the child sent."""

    def __init__(self) -> None:
        self.ours, theirs = socket.socketpair()
        self.fd = os.dup(theirs.fileno())
        theirs.close()
        self.ours.setblocking(False)

    async def messages(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        data = b""
        async with asyncio.timeout(timeout_s):
            while data.count(b"\n") < count:
                data += await loop.sock_recv(self.ours, 4096)
        return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    made = Link()
    yield made
    made.ours.close()


def child_pool(child: SupervisedChild, concurrency: int = 1) -> WorkerPool:
    clock = ManualClock()
    pool = WorkerPool(Config(), concurrency, "child", broker=MemoryBroker(clock=clock), clock=clock)
    pool.middleware = MiddlewareChain([*pool.middleware, child])
    return pool


async def test_a_child_says_ready_then_recycles_after_starting_max_tasks(link: Link) -> None:
    child = supervised_child(link.fd, max_tasks=3)
    pool = child_pool(child)
    ran: list[int] = []

    @pool.task
    async def note(i: int) -> None:
        ran.append(i)

    async with pool:
        await note.send_many([(i,) for i in range(5)])
        # when: the pool runs, it recycles after three tasks and stops by itself
        await asyncio.wait_for(pool.start(install_signal_handlers=False), 5)
        assert isinstance(pool.broker, MemoryBroker)
        left = pool.broker.ready_count

    # then: three ran, two are back in the queue, and the supervisor was told
    assert ran == [0, 1, 2]
    assert left == 2
    ready, recycling = await link.messages(2)
    assert ready == {"event": "ready", "pid": os.getpid(), "grace_s": 30.0}
    assert recycling == {
        "event": "recycling",
        "reason": "started 3 tasks (--max-tasks-per-child 3)",
    }


async def test_a_child_without_a_task_limit_has_no_execute_hook(link: Link) -> None:
    child = supervised_child(link.fd)
    assert type(child) is SupervisedChild
    assert not MiddlewareChain([child])._execute
    os.close(link.fd)


async def test_a_child_beyond_its_memory_limit_recycles(link: Link) -> None:
    child = supervised_child(link.fd, max_memory_bytes=MiB, memory_check_s=0.01)
    pool = child_pool(child)
    async with pool:
        await asyncio.wait_for(pool.start(install_signal_handlers=False), 5)
    _, recycling = await link.messages(2)
    assert recycling["event"] == "recycling"
    assert "more than --max-memory-per-child 1.0 MiB" in recycling["reason"]


async def test_a_child_stops_gracefully_when_its_supervisor_is_gone(link: Link) -> None:
    pool = child_pool(supervised_child(link.fd))
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await link.messages(1)
        link.ours.close()  # the supervisor dies
        await asyncio.wait_for(worker, 5)
