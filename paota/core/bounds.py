"""Bounds on what a message may carry and on what paota writes into one.

A task queue is the component that must never jam: every delivery, whatever it carries, reaches an
outcome in bounded time. So before a body is decoded, the pool checks it here:

- :func:`check_size`: a body over ``Config.max_message_bytes`` is parked as ``too-large``,
  undecoded (decoding is linear, but a 100 MB body still holds the event loop for seconds);
- :func:`check_headers`: every ``x-paota-*`` header paota reads is typed and bounded (integers
  within 0 .. 2**63-1, text within :data:`MAX_HEADER_TEXT` characters), and the whole header
  table leaves room for what paota adds (at most :data:`MAX_HEADER_TABLE` bytes); anything else is
  parked as ``bad-headers``, so that no out-of-range value ever reaches a store query and no copy
  paota publishes outgrows the frame.

And what paota writes into a header is cut with :func:`bounded_text` (a visible marker says how
much was left out), so that a parked, retried or returned copy always fits the broker's frame
(RabbitMQ's ``frame_max`` is 131,072 bytes by default, and all headers travel in one frame).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paota.core.errors import DecodeError

__all__ = [
    "FRAME_MAX",
    "INT64_MAX",
    "BadHeaders",
    "MessageTooLarge",
    "MAX_ERROR_HEADER",
    "MAX_HEADER_TABLE",
    "MAX_HEADER_TEXT",
    "MAX_TRACEBACK_HEADER",
    "bounded_text",
    "check_headers",
    "check_size",
    "fitting_headers",
    "header_table_bytes",
]

INT64_MAX = 2**63 - 1
"""The largest integer a paota header may hold (what MongoDB, Go and AMQP's long-long hold)."""
MAX_HEADER_TEXT = 8192
"""The longest text (in characters) of an ``x-paota-*`` header paota reads."""
MAX_ERROR_HEADER = 2000
"""How much of an error message a parked copy carries in ``x-paota-error``."""
MAX_TRACEBACK_HEADER = 4000
"""How much of a traceback (its end) a parked copy carries in ``x-paota-traceback``."""

FRAME_MAX = 131_072
"""RabbitMQ's default ``frame_max``: a message's headers travel in one frame of at most this."""
MAX_HEADER_TABLE = FRAME_MAX - 16_384
"""The largest header table (in encoded bytes, about) a delivery may carry: the rest of the frame
is room for the headers paota adds to a parked, retried or returned copy (error and traceback
texts, reason, worker, times: under 8 KiB) and for the other properties."""
DROPPED_HEADER = "x-paota-headers-dropped"
"""On a parked copy whose headers did not fit: the names of those left out."""

_TEXT = (str, bytes, bytearray)
_NESTED = (Mapping, list, tuple, memoryview)

#: The ``x-paota-*`` headers paota reads as integers.
INT_HEADERS = frozenset({"x-paota-returns", "x-paota-replays"})


class MessageTooLarge(DecodeError):
    """The body is larger than ``Config.max_message_bytes``; it was not decoded."""


class BadHeaders(DecodeError):
    """An ``x-paota-*`` header holds a value of the wrong type or out of its range."""


def bounded_text(text: str, limit: int, *, keep: str = "start") -> str:
    """``text`` when it has at most ``limit`` characters, else cut to ``limit`` characters, a
    marker among them that says how long it was. ``keep="end"`` keeps the end (tracebacks)."""
    if len(text) <= limit:
        return text
    if keep == "end":
        marker = f"[... {len(text):,} characters, cut to the last {limit:,}] "
        room = max(0, limit - len(marker))
        return marker + text[len(text) - room :]
    marker = f" [... {len(text):,} characters, cut to {limit:,}]"
    room = max(0, limit - len(marker))
    return text[:room] + marker


def check_size(body: bytes, max_bytes: int) -> None:
    """Raise :class:`MessageTooLarge` when ``body`` is over ``max_bytes`` (0: no limit)."""
    if max_bytes and len(body) > max_bytes:
        raise MessageTooLarge(
            f"the message body is {len(body):,} bytes, over the limit of {max_bytes:,} "
            "(Config.max_message_bytes, PAOTA_MAX_MESSAGE_BYTES); it was not decoded",
            b"",
        )


def check_headers(headers: Mapping[str, Any]) -> None:
    """Raise :class:`BadHeaders` naming the first ``x-paota-*`` header paota cannot use, or when
    the whole table is over :data:`MAX_HEADER_TABLE` bytes."""
    # On every delivery: one pass that counts characters, and the exact size (UTF-8 takes up to
    # 4 bytes a character) only when that count could be over the limit.
    chars = 0
    for key, value in headers.items():
        if key in INT_HEADERS:
            _check_int(key, value)
        if isinstance(value, _TEXT):
            size = len(value)
            if size > MAX_HEADER_TEXT and key.startswith("x-paota-"):
                raise BadHeaders(
                    f"header {key!r} holds {size:,} characters; at most "
                    f"{MAX_HEADER_TEXT:,} are allowed",
                    b"",
                )
            chars += len(key) + size
        elif isinstance(value, _NESTED):
            chars += len(key) + _field_bytes(value)
        else:
            chars += len(key) + 10
    if 4 * chars + 16 * len(headers) > MAX_HEADER_TABLE:
        size = header_table_bytes(headers)
        if size > MAX_HEADER_TABLE:
            raise BadHeaders(
                f"the headers take about {size:,} bytes; at most {MAX_HEADER_TABLE:,} are "
                f"allowed (the broker's frame is {FRAME_MAX:,} bytes and paota adds its own to "
                "every copy)",
                b"",
            )


def header_table_bytes(headers: Mapping[str, Any]) -> int:
    """About how many bytes ``headers`` take as an AMQP field table (an upper bound for the
    types RabbitMQ delivers: text, bytes, numbers, times, nested tables and arrays)."""
    return 4 + sum(
        2 + _text_bytes(str(key)) + _field_bytes(value) for key, value in headers.items()
    )


def _text_bytes(text: str) -> int:
    # surrogatepass: header text RabbitMQ delivered as invalid UTF-8 comes with lone surrogates
    return len(text.encode("utf-8", "surrogatepass"))


def _field_bytes(value: Any) -> int:
    if isinstance(value, str):
        return 5 + _text_bytes(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return 5 + len(value)
    if isinstance(value, Mapping):
        return 1 + header_table_bytes(value)
    if isinstance(value, list | tuple):
        return 5 + sum(_field_bytes(item) for item in value)
    return 10  # numbers, bool, None, datetime, Decimal: at most 1 + 9 bytes


def fitting_headers(
    headers: Mapping[str, Any], added: Mapping[str, Any], limit: int = FRAME_MAX - 4096
) -> dict[str, Any]:
    """``headers`` with ``added`` over them, the largest of ``headers`` left out (and named in
    :data:`DROPPED_HEADER`) until the table fits in ``limit`` bytes; ``added`` is always kept."""
    merged = {**headers, **added}
    if header_table_bytes(merged) <= limit:
        return merged
    kept = {key: value for key, value in headers.items() if key not in added}
    dropped: list[str] = []
    room = limit - header_table_bytes(added) - MAX_HEADER_TEXT - 64
    by_size = sorted(kept, key=lambda key: _field_bytes(kept[key]) + len(str(key)), reverse=True)
    for key in by_size:
        if header_table_bytes(kept) <= room:
            break
        del kept[key]
        dropped.append(str(key))
    note = bounded_text(", ".join(dropped), MAX_HEADER_TEXT)
    return {**kept, **added, DROPPED_HEADER: note}


def _check_int(key: str, value: Any) -> None:
    if value is None:  # an AMQP void: as if absent
        return
    wanted = f"want an integer from 0 to {INT64_MAX}"
    number = value
    if isinstance(value, bytes | bytearray):
        number = bytes(value).decode("ascii", "replace")
    if isinstance(number, str):
        text = number.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            raise BadHeaders(f"header {key!r} is {_show(value)}; {wanted}", b"")
        number = int(text)
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= INT64_MAX:
        raise BadHeaders(f"header {key!r} is {_show(value)}; {wanted}", b"")


def _show(value: Any) -> str:
    return bounded_text(repr(value), 80)
