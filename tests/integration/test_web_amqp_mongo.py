"""The management API and dashboard of a real deployment: a ``paota worker`` process and a
``paota web`` process on RabbitMQ with the MongoDB store, the test as producer and as a person in
a real browser (Debian's Chromium, driven by Playwright; no browser download).

- The browser signs in, finds a failed task, clicks Retry and sees it go from STARTED to
  SUCCEEDED (within 2 s of the worker recording it), with screenshots for people to look at.
- The API lists every task page by page, browses and requeues parked messages on RabbitMQ,
  cancels, shows queues with their consumers, the worker, the schedules; a restarted web process
  shows the same history, and its memory does not grow with the number of tasks.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from paota import Arg, Client, Config, MongoConfig, Signature
from tests.integration._skip import skip_or_fail
from tests.integration.containers import free_port
from tests.integration.processes import ROOT, paota_command, process_env

pytestmark = pytest.mark.integration

APP = "tests.integration.e2e_helpers.web_app:pool"
TOKEN = "integration-token-" + uuid.uuid4().hex
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / ".cache" / "screenshots"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def env_of(config: Config, mongo_uri: str, database: str, **extra: str) -> dict[str, str]:
    """The variables that give a paota process the test's topology and store."""
    return process_env(
        config,
        PAOTA_STORE="mongodb",
        PAOTA_MONGO_URI=mongo_uri,
        PAOTA_MONGO_DB=database,
        PAOTA_HEARTBEAT_INTERVAL="1",
        **extra,
    )


async def eventually(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.1)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@dataclass
class Deployment:
    """A worker process, a web process, and the test's producer, on one RabbitMQ and MongoDB."""

    config: Config
    mongo_uri: str
    database: str
    marker: Path
    port: int = field(default_factory=free_port)
    worker: asyncio.subprocess.Process | None = None
    web: asyncio.subprocess.Process | None = None
    producer: Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return env_of(
            self.config,
            self.mongo_uri,
            self.database,
            WEB_MARKER=str(self.marker),
            WEB_HOLD_S="1.0",
            **extra,
        )

    async def start_worker(self) -> None:
        self.worker = await asyncio.create_subprocess_exec(
            *paota_command(),
            "worker",
            APP,
            env=self.env(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def start_web(self) -> None:
        self.web = await asyncio.create_subprocess_exec(
            *paota_command(),
            "web",
            "--port",
            str(self.port),
            "--target",
            APP,
            "--monitor-interval",
            "0.5",
            env=self.env(PAOTA_WEB_TOKEN=TOKEN),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

        async def answers() -> bool:
            assert self.web is not None and self.web.returncode is None, "paota web exited"
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(self.url + "/api/openapi.json")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(answers, 60, "paota web answers")

    async def stop_web(self) -> None:
        if self.web is not None and self.web.returncode is None:
            self.web.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.web.wait(), 30)
        self.web = None

    async def close(self) -> None:
        await self.stop_web()
        if self.worker is not None and self.worker.returncode is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.worker.wait(), 30)
            except TimeoutError:
                self.worker.kill()
                await self.worker.wait()
        if self.producer is not None:
            await self.producer.close()

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    async def send(self, name: str, *args: Any, delay_s: float | None = None) -> str:
        assert self.producer is not None
        sig = Signature(name, args=[Arg.of(a) for a in args])
        return (await self.producer.send_task(sig, delay_s=delay_s)).id

    async def status_of(self, task_id: str) -> str | None:
        assert self.producer is not None
        state = await self.producer.require_store().get(task_id)
        return None if state is None else state.status.value


@pytest.fixture
async def deployment(
    make_config: Callable[..., Config], mongo_uri: str, tmp_path: Path
) -> AsyncIterator[Deployment]:
    database = f"paota_web_{uuid.uuid4().hex[:12]}"
    config = make_config(
        config_fields={"store": "mongodb", "mongo": MongoConfig(uri=mongo_uri, database=database)}
    )
    setup = Deployment(config, mongo_uri, database, tmp_path / "marker")
    setup.producer = Client(config, name="web-test-producer")
    try:
        await setup.producer.connect()
        await setup.start_worker()
        await setup.start_web()
        yield setup
    finally:
        await setup.close()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongo_uri, serverSelectionTimeoutMS=5000
        )
        try:
            await client.drop_database(database)
        finally:
            await client.close()


