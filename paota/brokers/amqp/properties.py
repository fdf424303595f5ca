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

from paota.core.bounds import FRAME_MAX

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
            parts.append(_short_string(key))
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


_U16 = struct.Struct(">H")
#: The most a published message's encoded headers may take: the frame, less its own 8 bytes, the
#: content header's 14 and room for the other properties.
MAX_ENCODED_HEADERS = FRAME_MAX - 1024
_BYTE = struct.Struct("B")
# The Basic.Properties flags of the fields paota sets; the others (content_encoding, correlation_id,
# reply_to, expiration, timestamp, message_type, user_id, app_id, cluster_id) are left to pamqp.
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _PRIORITY, _MESSAGE_ID = (
    0x8000,
    0x2000,
    0x1000,
    0x0800,
    0x0080,
)


def _short_string(value: Any) -> bytes:
    """pamqp's ``encode.short_string`` (UTF-8, at most 255 bytes, one length byte first), except
    that what :mod:`paota.brokers.amqp.tolerant` decoded from bytes that were not UTF-8 is
    encoded back to those same bytes."""
    if not isinstance(value, str):
        raise TypeError(f"str required, received {type(value)}")
    data = value.encode("utf-8", "surrogateescape")
    if len(data) > 255:
        raise TypeError("string exceeds maximum length of 255 bytes")
    return _BYTE.pack(len(data)) + data


def _octet(value: Any) -> bytes:
    """pamqp's ``encode.octet``."""
    if not isinstance(value, int):
        raise TypeError(f"int required, received {type(value)}")
    return _BYTE.pack(value)


class _Properties(spec.Basic.Properties):
    """``Basic.Properties`` whose headers table is pre-encoded by :func:`encode_headers`.

    It marshals the fields paota sets (content type, headers, delivery mode, priority, message id)
    itself, byte for byte as pamqp's generic :meth:`marshal` does but without its per-field type
    lookups (it runs once per published message); with any other field set it leaves marshalling
    to pamqp. No ``__slots__`` here on purpose: pamqp marshals the fields listed in the class
    attribute ``__slots__``, which must stay the parent's list.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, Any] | None,
        content_type: str | None,
        delivery_mode: int,
        priority: int | None,
        message_id: str | None,
    ) -> None:
        # pamqp's __init__ assigns the 14 fields from keyword arguments, then validates cluster_id
        # and delivery_mode; assigning them here takes a quarter of the time, and the validated
        # values are fixed ("") or come from message_properties (1 or 2).
        self.content_type = content_type
        self.content_encoding = None
        self.headers = dict(headers) if headers else None
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = None
        self.reply_to = None
        self.expiration = None
        self.message_id = message_id
        self.timestamp = None
        self.message_type = None
        self.user_id = None
        self.app_id = None
        self.cluster_id = ""
        self._encoded_headers = encode_headers(headers) if headers else b""

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return self._encoded_headers
        result: bytes = super().encode_property(name, value)
        return result

    def marshal(self) -> bytes:
        if (
            self.content_encoding
            or self.correlation_id
            or self.reply_to
            or self.expiration
            or self.timestamp
            or self.message_type
            or self.user_id
            or self.app_id
            or self.cluster_id
        ):
            result: bytes = super().marshal()
            return result
        # pamqp sends a field unless it is None or "": for these str and int fields, the same as
        # "if text" and "if number is not None".
        flags = 0
        parts = []
        content_type = self.content_type
        if content_type:
            flags |= _CONTENT_TYPE
            parts.append(_short_string(content_type))
        if self._encoded_headers:
            flags |= _HEADERS
            parts.append(self._encoded_headers)
        delivery_mode = self.delivery_mode
        if delivery_mode is not None:
            flags |= _DELIVERY_MODE
            parts.append(_octet(delivery_mode))
        priority = self.priority
        if priority is not None:
            flags |= _PRIORITY
            parts.append(_octet(priority))
        message_id = self.message_id
        if message_id:
            flags |= _MESSAGE_ID
            parts.append(_short_string(message_id))
        return _U16.pack(flags) + b"".join(parts)


def message_properties(
    *,
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    priority: int | None,
    message_id: str | None,
    persistent: bool = True,
) -> spec.Basic.Properties:
    """Properties for a published message. Raises TypeError/ValueError for unencodable headers,
    and ValueError for headers that would not fit one frame (the broker would close the
    connection, and every publish in flight on it with it)."""
    props: _Properties = _Properties(
        headers=headers,
        content_type=content_type or None,
        delivery_mode=2 if persistent else 1,
        priority=priority,
        message_id=message_id or None,
    )
    size = len(props._encoded_headers)
    if size > MAX_ENCODED_HEADERS:
        raise ValueError(
            f"its headers take {size:,} bytes encoded; at most {MAX_ENCODED_HEADERS:,} fit the "
            f"broker's frame of {FRAME_MAX:,} bytes"
        )
    return props
