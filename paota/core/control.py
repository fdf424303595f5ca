"""What travels on a broker's control channel (:class:`~paota.core.protocols.ControlChannel`).

One JSON object per message, ``{"v": 1, "kind": ..., ...}``. The only kind so far is ``"cancel"``:
``{"kind": "cancel", "task_id": ..., "replays": n, "reason": ...}`` asks every worker to cancel
its runs of ``task_id`` (run ``replays``, the store record's, or an earlier one). The Go library
has no control channel; these messages are paota's own and never reach a task queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["CancelRequest", "decode_control", "encode_cancel"]

_VERSION = 1


@dataclass(frozen=True)
class CancelRequest:
    """Cancel the runs of ``task_id`` (of run ``replays`` or earlier), because of ``reason``."""

    task_id: str
    replays: int
    reason: str


def encode_cancel(task_id: str, replays: int, reason: str) -> bytes:
    """The control message asking workers to cancel ``task_id``."""
    return json.dumps(
        {"v": _VERSION, "kind": "cancel", "task_id": task_id, "replays": replays, "reason": reason},
        separators=(",", ":"),
    ).encode()


def decode_control(body: bytes) -> CancelRequest | None:
    """The request ``body`` carries, or None for anything this version does not understand (a
    newer kind, garbage): control messages are advisory, so those are skipped."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(message, dict) or message.get("kind") != "cancel":
        return None
    task_id, replays, reason = message.get("task_id"), message.get("replays"), message.get("reason")
    if not isinstance(task_id, str) or not task_id:
        return None
    if isinstance(replays, bool) or not isinstance(replays, int):
        return None
    return CancelRequest(task_id, replays, reason if isinstance(reason, str) else "cancelled")
