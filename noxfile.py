"""Sessions: tests (unit, every CPython 3.11-3.13 found), integration, lint, typecheck, bench.

Interpreters are looked up on PATH and in pyenv (``$(pyenv root)/versions/``); missing ones are
skipped locally and reported.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

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


def _install(session: nox.Session, extra: str = "test") -> None:
    session.install("-e", f".[amqp,mongo,{extra}]")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Unit tests (no services)."""
    _install(session, "test")
    session.run("pytest", "tests/unit", "-q", *session.posargs)


@nox.session(python="3.11")
def integration(session: nox.Session) -> None:
    """Integration tests against a real RabbitMQ (PAOTA_TEST_AMQP_URL) and a MongoDB-protocol
    server (PAOTA_TEST_MONGO_URI, else mongoeco started by the tests)."""
    _install(session, "test")
    session.run("pytest", "tests/integration", "-q", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "paota", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "paota", "tests", "bench", "noxfile.py")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    _install(session, "dev")
    session.run("mypy", "--strict", "paota")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Throughput benchmarks: memory broker, and RabbitMQ against a raw aiormq ceiling."""
    _install(session, "amqp")
    session.run("python", "bench/memory.py", *session.posargs)
    if os.environ.get("PAOTA_BENCH_AMQP_URL") or os.environ.get("PAOTA_TEST_AMQP_URL"):
        session.run("python", "bench/amqp.py")
