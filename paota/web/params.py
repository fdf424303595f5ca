"""Reading what a request gives (query parameters, JSON bodies, path values), each value checked
where it is read: a bad value is a :class:`WebError` (400) naming the field, what it got and what
is allowed, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from paota.core.protocols import ListCursor, ParkQueue
from paota.core.state import TaskStatus

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PAGE",
    "WebError",
    "check_fields",
    "decode_cursor",
    "encode_cursor",
    "json_body",
    "opt_int",
    "opt_number",
    "opt_str",
    "park_queue",
    "query_int",
    "query_status",
    "query_str",
    "query_time",
]

#: The most records one page may ask for.
MAX_PAGE = 500
#: The largest JSON body accepted (a task's arguments included).
MAX_BODY_BYTES = 1024 * 1024

_NAME = re.compile(r"^[A-Za-z0-9_.:@/\-]{1,200}$")


class WebError(Exception):
    """An answer other than success: HTTP ``status`` with ``message``, naming ``field`` when one
    was at fault and ``allowed`` values when there is a list of them."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        allowed: Iterable[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.allowed = list(allowed) if allowed is not None else None

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``{"error": {"status", "message", "field"?, "allowed"?}}``."""
        error: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.allowed is not None:
            error["allowed"] = self.allowed
        return {"error": error}


def bad(field: str, message: str, allowed: Iterable[str] | None = None) -> WebError:
    """A 400 about ``field``."""
    return WebError(400, f"{field}: {message}", field=field, allowed=allowed)


def check_fields(given: Iterable[str], known: Collection[str], where: str) -> None:
    """400 naming the first field of ``given`` that is not one of ``known``."""
    for name in given:
        if name not in known:
            raise WebError(
                400,
                f"{name}: unknown {where}; allowed: {', '.join(sorted(known)) or 'none'}",
                field=name,
                allowed=sorted(known),
            )


def _one(query: Mapping[str, Any], field: str) -> str | None:
    getlist = getattr(query, "getlist", None)
    values = list(getlist(field)) if getlist is not None else [query.get(field)]
    values = [v for v in values if v is not None]
    if not values:
        return None
    if len(values) > 1:
        raise bad(field, "given more than once")
    return str(values[0])


def query_str(query: Mapping[str, Any], field: str, *, name_like: bool = False) -> str | None:
    """An optional text parameter; ``name_like`` allows task and queue names only."""
    text = _one(query, field)
    if text is None or text == "":
        return None
    if name_like and not _NAME.match(text):
        raise bad(
            field,
            f"{text[:80]!r} is not a valid name: expected 1 to 200 letters, digits or _ . : @ / -",
        )
    if len(text) > 1000:
        raise bad(field, "is longer than 1000 characters")
    return text


def query_int(query: Mapping[str, Any], field: str, *, default: int, lo: int, hi: int) -> int:
    """An integer parameter within ``lo..hi``."""
    text = _one(query, field)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad(field, f"{text[:40]!r} is not an integer (expected {lo}..{hi})") from None
    if not lo <= value <= hi:
        raise bad(field, f"{value} is out of range: expected {lo}..{hi}")
    return value


def query_status(query: Mapping[str, Any], field: str = "status") -> TaskStatus | None:
    """A task status by name (any case)."""
    text = _one(query, field)
    if text is None:
        return None
    try:
        return TaskStatus(text.upper())
    except ValueError:
        allowed = [s.value for s in TaskStatus]
        raise bad(field, f"{text[:40]!r} is not a task status", allowed) from None


def parse_time(text: str, field: str) -> datetime:
    """An RFC 3339 time with a zone (``Z`` or an offset), as aware UTC."""
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise bad(
            field, f"{text[:60]!r} is not an RFC 3339 time, e.g. 2026-05-04T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        raise bad(field, f"{text[:60]!r} has no time zone: add Z or an offset such as +02:00")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise bad(field, f"{text[:60]!r} is out of range") from None


def query_time(query: Mapping[str, Any], field: str) -> datetime | None:
    """An optional RFC 3339 time parameter."""
    text = _one(query, field)
    if text is None:
        return None
    return parse_time(text, field)


def encode_cursor(cursor: ListCursor) -> str:
    """An opaque text for ``cursor`` (URL-safe)."""
    created = None if cursor.created_at is None else cursor.created_at.isoformat()
    raw = json.dumps([created, cursor.task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, field: str = "cursor") -> ListCursor:
    """The cursor :func:`encode_cursor` made; 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created, task_id = json.loads(raw)
        if not isinstance(task_id, str) or not (created is None or isinstance(created, str)):
            raise ValueError("bad fields")
        when = None if created is None else datetime.fromisoformat(created)
        if when is not None and when.tzinfo is None:
            raise ValueError("naive time")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise bad(
            field, "is not a cursor this API gave (use next_cursor of the previous page)"
        ) from None
    return ListCursor(when, task_id)


def park_queue(value: str) -> ParkQueue:
    """``failed`` or ``timeout``."""
    try:
        return ParkQueue(value)
    except ValueError:
        raise WebError(
            404,
            f"queue: no parking queue {value[:40]!r}",
            field="queue",
            allowed=[q.value for q in ParkQueue],
        ) from None


async def json_body(request: Any, known: Collection[str]) -> dict[str, Any]:
    """The request's JSON object body (an empty body is ``{}``), fields limited to ``known``."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise WebError(413, f"body: larger than {MAX_BODY_BYTES} bytes", field="body")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise bad("body", f"is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise bad("body", f"must be a JSON object, not {type(body).__name__}")
    check_fields(body, known, "field")
    return body


def opt_str(body: Mapping[str, Any], field: str, *, name_like: bool = False) -> str | None:
    """An optional string field of a body."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(field, f"must be a string, not {_type(value)}")
    if name_like and not _NAME.match(value):
        raise bad(
            field,
            f"{value[:80]!r} is not a valid name: expected 1 to 200 letters, digits or _ . : @ / -",
        )
    if len(value) > 10_000:
        raise bad(field, "is longer than 10000 characters")
    return value


def opt_int(body: Mapping[str, Any], field: str, *, lo: int, hi: int) -> int | None:
    """An optional integer field of a body, within ``lo..hi``."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is an integer in JSON
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, f"must be an integer ({lo}..{hi}), not {_type(value)}")
    if not lo <= value <= hi:
        raise bad(field, f"{value} is out of range: expected {lo}..{hi}")
    return value


def opt_number(body: Mapping[str, Any], field: str, *, lo: float, hi: float) -> float | None:
    """An optional number field of a body, finite and within ``lo..hi``."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(field, f"must be a number ({lo:g}..{hi:g}), not {_type(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise bad(field, f"{value!r} is out of range: expected {lo:g}..{hi:g}")
    return float(value)


def _type(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
