"""The OpenAPI 3.1 description of the management API (served at ``/api/openapi.json``).

Written by hand next to the handlers, so every parameter, body field and status code a handler
knows is described, and a test runs schemathesis against it (every answer must be one this
document lists, and none a server error). The schemas of the bodies and answers are in
:mod:`paota.web.openapi_schemas`; this module holds the paths, their parameters and responses.
"""

from __future__ import annotations

import copy
from typing import Any

from paota.core.protocols import ParkQueue
from paota.web.openapi_schemas import (
    EMPTY,
    ERROR,
    MONITOR,
    REQUEUE,
    SEND,
    STATUSES,
    TASK,
    TASK_DETAIL,
    WORKERS,
    optional,
)
from paota.web.params import MAX_PAGE

__all__ = ["openapi_document"]


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "a bad value; the error names the field",
        401: "no token, or not the right one (nothing was read or changed)",
        403: "an open (token-less) app answers loopback clients only",
        404: "no such task, queue, schedule or path",
        409: "the task's state does not allow this",
        413: "the body is too large",
        501: "the broker or store cannot do this",
        503: "the broker or store did not answer",
    }
    return {str(code): _json(ERROR, texts[code]) for code in (401, 403, 503, *codes)}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str, pattern: str = "^[^/]+$") -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "pattern": pattern},
        "description": description,
    }


_LIST_PARAMS = [
    _query("status", {"type": "string", "enum": STATUSES}, "only tasks in this status"),
    _query("name", {"type": "string", "maxLength": 1000}, "only tasks of this name"),
    _query("queue", {"type": "string", "maxLength": 1000}, "only tasks sent to this queue"),
    _query(
        "created_after",
        {"type": "string", "format": "date-time"},
        "only tasks created at or after (RFC 3339, with a zone)",
    ),
    _query(
        "created_before",
        {"type": "string", "format": "date-time"},
        "only tasks created before (RFC 3339, with a zone)",
    ),
]