async def test_the_api_of_a_real_deployment_lists_acts_and_survives_a_restart(
    deployment: Deployment,
) -> None:
    # given 120 tasks that succeed and 3 that fail (the marker file is missing)
    ok = [await deployment.send("Add", i, i) for i in range(120)]
    failed = [await deployment.send("Flaky", i) for i in range(3)]

    async def all_final() -> bool:
        statuses = [await deployment.status_of(t) for t in [*ok, *failed]]
        return all(s in ("SUCCEEDED", "FAILED") for s in statuses)

    await eventually(all_final, 90, "every task finished")
    async with deployment.api() as api:
        # the worker is there, consuming the task queue
        workers = (await api.get("/api/workers")).json()["items"]
        assert [w["name"] for w in workers] == ["web-worker"] and workers[0]["pid"]
        queues = {q["name"]: q for q in (await api.get("/api/queues")).json()["items"]}
        task_queue = queues[deployment.config.task_queue_name]
        assert task_queue["consumers"] == 1 and task_queue["ready"] == 0
        assert queues[deployment.config.amqp.failed_queue]["ready"] == 3
        # every task, page by page, newest first
        listed = await page_through(api, {"limit": 50})
        assert listed == [*ok, *failed][::-1]
        assert [t["id"] for t in (await api.get("/api/tasks?status=FAILED")).json()["items"]] == (
            failed[::-1]
        )
        # the failed queue, browsed on RabbitMQ, moves nothing
        parked = (await api.get("/api/parked/failed")).json()
        assert parked["total"] == 3 and parked["by_reason"] == {"retries-exhausted": 3}
        assert sorted(i["id"] for i in parked["items"]) == sorted(failed)
        assert (await api.get("/api/parked/failed")).json()["total"] == 3
        # a schedule of the pool (given with --target) is paused and resumed
        schedules = (await api.get("/api/schedules")).json()["items"]
        assert [(s["id"], s["paused"]) for s in schedules] == [("hourly-report", False)]
        assert (await api.post("/api/schedules/hourly-report/pause")).json()["paused"] is True
        assert (await api.get("/api/schedules")).json()["items"][0]["paused"] is True
        await api.post("/api/schedules/hourly-report/resume")

        # when the marker exists, one failed task is retried, the others requeued by reason
        deployment.marker.touch()
        retried = await api.post(f"/api/tasks/{failed[0]}/retry")
        assert retried.json() == {"id": failed[0], "replays": 1, "from": "parked"}
        moved = await api.post("/api/parked/failed/requeue", json={"reason": "retries-exhausted"})
        assert moved.json()["moved"] == 2

        async def succeeded() -> bool:
            return all([await deployment.status_of(t) == "SUCCEEDED" for t in failed])

        await eventually(succeeded, 60, "the retried tasks succeeded")
        detail = (await api.get(f"/api/tasks/{failed[0]}")).json()
        assert detail["replays"] == 1 and detail["result"] == 1 and detail["error"] is None
        # a finished task retried from its record, a delayed one cancelled
        again = await api.post(f"/api/tasks/{ok[0]}/retry")
        assert again.json()["from"] == "record"
        later = await deployment.send("Add", 1, 1, delay_s=600)
        assert (await api.post(f"/api/tasks/{later}/cancel")).json()["cancelled"] is True
        assert (await api.get(f"/api/tasks/{later}")).json()["status"] == "CANCELLED"
        await eventually(
            lambda: _is(deployment.status_of(ok[0]), "SUCCEEDED"), 30, "the replay succeeded"
        )
        before_restart = await page_through(api, {"limit": 100})

    # then a new web process shows the same history
    await deployment.stop_web()
    await deployment.start_web()
    async with deployment.api() as api:
        assert await page_through(api, {"limit": 100}) == before_restart


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def page_through(api: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await api.get(
            "/api/tasks", params={**params, "cursor": cursor} if cursor else params
        )
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


@pytest.mark.timeout(600)
async def test_the_web_process_memory_stays_flat_however_many_tasks_exist(
    deployment: Deployment,
) -> None:
    assert deployment.web is not None
    database = AsyncMongoClient(deployment.mongo_uri)[deployment.database]
    tasks = database[deployment.config.mongo.collection]
    base = datetime.now(UTC) - timedelta(days=1)

    async def add_records(start: int, n: int) -> None:
        docs = [
            {
                "_id": f"task_bulk_{i:07}",
                "name": "Add",
                "args": [{"Name": "a", "Type": "int", "Value": i}],
                "status": "SUCCEEDED",
                "attempts": 0,
                "replays": 0,
                "rank": 3,
                "result": i,
                "error": None,
                "worker": "bulk",
                "created_at": base + timedelta(milliseconds=i),
                "started_at": base,
                "finished_at": base,
                "updated_at": base,
                "queue": deployment.config.task_queue_name,
                "expires_at": None,
            }
            for i in range(start, start + n)
        ]
        for chunk in range(0, len(docs), 200):
            await tasks.insert_many(docs[chunk : chunk + 200])

    async def browse(api: httpx.AsyncClient) -> None:
        # the first pages of every view, the way a dashboard reads them
        started = time.monotonic()
        for _ in range(3):
            for params in (
                {},
                {"status": "SUCCEEDED"},
                {"queue": deployment.config.task_queue_name},
            ):
                response = await api.get("/api/tasks", params={"limit": 100, **params})
                assert len(response.json()["items"]) == 100
        print(f"9 first pages in {time.monotonic() - started:.2f}s")

    try:
        async with deployment.api() as api:
            await add_records(0, 200)
            await browse(api)
            small = rss_kib(deployment.web.pid)
            started = time.monotonic()
            await add_records(200, 1_800)
            print(f"1,800 records inserted in {time.monotonic() - started:.1f}s")
            await browse(api)
            # and one pass through all of them, 500 at a time
            started = time.monotonic()
            assert len(await page_through(api, {"limit": 100})) == 2_000
            print(f"paged through 2,000 in {time.monotonic() - started:.1f}s")
            await browse(api)
            large = rss_kib(deployment.web.pid)
    finally:
        await database.client.close()
    print(f"web process RSS: {small} KiB with 200 tasks, {large} KiB with 2,000 (paged through)")
    assert large - small < 12 * 1024, (small, large)


# --- the dashboard, in a real browser -------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - one stat before the browser starts
        skip_or_fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (see .ci/run)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def quiet(page: Any) -> None:
    """Hide the notice of the last action, for a screenshot of the page itself."""
    await page.evaluate("document.getElementById('notice').hidden = true")


async def test_the_dashboard_retries_a_failed_task_and_shows_it_succeed(
    deployment: Deployment, browser: Any
) -> None:
    from playwright.async_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # given some finished tasks and one that failed (the marker file is missing)
    for i in range(6):
        await deployment.send("Add", i, 10 * i)
    task_id = await deployment.send("Flaky", 41)
    await eventually(lambda: _is(deployment.status_of(task_id), "FAILED"), 60, "it failed")
    page = await browser.new_page(viewport={"width": 1400, "height": 820})
    # the dashboard works under its Content-Security-Policy: the browser reports no violation
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda exc: violations.append(f"page error: {exc}"))
    try:
        # when a person opens the dashboard and signs in
        await page.goto(deployment.url + "/")
        await page.fill("#token", TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_selector("#tasks tbody tr[data-task-id]")
        # the list shows each task as called, its result or error, how long it ran and its runs
        add_row = page.locator("#tasks tbody tr", has_text="Add(5, 50)")
        await expect(add_row.locator(".outcome")).to_have_text("55", timeout=10_000)
        assert (await add_row.locator(".runtime").inner_text()).endswith(" ms")
        assert await add_row.locator(".runs").inner_text() == "1"
        assert await add_row.locator("button[data-action=retry]").inner_text() == "Run again"
        failed_row = page.locator(f'#tasks tr[data-task-id="{task_id}"]')
        await expect(failed_row.locator(".outcome")).to_have_text(
            "RuntimeError: the marker file is missing"
        )
        assert await failed_row.locator("button[data-action=retry]").inner_text() == "Retry"
        # the send form checks the arguments against the task the server knows
        await page.click("#send summary")
        await page.fill("#send-form input[name=name]", "Add")
        await page.fill("#send-form input[name=args]", "[1]")
        await page.click("#send-form button[type=submit]")
        await expect(page.locator("#send-error")).to_contain_text(
            "missing a required argument: 'b'"
        )
        await page.fill("#send-form input[name=args]", '{"a": 1, "b": "x"}')
        await page.click("#send-form button[type=submit]")
        await expect(page.locator("#send-error")).to_contain_text("argument 'b' should be int")
        await page.fill("#send-form input[name=args]", '{"a": 20, "b": 22}')
        await page.click("#send-form button[type=submit]")
        await expect(page.locator("#notice")).to_contain_text("sent to")
        await page.wait_for_selector(
            '#tasks tbody tr:has-text("Add(a=20, b=22)") .status[data-status="SUCCEEDED"]'
        )
        await page.locator("#send summary").click()  # closed again for the screenshot
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-tasks.png"))
        # filters the list to failed tasks
        await page.select_option("#task-filters select[name=status]", "FAILED")
        await page.click("#task-filters button[type=submit]")
        row = page.locator(f'#tasks tr[data-task-id="{task_id}"]')
        await row.wait_for()
        # the filtered list replaces the full one: wait for it rather than read it mid-render
        await expect(page.locator("#tasks tbody tr[data-task-id]")).to_have_count(1, timeout=10_000)
        assert await row.locator(".status").inner_text() == "FAILED"
        # opens it: the error and traceback are there
        await row.locator("a").click()
        await page.wait_for_selector("#task-error")
        assert "the marker file is missing" in await page.inner_text("#task-error")
        assert "RuntimeError" in await page.inner_text("#task-traceback")
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-failed-task.png"), full_page=True)
        assert await page.inner_text("#task-call") == "Flaky(41)"
        # and clicks Retry once the cause is fixed
        deployment.marker.touch()
        await page.click("#retry")
        # then the page shows it running, then succeeded, live
        await page.wait_for_selector('h1 .status[data-status="STARTED"]', timeout=20_000)
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-running.png"))
        await page.wait_for_selector('h1 .status[data-status="SUCCEEDED"]', timeout=20_000)
        shown_at = datetime.now(UTC)
        assert await page.inner_text("#task-result") == "42"
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-succeeded.png"), full_page=True)
        assert deployment.producer is not None
        state = await deployment.producer.require_store().get(task_id)
        assert state is not None and state.finished_at is not None and state.replays == 1
        lag_s = (shown_at - state.finished_at).total_seconds()
        print(f"the page showed SUCCEEDED {lag_s:.2f}s after the worker finished the task")
        assert lag_s < 2.0
        # the other pages show the parked queue (now empty), the queues and the worker
        await page.goto(deployment.url + "/#/parked/failed")
        await page.wait_for_selector("#parked")
        await page.goto(deployment.url + "/#/queues")
        await page.wait_for_selector(f'#queues td:text-is("{deployment.config.task_queue_name}")')
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-queues.png"))
        await page.goto(deployment.url + "/#/workers")
        await page.wait_for_selector('#workers td:text-is("web-worker")')
        worker_row = page.locator("#workers tbody tr", has_text="web-worker")

        async def counted_all() -> bool:  # the page reloads every 3 s, the record every 1 s
            # 6 Add, Flaky failed, the form's Add, Flaky run again
            return int(await worker_row.locator(".processed").inner_text() or 0) >= 9

        await eventually(counted_all, 30, "the workers page counts every run")
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-workers.png"))
        # the charts render, and move when tasks run
        await page.goto(deployment.url + "/#/monitor?minutes=5")
        queue = deployment.config.task_queue_name
        throughput = page.locator(f'#chart-throughput polyline[data-series="{queue}"]')
        await throughput.wait_for(state="attached", timeout=30_000)
        for chart in ("throughput", "failures", "retries", "runtime", "depth", "parked"):
            await page.wait_for_selector(f"#chart-{chart} svg")
        # (a rate holds from the beat after the runs to the next beat: count its samples)
        before = int(await throughput.get_attribute("data-positive") or 0)
        for i in range(40):
            await deployment.send("Add", i, i)

        async def moved() -> bool:
            return int(await throughput.get_attribute("data-positive") or 0) > before

        await eventually(moved, 60, "the throughput chart shows the runs")
        runtime = page.locator("#chart-runtime polyline[data-series^=p95]")
        await expect(runtime).to_have_attribute("data-last", re.compile(r"^[0-9.]+$"))
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-monitor.png"), full_page=True)
        await page.goto(deployment.url + "/#/schedules")
        await page.wait_for_selector('#schedules [data-schedule-id="hourly-report"]')
        await page.click('#schedules [data-schedule-id="hourly-report"] button')
        await page.wait_for_selector('#schedules [data-action="resume"]')
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard-schedules.png"))
        await page.goto(deployment.url + "/#/tasks")
        await page.wait_for_selector(
            f'#tasks tr[data-task-id="{task_id}"] .status[data-status="SUCCEEDED"]'
        )
        await quiet(page)
        await page.screenshot(path=str(SCREENSHOTS / "dashboard.png"))
        assert violations == []
    finally:
        await page.close()
    # and no other page can frame it (frame-ancestors 'none', X-Frame-Options: DENY)
    framer = await browser.new_page()
    try:
        await framer.set_content(f'<iframe id="framed" src="{deployment.url}/"></iframe>')
        [framed] = [frame for frame in framer.frames if frame != framer.main_frame]
        assert await framed.query_selector("#token") is None, framed.url
    finally:
        await framer.close()
