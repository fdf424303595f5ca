"""The first real worker, as a user types it (issue 17): a tasks module registering on a pool in
another module, ``paota worker app:pool --include tasks``, ``paota send --app app:pool ... --wait``
and ``paota result``, on RabbitMQ with no store (the result comes back over RabbitMQ), then with
the MongoDB store, every process configured by the environment alone (``Config()`` in the user's
code)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import paota_command, process_env

pytestmark = pytest.mark.integration

APP = """
from paota import Config, WorkerPool

pool = WorkerPool(Config(), concurrency=4, name="first-hour")
"""
TASKS = """
from app import pool


@pool.task(name="resize", retry_count=2)
async def resize(path: str, width: int) -> dict:
    attempt = __import__("paota").current_task().attempt
    if path == "flaky.png" and attempt == 0:
        raise RuntimeError("first try fails")
    return {"path": path, "width": width * 2, "attempt": attempt}
"""


async def _run(*argv: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *paota_command(),
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("store", ["none", "mongodb"])
async def test_first_real_worker_send_wait_and_result(
    store: str, make_config: Any, mongo_uri: str, tmp_path: Path
) -> None:
    # given the user's two modules and a worker started as the README says
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "tasks.py").write_text(textwrap.dedent(TASKS))
    config = make_config()
    database = f"paota_first_{uuid.uuid4().hex[:10]}"
    stored = {"PAOTA_STORE": "mongodb", "PAOTA_MONGO_URI": mongo_uri, "PAOTA_MONGO_DB": database}
    env = process_env(config, PYTHONPATH=f"{tmp_path}", **(stored if store == "mongodb" else {}))
    worker = await asyncio.create_subprocess_exec(
        *paota_command(),
        "worker",
        "app:pool",
        "--include",
        "tasks",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    try:
        assert worker.stderr is not None
        while not any("consuming" in line for line in log):
            line = (await asyncio.wait_for(worker.stderr.readline(), 90)).decode()
            assert line, "the worker ended before consuming:\n" + "".join(log)
            log.append(line)
        assert "(tasks: resize)" in log[-1]
        drain = asyncio.create_task(_collect(worker.stderr, log))

        # when the user sends with the app's defaults and waits, then asks for the result
        code, out, err = await _run(
            "send", "--app", "app:pool", "-I", "tasks", "resize", "--arg", "path=flaky.png",
            "--arg", "width=320", "--wait", "60", env=env, cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, err
        task_id, result_line = out.strip().splitlines()
        # then the registered retry_count=2 applied (the first attempt failed), the width was
        # parsed as an int by its annotation, and the result came back
        assert json.loads(result_line) == {"path": "flaky.png", "width": 640, "attempt": 1}
        code, out, err = await _run("result", task_id, env=env, cwd=tmp_path)
        if store == "none":
            # a later process reads results from a store only: it says so
            assert code == 2 and "set PAOTA_STORE=mongodb" in err, (code, out, err)
        else:
            assert code == 0, err
            assert json.loads(out) == {"path": "flaky.png", "width": 640, "attempt": 1}
            code, out, err = await _run("status", task_id, env=env, cwd=tmp_path)
            assert code == 0, err
            state = json.loads(out)
            assert (state["status"], state["attempts"]) == ("SUCCEEDED", 1)

        # and a bad argument is refused before anything is sent
        code, out, err = await _run(
            "send", "--app", "app:pool", "-I", "tasks", "resize", "--arg", "path=a.png",
            "--arg", "width=wide", env=env, cwd=tmp_path,
        )  # fmt: skip
        assert code == 2 and "is not a valid int" in err and out == ""

        # and one sent without --app, unchecked, that the worker cannot bind is parked, with its
        # reason, where paota parked shows it
        code, out, err = await _run(
            "send", "resize", "--arg", "path:string=b.png", env=env, cwd=tmp_path
        )  # fmt: skip
        assert code == 0, err
        parked_id = out.strip()
        for _ in range(60):  # each look is a process of its own: no sleep between them
            code, out, err = await _run("parked", "--json", env=env, cwd=tmp_path)
            assert code == 0, err
            if out.strip():
                break
        else:
            pytest.fail("the unbindable task was not parked")
        [item] = [json.loads(line) for line in out.splitlines()]
        assert (item["id"], item["name"], item["reason"]) == (parked_id, "resize", "bad-arguments")
        assert "width" in item["error"]
        code, out, err = await _run("parked", env=env, cwd=tmp_path)
        assert out.splitlines()[-1].endswith("1 parked (bad-arguments 1)"), out
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 60)
    await drain
    text = "".join(log)
    # the worker's log has the retry line and one INFO line for the success
    assert "failed (RuntimeError: first try fails); retry 1 of 2" in text
    assert f"task {task_id} (resize) succeeded in" in text
    assert worker.returncode == 0, text


async def _collect(stream: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stream.readline():
        log.append(line.decode())
