"""The paota command: help, demo, send, worker targets, configuration errors."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from paota import Arg, ConfigError
from paota.cli import main, parse_arg
from paota.cli._common import parse_queues
from tests.waiting import read_until


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    return subprocess.run(
        [sys.executable, "-m", "paota", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command", [[], ["worker"], ["send"], ["demo"], ["requeue"], ["status"], ["result"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0


def test_demo_runs_and_reports_throughput() -> None:
    result = run_cli("demo", "--tasks", "500", "--concurrency", "20")
    assert result.returncode == 0, result.stderr
    assert "500 tasks in" in result.stdout
    assert "tasks/s" in result.stdout
    assert "states (from the store): SUCCEEDED 500" in result.stdout
    assert "failures: 0 failed, 0 timed out" in result.stdout


def test_bad_prefetch_is_one_paragraph_naming_the_variable() -> None:
    env = {
        "PAOTA_BROKER": "amqp",
        "PAOTA_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "PAOTA_AMQP_PREFETCH_COUNT": "abc",
    }
    result = run_cli("demo", env=env)
    assert result.returncode == 2
    assert "PAOTA_AMQP_PREFETCH_COUNT" in result.stderr
    assert "'abc'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@contextlib.contextmanager
def worker_process(cwd: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``paota worker ARGS`` run in ``cwd`` (no ``PAOTA_*`` variables), once it logged that it
    consumes: the process and what it logged so far. Killed on the way out if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "paota", "worker", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")},
    )
    try:
        assert proc.stderr is not None
        yield proc, read_until(proc.stderr, "consuming", "worker exited early")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_worker_on_memory_broker_warns_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """
            from paota import Config, WorkerPool
            pool = WorkerPool(Config(), concurrency=2, name="app-worker")

            @pool.task
            def hello(sig):
                return "hi"
            """
        )
    )
    with worker_process(tmp_path, "app:pool") as (proc, seen):
        assert "only tasks sent from this same process" in seen
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "stopped" in rest


def test_worker_queues_option_sets_each_queue_and_its_concurrency(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "from paota import Config, WorkerPool\n"
        "pool = WorkerPool(Config(), concurrency=7, name='app-worker')\n"
        "pool.register_tasks({'Print': lambda sig: None})\n"
    )
    with worker_process(tmp_path, "app:pool", "--queues", "paota_tasks, emails=2") as (proc, seen):
        # a name alone takes the pool's concurrency, NAME=N its own
        assert "consuming paota_tasks (concurrency 7), emails (concurrency 2)" in seen
        proc.terminate()
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default", {"default": None}),
        ("default,emails=5", {"default": None, "emails": 5}),
        (" a = 3 , b ", {"a": 3, "b": None}),
    ],
)
def test_parse_queues(text: str, expected: dict[str, int | None]) -> None:
    assert parse_queues(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("a,,b", "an empty queue name"), ("emails=0", "out of range"), ("emails=x", "not an integer")],
)
def test_parse_queues_rejects(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_queues(text)


def test_worker_target_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "notapool.py").write_text("pool = 42\n")
    result = run_cli("worker", "notapool:pool", cwd=tmp_path)
    assert result.returncode == 2
    assert "expected a paota.WorkerPool" in result.stderr
    result = run_cli("worker", "nomodule", cwd=tmp_path)
    assert "expected MODULE:POOL" in result.stderr


def test_a_worker_without_tasks_refuses_to_start_and_include_finds_them(tmp_path: Path) -> None:
    # it consumed and bounced every message as unknown
    (tmp_path / "app.py").write_text("from paota import WorkerPool\npool = WorkerPool()\n")
    result = run_cli("worker", "app:pool", cwd=tmp_path)
    assert result.returncode == 2
    assert "app:pool has no tasks registered" in result.stderr
    assert "--include MODULE" in result.stderr
    # tasks defined beside the pool, in a module of their own, found with --include
    (tmp_path / "tasks.py").write_text(
        "from app import pool\n\n@pool.task(name='hello')\nasync def hello() -> None: ...\n"
    )
    result = run_cli("worker", "app:pool", "-I", "nothere", cwd=tmp_path)
    assert result.returncode == 2 and "--include 'nothere': cannot import it" in result.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "paota", "worker", "app:pool", "--include", "tasks"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        seen = read_until(worker.stderr, "consuming", "the worker with --include did not start")
        assert "hello" in seen
    finally:
        worker.terminate()
        worker.communicate(timeout=60)


def test_send_refuses_the_memory_broker_where_the_task_would_vanish() -> None:
    result = run_cli("send", "Print", "--arg", "who:string=Ada", "--arg", "int=3")
    assert result.returncode == 2
    assert "would vanish when this command ends" in result.stderr
    assert "PAOTA_BROKER=amqp" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("int=5", Arg("", "int", 5)),
        ("n:int64=-7", Arg("n", "int64", -7)),
        ("ratio:float64=1.5", Arg("ratio", "float64", 1.5)),
        ("keep:bool=true", Arg("keep", "bool", True)),
        ("who:string=a=b", Arg("who", "string", "a=b")),
        ('tags:[]string=["a","b"]', Arg("tags", "[]string", ["a", "b"])),
    ],
)
def test_parse_arg(text: str, expected: Arg) -> None:
    assert parse_arg(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a=5", "'a' is not a Go type (expected one of bool, float32"),
        ("a=5", "put its type after it: a:int=5"),
        ("n:integer=5", "'integer' is not a Go type"),
        ("xs:[]number=[1]", "'[]number' is not a Go type"),
    ],
)
def test_parse_arg_names_an_unknown_type(text: str, says: str) -> None:
    # `a=5` was taken as a value of a type named `a`, and `integer` was accepted
    with pytest.raises(ConfigError) as error:
        parse_arg(text)
    assert says in str(error.value)
    assert parse_arg("m:map[string][]int={}") == Arg("m", "map[string][]int", {})


@pytest.mark.parametrize("text", ["int", "x:int=abc", "b:bool=maybe", "j:[]int=[1,"])
def test_parse_arg_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--arg"):
        parse_arg(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["send", "X", "--priority", "300"], "--priority: 300 is out of range: expected 0..255"),
        (["send", "X", "--delay", "nan"], "--delay: 'nan' is out of range"),
        (["send", "X", "--retry-count", "-1"], "--retry-count: -1 is out of range"),
        (["demo", "--tasks", "0"], "--tasks: 0 is out of range: expected >= 1"),
        (["demo", "--concurrency", "x"], "--concurrency: 'x' is not an integer"),
        (["worker", "m:p", "--concurrency", "0"], "--concurrency: 0 is out of range"),
    ],
)
def test_bad_options_are_clear_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_version_and_log_level_after_the_command() -> None:
    from paota import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"paota {__version__}"
    # --log-level is accepted after the subcommand, and LOGGER=LEVEL pairs set one logger's
    result = run_cli("demo", "--tasks", "20", "--log-level", "INFO,paota.cli=DEBUG")
    assert result.returncode == 0, result.stderr
    result = run_cli("demo", "--tasks", "20", "--log-level", "loud")
    assert result.returncode == 2
    assert "'loud' is not a logging level: expected one of CRITICAL" in result.stderr


def test_requeue_lists_the_valid_reasons() -> None:
    result = run_cli("requeue", "--from", "failed", "--reason", "retries_exhausted")
    assert result.returncode == 2
    assert "invalid choice: 'retries_exhausted'" in result.stderr
    assert "'retries-exhausted'" in result.stderr and "'store-rejected'" in result.stderr


def test_an_unreachable_broker_is_reported_at_once_while_retrying() -> None:
    # 10 s of silence before the first word about it, before
    env = {
        "PAOTA_BROKER": "amqp",
        "PAOTA_AMQP_URL": "amqp://guest:secret@127.0.0.1:1/",
        "PAOTA_AMQP_CONNECTION_TIMEOUT": "3",
    }
    result = run_cli("requeue", "--from", "failed", env=env)
    assert result.returncode == 1
    first, *rest = [line for line in result.stderr.splitlines() if line.strip()]
    assert (
        "WARNING" in first
        and "cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/" in first
    )
    assert "retrying for up to" in first and "PAOTA_AMQP_CONNECTION_TIMEOUT" in first
    assert rest[-1].startswith("paota: error: cannot connect") and "gave up after 3 s" in rest[-1]
    assert "secret" not in result.stderr


def test_demo_stops_at_the_first_ctrl_c() -> None:
    import signal

    # it sent on for 30 s after the first Ctrl-C
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "paota", "demo", "--tasks", "5000000"],
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stderr is not None
    # the first progress line comes once the pool runs (and handles signals)
    read_until(demo.stderr, "done ", "the demo did not start")
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=60)
    assert "stopped early" in err and "of 5000000 tasks done" in err
    assert "Traceback" not in err
    assert "tasks in" in out


async def test_send_with_app_uses_the_tasks_defaults_and_checks_arguments_before_sending() -> None:
    # a task declared with retry_count=2 was parked on its first failure when sent from the CLI,
    # `a=5` was a value of a type named `a`, and bad arguments were found by the worker
    from paota import Config, ManualClock, WorkerPool
    from paota.brokers.memory import MemoryBroker
    from paota.cli._common import UsageError
    from paota.cli.send import _bind_typed, _typed_sender
    from paota.core.message import decode_message

    broker = MemoryBroker(clock=ManualClock())
    pool = WorkerPool(Config(), broker=broker, name="cli-app")

    @pool.task(name="resize", retry_count=2, queue="images")
    async def resize(
        path: str, width: int, sharp: bool = False, tags: list[str] | None = None
    ) -> None: ...

    def options(*arg: str, **more: object) -> argparse.Namespace:
        fields = {"queue": None, "priority": 0, "delay": 0.0, "retry_count": None}
        return argparse.Namespace(arg=list(arg), task_timeout=0, **{**fields, **more})

    types = resize.parameter_go_types()
    assert types == {"path": "string", "width": "int", "sharp": "bool", "tags": "[]string"}

    async def _send_typed(task: object, types: object, args: argparse.Namespace) -> object:
        positional, named = _bind_typed(resize, resize.parameter_go_types(), args)
        return await _typed_sender(resize, args).send(*positional, **named)

    async with pool:
        handle = await _send_typed(resize, types, options("path=a.png", "width=640", 'tags=["x"]'))
        [sent] = broker.messages("images")
        sig = decode_message(sent.body)
        assert sig.uuid == handle.id and sig.retry_count == 2
        assert [(a.name, a.type, a.value) for a in sig.args] == [
            ("path", "string", "a.png"),
            ("width", "int", 640),
            ("sharp", "bool", False),
            ("tags", "[]string", ["x"]),
        ]
        await _send_typed(resize, types, options("path=b", "width=1", retry_count=0))
        assert decode_message(broker.messages("images")[-1].body).retry_count == 0
        for bad, says in [
            (["path=a.png"], "resize: missing a required argument: 'width'; nothing was sent"),
            (
                ["path=a", "width=wide"],
                r"resize: --arg width='wide' is not a valid int \(the parameter width is "
                r"annotated int\); nothing was sent",
            ),
            (["path=a", "width=1", "height:int=2"], "has no parameter 'height'"),
        ]:
            with pytest.raises(UsageError, match=says):
                _bind_typed(resize, types, options(*bad))
        assert len(broker.messages("images")) == 2  # nothing more was sent


@pytest.mark.parametrize("command", ["status", "result"])
def test_status_and_result_need_the_workers_store(command: str) -> None:
    result = run_cli(command, "task_x")
    assert result.returncode == 2
    assert "set PAOTA_STORE=mongodb and PAOTA_MONGO_URI" in result.stderr
    assert "Traceback" not in result.stderr


def test_send_app_names_the_tasks_it_registers(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "from paota import WorkerPool\npool = WorkerPool()\n"
        "@pool.task(name='resize')\nasync def resize(path: str) -> None: ...\n"
    )
    env = {"PAOTA_BROKER": "amqp", "PAOTA_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    result = run_cli("send", "--app", "app:pool", "rezise", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "app:pool registers no task 'rezise'; it registers: 'resize'" in result.stderr
