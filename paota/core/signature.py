"""Compatibility module: the message model and codecs now live in :mod:`paota.core.message`.

Kept so that ``from paota.core.signature import ...`` goes on working while imports move over.
"""

from __future__ import annotations

from paota.core.message import (
    CONTENT_TYPE_HEADERS,
    CONTENT_TYPE_JSON,
    FIELDS,
    Arg,
    Field,
    Kind,
    Signature,
    WireMessage,
    decode_json,
    decode_message,
    encode_json,
    encode_message,
    format_time,
    parse_time,
)

__all__ = [
    "CONTENT_TYPE_HEADERS",
    "CONTENT_TYPE_JSON",
    "FIELDS",
    "Arg",
    "Field",
    "Kind",
    "Signature",
    "WireMessage",
    "decode_json",
    "decode_message",
    "encode_json",
    "encode_message",
    "format_time",
    "parse_time",
]
