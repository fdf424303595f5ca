"""Helpers the message modules share: short value reprs and the decoders' validation error."""

from __future__ import annotations

from typing import Any, Final

DIGITS: Final = frozenset("0123456789")


def show(value: Any) -> str:
    """``repr(value)``, cut to 80 characters (error messages name bad values, some are huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Invalid(Exception):
    """A field failed validation while decoding (converted to DecodeError at the boundary)."""


def invalid(field: str, value: Any, want: str) -> Invalid:
    """The error for ``field`` holding ``value`` where ``want`` was expected."""
    return Invalid(f"invalid {field}: {show(value)} ({want})")
