"""The message model: :class:`Arg`, :class:`Signature` and :class:`WireMessage`.

A :class:`Signature` is field for field the Go paota ``Signature`` struct; the codecs in
:mod:`~paota.core.message.json_codec` and :mod:`~paota.core.message.header_codec` turn it into the
bytes Go publishes and back.

Times: every datetime in a :class:`Signature` must be timezone-aware; naive datetimes are rejected
with :class:`ValueError` (guessing a zone for them silently shifts ETAs). Decoded times are in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import Any, Final

from paota.core.message._common import show

__all__ = ["Arg", "Signature", "WireMessage"]


class _Missing:
    def __repr__(self) -> str:
        return "<MISSING>"


_MISSING: Final = _Missing()

# The decoders build instances without running the constructor's checks (they check on the way in).
new_object = object.__new__
set_attr = object.__setattr__


# --------------------------------------------------------------------------------------------------
# Arg


def _check_json(value: Any, where: str) -> None:
    """Raise TypeError/ValueError unless ``value`` is made only of JSON values."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a JSON number")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: JSON object keys must be str, not {type(key).__name__}")
            _check_json(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where}: {type(value).__name__} {show(value)} is not a JSON value")


def _infer_go_type(value: Any) -> str:
    if value is None:
        return "interface{}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        _check_json(value, "value")
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        _check_json(value, "value")
        if value:
            if all(isinstance(v, str) for v in value):
                return "[]string"
            if all(isinstance(v, bool) for v in value):
                return "[]bool"
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return "[]int"
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return "[]float64"
        return "[]interface{}"
    if isinstance(value, dict):
        _check_json(value, "value")
        return "map[string]interface{}"
    raise TypeError(
        f"cannot infer a Go type for a {type(value).__name__} value {show(value)}; "
        "use Arg(name, type, value) with a JSON value"
    )


@dataclass(frozen=True)
class Arg:
    """One task argument, as Go paota's ``Arg{Name, Type, Value}``.

    ``type`` is the Go type name (``"string"``, ``"int"``, ``"float64"``, ``"[]string"``, …) and
    ``value`` a JSON value. ``name`` may be empty (Go's example publisher sends unnamed args).
    """

    name: str
    type: str
    value: Any

    def __post_init__(self) -> None:
        if type(self.name) is not str:
            raise TypeError(f"Arg.name must be a str, not {type(self.name).__name__}")
        if type(self.type) is not str:
            raise TypeError(f"Arg.type must be a str, not {type(self.type).__name__}")

    @classmethod
    def of(cls, value: Any, name: str = "") -> Arg:
        """Build an Arg, inferring the Go type from the Python value.

        ``bool`` → ``bool``, ``int`` → ``int``, ``float`` → ``float64``, ``str`` → ``string``,
        ``None`` → ``interface{}``, ``dict`` (str keys) → ``map[string]interface{}``, lists of
        str/bool/int/float → ``[]string``/``[]bool``/``[]int``/``[]float64`` (ints and floats mixed
        give ``[]float64``), other lists of JSON values (and empty lists) → ``[]interface{}``.
        A tuple is stored as a list. Anything else raises TypeError; NaN and infinities raise
        ValueError.
        """
        if isinstance(value, tuple):
            value = list(value)
        return cls(name, _infer_go_type(value), value)


# --------------------------------------------------------------------------------------------------
# Signature


_INT_FIELDS: Final = (
    "priority",
    "retry_count",
    "retry_timeout",
    "wait_time",
    "retries_done",
    "task_timeout",
)


