"""Header mode, Go's wire form when the signature carries ``raw_args``: raw args as the body.

The body is ``raw_args`` alone and the metadata rides in AMQP headers ``uuid``, ``task_name``,
``retry_count``, ``retry_timeout``, ``timeout``, ``wait_time``, ``retries_done``,
``ignore_if_unregistered`` and, when set, ``created_at``/``eta`` as Unix seconds. This form loses
sub-second precision of ``created_at`` and ``eta`` (Go does the same), and carries neither ``args``
nor ``priority`` nor ``routing_key``: the AMQP layer sends those as the message priority property
and the routing key. When decoding, optional ``priority`` and ``routing_key`` headers are honoured
(as Go's consumer does).

Header values are read leniently, as Go's consumer reads them: strings may arrive as bytes, integers
as strings, bools as ``0``/``1`` or text, times as AMQP timestamps, floats or integers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from paota.core.message._common import DIGITS, invalid
from paota.core.message.model import Signature, WireMessage, make_signature
from paota.core.message.times import EPOCH, UTC, unix_seconds

__all__ = ["CONTENT_TYPE_HEADERS", "HEADER_MODE_KEY", "decode_headers", "encode_headers"]

CONTENT_TYPE_HEADERS: Final = "application/octet-stream"

#: A message whose headers hold this key is in header mode.
HEADER_MODE_KEY: Final = "task_name"

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def encode_headers(sig: Signature, raw: bytes) -> WireMessage:
    """The header-mode message for ``sig``: ``raw`` (its raw args) as the body, metadata in headers."""
    headers: dict[str, Any] = {
        "uuid": sig.uuid,
        "task_name": sig.name,
        "retry_count": sig.retry_count,
        "retry_timeout": sig.retry_timeout,
        "timeout": sig.task_timeout,
        "wait_time": sig.wait_time,
        "retries_done": sig.retries_done,
        "ignore_if_unregistered": sig.ignore_when_task_not_registered,
    }
    if sig.created_at is not None:
        headers["created_at"] = unix_seconds(sig.created_at)
    if sig.eta is not None:
        headers["eta"] = unix_seconds(sig.eta)
    return WireMessage(raw, headers, CONTENT_TYPE_HEADERS)


def _text_of(value: Any) -> str | None:
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _header_str(headers: Mapping[str, Any], key: str) -> str:
    value = headers.get(key)
    if value is None:
        return ""
    text = _text_of(value)
    if text is None:
        raise invalid(f"header {key}", value, "want a string")
    return text


def _int_of(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    text = _text_of(value)
    if text is None:
        return None
    text = text.strip()
    digits = text[1:] if text[:1] in ("+", "-") else text
    if digits and DIGITS.issuperset(digits):
        return int(text)
    return None


def _header_int(
    headers: Mapping[str, Any], key: str, lo: int = _INT64_MIN, hi: int = _INT64_MAX
) -> int:
    value = headers.get(key)
    if value is None:
        return 0
    number = _int_of(value)
    if number is None or not lo <= number <= hi:
        raise invalid(f"header {key}", value, f"want an integer {lo}..{hi}")
    return number


def _header_bool(headers: Mapping[str, Any], key: str) -> bool:
    value = headers.get(key)
    if value is None:
        return False
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    text = _text_of(value)
    if text is not None:
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    raise invalid(f"header {key}", value, "want a bool")


def _header_time(headers: Mapping[str, Any], key: str) -> datetime | None:
    value = headers.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            # AMQP timestamps are UTC; a naive one is taken as UTC.
            if value.utcoffset() is None:
                return value.replace(tzinfo=UTC)
            return value.astimezone(UTC)
        if isinstance(value, float) and math.isfinite(value):
            return datetime.fromtimestamp(value, UTC)
        seconds = _int_of(value)
        if seconds is not None:
            return EPOCH + timedelta(seconds=seconds)
    except (ValueError, OverflowError, OSError):
        pass
    raise invalid(f"header {key}", value, "want Unix seconds")


def decode_headers(body: bytes, headers: Mapping[str, Any]) -> Signature:
    """The Signature of a header-mode message; raises ``Invalid`` naming the bad header."""
    return make_signature(
        {
            "name": _header_str(headers, "task_name"),
            "args": (),
            "uuid": _header_str(headers, "uuid"),
            "raw_args": bytes(body),
            "routing_key": _header_str(headers, "routing_key"),
            "priority": _header_int(headers, "priority", 0, 255),
            "retry_count": _header_int(headers, "retry_count"),
            "retry_timeout": _header_int(headers, "retry_timeout"),
            "wait_time": _header_int(headers, "wait_time"),
            "retries_done": _header_int(headers, "retries_done"),
            "task_timeout": _header_int(headers, "timeout"),
            "ignore_when_task_not_registered": _header_bool(headers, "ignore_if_unregistered"),
            "created_at": _header_time(headers, "created_at"),
            "eta": _header_time(headers, "eta"),
        }
    )