_TASK_ID = _path("task_id", "the task's id")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    page = {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": TASK},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    items = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array"}}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "paota management API",
            "version": "1",
            "description": "Tasks, parking queues, queues, workers and schedules of a paota "
            "deployment, read from its store and broker. Every path but this document needs "
            "'Authorization: Bearer <token>' (PAOTA_WEB_TOKEN).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "Task": TASK, "TaskDetail": TASK_DETAIL},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/info": {
                "get": {
                    "summary": "what this app serves: broker, store, default queue, tasks known",
                    "operationId": "info",
                    "responses": {"200": _json({"type": "object"}, "about"), **_errors(400)},
                }
            },
            "/api/tasks": {
                "get": {
                    "summary": "list tasks, newest first, one page at a time",
                    "operationId": "listTasks",
                    "parameters": [
                        *_LIST_PARAMS,
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                            "page size (default 50)",
                        ),
                        _query(
                            "cursor",
                            {"type": "string"},
                            "next_cursor of the previous page",
                        ),
                    ],
                    "responses": {"200": _json(page, "a page of tasks"), **_errors(400)},
                },
                "post": {
                    "summary": "send a task by name",
                    "operationId": "sendTask",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": SEND}},
                    },
                    "responses": {
                        "201": _json(
                            {
                                "type": "object",
                                "required": ["id", "name", "queue"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "name": {"type": "string"},
                                    "queue": {"type": "string"},
                                },
                            },
                            "sent (the broker has it)",
                        ),
                        **_errors(400, 409, 413),
                    },
                },
            },
            "/api/tasks/{task_id}": {
                "parameters": [_TASK_ID],
                "get": {
                    "summary": "one task: args, attempts, worker, times, result, error, "
                    "traceback, progress",
                    "operationId": "getTask",
                    "responses": {"200": _json(TASK_DETAIL, "the task"), **_errors(400, 404)},
                },
                "delete": {
                    "summary": "delete a finished task's record",
                    "operationId": "deleteTask",
                    "responses": {"204": {"description": "deleted"}, **_errors(400, 404, 409)},
                },
            },
            "/api/tasks/{task_id}/retry": {
                "parameters": [_TASK_ID],
                "post": {
                    "summary": "run a finished task again as a new run (from its parking queue "
                    "when it is parked, else rebuilt from its record)",
                    "operationId": "retryTask",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": EMPTY}},
                    },
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "required": ["id", "replays", "from"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "replays": {"type": "integer"},
                                    "from": {"type": "string", "enum": ["parked", "record"]},
                                },
                            },
                            "the new run is on its way",
                        ),
                        **_errors(400, 404, 409, 413),
                    },
                },
            },
            "/api/tasks/{task_id}/cancel": {
                "parameters": [_TASK_ID],
                "post": {
                    "summary": "cancel a task that has not finished (queued, delayed or running)",
                    "operationId": "cancelTask",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {"reason": optional({"type": "string"})},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["id", "cancelled"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "cancelled": {"type": "boolean"},
                                },
                            },
                            "cancelled",
                        ),
                        **_errors(400, 404, 409, 413),
                    },
                },
            },
            "/api/stream/tasks": {
                "get": {
                    "summary": "server-sent events: 'tasks' with the first page (filters as for "
                    "listing) each time it changes",
                    "operationId": "streamTasks",
                    "x-stream": True,
                    "parameters": [
                        *_LIST_PARAMS,
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                            "page size (default 50)",
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400),
                    },
                }
            },
            "/api/stream/tasks/{task_id}": {
                "parameters": [_TASK_ID],
                "get": {
                    "summary": "server-sent events: 'task' with the task each time it changes",
                    "operationId": "streamTask",
                    "x-stream": True,
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 404),
                    },
                },
            },
            "/api/parked/{queue}": {
                "parameters": [
                    {
                        "name": "queue",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": [q.value for q in ParkQueue]},
                    }
                ],
                "get": {
                    "summary": "browse a parking queue: counts by reason and the first messages "
                    "(nothing moves)",
                    "operationId": "browseParked",
                    "parameters": [
                        _query("reason", {"type": "string"}, "only messages parked for this"),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                            "how many messages to show (default 100)",
                        ),
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["queue", "name", "total", "by_reason", "items"],
                                "properties": {
                                    "queue": {"type": "string"},
                                    "name": {"type": "string"},
                                    "total": {"type": "integer"},
                                    "by_reason": {"type": "object"},
                                    "items": {"type": "array"},
                                },
                            },
                            "the parking queue",
                        ),
                        **_errors(400, 404),
                    },
                },
            },
            "/api/parked/{queue}/requeue": {
                "parameters": [
                    {
                        "name": "queue",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": [q.value for q in ParkQueue]},
                    }
                ],
                "post": {
                    "summary": "move parked messages back to the queues they came from, as new "
                    "runs (all, or by reason, or by task id)",
                    "operationId": "requeueParked",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": REQUEUE}},
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["queue", "moved"],
                                "properties": {
                                    "queue": {"type": "string"},
                                    "moved": {"type": "integer"},
                                },
                            },
                            "how many moved",
                        ),
                        **_errors(400, 404, 413),
                    },
                },
            },
            "/api/queues": {
                "get": {
                    "summary": "task and parking queues with messages ready and consumers",
                    "operationId": "listQueues",
                    "responses": {"200": _json(items, "the queues"), **_errors(400, 501)},
                }
            },
            "/api/workers": {
                "get": {
                    "summary": "the live workers (their heartbeat records), with the consumers "
                    "the broker counts on the task queues",
                    "operationId": "listWorkers",
                    "responses": {"200": _json(WORKERS, "the workers"), **_errors(400, 501)},
                }
            },
            "/api/monitor": {
                "get": {
                    "summary": "the charts' samples of the last hour: per queue, runs per second "
                    "by outcome, runtime percentiles and depth; parked counts",
                    "operationId": "monitor",
                    "responses": {
                        "200": _json(MONITOR, "the samples, oldest first"),
                        **_errors(400),
                    },
                }
            },
            "/api/schedules": {
                "get": {
                    "summary": "periodic schedules with their next slots",
                    "operationId": "listSchedules",
                    "parameters": [
                        _query(
                            "count",
                            {"type": "integer", "minimum": 1, "maximum": 50},
                            "next slots to show per schedule (default 3)",
                        )
                    ],
                    "responses": {"200": _json(items, "the schedules"), **_errors(400, 501)},
                }
            },
        },
    }
    for action in ("pause", "resume"):
        document["paths"][f"/api/schedules/{{schedule_id}}/{action}"] = {
            "parameters": [
                _path(
                    "schedule_id",
                    "the schedule's id: letters, digits and _ . @ - (and /, sent as is)",
                    r"^[A-Za-z0-9_.@\-]+$",
                )
            ],
            "post": {
                "summary": f"{action} a schedule",
                "operationId": f"{action}Schedule",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": EMPTY}},
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["id", "paused"],
                            "properties": {"id": {"type": "string"}, "paused": {"type": "boolean"}},
                        },
                        "done",
                    ),
                    **_errors(400, 404, 413, 501),
                },
            },
        }
    document["paths"]["/api/openapi.json"] = {
        "get": {
            "summary": "this document",
            "operationId": "openapi",
            "security": [],
            "responses": {"200": {"description": "the OpenAPI document"}},
        }
    }
    return copy.deepcopy(document)
