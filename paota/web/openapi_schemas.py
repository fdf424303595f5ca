"""The JSON schemas of the management API's bodies and answers (errors, tasks, a send, a
requeue, the workers, the monitor's samples), which :mod:`paota.web.openapi` puts in its document.
"""

from __future__ import annotations

import copy
from typing import Any

from paota.core.protocols import MAX_DELAY_S
from paota.core.state import TaskStatus

__all__ = [
    "ARG",
    "EMPTY",
    "ERROR",
    "MONITOR",
    "NAME",
    "REQUEUE",
    "SEND",
    "STATUSES",
    "TASK",
    "TASK_DETAIL",
    "TIME",
    "WORKERS",
    "optional",
]

STATUSES = [s.value for s in TaskStatus]
NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.:@/\-]{1,200}$"}
TIME = {"type": ["string", "null"], "format": "date-time"}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "allowed": {"type": "array", "items": {"type": "string"}},
            },
        }
    },
}

TASK = {
    "type": "object",
    "required": ["id", "name", "status", "queue", "attempts", "replays", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES},
        "queue": {"type": "string"},
        "attempts": {"type": "integer", "description": "retries done in this run"},
        "runs": {
            "type": "integer",
            "description": "how many times this run's task started: attempts + 1 once started",
        },
        "replays": {"type": "integer"},
        "worker": {"type": "string"},
        "call": {
            "type": "string",
            "description": 'the task as called, e.g. resize(path="a.png", width=200), cut to 200',
        },
        "result_preview": {
            "type": ["string", "null"],
            "description": "the result's JSON cut to 120 characters (SUCCEEDED only)",
        },
        "runtime_s": {
            "type": ["number", "null"],
            "description": "finished_at - started_at, in seconds",
        },
        "created_at": TIME,
        "started_at": TIME,
        "finished_at": TIME,
        "updated_at": TIME,
        "progress": {"type": ["number", "null"]},
        "progress_message": {"type": "string"},
        "error": {
            "type": ["object", "null"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "traceback": {"type": "string"},
            },
        },
        "workflow_id": {"type": "string"},
        "parent_id": {"type": "string"},
    },
}

TASK_DETAIL = copy.deepcopy(TASK)
TASK_DETAIL["properties"].update(  # type: ignore[attr-defined]
    {
        "args": {"type": "array", "items": {"type": "object"}},
        "result": {},
        "expires_at": TIME,
    }
)

ARG = {
    "oneOf": [
        {
            "type": "object",
            "required": ["value"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": ["string", "null"]},
                "type": {
                    "type": ["string", "null"],
                    "description": "Go type name, e.g. int64 or string (null: inferred)",
                },
                "value": {},
            },
        },
        {
            "type": "object",
            "required": ["Value"],
            "additionalProperties": False,
            "description": "an argument as the records show it (Go's Arg)",
            "properties": {
                "Name": {"type": ["string", "null"]},
                "Type": {"type": ["string", "null"]},
                "Value": {},
            },
        },
        {
            "not": {
                "anyOf": [
                    {"type": "object", "required": ["value"]},
                    {"type": "object", "required": ["Value"]},
                ]
            },
            "description": "a value, its Go type inferred",
        },
    ]
}


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional body field: null is the same as leaving it out."""
    return {"anyOf": [schema, {"type": "null"}]}


SEND = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 500},
        "args": optional(
            {
                "oneOf": [
                    {"type": "array", "items": ARG},
                    {"type": "object", "description": "the arguments by name"},
                ]
            }
        ),
        "queue": optional(NAME),
        "delay_s": optional({"type": "number", "minimum": 0, "maximum": MAX_DELAY_S}),
        "priority": optional({"type": "integer", "minimum": 0, "maximum": 255}),
        "retry_count": optional({"type": "integer", "minimum": 0, "maximum": 1000}),
        "task_timeout": optional({"type": "integer", "minimum": 0, "maximum": 2**31 - 1}),
        "id": optional(NAME),
        "unchecked": optional(
            {
                "type": "boolean",
                "description": "send a name this server does not know (a task only other "
                "workers run); known tasks are always checked",
            }
        ),
    },
}

WORKERS = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "consumers": {
            "type": ["integer", "null"],
            "description": "consumers the broker counts on the task queues (null: unknown)",
        },
        "store": {"type": "string"},
    },
}

MONITOR = {
    "type": "object",
    "required": ["interval_s", "window_s", "samples"],
    "properties": {
        "interval_s": {"type": "number"},
        "window_s": {"type": "number"},
        "runtime_bounds_ms": {"type": "array", "items": {"type": "number"}},
        "samples": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "queues", "parked", "workers"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "queues": {"type": "object"},
                    "parked": {"type": "object"},
                    "workers": {"type": "integer"},
                },
            },
        },
    },
}

REQUEUE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "reason": optional({"type": "string"}),
        "task_ids": optional({"type": "array", "items": {"type": "string"}, "minItems": 1}),
        "limit": optional({"type": "integer", "minimum": 1, "maximum": 1_000_000}),
    },
}

EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}
