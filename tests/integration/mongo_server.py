"""A MongoDB-protocol server for the integration tests.

The session fixture :func:`mongo_uri` finds one, in this order:

1. ``PAOTA_TEST_MONGO_URI`` when set (a real MongoDB you run yourself);
2. a MongoDB container (testcontainers, ordinary port mapping) when a Docker engine answers and
   either ``PAOTA_TEST_MONGO_IMAGE`` names an image (pulled if missing) or ``mongo:7`` is already
   present in the engine: there is no failed pull where no registry is reachable;
3. mongoeco (pure Python, memory engine) behind its wire-protocol proxy, in a subprocess.

If none works: skipped on a laptop, failed in CI (:func:`tests.integration._skip.skip_or_fail`).

mongoeco needs Python >= 3.13 while paota runs on 3.11 to 3.13, so it gets a virtualenv of its
own, made once under ``.cache/mongoeco-venv`` from a ``python3.13`` found on PATH or under pyenv, and runs
``mongoeco_launcher.py`` there. :class:`MongoecoServer` starts and kills such a server on a given
port, for the outage test (``mongoeco_servers`` fixture). mongoeco is slow on large collections:
keep a test to a few hundred documents, on a fresh database.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration._skip import skip_or_fail
from tests.integration.containers import docker_reason, image_present

__all__ = [
    "MONGOECO_REQUIREMENT",
    "MongoecoServer",
    "MongoecoUnavailable",
    "ensure_mongoeco_python",
    "mongo_uri",
    "mongoeco_servers",
]

logger = logging.getLogger(__name__)

MONGOECO_REQUIREMENT = "mongoeco[wire]==4.11.*"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("PAOTA_TEST_CACHE_DIR", REPO_ROOT / ".cache"))
VENV_DIR = CACHE_DIR / "mongoeco-venv"
LAUNCHER = Path(__file__).with_name("mongoeco_launcher.py")
INSTALL_TIMEOUT_S = 600.0
START_TIMEOUT_S = 30.0
MONGO_IMAGE = "mongo:7"


class MongoecoUnavailable(RuntimeError):
    """mongoeco could not be set up or started here (the message says why)."""


# --- the virtualenv ---------------------------------------------------------------------------


def _is_python313(candidate: str) -> bool:
    # pyenv's shims exist on PATH for versions that are installed but not selected, and fail.
    try:
        subprocess.run(
            [candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 13))"],
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _find_python313() -> str | None:
    """A working Python >= 3.13: ``PAOTA_TEST_PYTHON313``, this one, pyenv's versions, PATH."""
    explicit = os.environ.get("PAOTA_TEST_PYTHON313")
    if explicit:
        return explicit
    if sys.version_info >= (3, 13):
        return sys.executable
    candidates: list[str] = []
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv"), "/root/.pyenv"]
    for root in dict.fromkeys(filter(None, roots)):
        for minor in ("3.14", "3.13"):
            candidates += sorted(glob.glob(f"{root}/versions/{minor}*/bin/python{minor}"))[::-1]
    candidates += filter(None, (shutil.which(name) for name in ("python3.14", "python3.13")))
    return next((c for c in candidates if _is_python313(c)), None)


def _venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _ready_marker() -> Path:
    return VENV_DIR / ".paota-ready"


def ensure_mongoeco_python() -> Path:
    """The interpreter of a virtualenv with mongoeco installed; made on first use.

    Concurrent test sessions wait on a file lock; a marker naming :data:`MONGOECO_REQUIREMENT`
    says the venv is complete (a changed requirement rebuilds it).
    """
    marker = _ready_marker()
    if marker.is_file() and marker.read_text() == MONGOECO_REQUIREMENT:
        return _venv_python()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "mongoeco-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == MONGOECO_REQUIREMENT:
            return _venv_python()
        python = _find_python313()
        if python is None:
            raise MongoecoUnavailable(
                "mongoeco needs Python >= 3.13 and none was found (PATH, pyenv); "
                "set PAOTA_TEST_PYTHON313 or PAOTA_TEST_MONGO_URI"
            )
        started = time.monotonic()
        # Built in place under the lock; the marker, written last, says it is complete, so a build
        # cut short is thrown away and redone next time.
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        log = CACHE_DIR / "mongoeco-venv-install.log"
        try:
            with open(log, "w") as out:
                for cmd in (
                    [python, "-m", "venv", str(VENV_DIR)],
                    [
                        str(_venv_python()),
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        MONGOECO_REQUIREMENT,
                    ],
                ):
                    subprocess.run(
                        cmd,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        timeout=INSTALL_TIMEOUT_S,
                        check=True,
                    )
        except (OSError, subprocess.SubprocessError) as exc:
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise MongoecoUnavailable(
                f"installing {MONGOECO_REQUIREMENT} with {python} failed: {exc}\n{tail}"
            ) from exc
        marker.write_text(MONGOECO_REQUIREMENT)
        logger.info(
            "made %s with %s in %.1f s", VENV_DIR, MONGOECO_REQUIREMENT, time.monotonic() - started
        )
        return _venv_python()


