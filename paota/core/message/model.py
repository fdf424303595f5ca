"""The message model: :class:`Arg`, :class:`Signature` and :class:`WireMessage`.

A :class:`Signature` is field for field the Go paota ``Signature`` struct; the codecs in
:mod:`~paota.core.message.json_codec` and :mod:`~paota.core.message.header_codec` turn it into the
bytes Go publishes and back.

Times: every datetime in a :class:`Signature` must be timezone-aware; naive datetimes are rejected
with :class:`ValueError` (guessing a zone for them silently shifts ETAs). Decoded times are in UTC.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from string import Template
from typing import TYPE_CHECKING, Any, Final

from paota.core.message._common import compile_function, show
from paota.core.message.fields import FIELDS, FIELDS_BY_NAME, Field, Kind

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


# Signature.__post_init__ is generated from the table, one check per field in Go's order (so when
# several fields are wrong, the first in that order is reported), as a hand-written method would
# be. In the templates, $attr is the attribute and $lo/$hi the range of the integer kinds;
# print(_POST_INIT_SOURCE) shows the result.

# Every integer is a Go int first (an int subclass such as an IntEnum is stored as a plain int).
_GO_INT_CHECK: Final = """\
    value = fields["$attr"]
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Signature.$attr must be an int, not {type(value).__name__}")
        fields["$attr"] = value = int(value)
    if not -9223372036854775808 <= value <= 9223372036854775807:
        raise ValueError(f"Signature.$attr must fit a 64-bit Go int, got {value}")
"""
_CHECK: Final = {
    Kind.STR: """\
    value = fields["$attr"]
    if type(value) is not str:
        raise TypeError(f"Signature.$attr must be a str, not {type(value).__name__}")
""",
    Kind.ARGS: """\
    value = fields["$attr"]
    if type(value) is not tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise TypeError(
                f"Signature.$attr must be an iterable of Arg, not {type(value).__name__}"
            )
        fields["$attr"] = value = tuple(value)
    for i, arg in enumerate(value):
        if type(arg) is not Arg and not isinstance(arg, Arg):
            raise TypeError(
                f"Signature.$attr[{i}] must be an Arg, not {type(arg).__name__}; "
                "use Arg(name, type, value) or Arg.of(value, name)"
            )
""",
    Kind.RAW: """\
    value = fields["$attr"]
    if value is not None and type(value) is not bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"Signature.$attr must be bytes or None, not {type(value).__name__}")
        fields["$attr"] = bytes(value)
""",
    Kind.UINT8: _GO_INT_CHECK
    + """\
    if not $lo <= value <= $hi:
        raise ValueError(f"Signature.$attr must be in $lo..$hi (Go $go_type), got {value}")
""",
    Kind.INT64: _GO_INT_CHECK,
    Kind.BOOL: """\
    value = fields["$attr"]
    if type(value) is not bool:
        raise TypeError(f"Signature.$attr must be a bool, not {type(value).__name__}")
""",
    Kind.TIME: """\
    value = fields["$attr"]
    if value is not None:
        _check_time("$attr", value)
""",
}


def _post_init_source() -> str:
    lines = [
        "def __post_init__(self):",
        '    """Check every field; store ``args`` as a tuple and ``raw_args`` as bytes."""',
        "    fields = self.__dict__",
    ]
    for field in FIELDS:
        if not field.name.isidentifier():  # pragma: no cover - the table is wrong
            raise ValueError(f"cannot generate code for field {field}: rename it")
        lo, hi = field.kind.int_range or (0, 0)
        template = Template(_CHECK[field.kind])
        lines.append(
            template.substitute(attr=field.name, lo=lo, hi=hi, go_type=field.kind.value).rstrip()
        )
    return "\n".join(lines) + "\n"


_POST_INIT_SOURCE: Final = _post_init_source()
_POST_INIT_NAMESPACE: Final = {
    "__name__": __name__,
    "Arg": Arg,
    "Iterable": Iterable,
    "Mapping": Mapping,
    "_check_time": _check_time,
}


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

    if TYPE_CHECKING:  # what the type checker sees of the generated method

        def __post_init__(self) -> None:
            """Check every field; store ``args`` as a tuple and ``raw_args`` as bytes."""

    else:
        __post_init__ = compile_function(
            "__post_init__", _POST_INIT_SOURCE, dict(_POST_INIT_NAMESPACE), "Signature"
        )

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


def _attribute_order() -> tuple[Field, ...]:
    # The class spells its fields out for the type checker; they must be the table's, or every
    # codec built from the table would be wrong.
    names = [f.name for f in dataclasses.fields(Signature)]
    if sorted(names) != sorted(FIELDS_BY_NAME):
        raise TypeError(
            f"Signature's fields {names} are not the ones paota.core.message.fields.FIELDS lists "
            f"{list(FIELDS_BY_NAME)}"
        )
    return tuple(FIELDS_BY_NAME[name] for name in names)


#: The table's fields in Signature's attribute order (``name`` first), the order of ``__dict__``.
ATTRIBUTE_ORDER: Final = _attribute_order()


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
