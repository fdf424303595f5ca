"""The tutorial (``docs/tutorial.md``), run as written, on RabbitMQ and the MongoDB store.

The page is the script: its ``python`` blocks whose first line is ``# NAME.py`` are the user's
files, written in a fresh directory; its ``console`` blocks are run line by line, each ``$ ``
line in bash with what the earlier lines exported; ``paota worker`` and ``paota web`` run in the
background, as in a terminal of their own. The lines under a command are what it must print, in
that order (``…`` matches anything: ids, times); a background command must print them before the
next step runs. A ``text`` block must appear in a background command's log. Only the addresses
change: the page's RabbitMQ and MongoDB URLs become the test's servers, and ``paota web`` gets a
free port; the default queues' names are the test's own queues.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import ROOT, process_env

pytestmark = pytest.mark.integration

PAGE = ROOT / "docs" / "tutorial.md"
BACKGROUND = ("paota worker", "paota web")
PAGE_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PAGE_MONGO = "mongodb://127.0.0.1:27017"
PAGE_WEB = "http://127.0.0.1:8080"
#: How long one step may take before the test fails: only a hang reaches it.
STEP_S = 120.0


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Step:
    kind: str  # "file", "console" or "log"
    name: str = ""
    text: str = ""
    commands: list[Command] = field(default_factory=list)


def page_steps(text: str) -> list[Step]:
    """The page's runnable blocks, in order."""
    steps = []
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M):
        if lang == "python":
            first = body.splitlines()[0]
            match = re.fullmatch(r"# (\w+\.py)", first)
            assert match, f"a tutorial python block must start with '# NAME.py', not {first!r}"
            steps.append(Step("file", name=match.group(1), text=body))
        elif lang == "console":
            commands: list[Command] = []
            for line in body.splitlines():
                if line.startswith("$ "):
                    commands.append(Command(line[2:]))
                else:
                    assert commands, f"output before any command in a console block: {line!r}"
                    commands[-1].expected.append(line)
            steps.append(Step("console", commands=commands))
        elif lang == "text":
            steps.append(Step("log", text=body))
    return steps


def pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.split("…")))


def unmatched(expected: list[str], lines: list[str]) -> list[str]:
    """The expected lines not found in ``lines`` in order (empty: all were)."""
    at = 0
    for i, line in enumerate(expected):
        regex = pattern(line)
        while at < len(lines) and not regex.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return expected[i:]
        at += 1
    return []


