"""Sessions: tests (unit, every CPython 3.11-3.13 found), integration, chaos, cluster, lint,
typecheck, bench, stress.

Interpreters are looked up on PATH and in pyenv (``$(pyenv root)/versions/``); missing ones are
skipped locally and reported.

The integration sessions bring up the container engine their brokers run in
(:func:`_container_engine`) and stop it afterwards if they started it.

Every session records its time and result in ``.nox/report/sessions.jsonl`` and its tests' times
in ``.nox/report/<session>.xml`` (JUnit); ``python .ci/report.py`` prints them as tables.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
# uv makes a session's virtualenv and installs into it in seconds (pip takes about a minute);
# without uv on the machine, nox falls back to virtualenv and pip.
nox.options.default_venv_backend = "uv|virtualenv"

PYTHONS = ["3.11", "3.12", "3.13"]


def _pyenv_paths() -> None:
    """Put pyenv's interpreters on PATH so nox finds python3.11 ... python3.13."""
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    if not root:
        root = os.path.expanduser("~/.pyenv")
    bins = sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin")))
    if bins:
        os.environ["PATH"] = os.pathsep.join([*bins, os.environ.get("PATH", "")])


_pyenv_paths()


REPORT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".nox", "report")


def _report_name(session: nox.Session) -> str:
    return re.sub(r"[^\w.-]+", "-", session.name).strip("-")


def timed(func: Callable[[nox.Session], None]) -> Callable[[nox.Session], None]:
    """Append the session's wall time and result to ``.nox/report/sessions.jsonl``."""

    @functools.wraps(func)
    def run(session: nox.Session) -> None:
        started = time.monotonic()
        result = "failed"
        try:
            func(session)
            result = "passed"
        except BaseException as exc:  # a failed command, or nox's skip (an exception too)
            if type(exc).__name__ == "_SessionSkip":
                result = "skipped"
            raise
        finally:
            os.makedirs(REPORT_DIR, exist_ok=True)
            line = {
                "session": session.name,
                "seconds": round(time.monotonic() - started, 1),
                "result": result,
            }
            with open(os.path.join(REPORT_DIR, "sessions.jsonl"), "a") as report:
                report.write(json.dumps(line) + "\n")

    return run


def _junit(session: nox.Session) -> str:
    """pytest's option to write the session's test times where ``.ci/report.py`` reads them."""
    return f"--junitxml={os.path.join(REPORT_DIR, _report_name(session) + '.xml')}"


def _processes(session: nox.Session, count: str, dist: str = "load") -> list[str]:
    """pytest-xdist's options for ``count`` processes, unless the command line gives ``-n``."""
    if any(a.startswith(("-n", "--numprocesses")) for a in session.posargs):
        return []
    return ["-n", count, "--dist", dist]


def _install(session: nox.Session, extra: str = "test") -> None:
    session.install("-e", f".[amqp,mongo,{extra}]")


@nox.session(python=PYTHONS)
@timed
def tests(session: nox.Session) -> None:
    """Unit tests (no services), one process per core, in random order (pytest-randomly prints
    the seed; rerun an order with ``-- -p randomly --randomly-seed=N``, in one process with
    ``-- -n 0``)."""
    _install(session, "test")
    session.run(
        "pytest", "tests/unit", "-q", *_processes(session, "auto", "loadgroup"), _junit(session),
        *session.posargs,
    )  # fmt: skip


# What `nox -s integration` runs: every integration test, the chaos and cluster ones included (CI
# must run them). To leave the cluster tests to `nox -s cluster`, make this "not cluster".
INTEGRATION_MARKERS = ""

CONTAINERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".ci", "containers.sh")


def _containers(command: str) -> subprocess.CompletedProcess[str]:
    """``bash .ci/containers.sh COMMAND``; its log lines go straight to the terminal."""
    return subprocess.run(["bash", CONTAINERS, command], stdout=subprocess.PIPE, text=True)


