"""The choice between the two wire forms, both produced by the Go publisher.

JSON mode (:mod:`~paota.core.message.json_codec`) is the default; header mode
(:mod:`~paota.core.message.header_codec`) is used when the signature carries raw args. A received
message is in header mode when its headers name the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paota.core.errors import DecodeError
from paota.core.message._common import Invalid
from paota.core.message.header_codec import HEADER_MODE_KEY, decode_headers, encode_headers
from paota.core.message.json_codec import CONTENT_TYPE_JSON, decode_json_body, encode_json
from paota.core.message.model import Signature, WireMessage

__all__ = ["decode_message", "encode_message"]


def encode_message(sig: Signature) -> WireMessage:
    """Encode ``sig`` for publishing.

    Header mode when ``sig.raw_args`` is set, JSON mode otherwise. As in Go's publisher, raw args
    that are empty or ``b"null"`` go in JSON mode instead (Go consumers drop empty bodies).
    """
    raw = sig.raw_args
    if not raw or raw == b"null":
        return WireMessage(encode_json(sig), {}, CONTENT_TYPE_JSON)
    return encode_headers(sig, raw)


def decode_message(body: bytes, headers: Mapping[str, Any] | None = None) -> Signature:
    """Decode a received message: header mode when ``headers`` has ``task_name``, else JSON mode.

    Raises DecodeError (keeping ``raw`` and ``headers``) on any problem.
    """
    if headers and HEADER_MODE_KEY in headers:
        try:
            return decode_headers(body, headers)
        except Invalid as exc:
            raise DecodeError(
                f"undecodable task message: {exc}", raw=body, headers=headers
            ) from None
    return decode_json_body(body, headers)
