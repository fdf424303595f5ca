"""The supervisor's side of ``paota worker --processes N``: :class:`Supervisor` (see
:mod:`paota.supervisor`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paota.core.errors import ConfigError
from paota.supervisor.child import FD_ENV

__all__ = ["Supervisor", "parse_memory", "restart_delay_s"]

logger = logging.getLogger("paota.supervisor")

#: How long a child must have run (and consumed) for its next death to restart it at once.
STABLE_AFTER_S = 5.0
#: The first delay of a crash-looping child's restarts, doubled each time, and the longest.
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0
#: Beyond a child's grace period, how long it may take to close its connections and exit.
KILL_MARGIN_S = 10.0

_UNITS = {
    "": 1024**2,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_memory(text: str) -> int:
    """``--max-memory-per-child``: a size in bytes from ``"200"`` (MiB), ``"512MB"``,
    ``"1.5G"``, ``"300KiB"`` (units of 1024). Raises :class:`~paota.ConfigError`."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"--max-memory-per-child {text!r} is not valid: expected a size such as 200 (MiB), "
            "512MB, 1.5GiB or 300KiB"
        )
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 1024**2:
        raise ConfigError(
            f"--max-memory-per-child {text!r} is too small: a worker process needs more than "
            "1 MiB (expected at least 1MiB)"
        )
    return int(value)


def restart_delay_s(failures: int) -> float:
    """The delay before restarting a child that died ``failures`` times in a row soon after its
    start: none the first time, then 0.5 s doubling up to 30 s."""
    if failures <= 1:
        return 0.0
    return min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** (failures - 2))


