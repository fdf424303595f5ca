"""What the commands share: argument types, parsing ``--arg``, ``--queues``, loading a pool."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from paota.core.errors import ConfigError
from paota.core.message import Arg
from paota.pool import WorkerPool

__all__ = [
    "INT32_MAX",
    "UsageError",
    "add_include",
    "add_reason",
    "include_modules",
    "int_in",
    "load_pool",
    "parse_arg",
    "parse_queues",
    "seconds",
]


class UsageError(ConfigError):
    """What the user typed cannot be done (an argument that does not fit the task, say): the
    ``paota`` command prints it as ``paota: <message>`` and exits 2, before anything is sent."""


_INT_TYPES = {
    "int",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
}
_FLOAT_TYPES = {"float32", "float64"}
MAX_SECONDS = 10 * 365 * 86400.0
INT32_MAX = 2**31 - 1


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer within ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected {allowed}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 up to 10 years."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: expected 0..{MAX_SECONDS:g}")
    return value


_SCALAR_TYPES = _INT_TYPES | _FLOAT_TYPES | {"bool", "string", "interface{}"}


def _is_go_type(type_: str) -> bool:
    while True:
        if type_ in _SCALAR_TYPES:
            return True
        if type_.startswith("[]"):
            type_ = type_[2:]
        elif type_.startswith("map[string]"):
            type_ = type_[len("map[string]") :]
        else:
            return False


def parse_arg(text: str) -> Arg:
    """``[NAME:]TYPE=VALUE`` -> :class:`Arg`; the value is parsed by its Go type
    (``int``..., ``float64``, ``bool``, ``string``; anything else as JSON)."""
    spec, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(
            f"--arg {text!r} is not valid: expected [NAME:]TYPE=VALUE, e.g. int=5, "
            'name:string=Ada, tags:[]string=\'["a","b"]\''
        )
    name, _, type_ = spec.rpartition(":")
    type_ = type_.strip()
    if not _is_go_type(type_):
        hint = (
            f"; to name an argument, put its type after it: {type_}:int={raw}"
            if type_.isidentifier() and not name
            else ""
        )
        raise ConfigError(
            f"--arg {text!r} is not valid: {type_!r} is not a Go type (expected one of "
            f"{', '.join(sorted(_SCALAR_TYPES))}, []TYPE or map[string]TYPE){hint}"
        )
    try:
        value: Any
        if type_ in _INT_TYPES:
            value = int(raw)
        elif type_ in _FLOAT_TYPES:
            value = float(raw)
        elif type_ == "bool":
            lowered = raw.strip().lower()
            if lowered not in {"true", "false", "1", "0"}:
                raise ValueError("expected true or false")
            value = lowered in {"true", "1"}
        elif type_ == "string":
            value = raw
        else:
            value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"--arg {text!r}: value {raw!r} is not a valid {type_}: {exc}") from None
    return Arg(name, type_, value)


def parse_queues(text: str) -> dict[str, int | None]:
    """``--queues``: ``a,b=5``: names, each optionally with its concurrency (None: the pool's)."""
    named: dict[str, int | None] = {}
    for part in text.split(","):
        name, sep, count = part.strip().partition("=")
        name = name.strip()
        if not name:
            raise argparse.ArgumentTypeError(f"{text!r}: an empty queue name")
        named[name] = int_in(1)(count.strip()) if sep else None
    return named


def add_reason(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--reason REASON`` option of the parking commands: one of the park reasons, all
    listed in the help and in the error for any other."""
    from paota.core.protocols import ParkReason

    reasons = [r.value for r in ParkReason]
    parser.add_argument(
        "--reason",
        default=None,
        choices=reasons,
        metavar="REASON",
        help=f"only {what} with this reason: " + ", ".join(reasons),
    )


def add_include(parser: argparse.ArgumentParser) -> None:
    """The ``-I``/``--include MODULE`` option (repeatable, or comma-separated)."""
    parser.add_argument(
        "-I",
        "--include",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE after the pool, for the tasks it registers on it (repeatable, or "
        "comma-separated; Celery's -I)",
    )


def include_modules(values: list[str]) -> None:
    """Import the ``--include`` modules (after the pool: they register tasks on it)."""
    for name in (n.strip() for value in values for n in value.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"--include {name!r}: cannot import it: {exc}") from exc


def load_pool(target: str) -> WorkerPool:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"worker target {target!r} is not valid: expected MODULE:POOL, e.g. app.tasks:pool"
        )
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"worker target {target!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"worker target {target!r}: {module_name} has no attribute {attr!r}"
            ) from None
    if callable(obj) and not isinstance(obj, WorkerPool):
        obj = obj()
    if not isinstance(obj, WorkerPool):
        raise ConfigError(
            f"worker target {target!r} is a {type(obj).__name__}, expected a paota.WorkerPool "
            "(or a function returning one)"
        )
    return obj