def _check_time(field: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise TypeError(f"Signature.{field} must be a datetime or None, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(
            f"Signature.{field} must be timezone-aware, got naive {value.isoformat()}; "
            "use e.g. datetime.now(timezone.utc)"
        )


@dataclass(frozen=True, init=False)
class Signature:
    """One task invocation, field for field the Go paota ``Signature``.

    Only ``name`` is positional. ``args`` accepts any iterable of :class:`Arg` and is stored as a
    tuple; ``raw_args`` accepts any bytes-like object and is stored as ``bytes``; ``priority`` is
    0..255 (Go ``uint8``), the other ints fit Go's ``int`` (64-bit); ``task_timeout`` is Go's
    ``TaskTimeOut`` in seconds; ``created_at``/``eta`` must be timezone-aware (naive datetimes
    raise ValueError). ``raw_args``, when set, makes the message go in header mode (see
    :mod:`paota.core.message.header_codec`). Instances are immutable: use :meth:`replace`.
    """

    name: str
    _: KW_ONLY
    args: tuple[Arg, ...] = ()
    uuid: str = ""
    raw_args: bytes | None = None
    routing_key: str = ""
    priority: int = 0
    retry_count: int = 0
    retry_timeout: int = 0
    wait_time: int = 0
    retries_done: int = 0
    task_timeout: int = 0
    ignore_when_task_not_registered: bool = False
    created_at: datetime | None = None
    eta: datetime | None = None

    # Written out (not generated) so that the parameters can be wider than the stored types.
    def __init__(
        self,
        name: str,
        *,
        args: Iterable[Arg] = (),
        uuid: str = "",
        raw_args: bytes | bytearray | memoryview | None = None,
        routing_key: str = "",
        priority: int = 0,
        retry_count: int = 0,
        retry_timeout: int = 0,
        wait_time: int = 0,
        retries_done: int = 0,
        task_timeout: int = 0,
        ignore_when_task_not_registered: bool = False,
        created_at: datetime | None = None,
        eta: datetime | None = None,
    ) -> None:
        set_attr(
            self,
            "__dict__",
            {
                "name": name,
                "args": args,
                "uuid": uuid,
                "raw_args": raw_args,
                "routing_key": routing_key,
                "priority": priority,
                "retry_count": retry_count,
                "retry_timeout": retry_timeout,
                "wait_time": wait_time,
                "retries_done": retries_done,
                "task_timeout": task_timeout,
                "ignore_when_task_not_registered": ignore_when_task_not_registered,
                "created_at": created_at,
                "eta": eta,
            },
        )
        self.__post_init__()

    def __post_init__(self) -> None:
        fields = self.__dict__
        if type(self.name) is not str:
            raise TypeError(f"Signature.name must be a str, not {type(self.name).__name__}")
        args: Any = self.args
        if type(args) is not tuple:
            if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Iterable):
                raise TypeError(
                    f"Signature.args must be an iterable of Arg, not {type(args).__name__}"
                )
            fields["args"] = args = tuple(args)
        for i, arg in enumerate(args):
            if type(arg) is not Arg and not isinstance(arg, Arg):
                raise TypeError(
                    f"Signature.args[{i}] must be an Arg, not {type(arg).__name__}; "
                    "use Arg(name, type, value) or Arg.of(value, name)"
                )
        if type(self.uuid) is not str:
            raise TypeError(f"Signature.uuid must be a str, not {type(self.uuid).__name__}")
        if type(self.routing_key) is not str:
            raise TypeError(
                f"Signature.routing_key must be a str, not {type(self.routing_key).__name__}"
            )
        raw: Any = self.raw_args
        if raw is not None and type(raw) is not bytes:
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"Signature.raw_args must be bytes or None, not {type(raw).__name__}"
                )
            fields["raw_args"] = bytes(raw)
        for field in _INT_FIELDS:
            value = fields[field]
            if type(value) is not int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"Signature.{field} must be an int, not {type(value).__name__}")
                fields[field] = value = int(value)  # e.g. an IntEnum
            if not -9223372036854775808 <= value <= 9223372036854775807:
                raise ValueError(f"Signature.{field} must fit a 64-bit Go int, got {value}")
        if not 0 <= self.priority <= 255:
            raise ValueError(
                f"Signature.priority must be in 0..255 (Go uint8), got {self.priority}"
            )
        if type(self.ignore_when_task_not_registered) is not bool:
            raise TypeError(
                "Signature.ignore_when_task_not_registered must be a bool, not "
                f"{type(self.ignore_when_task_not_registered).__name__}"
            )
        _check_time("created_at", self.created_at)
        _check_time("eta", self.eta)

    def replace(self, **changes: Any) -> Signature:
        """A copy with ``changes`` applied (validated like the constructor)."""
        fields = self.__dict__.copy()
        for key in changes:
            if key not in fields:
                raise TypeError(f"Signature.replace() got an unexpected keyword argument {key!r}")
        fields.update(changes)
        sig = new_object(Signature)
        set_attr(sig, "__dict__", fields)
        sig.__post_init__()
        return sig

    def arg(self, name: str, default: Any = _MISSING) -> Any:
        """The value of the arg called ``name`` (the first one), or ``default``.

        Raises KeyError naming the task and the available arg names when there is no such arg and
        no default was given.
        """
        for a in self.args:
            if a.name == name:
                return a.value
        if default is _MISSING:
            names = [a.name for a in self.args if a.name]
            raise KeyError(f"task {self.name!r} has no arg named {name!r}; its named args: {names}")
        return default

    @property
    def kwargs(self) -> dict[str, Any]:
        """``{arg.name: arg.value}`` for the named args (a new dict each time)."""
        return {a.name: a.value for a in self.args if a.name}


def make_signature(fields: dict[str, Any]) -> Signature:
    """Trusted fast constructor for the decoders: ``fields`` holds every field, already validated."""
    sig = new_object(Signature)
    set_attr(sig, "__dict__", fields)
    return sig


@dataclass(frozen=True)
class WireMessage:
    """An encoded message: the body, the AMQP headers and the content type to publish with."""

    body: bytes
    headers: dict[str, Any]
    content_type: str
