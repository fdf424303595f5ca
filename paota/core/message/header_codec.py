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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from paota.core.message._common import DIGITS, compile_function, invalid
from paota.core.message.fields import FIELDS_BY_NAME, HEADER_WRITES, INT64_MAX, INT64_MIN, Kind
from paota.core.message.model import ATTRIBUTE_ORDER, Signature, WireMessage, make_signature
from paota.core.message.times import EPOCH, unix_seconds

__all__ = ["CONTENT_TYPE_HEADERS", "HEADER_MODE_KEY", "decode_headers", "encode_headers"]

CONTENT_TYPE_HEADERS: Final = "application/octet-stream"


def _header_mode_key() -> str:
    key = FIELDS_BY_NAME["name"].header_key
    if key is None:  # pragma: no cover - the table is wrong
        raise TypeError("header mode needs a header for the task name")
    return key


#: A message whose headers name the task is in header mode.
HEADER_MODE_KEY: Final = _header_mode_key()


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
    headers: Mapping[str, Any], key: str, lo: int = INT64_MIN, hi: int = INT64_MAX
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


# --------------------------------------------------------------------------------------------------
# The two functions, generated from the field table (print _ENCODE_SOURCE or _DECODE_SOURCE to read
# them); they are what a hand-written dict literal per direction would be.

# What the decoder reads each kind with (a field with no header key gets its zero value).
_READERS: Final = {
    Kind.STR: "_header_str(headers, {key!r})",
    Kind.UINT8: "_header_int(headers, {key!r}, {lo}, {hi})",
    Kind.INT64: "_header_int(headers, {key!r}, {lo}, {hi})",
    Kind.BOOL: "_header_bool(headers, {key!r})",
    Kind.TIME: "_header_time(headers, {key!r})",
}


def _encode_source() -> str:
    lines = [
        "def encode_headers(sig, raw):",
        '    """The header-mode message for ``sig``: ``raw`` (its raw args) as the body."""',
        "    headers = {",
    ]
    literal = True  # inside the leading dict literal, until the first header that may be left out
    for field in HEADER_WRITES:
        if field.kind not in _READERS or not field.name.isidentifier():  # pragma: no cover
            raise ValueError(f"header mode cannot write field {field}")
        key, value = repr(field.header_key), f"sig.{field.name}"
        if field.kind is Kind.TIME:  # written when set, as Unix seconds
            if literal:
                lines.append("    }")
                literal = False
            lines.append(f"    if {value} is not None:")
            lines.append(f"        headers[{key}] = unix_seconds({value})")
        elif literal:
            lines.append(f"        {key}: {value},")
        else:
            lines.append(f"    headers[{key}] = {value}")
    if literal:
        lines.append("    }")
    lines.append("    return WireMessage(raw, headers, CONTENT_TYPE_HEADERS)")
    return "\n".join(lines) + "\n"


def _decode_source() -> str:
    lines = [
        "def decode_headers(body, headers):",
        '    """The Signature of a header-mode message; raises ``Invalid`` naming the bad header."""',
        "    return make_signature({",
    ]
    for field in ATTRIBUTE_ORDER:
        if field.kind is Kind.RAW:
            value = "bytes(body)"  # the body is the raw args
        elif field.header_key is None:
            value = repr(field.kind.zero)
        else:
            lo, hi = field.kind.int_range or (0, 0)
            value = _READERS[field.kind].format(key=field.header_key, lo=lo, hi=hi)
        lines.append(f"        {field.name!r}: {value},")
    lines.append("    })")
    return "\n".join(lines) + "\n"


_ENCODE_SOURCE: Final = _encode_source()
_DECODE_SOURCE: Final = _decode_source()
_NAMESPACE: Final = {
    "__name__": __name__,
    "CONTENT_TYPE_HEADERS": CONTENT_TYPE_HEADERS,
    "WireMessage": WireMessage,
    "unix_seconds": unix_seconds,
    "make_signature": make_signature,
    "_header_str": _header_str,
    "_header_int": _header_int,
    "_header_bool": _header_bool,
    "_header_time": _header_time,
}

if TYPE_CHECKING:  # what the type checker sees of the generated functions

    def encode_headers(sig: Signature, raw: bytes) -> WireMessage:
        """The header-mode message for ``sig``: ``raw`` (its raw args) as the body."""

    def decode_headers(body: bytes, headers: Mapping[str, Any]) -> Signature:
        """The Signature of a header-mode message; raises ``Invalid`` naming the bad header."""

else:
    encode_headers = compile_function("encode_headers", _ENCODE_SOURCE, dict(_NAMESPACE))
    decode_headers = compile_function("decode_headers", _DECODE_SOURCE, dict(_NAMESPACE))
