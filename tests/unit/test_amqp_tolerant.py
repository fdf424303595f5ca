"""Properties that are not UTF-8 decode (surrogateescape) and encode back byte for byte."""

from __future__ import annotations

from pamqp import commands as spec
from pamqp import decode

import paota.brokers.amqp.broker  # noqa: F401 - installs the tolerant decoders
from paota.brokers.amqp.properties import message_properties

_FLAGS = 0x2000 | 0x0080  # headers, message id


def _raw_properties(message_id: bytes, header_key: bytes) -> bytes:
    table = bytes([len(header_key)]) + header_key + b"S" + (3).to_bytes(4, "big") + b"abc"
    table = len(table).to_bytes(4, "big") + table
    return table + bytes([len(message_id)]) + message_id


def test_non_utf8_properties_decode_and_encode_back_unchanged() -> None:
    raw = _raw_properties(b"id-\xff\xfe", b"key-\xc3\x28")
    props = spec.Basic.Properties()
    props.unmarshal(_FLAGS, raw)
    assert props.message_id == b"id-\xff\xfe".decode("utf-8", "surrogateescape")
    [key] = props.headers
    assert key == b"key-\xc3\x28".decode("utf-8", "surrogateescape")
    again = message_properties(
        headers=props.headers, content_type=None, priority=None, message_id=props.message_id
    ).marshal()
    decoded = spec.Basic.Properties()
    decoded.unmarshal(int.from_bytes(again[:2], "big"), again[2:])
    assert decoded.message_id == props.message_id and decoded.headers == props.headers
    assert b"id-\xff\xfe" in again and b"key-\xc3\x28" in again


def test_valid_utf8_decodes_as_pamqp_always_did() -> None:
    assert decode.short_str(b"\x05h\xc3\xa9lo") == (6, "h\u00e9lo")
    table = b"\x00\x00\x00\x09\x01aS\x00\x00\x00\x02hi"
    assert decode.field_table(table) == (13, {"a": "hi"})