def _docker_answers(socket_path: str) -> bool:
    """Whether a Docker engine answers ``/_ping`` on the unix socket ``socket_path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(socket_path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(1024)
    except OSError:
        return False


@contextlib.contextmanager
def _container_engine(session: nox.Session) -> Iterator[None]:
    """A Docker engine for the session's brokers, set up before the tests and stopped after them.

    - ``PAOTA_TEST_AMQP_URL`` given, or ``DOCKER_HOST``, or a Docker engine on
      ``/var/run/docker.sock``: the developer's own set-up, used as it is, never stopped.
    - Otherwise ``bash .ci/containers.sh up`` (installs and starts the engine, builds the local
      RabbitMQ image when missing) and its ``env`` goes into the session. If the engine was not
      running before, the session stops it at the end (``down``), tests passed or not, unless
      another session still uses it: every session holds a shared lock on ``sessions.lock``
      meanwhile, and an engine a session started (``session-owned``) is stopped by the last one
      out. An engine that was running without a session having started it is left running.
    - If ``up`` cannot work here (not root, no apt-get), the tests run without it: those that need
      a broker skip, and fail with ``CI=true``.
    """
    if os.environ.get("PAOTA_TEST_AMQP_URL"):
        session.log("PAOTA_TEST_AMQP_URL is set: no container engine is started")
        yield
        return
    if os.environ.get("DOCKER_HOST") or _docker_answers("/var/run/docker.sock"):
        session.log(f"using the Docker engine at {os.environ.get('DOCKER_HOST', 'the default')}")
        yield
        return
    env = {}
    for line in _containers("env").stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    state_dir = env["PAOTA_DOCKER_DIR"]
    try:
        os.makedirs(state_dir, exist_ok=True)
        lock = open(os.path.join(state_dir, "sessions.lock"), "a")  # noqa: SIM115
    except OSError as exc:
        session.warn(f"no container engine ({exc}); tests that need one skip (fail with CI=true)")
        yield
        return
    owned = os.path.join(state_dir, "session-owned")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # waits while a session stops the engine
        was_running = _containers("status").returncode == 0
        started = time.monotonic()
        up = _containers("up")
        took = time.monotonic() - started
        if not was_running and _containers("status").returncode == 0:
            open(owned, "w").close()  # even when `up` failed later: it is ours to stop
        if up.returncode == 0:
            session.env.update(env)
            how = "engine already running" if was_running else "engine started"
            session.log(f"container set-up: {took:.1f} s ({how})")
        else:
            session.warn(
                f"container set-up failed after {took:.1f} s (exit {up.returncode}); tests that "
                "need a broker skip (fail with CI=true)"
            )
        try:
            yield
        finally:
            if not os.path.exists(owned):
                if was_running:
                    session.log("the engine was running before this session: left running")
            else:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    session.log("another session still uses the engine: left running")
                else:
                    started = time.monotonic()
                    if _containers("down").returncode == 0:
                        session.log(f"engine stopped in {time.monotonic() - started:.1f} s")
                    else:
                        session.warn("stopping the engine failed: bash .ci/containers.sh down")


#: pytest-xdist processes for the integration tests. Each test uses brokers of its own or names of
#: its own on the session's broker; tests that share a module-scoped cluster run in one process
#: (``xdist_group``). Most of their time is waiting on brokers, so three beat two on two cores;
#: four overloaded them (connection set-ups timed out).
#: ``-- -n 0`` runs them in one process.
INTEGRATION_PROCESSES = 3


def _integration(session: nox.Session, markers: str) -> None:
    _install(session, "test")
    args = ["-m", markers] if markers else []
    parallel = _processes(session, str(INTEGRATION_PROCESSES), "loadgroup")
    # each chaos test's counts (tasks, lost, ran twice, recovery), for .ci/report.py
    session.env.setdefault("PAOTA_CHAOS_REPORT", os.path.join(REPORT_DIR, "chaos.jsonl"))
    os.makedirs(REPORT_DIR, exist_ok=True)
    with _container_engine(session):
        session.run(
            "pytest", "tests/integration", "-q", *parallel, _junit(session), *args,
            *session.posargs,
        )  # fmt: skip


def _browser(session: nox.Session) -> None:
    """Debian's Chromium for the dashboard's browser test (``bash .ci/browser.sh``: installs it
    when it is missing and this is root on Debian; otherwise that test skips, or fails in CI)."""
    script = os.path.join(os.path.dirname(CONTAINERS), "browser.sh")
    result = subprocess.run(["bash", script], check=False)
    if result.returncode != 0:
        session.warn("no Chromium at /usr/bin/chromium: the dashboard's browser test cannot run")


@nox.session(python="3.11")
@timed
def integration(session: nox.Session) -> None:
    """Integration tests against real RabbitMQ brokers (containers, or PAOTA_TEST_AMQP_URL) and a
    MongoDB-protocol server (PAOTA_TEST_MONGO_URI, else mongoeco started by the tests); the
    dashboard's test in Debian's Chromium."""
    _browser(session)
    _integration(session, INTEGRATION_MARKERS)


@nox.session(python="3.11")
@timed
def chaos(session: nox.Session) -> None:
    """The integration tests that kill, pause or restart a broker, a worker or the store."""
    _integration(session, "chaos")


@nox.session(python="3.11")
@timed
def cluster(session: nox.Session) -> None:
    """The integration tests on a RabbitMQ cluster of three nodes in containers."""
    _integration(session, "cluster")


@nox.session(python="3.11")
@timed
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check; the documentation site built in strict mode (a
    warning, a broken link or a reference to a paota name that does not exist fails)."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "paota", "tests", "bench", "docs", "noxfile.py")
    session.run("ruff", "format", "--check", "paota", "tests", "bench", "docs", "noxfile.py")
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-n", "-E", "-q", "-b", "html",
        "docs", os.path.join("docs", "_build", "html"),
    )  # fmt: skip


@nox.session(python="3.11")
@timed
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package; mypy and pyright on the typed-API usage files."""
    _install(session, "dev")
    session.run("mypy", "--strict", "paota")
    session.run("pytest", "tests/typing", "-q", "-p", "no:randomly", _junit(session))