# --- one server -------------------------------------------------------------------------------


class MongoecoServer:
    """A mongoeco wire-protocol server (memory engine) in a subprocess, on ``port`` (0: any free).

    :meth:`start` returns once it accepts connections; :meth:`kill` ends it at once (SIGKILL, an
    outage); :meth:`stop` ends it politely. Start again to get a new, empty server on the same
    port. Data lives in the process's memory only.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.uri = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start the server (on :attr:`port`, remembered once chosen); returns its URI."""
        if self.running:
            return self.uri
        python = ensure_mongoeco_python()
        proc = subprocess.Popen(
            [str(python), str(LAUNCHER), str(self.port)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if sel.select(timeout_s):
                line = proc.stdout.readline()
        uri = line.decode().strip()
        if not uri.startswith("mongodb://"):
            proc.kill()
            proc.wait()
            self._log.seek(0)
            detail = self._log.read().decode(errors="replace")[-2000:]
            raise MongoecoUnavailable(
                f"the mongoeco server did not start within {timeout_s} s "
                f"(exit code {proc.returncode}): {detail}"
            )
        self._proc = proc
        self.uri = uri
        self.port = int(uri.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        return uri

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        self._end(graceful=False)

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 5 s)."""
        self._end(graceful=True)

    def _end(self, *, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            if graceful:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        """Stop the server and drop its log."""
        self.stop()
        self._log.close()


# --- fixtures ---------------------------------------------------------------------------------


def _container_image() -> tuple[str | None, str]:
    """The MongoDB image to run, or None and why not (see the module docstring)."""
    reason = docker_reason()
    if reason is not None:
        return None, reason
    given = os.environ.get("PAOTA_TEST_MONGO_IMAGE")
    if given:
        return given, ""
    if image_present(MONGO_IMAGE):
        return MONGO_IMAGE, ""
    return None, f"{MONGO_IMAGE} is not in the engine (set PAOTA_TEST_MONGO_IMAGE to pull one)"


def _start_container(stack: contextlib.ExitStack, image: str) -> str:
    try:
        from testcontainers.community.mongodb import MongoDbContainer
    except ImportError:  # testcontainers before the "community" split
        from testcontainers.mongodb import MongoDbContainer

    container = stack.enter_context(MongoDbContainer(image))
    return str(container.get_connection_url())


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """The URI of a MongoDB-protocol server for this test session (see the module docstring)."""
    env_uri = os.environ.get("PAOTA_TEST_MONGO_URI")
    if env_uri:
        yield env_uri
        return
    reasons = []
    with contextlib.ExitStack() as stack:
        uri = ""
        image, why_not = _container_image()
        if image is not None:
            try:
                uri = _start_container(stack, image)
            except Exception as exc:  # fall back to mongoeco; say why if that fails too
                reasons.append(f"{image} container: {exc}")
        else:
            reasons.append(f"no MongoDB container: {why_not}")
        if not uri:
            server = stack.enter_context(contextlib.closing(MongoecoServer()))
            try:
                uri = server.start()
            except MongoecoUnavailable as exc:
                reasons.append(f"mongoeco: {exc}")
                skip_or_fail("no MongoDB-protocol server: " + "; ".join(reasons))
        yield uri


@pytest.fixture
def mongoeco_servers() -> Iterator[Callable[..., MongoecoServer]]:
    """A factory of :class:`MongoecoServer` (started, on the given port, 0 for any); all are
    stopped after the test. For tests that crash and restart a server."""
    servers: list[MongoecoServer] = []

    def start(port: int = 0) -> MongoecoServer:
        server = MongoecoServer(port)
        servers.append(server)
        try:
            server.start()
        except MongoecoUnavailable as exc:
            skip_or_fail(f"mongoeco server: {exc}")
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
