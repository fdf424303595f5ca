"""A :class:`~paota.Signature` as the message a broker publishes: :func:`outgoing`, the one place
that encodes a task for sending (a new send, a retry, a requeue of a parked task)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paota.core.message.codec import encode_message
from paota.core.message.model import Signature
from paota.core.protocols import OutgoingMessage

__all__ = ["outgoing"]


def outgoing(
    sig: Signature,
    queue: str,
    *,
    headers: Mapping[str, Any] | None = None,
    delay_s: float = 0.0,
    priority: int | None = None,
    message_id: str | None = None,
    routing_key: str = "",
) -> OutgoingMessage:
    """``sig`` encoded (Go JSON, or header mode for raw args) for ``queue``, with ``headers``
    under the encoding's own; the message id and priority are the signature's unless given."""
    wire = encode_message(sig)
    return OutgoingMessage(
        wire.body,
        queue,
        headers={**headers, **wire.headers} if headers else wire.headers,
        content_type=wire.content_type,
        message_id=sig.uuid if message_id is None else message_id,
        priority=sig.priority if priority is None else priority,
        delay_s=delay_s,
        routing_key=routing_key,
    )