@nox.session(python="3.11")
@timed
def bench(session: nox.Session) -> None:
    """Throughput benchmarks: memory broker, and RabbitMQ against a raw aiormq ceiling."""
    _install(session, "amqp")
    session.run("python", "bench/memory.py", *session.posargs)
    if os.environ.get("PAOTA_BENCH_AMQP_URL") or os.environ.get("PAOTA_TEST_AMQP_URL"):
        session.run("python", "bench/amqp.py")


def _die_with_parent() -> None:
    """In a child before exec: receive SIGKILL when the process that started it ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _cpu_hog(session: nox.Session) -> Iterator[None]:
    """One busy-looping process per core for as long as the block runs, stopped at its end (and
    killed by the kernel if nox itself dies first)."""
    cores = os.cpu_count() or 2
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        for _ in range(cores)
    ]
    session.log(f"CPU hog: {cores} busy processes ({', '.join(str(h.pid) for h in hogs)})")
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
        session.log("CPU hog stopped")


@nox.session(python="3.11")
@timed
def stress(session: nox.Session) -> None:
    """The flakiness gate: the unit suite ``PAOTA_STRESS_RUNS`` (5) times in random order, then the
    integration suite once, all while a CPU hog keeps every core busy. Each run goes on after a
    failure; the table at the end gives every run's seed, result and time."""
    runs = int(os.environ.get("PAOTA_STRESS_RUNS", "5"))
    base_seed = int(os.environ.get("PAOTA_STRESS_SEED", str(int(time.time()) % 100_000)))
    _install(session, "test")
    rows: list[tuple[str, str, str, float]] = []

    def attempt(what: str, seed: str, *args: str) -> None:
        started = time.monotonic()
        try:
            session.run(*args)
            result = "passed"
        except nox.command.CommandFailed:
            result = "FAILED"
        rows.append((what, seed, result, time.monotonic() - started))

    with _cpu_hog(session):
        for n in range(runs):
            seed = str(base_seed + n)
            attempt(
                f"unit {n + 1}/{runs}", seed, "pytest", "tests/unit", "-q", "-n", "auto", "--dist",
                "loadgroup",
                "-p", "randomly", f"--randomly-seed={seed}", "-p", "no:cacheprovider",
            )  # fmt: skip
        if "--unit-only" not in session.posargs:
            session.env.setdefault("PAOTA_CHAOS_REPORT", os.path.join(REPORT_DIR, "chaos.jsonl"))
            os.makedirs(REPORT_DIR, exist_ok=True)
            with _container_engine(session):
                attempt(
                    "integration", "-", "pytest", "tests/integration", "-q", "-n",
                    str(INTEGRATION_PROCESSES), "--dist", "loadgroup", _junit(session),
                )  # fmt: skip
    session.log("stress: run, seed, result, seconds")
    for what, seed, result, seconds in rows:
        session.log(f"  {what:<14} {seed:>8} {result:<7} {seconds:7.1f}")
    failed = [row[0] for row in rows if row[2] != "passed"]
    if failed:
        session.error(f"stress: {len(failed)} of {len(rows)} runs failed: {', '.join(failed)}")
