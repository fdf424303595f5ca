"""The management API against its own OpenAPI description, with schemathesis: generated requests
(valid and invalid values of every parameter and body field) to every operation but the endpless
live streams; every answer must be one the description lists, with the listed schema, and none a
server error."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from paota import Config, ManualClock, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.stores.memory import MemoryStore
from paota.web import create_app
from paota.web.openapi import openapi_document

TOKEN = "schemathesis-token-0123456789"


def _app() -> Any:
    clock = ManualClock()
    pool = WorkerPool(
        Config(),
        name="openapi",
        broker=MemoryBroker(clock=clock),
        store=MemoryStore(clock=clock),
        clock=clock,
    )

    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    @pool.periodic(every=60, id="tick")
    async def tick() -> None:
        return None

    async def seed() -> None:
        # Something to find: a finished task, a pending one, a parked message.
        await pool.connect()
        await add.send(1, 2)
        await pool.send_task(__import__("paota").Signature("Missing", uuid="t-missing"))

    asyncio.run(seed())
    return create_app(pool, token=TOKEN)


APP = _app()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEMA = schemathesis.openapi.from_asgi("/api/openapi.json", APP).exclude(
    path_regex="^/api/stream/"
)
EXAMPLES = settings(
    max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


#: Operations whose schema-valid requests may rightly be refused: a cursor is opaque (a string the
#: API did not give is a 400), and a send is checked against the task's function (a name the app
#: does not know, or arguments that do not fit it, are a 400; JSON Schema cannot say that).
CHECKED_BEYOND_THE_SCHEMA = "^(listTasks|sendTask)$"


@SCHEMA.exclude(operation_id_regex=CHECKED_BEYOND_THE_SCHEMA).parametrize()
@EXAMPLES
def test_every_answer_is_documented_and_none_is_a_server_error(case: Any) -> None:
    case.call_and_validate(headers=AUTH)


@SCHEMA.include(operation_id_regex=CHECKED_BEYOND_THE_SCHEMA).parametrize()
@EXAMPLES
def test_listing_and_sending_answers_are_documented_and_none_is_a_server_error(case: Any) -> None:
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])


def test_the_description_is_valid_json_with_every_route() -> None:
    document = openapi_document()
    json.dumps(document)
    paths = set(document["paths"])
    for path in (
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/retry",
        "/api/tasks/{task_id}/cancel",
        "/api/stream/tasks",
        "/api/stream/tasks/{task_id}",
        "/api/parked/{queue}",
        "/api/parked/{queue}/requeue",
        "/api/queues",
        "/api/workers",
        "/api/schedules",
        "/api/schedules/{schedule_id}/pause",
        "/api/schedules/{schedule_id}/resume",
        "/api/openapi.json",
        "/api/info",
    ):
        assert path in paths
    routes = {getattr(r, "path", "") for r in APP.routes}
    for path in paths:
        assert (
            path.replace("{task_id}", "{task_id:str}")
            .replace("{queue}", "{queue:str}")
            .replace("{schedule_id}", "{schedule_id:path}")
            in routes
        ), path
