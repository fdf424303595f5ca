"""The task message: :class:`Signature`, and its wire codecs (wire-compatible with Go paota).

A :class:`Signature` travels in one of the two forms the Go publisher produces:

*JSON mode* (the default): the body is the Go ``Signature`` struct as Go's ``encoding/json`` writes
it (:func:`encode_json`, :func:`decode_json`, Go's decoding rules).

*Header mode* (when the signature carries ``raw_args``): the body is ``raw_args`` alone and the
metadata rides in AMQP headers.

:func:`encode_message` and :func:`decode_message` pick the form. The modules:

``fields``        :data:`FIELDS`, the one table of Signature fields every codec is built from
``model``         :class:`Arg`, :class:`Signature`, :class:`WireMessage`
``times``         RFC 3339 as Go writes it (:func:`format_time`, :func:`parse_time`), Unix seconds
``json_codec``    JSON mode
``header_codec``  header mode
``codec``         the choice between the two
"""

from __future__ import annotations

from paota.core.message.codec import decode_message, encode_message
from paota.core.message.fields import FIELDS, Field, Kind
from paota.core.message.header_codec import CONTENT_TYPE_HEADERS
from paota.core.message.json_codec import CONTENT_TYPE_JSON, decode_json, encode_json
from paota.core.message.model import Arg, Signature, WireMessage
from paota.core.message.times import format_time, parse_time

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
