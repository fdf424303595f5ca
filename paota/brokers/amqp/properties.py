"""AMQP message properties with headers encoded the way Go paota reads them.

pamqp encodes a Python ``int`` header in the smallest AMQP integer type that holds it: ``3``
becomes a signed 8-bit ``b`` field. Go's amqp091 decodes that as ``int8``, and Go paota's header
reader (``utils.GetInt``) only accepts ``int32``/``int64``/``int``/``float64``, so a Go worker would
read ``retry_count`` 3 as 0. Go's publisher sends Go ``int`` fields as signed 32-bit (``I``) and the
Unix-seconds fields ``created_at``/``eta`` as signed 64-bit (``l``); this module does the same:

- every integer header is ``I`` when it fits 32 bits, ``l`` otherwise;
- ``created_at`` and ``eta`` are always ``l`` (Go reads them with ``GetInt64Ok``: ``int64`` only);
- floats are ``d`` (64-bit; pamqp would send 32-bit ``f`` and lose precision);
- ``bytes`` values (pamqp hands back a long string that is not UTF-8 as ``bytes``) are sent back
  as the same long string, unchanged, so a parked copy keeps its original headers byte for byte.

Everything else (str, bool, None, datetime, Decimal, nested tables and arrays) is encoded as
pamqp does. The headers are encoded once, when the properties are built, so a header that cannot
be encoded fails before anything is sent.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pamqp import commands as spec
from pamqp import encode

__all__ = ["GO_INT64_HEADERS", "encode_headers", "message_properties"]

#: Header names that Go paota reads as ``int64`` only.
GO_INT64_HEADERS = frozenset({"created_at", "eta"})

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_U32 = struct.Struct(">I")


def _encode_value(value: Any, *, int64: bool = False) -> bytes:
    if isinstance(value, bool):
        return b"t" + encode.boolean(value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer {value} does not fit a signed 64-bit AMQP field")
        if int64 or not _INT32_MIN <= value <= _INT32_MAX:
            return b"l" + encode.long_long_int(value)
        return b"I" + encode.long_int(value)
    if isinstance(value, float):
        return b"d" + encode.double(value)
    if isinstance(value, bytes):
        return b"S" + _U32.pack(len(value)) + value
    if isinstance(value, Mapping):
        return b"F" + _encode_table(value)
    if isinstance(value, list | tuple):
        items = b"".join(_encode_value(item) for item in value)
        return b"A" + _U32.pack(len(items)) + items
    return encode.encode_table_value(value)


def _encode_table(table: Mapping[str, Any], *, top_level: bool = False) -> bytes:
    parts: list[bytes] = []
    for key in sorted(table):
        if not isinstance(key, str):
            raise TypeError(f"header names must be str, not {type(key).__name__} ({key!r})")
        try:
            parts.append(encode.short_string(key))
            parts.append(_encode_value(table[key], int64=top_level and key in GO_INT64_HEADERS))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"header {key!r}: {exc}") from exc
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


def encode_headers(headers: Mapping[str, Any]) -> bytes:
    """The AMQP field table for ``headers`` (length prefix included), Go-compatible widths.

    Raises TypeError or ValueError naming the header that cannot be encoded.
    """
    return _encode_table(headers, top_level=True)


class _Properties(spec.Basic.Properties):
    """``Basic.Properties`` whose headers table is pre-encoded by :func:`encode_headers`.

    No ``__slots__`` here on purpose: pamqp marshals the fields listed in the class attribute
    ``__slots__``, which must stay the parent's list.
    """

    def __init__(self, *, headers: Mapping[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(headers=dict(headers) if headers else None, **kwargs)
        self._encoded_headers = encode_headers(headers) if headers else b""

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return self._encoded_headers
        result: bytes = super().encode_property(name, value)
        return result


def message_properties(
    *,
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    priority: int | None,
    message_id: str | None,
    persistent: bool = True,
) -> spec.Basic.Properties:
    """Properties for a published message. Raises TypeError/ValueError for unencodable headers."""
    props: spec.Basic.Properties = _Properties(
        headers=headers,
        content_type=content_type or None,
        delivery_mode=2 if persistent else 1,
        priority=priority,
        message_id=message_id or None,
    )
    return props