@dataclass(eq=False)
class _Child:
    slot: int
    process: asyncio.subprocess.Process
    started: float
    grace_s: float
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    retire: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    listener: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    """Keeps ``processes`` worker processes running (see the module docs).

    ``command(slot)`` is the command line of the child in ``slot`` (0 .. processes - 1); the
    child finds its end of the link in ``$PAOTA_SUPERVISOR_FD`` and speaks through
    :class:`SupervisedChild`. ``env`` is the children's environment (default: the supervisor's).
    ``serial_slots`` are slots whose replacement starts only once the child it replaces exited
    (one that holds something only one process may hold, such as the scheduler's lock).
    ``reload_dirs``: replace every child when a ``.py`` file there changes (needs watchfiles).
    ``grace_s`` is the children's shutdown grace until each says its own.
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        processes: int,
        *,
        env: Mapping[str, str] | None = None,
        serial_slots: Iterable[int] = (),
        reload_dirs: Sequence[str] = (),
        grace_s: float = 30.0,
    ) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ConfigError(f"processes={processes!r} is not valid: expected an integer >= 1")
        self.command = command
        self.processes = processes
        self.env = dict(os.environ if env is None else env)
        self.serial_slots = frozenset(serial_slots)
        self.reload_dirs = list(reload_dirs)
        self.grace_s = grace_s
        self._children: dict[int, _Child] = {}  # by pid: every child alive, retiring ones too
        self._retiring: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._changed = asyncio.Event()
        self._status = 0
        self._sigints = 0
        self._started = 0

    @property
    def pids(self) -> list[int]:
        """The process ids of the children alive now (those being replaced included)."""
        return [pid for pid, child in self._children.items() if child.process.returncode is None]

    @property
    def started(self) -> int:
        """How many children were started so far."""
        return self._started

    def stop(self) -> None:
        """Stop every child gracefully (what SIGTERM does); :meth:`run` then returns."""
        if not self._stopping.is_set():
            logger.info("supervisor: stopping %d worker process(es) gracefully", len(self.pids))
        self._stopping.set()

    def kill(self) -> None:
        """Kill every child at once (what a second SIGINT does); :meth:`run` returns 130."""
        logger.warning("supervisor: killing %d worker process(es) now", len(self.pids))
        self._status = 130
        self._forced.set()
        self._stopping.set()
        for child in list(self._children.values()):
            _signal(child, signal.SIGKILL)

    def _on_sigint(self) -> None:
        self._sigints += 1
        if self._sigints == 1:
            logger.info("supervisor: SIGINT: stopping gracefully (SIGINT again stops at once)")
            self.stop()
        else:
            self.kill()

    async def run(self, *, install_signal_handlers: bool = True) -> int:
        """Run the children until :meth:`stop` (SIGTERM, SIGINT); returns the exit status: 0
        after a graceful stop, 2 when a child could not start for a configuration error, 130
        when killed by a second SIGINT."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if install_signal_handlers:
            handlers = {signal.SIGTERM: self.stop, signal.SIGINT: self._on_sigint}
            for signum, handler in handlers.items():
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, handler)
                    installed.append(signum)
        keepers = [
            asyncio.create_task(self._keep(slot), name=f"paota-supervisor-slot-{slot}")
            for slot in range(self.processes)
        ]
        watcher = asyncio.create_task(self._watch_code()) if self.reload_dirs else None
        logger.info(
            "supervisor %d: running %d worker process(es)%s",
            os.getpid(),
            self.processes,
            f", reloading on changes in {', '.join(self.reload_dirs)}" if watcher else "",
        )
        try:
            await self._stopping.wait()
            for task in keepers:
                task.cancel()
            if watcher is not None:
                watcher.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._stop_children()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            for child in list(self._children.values()):
                _signal(child, signal.SIGKILL)  # only if run() itself was cancelled
        logger.info("supervisor %d: stopped", os.getpid())
        return self._status

    async def _keep(self, slot: int) -> None:
        failures = 0
        while True:
            child = await self._spawn(slot)
            exited = asyncio.ensure_future(child.process.wait())
            retired = asyncio.ensure_future(child.retire.wait())
            try:
                await asyncio.wait({exited, retired}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                retired.cancel()
                exited.cancel()
            if child.retire.is_set():
                failures = 0
                retiring = asyncio.create_task(self._retire(child))
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
                if slot in self.serial_slots:
                    await retiring
                continue
            self._forget(child)
            code = child.process.returncode
            lived_s = time.monotonic() - child.started
            if not child.ready.is_set() and (code == 2 or self.reload_dirs):
                if not self.reload_dirs:
                    logger.error(
                        "supervisor: worker process %d (slot %d) could not start (configuration "
                        "error, exit status 2); stopping",
                        child.pid,
                        slot,
                    )
                    self._status = 2
                    self.stop()
                    return
                # With --reload a child that cannot start waits for the next change: the code
                # is being edited, restarting it before then would only fail again.
                logger.error(
                    "supervisor: worker process %d (slot %d) could not start (%s); waiting for "
                    "a code change",
                    child.pid,
                    slot,
                    _describe_exit(code),
                )
                await self._changed_or_stopping()
                failures = 0
                continue
            failures = 1 if child.ready.is_set() and lived_s >= STABLE_AFTER_S else failures + 1
            delay_s = restart_delay_s(failures)
            logger.warning(
                "supervisor: worker process %d (slot %d) exited (%s) after %.1f s; %s",
                child.pid,
                slot,
                _describe_exit(code),
                lived_s,
                f"starting another in {delay_s:g} s" if delay_s else "starting another",
            )
            if delay_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed_or_stopping(), delay_s)

    async def _changed_or_stopping(self) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            stopping.cancel()

    async def _spawn(self, slot: int) -> _Child:
        ours, theirs = socket.socketpair()
        env = dict(self.env)
        env[FD_ENV] = str(theirs.fileno())
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(slot),
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor alone
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._started += 1
        child = _Child(slot, process, time.monotonic(), self.grace_s)
        self._children[process.pid] = child
        child.listener = asyncio.create_task(self._listen(child, ours))
        logger.info("supervisor: worker process %d started (slot %d)", process.pid, slot)
        return child

    async def _listen(self, child: _Child, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except OSError:
            sock.close()
            return
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                    event = message["event"]
                except (ValueError, KeyError, TypeError):
                    logger.warning(
                        "supervisor: worker process %d sent %r; ignored", child.pid, line[:200]
                    )
                    continue
                if event == "ready":
                    with contextlib.suppress(KeyError, TypeError, ValueError):
                        child.grace_s = float(message["grace_s"])
                    child.ready.set()
                elif event == "recycling":
                    child.reason = str(message.get("reason", "recycling"))
                    logger.info(
                        "supervisor: worker process %d (slot %d) recycles (%s); starting its "
                        "replacement",
                        child.pid,
                        child.slot,
                        child.reason,
                    )
                    child.retire.set()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _retire(self, child: _Child) -> None:
        """Wait for a recycling or replaced child to exit (it was told to stop, or stopped
        itself); kill it after its grace period and the margin."""
        timeout_s = child.grace_s + KILL_MARGIN_S
        try:
            await asyncio.wait_for(child.process.wait(), timeout_s)
        except TimeoutError:
            logger.warning(
                "supervisor: worker process %d still running %.0f s after it was told to stop; "
                "killing it",
                child.pid,
                timeout_s,
            )
            _signal(child, signal.SIGKILL)
            await child.process.wait()
        self._forget(child)

    def _forget(self, child: _Child) -> None:
        self._children.pop(child.pid, None)
        if child.listener is not None:
            child.listener.cancel()

    async def _stop_children(self) -> None:
        children = list(self._children.values())
        for child in children:
            _signal(child, signal.SIGTERM)
        if not children:
            return
        timeout_s = max(c.grace_s for c in children) + KILL_MARGIN_S
        waiting: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(c.process.wait() for c in children), return_exceptions=True)
        )
        forced: asyncio.Future[Any] = asyncio.ensure_future(self._forced.wait())
        try:
            done, _ = await asyncio.wait(
                {waiting, forced}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            forced.cancel()
        if waiting not in done:
            left = [c for c in children if c.process.returncode is None]
            if not self._forced.is_set():
                logger.warning(
                    "supervisor: %d worker process(es) still running %.0f s after SIGTERM; "
                    "killing them (their unacknowledged deliveries go back to the broker)",
                    len(left),
                    timeout_s,
                )
            for child in left:
                _signal(child, signal.SIGKILL)
            await waiting
        for child in children:
            self._forget(child)

    async def _watch_code(self) -> None:
        try:
            from watchfiles import PythonFilter, awatch
        except ImportError:
            logger.error(
                "supervisor: --reload needs watchfiles: pip install 'paota[reload]'; not reloading"
            )
            return
        async for changes in awatch(*self.reload_dirs, watch_filter=PythonFilter()):
            paths = sorted({path for _, path in changes})
            logger.info(
                "supervisor: %s changed; replacing the worker processes", ", ".join(paths[:5])
            )
            for child in list(self._children.values()):
                if not child.retire.is_set() and child.process.returncode is None:
                    child.reason = "code changed"
                    _signal(child, signal.SIGTERM)
                    child.retire.set()
            self._changed.set()
            self._changed = asyncio.Event()


def _signal(child: _Child, signum: signal.Signals) -> None:
    if child.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signum)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