class Background:
    """A long-running command of the page, its output collected line by line."""

    def __init__(self, process: asyncio.subprocess.Process, line: str) -> None:
        self.process = process
        self.line = line
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        assert process.stdout is not None
        self.reader = asyncio.create_task(self._read(process.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self.changed.set()
        self.changed.set()

    async def wait_for(self, expected: list[str]) -> None:
        async def until() -> None:
            while True:
                self.changed.clear()  # before looking: a line read meanwhile sets it again
                if not (missing := unmatched(expected, self.lines)):
                    return
                if self.reader.done():
                    pytest.fail(f"{self.line!r} ended without printing {missing}:\n{self.log}")
                await self.changed.wait()

        try:
            await asyncio.wait_for(until(), STEP_S)
        except TimeoutError:
            pytest.fail(
                f"{self.line!r} did not print {unmatched(expected, self.lines)}:\n{self.log}"
            )

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.timeout(600)  # some twenty processes, each starting paota: minutes on a loaded machine
async def test_the_tutorial_runs_as_written(
    make_config: Any, mongo_uri: str, tmp_path: Path
) -> None:
    config = make_config()
    port = _free_port()
    database = f"paota_tutorial_{uuid.uuid4().hex[:10]}"
    env = process_env(config, PAOTA_MONGO_DB=database)
    for name in ("PAOTA_BROKER", "PAOTA_AMQP_URL", "PYTHONPATH"):
        env.pop(name)  # the page sets them
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    state = tmp_path / ".state.sh"
    state.write_text("")
    replace = {
        PAGE_AMQP: config.amqp.url,
        PAGE_MONGO: mongo_uri,
        "paota web": f"paota web --port {port}",
        "paota_tasks": config.task_queue_name,  # the test's own queues
        "paota_task_failed_queue": config.amqp.failed_queue,
    }

    def adapt(text: str) -> str:
        for old, new in replace.items():
            text = text.replace(old, new)
        return text.replace(PAGE_WEB, f"http://127.0.0.1:{port}")

    background: list[Background] = []
    steps = page_steps(PAGE.read_text())
    assert [s.kind for s in steps].count("console") >= 5, "the tutorial lost its commands"
    try:
        for step in steps:
            if step.kind == "file":
                (tmp_path / step.name).write_text(step.text)
            elif step.kind == "log":
                expected = [adapt(line) for line in step.text.splitlines()]
                await asyncio.wait_for(_in_any(background, expected), STEP_S)
            for command in step.commands:
                line = adapt(command.line)
                print("$", line, flush=True)
                expected = [adapt(e) for e in command.expected]
                script = f"set -a\nsource {state}\n{line}\n"  # set -a: id=... is kept too
                if line.startswith(BACKGROUND):
                    process = await asyncio.create_subprocess_exec(
                        "bash", "-c", script, cwd=tmp_path, env=env,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                    started = Background(process, line)
                    background.append(started)
                    await started.wait_for(expected)
                    continue
                script += f"code=$?\nexport -p > {state}\nexit $code\n"
                process = await asyncio.create_subprocess_exec(
                    "bash", "-c", script, cwd=tmp_path, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                out, _ = await asyncio.wait_for(process.communicate(), STEP_S)
                lines = out.decode(errors="replace").splitlines()
                if expected:
                    missing = unmatched(expected, lines)
                    assert not missing, (
                        f"{line!r} (exit {process.returncode}) did not print {missing}; it "
                        "printed:\n" + "\n".join(lines)
                    )
                else:
                    assert process.returncode == 0, f"{line!r} failed:\n" + "\n".join(lines)

        # and the dashboard's API lists the four tasks the page sent, as the page says
        token = _exported(state, "PAOTA_WEB_TOKEN")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/tasks", headers={"Authorization": f"Bearer {token}"}
        )
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).read())
        items = json.loads(body)["items"]
        calls = sorted(t["call"] for t in items)
        assert calls == [
            'resize(path="bird.png", width=320)',
            'resize(path="cat.png", width=640)',
            'resize(path="dog.png", width=800)',
            'resize(path="party.gif", width=100)',
        ], items
        statuses = {t["status"] for t in items}
        assert statuses == {"SUCCEEDED", "FAILED"}, items
    finally:
        for running in reversed(background):
            if running.process.returncode is None:
                os.killpg(running.process.pid, signal.SIGINT)  # Ctrl-C, as the page says
        for running in background:
            try:
                await asyncio.wait_for(running.process.wait(), 60)
            except TimeoutError:
                os.killpg(running.process.pid, signal.SIGKILL)
                await running.process.wait()
            await running.reader
    for running in background:
        # a worker drains and exits 0; uvicorn, after its graceful shutdown, re-raises the
        # Ctrl-C, and paota web exits 130 as a shell's foreground command does
        allowed = (0, 130) if "paota web" in running.line else (0,)
        assert running.process.returncode in allowed, (
            f"{running.line!r} after Ctrl-C:\n{running.log}"
        )


async def _in_any(background: list[Background], expected: list[str]) -> None:
    """Wait until one background command's log has ``expected``, in order."""
    assert background, "a text block before any background command"
    while True:
        for b in background:
            b.changed.clear()  # before looking: a line read meanwhile sets it again
        if any(not unmatched(expected, b.lines) for b in background):
            return
        waits = [asyncio.ensure_future(b.changed.wait()) for b in background]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()


def _exported(state: Path, name: str) -> str:
    match = re.search(rf'^declare -x {name}="([^"]*)"', state.read_text(), flags=re.M)
    assert match, f"the page did not export {name}"
    return match.group(1)
