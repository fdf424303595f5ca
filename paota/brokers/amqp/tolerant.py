"""Decoding AMQP properties that are not valid UTF-8, instead of losing the connection.

AMQP short strings (a message id, a content type, a header's name) are UTF-8 by the spec, but
RabbitMQ passes on whatever bytes a producer sent. pamqp decodes them strictly, so one such message
makes aiormq close the connection (an invalid frame) on every delivery: RabbitMQ hands it to the
next consumer, and the queue is wedged behind it for good. paota installs, once, tolerant versions
of pamqp's short-string and field-table decoders that decode what is not UTF-8 with
``surrogateescape``; valid UTF-8 decodes exactly as before. The message then reaches the worker,
which parks it (the codec cannot read it) and the parked copy is encoded back with
``surrogateescape`` (:mod:`paota.brokers.amqp.properties`), byte for byte as it came.

This replaces functions in pamqp's ``decode`` module for the whole process: other pamqp users in
it get the same tolerance for frames they would otherwise fail to read, and nothing else changes.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import common, decode

__all__ = ["install"]

_installed = False


def _short_str(value: bytes) -> tuple[int, str]:
    try:
        return _strict_short_str(value)
    except UnicodeDecodeError:
        length = value[0]
        return length + 1, value[1 : length + 1].decode("utf-8", "surrogateescape")


def _field_table(value: bytes) -> tuple[int, common.FieldTable]:
    try:
        return _strict_field_table(value)
    except UnicodeDecodeError:
        pass
    # pamqp's field_table, with tolerant keys (values decode through the patched mapping).
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
        offset = 4
        data: dict[str, Any] = {}
        end = offset + length
        if end > len(value):
            raise ValueError("Field table length exceeds available data")
        while offset < end:
            key_length = common.Struct.byte.unpack_from(value, offset)[0]
            offset += 1
            if offset + key_length > end:
                raise ValueError("Field table key length exceeds data")
            key = value[offset : offset + key_length].decode("utf-8", "surrogateescape")
            offset += key_length
            consumed, result = decode.embedded_value(value[offset:])
            offset += consumed
            data[key] = result
        return end, data
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err


_strict_short_str = decode.short_str
_strict_field_table = decode.field_table


def install() -> None:
    """Install the tolerant decoders into pamqp (idempotent)."""
    global _installed
    if _installed:
        return
    decode.METHODS["shortstr"] = _short_str
    decode.METHODS["table"] = _field_table
    decode.TABLE_MAPPING[b"F"] = _field_table
    decode.short_str = _short_str
    decode.field_table = _field_table
    _installed = True
