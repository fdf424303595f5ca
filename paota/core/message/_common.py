"""Helpers the message modules share: short reprs, the decoders' error, compiling generated code."""

from __future__ import annotations

import linecache
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


def compile_function(
    name: str, source: str, namespace: dict[str, Any], class_name: str | None = None
) -> Any:
    """Compile ``source``, which defines ``name`` (and any helper it calls), and return ``name``.

    The codecs generate their per-field code from the field table once at import, as
    :mod:`dataclasses` generates ``__init__``: the result runs as fast as code written out by hand,
    and there is still one table. ``namespace`` holds the globals the source uses (and nothing
    else); its ``__name__`` becomes the function's module. The source is registered with
    :mod:`linecache`, so tracebacks and debuggers show the generated lines.
    """
    module = namespace.get("__name__", __name__)
    filename = f"<generated {module}.{name}>"
    exec(compile(source, filename, "exec"), namespace)
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return namespace[name]
