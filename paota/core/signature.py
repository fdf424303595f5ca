"""The task message: :class:`Signature`, and its wire codecs (wire-compatible with Go paota).

Two wire forms exist, both produced by the Go publisher:

*JSON mode* (the default): the body is the Go ``Signature`` struct as Go's ``encoding/json`` writes
it, with Go's field names in struct order and compact separators::

    {"UUID":"…","Name":"…","Args":[{"Name":"…","Type":"int","Value":1}],"RawArgs":null,
     "RoutingKey":"…","Priority":0,"RetryCount":0,"RetryTimeout":0,"WaitTime":0,"RetriesDone":0,
     "TaskTimeOut":0,"IgnoreWhenTaskNotRegistered":false,"CreatedAt":"2026-…Z","ETA":null}

``Args`` is ``null`` when empty, ``RawArgs`` is base64 (Go ``[]byte``) or ``null``, times are
RFC 3339 in UTC (or ``null``). :func:`encode_json` output equals Go's byte for byte (including Go's
escaping of ``<``, ``>``, ``&``, U+2028 and U+2029) except in arg values: Python writes floats in
``repr`` form (``1.0`` where Go writes ``1``) and keeps dict key order (Go sorts map keys). Go reads
both forms the same. Decoding follows Go's rules: keys match case-insensitively, unknown keys are
ignored, missing keys and ``null`` give zero values, integers must be JSON integers in range
(``Priority`` 0..255), times must be RFC 3339; anything else raises
:class:`~paota.core.errors.DecodeError` naming the field and the bad value. Go writes a ``float64``
arg that holds a whole number as ``1``; the decoder turns such ints back into floats for args typed
``float64``/``float32`` (and ``[]float64``/``[]float32``).

*Header mode* (when the signature carries ``raw_args``): the body is ``raw_args`` alone and the
metadata rides in AMQP headers ``uuid``, ``task_name``, ``retry_count``, ``retry_timeout``,
``timeout``, ``wait_time``, ``retries_done``, ``ignore_if_unregistered`` and, when set,
``created_at``/``eta`` as Unix seconds. This form loses sub-second precision of ``created_at`` and
``eta`` (Go does the same), and carries neither ``args`` nor ``priority`` nor ``routing_key``: the
AMQP layer sends those as the message priority property and the routing key. When decoding, optional
``priority`` and ``routing_key`` headers are honoured (as Go's consumer does).

Times: every datetime in a :class:`Signature` must be timezone-aware; naive datetimes are rejected
with :class:`ValueError` (guessing a zone for them silently shifts ETAs). Decoded times are in UTC.
"""

from __future__ import annotations

import binascii
import json
import math
from base64 import b64decode, b64encode
from collections.abc import Callable, Iterable, Mapping
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from paota.core.errors import DecodeError

__all__ = [
    "CONTENT_TYPE_HEADERS",
    "CONTENT_TYPE_JSON",
    "Arg",
    "Signature",
    "WireMessage",
    "decode_json",
    "decode_message",
    "encode_json",
    "encode_message",
    "format_time",
    "parse_time",
]

CONTENT_TYPE_JSON: Final = "application/json"
CONTENT_TYPE_HEADERS: Final = "application/octet-stream"

_UTC: Final = UTC
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_SECOND: Final = timedelta(seconds=1)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MAX_EXACT_FLOAT_INT: Final = 2**53


class _Missing:
    def __repr__(self) -> str:
        return "<MISSING>"


_MISSING: Final = _Missing()


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
    raise TypeError(f"{where}: {type(value).__name__} {_show(value)} is not a JSON value")


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
        f"cannot infer a Go type for a {type(value).__name__} value {_show(value)}; "
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


_new_object = object.__new__
_set_attr = object.__setattr__


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
    raise ValueError). ``raw_args``, when set, makes the message go in header mode (see the module
    docs). Instances are immutable: use :meth:`replace`.
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
        _set_attr(
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
        sig = _new_object(Signature)
        _set_attr(sig, "__dict__", fields)
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


def _make_signature(fields: dict[str, Any]) -> Signature:
    # Trusted fast constructor for the decoders: ``fields`` holds every field, already validated.
    sig = _new_object(Signature)
    _set_attr(sig, "__dict__", fields)
    return sig


@dataclass(frozen=True)
class WireMessage:
    """An encoded message: the body, the AMQP headers and the content type to publish with."""

    body: bytes
    headers: dict[str, Any]
    content_type: str


# --------------------------------------------------------------------------------------------------
# Times


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC as Go writes it: ``2026-11-27T10:30:15.123456Z``.

    The fraction has no trailing zeros and is left out when zero. ``dt`` must be aware (ValueError
    otherwise).
    """
    if dt.tzinfo is _UTC:
        text = dt.isoformat()[:-6]
    else:
        offset = dt.utcoffset()
        if offset is None:
            raise ValueError(f"cannot format naive datetime {dt.isoformat()}: it has no time zone")
        try:
            text = (dt.replace(tzinfo=None) - offset).isoformat()
        except OverflowError as exc:
            raise ValueError(f"{dt.isoformat()} is out of range in UTC") from exc
    if len(text) > 19:
        text = text.rstrip("0")
    return text + "Z"


_DIGITS: Final = frozenset("0123456789")
_fromisoformat = datetime.fromisoformat


def parse_time(text: str) -> datetime:
    """Parse RFC 3339 (as Go's ``time.RFC3339Nano``) into an aware datetime in UTC.

    Accepts ``Z`` (or ``z``) and ``±hh:mm`` offsets and 0..9 fraction digits, truncated to
    microseconds. Raises ValueError for anything else.
    """
    if type(text) is not str:
        raise TypeError(f"parse_time() needs a str, not {type(text).__name__}")
    n = len(text)
    # Fast path for what Go writes: "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z". fromisoformat() does the digit
    # and range checks; the fraction is cut or padded to the 6 digits every Python takes.
    if (
        n >= 20
        and text[-1] == "Z"
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == "T"
        and text[13] == ":"
        and text[16] == ":"
        and not (text[11] == "2" and text[12] == "4")  # some Pythons take 24:00 as next day
    ):
        if n == 20:
            iso = text[:19] + "+00:00"
        elif 22 <= n <= 30 and text[19] == "." and _DIGITS.issuperset(frac := text[20:-1]):
            iso = text[:20] + (frac + "00000")[:6] + "+00:00"
        else:
            iso = ""
        if iso:
            try:
                return _fromisoformat(iso)
            except ValueError:
                pass  # reported by the general path
    return _parse_time_general(text)


def _parse_time_general(text: str) -> datetime:
    bad = ValueError(f"not an RFC 3339 time: {_show(text)}")
    n = len(text)
    if n < 20 or not (
        text[4] == "-"
        and text[7] == "-"
        and text[10] in "Tt"
        and text[13] == ":"
        and text[16] == ":"
        and _DIGITS.issuperset(text[0:4] + text[5:7] + text[8:10])
        and _DIGITS.issuperset(text[11:13] + text[14:16] + text[17:19])
    ):
        raise bad
    pos = 19
    frac = ""
    if text[19] == ".":
        pos = 20
        while pos < n and text[pos] in _DIGITS:
            pos += 1
        frac = text[20:pos]
        if not 1 <= len(frac) <= 9:
            raise bad
    zone = text[pos:]
    if zone in ("Z", "z"):
        minutes = 0
    elif (
        len(zone) == 6
        and zone[0] in "+-"
        and zone[3] == ":"
        and _DIGITS.issuperset(zone[1:3] + zone[4:6])
    ):
        hh = int(zone[1:3])
        mm = int(zone[4:6])
        if hh > 23 or mm > 59:
            raise bad
        minutes = hh * 60 + mm
        if zone[0] == "-":
            minutes = -minutes
    else:
        raise bad
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    micro = int((frac + "00000")[:6]) if frac else 0
    try:
        dt = datetime(year, month, day, hour, minute, second, micro, tzinfo=_UTC)
        if minutes:
            dt -= timedelta(minutes=minutes)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not an RFC 3339 time: {_show(text)} ({exc})") from None
    return dt


def _unix_seconds(dt: datetime) -> int:
    # Floor, like Go's Time.Unix().
    return (dt - _EPOCH) // _ONE_SECOND


# --------------------------------------------------------------------------------------------------
# JSON mode

# Go's encoding/json escapes these inside strings (HTML safety, JS line separators).
_GO_ESCAPES: Final = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode


_es = json.encoder.encode_basestring  # the C string encoder (no ASCII escaping)
_int_repr = int.__repr__
_float_repr = float.__repr__
_isfinite = math.isfinite


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_container_encoder() -> Callable[[Any], str]:
    # json.dumps builds a new C encoder on every call, which costs more than encoding a small list;
    # keep one (no circular-reference markers: a cycle ends in RecursionError, turned into
    # ValueError by encode_json). Falls back to the public API where the C encoder is missing.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        try:
            encoder = make(None, _not_json, _es, None, ":", ",", False, False, False)
            if "".join(encoder([1, "a", {"b": None}], 0)) == '[1,"a",{"b":null}]':
                return lambda value: "".join(encoder(value, 0))
        except Exception:  # pragma: no cover - a Python whose C encoder takes other arguments
            pass
    return _encode  # pragma: no cover


_encode_container = _make_container_encoder()


def _value_json(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _es(value)
    if kind is int:
        return _int_repr(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float and _isfinite(value):
        return _float_repr(value)  # what json.dumps writes for a float
    if value is None:
        return "null"
    try:
        return _encode_container(value)  # raises for NaN and non-JSON values
    except RecursionError:
        raise ValueError("circular reference (or nesting too deep) in an arg value") from None


def _json_doc(sig: Signature) -> dict[str, Any]:
    raw = sig.raw_args
    return {
        "UUID": sig.uuid,
        "Name": sig.name,
        "Args": [{"Name": a.name, "Type": a.type, "Value": a.value} for a in sig.args] or None,
        "RawArgs": None if raw is None else b64encode(raw).decode("ascii"),
        "RoutingKey": sig.routing_key,
        "Priority": sig.priority,
        "RetryCount": sig.retry_count,
        "RetryTimeout": sig.retry_timeout,
        "WaitTime": sig.wait_time,
        "RetriesDone": sig.retries_done,
        "TaskTimeOut": sig.task_timeout,
        "IgnoreWhenTaskNotRegistered": sig.ignore_when_task_not_registered,
        "CreatedAt": None if sig.created_at is None else format_time(sig.created_at),
        "ETA": None if sig.eta is None else format_time(sig.eta),
    }


def encode_json(sig: Signature) -> bytes:
    """The JSON-mode body for ``sig``, as Go's ``json.Marshal`` writes the Go struct (UTF-8)."""
    # Assembled by hand (about twice as fast as json.dumps of a dict); every top-level field has
    # a known type (checked by Signature.__post_init__ or the decoder).
    try:
        args = sig.args
        if args:
            parts = []
            for a in args:
                value = a.value
                kind = type(value)
                if kind is str:
                    value_json = _es(value)
                elif kind is int:
                    value_json = _int_repr(value)
                else:
                    value_json = _value_json(value)
                parts.append(f'{{"Name":{_es(a.name)},"Type":{_es(a.type)},"Value":{value_json}}}')
            args_json = "[" + ",".join(parts) + "]"
        else:
            args_json = "null"
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"cannot encode the args of task {sig.name!r} as JSON: {exc}") from exc
    raw = sig.raw_args
    raw_json = "null" if raw is None else f'"{b64encode(raw).decode("ascii")}"'
    created = sig.created_at
    created_json = "null" if created is None else f'"{format_time(created)}"'
    eta = sig.eta
    eta_json = "null" if eta is None else f'"{format_time(eta)}"'
    ignore_json = "true" if sig.ignore_when_task_not_registered else "false"
    text = (
        f'{{"UUID":{_es(sig.uuid)},"Name":{_es(sig.name)},"Args":{args_json},'
        f'"RawArgs":{raw_json},"RoutingKey":{_es(sig.routing_key)},"Priority":{sig.priority},'
        f'"RetryCount":{sig.retry_count},"RetryTimeout":{sig.retry_timeout},'
        f'"WaitTime":{sig.wait_time},"RetriesDone":{sig.retries_done},'
        f'"TaskTimeOut":{sig.task_timeout},"IgnoreWhenTaskNotRegistered":{ignore_json},'
        f'"CreatedAt":{created_json},"ETA":{eta_json}}}'
    )
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        text = text.translate(_GO_ESCAPES)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in some string: write \udXXX escapes instead (still valid JSON).
        return _encode_ascii(_json_doc(sig)).translate(_GO_ESCAPES).encode("ascii")


class _Invalid(Exception):
    """A field failed validation while decoding (converted to DecodeError at the boundary)."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _invalid(field: str, value: Any, want: str) -> _Invalid:
    return _Invalid(f"invalid {field}: {_show(value)} ({want})")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode

_JSON_FIELDS: Final = (
    "UUID",
    "Name",
    "Args",
    "RawArgs",
    "RoutingKey",
    "Priority",
    "RetryCount",
    "RetryTimeout",
    "WaitTime",
    "RetriesDone",
    "TaskTimeOut",
    "IgnoreWhenTaskNotRegistered",
    "CreatedAt",
    "ETA",
)
_JSON_KEYSET: Final = frozenset(_JSON_FIELDS)
# Go matches keys with Unicode simple case folding (U+017F long s matches "s", U+212A Kelvin "k").
_JSON_FOLDED: Final = {k.casefold(): k for k in _JSON_FIELDS}
# Decoding null into a Go pointer/slice/interface sets it to nil; into anything else it is a no-op.
_JSON_NULLABLE: Final = frozenset({"Args", "RawArgs", "CreatedAt", "ETA"})
_ARG_FOLDED: Final = {"name": "Name", "type": "Type", "value": "Value"}
_ARG_NULLABLE: Final = frozenset({"Value"})
# Arg types whose whole-number values Go writes as JSON integers: False = scalar, True = list.
_FLOAT_COERCION: Final = {"float64": False, "float32": False, "[]float64": True, "[]float32": True}


def _fold_keys(
    obj: dict[str, Any], folded: dict[str, str], nullable: frozenset[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        field = folded.get(key.casefold())
        if field is None or (value is None and field not in nullable):
            continue
        out[field] = value  # a later duplicate wins, as in Go
    return out


def _as_float(value: Any) -> Any:
    if type(value) is int and -_MAX_EXACT_FLOAT_INT <= value <= _MAX_EXACT_FLOAT_INT:
        return float(value)
    return value


def _arg_fields(index: int, item: Any) -> tuple[str, str, Any]:
    # The careful path for one arg: any key case, nulls, and errors.
    if type(item) is not dict:
        raise _invalid(f"Args[{index}]", item, "want a JSON object {Name, Type, Value}")
    item = _fold_keys(item, _ARG_FOLDED, _ARG_NULLABLE)
    name = item.get("Name", "")
    if type(name) is not str:
        raise _invalid(f"Args[{index}].Name", name, "want a string")
    type_ = item.get("Type", "")
    if type(type_) is not str:
        raise _invalid(f"Args[{index}].Type", type_, "want a string")
    return name, type_, item.get("Value")


def _decode_args(value: Any) -> tuple[Arg, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise _invalid("Args", value, "want a JSON array of {Name, Type, Value} objects or null")
    out: list[Arg] = []
    append = out.append
    for item in value:
        # Fast path: exactly {"Name": str, "Type": str, "Value": ...}.
        if type(item) is dict and len(item) == 3:
            try:
                name = item["Name"]
                type_ = item["Type"]
                val = item["Value"]
            except KeyError:
                name, type_, val = _arg_fields(value.index(item), item)
            else:
                if type(name) is not str or type(type_) is not str:
                    name, type_, val = _arg_fields(value.index(item), item)
        else:
            name, type_, val = _arg_fields(value.index(item), item)
        coerce = _FLOAT_COERCION.get(type_)
        if coerce is not None:
            if coerce:
                if type(val) is list:
                    val = [_as_float(v) for v in val]
            else:
                val = _as_float(val)
        arg = _new_object(Arg)
        _set_attr(arg, "__dict__", {"name": name, "type": type_, "value": val})
        append(arg)
    return tuple(out)


def _decode_raw_args(value: Any) -> bytes | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _invalid("RawArgs", value, "want a base64 string or null")
    try:
        # Go's base64 decoder skips \r and \n.
        return b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("RawArgs", value, "want standard base64 with padding") from None


def _json_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise _invalid(key, value, "want a string")
    return value


def _json_int(doc: dict[str, Any], key: str, lo: int = _INT64_MIN, hi: int = _INT64_MAX) -> int:
    value = doc.get(key)
    if value is None:
        return 0
    if type(value) is not int or not lo <= value <= hi:
        raise _invalid(key, value, f"want a JSON integer {lo}..{hi}")
    return value


def _json_time(key: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if type(value) is str:
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise _invalid(key, value, "want an RFC 3339 time string or null")


def _from_json_doc(doc: Any) -> Signature:
    if type(doc) is dict and doc.keys() == _JSON_KEYSET:
        # Fast path: exactly Go's keys (what every Go or paota publisher sends), scalars well typed.
        uuid = doc["UUID"]
        name = doc["Name"]
        routing_key = doc["RoutingKey"]
        priority = doc["Priority"]
        retry_count = doc["RetryCount"]
        retry_timeout = doc["RetryTimeout"]
        wait_time = doc["WaitTime"]
        retries_done = doc["RetriesDone"]
        task_timeout = doc["TaskTimeOut"]
        ignore = doc["IgnoreWhenTaskNotRegistered"]
        if (
            type(uuid) is str
            and type(name) is str
            and type(routing_key) is str
            and type(priority) is int
            and 0 <= priority <= 255
            and type(retry_count) is int
            and -9223372036854775808 <= retry_count <= 9223372036854775807
            and type(retry_timeout) is int
            and -9223372036854775808 <= retry_timeout <= 9223372036854775807
            and type(wait_time) is int
            and -9223372036854775808 <= wait_time <= 9223372036854775807
            and type(retries_done) is int
            and -9223372036854775808 <= retries_done <= 9223372036854775807
            and type(task_timeout) is int
            and -9223372036854775808 <= task_timeout <= 9223372036854775807
            and type(ignore) is bool
        ):
            args = doc["Args"]
            raw = doc["RawArgs"]
            created = doc["CreatedAt"]
            eta = doc["ETA"]
            try:
                fields = {
                    "name": name,
                    "args": () if args is None else _decode_args(args),
                    "uuid": uuid,
                    "raw_args": None if raw is None else _decode_raw_args(raw),
                    "routing_key": routing_key,
                    "priority": priority,
                    "retry_count": retry_count,
                    "retry_timeout": retry_timeout,
                    "wait_time": wait_time,
                    "retries_done": retries_done,
                    "task_timeout": task_timeout,
                    "ignore_when_task_not_registered": ignore,
                    "created_at": None if created is None else parse_time(created),
                    "eta": None if eta is None else parse_time(eta),
                }
            except (ValueError, TypeError):
                pass  # a bad time: the careful path says which
            else:
                sig = _new_object(Signature)
                _set_attr(sig, "__dict__", fields)
                return sig
    return _from_json_doc_careful(doc)


def _from_json_doc_careful(doc: Any) -> Signature:
    if type(doc) is not dict:
        raise _Invalid(f"message body is not a JSON object: {_show(doc)}")
    doc = _fold_keys(doc, _JSON_FOLDED, _JSON_NULLABLE)
    ignore = doc.get("IgnoreWhenTaskNotRegistered", False)
    if type(ignore) is not bool:
        raise _invalid("IgnoreWhenTaskNotRegistered", ignore, "want true or false")
    return _make_signature(
        {
            "name": _json_str(doc, "Name"),
            "args": _decode_args(doc.get("Args")),
            "uuid": _json_str(doc, "UUID"),
            "raw_args": _decode_raw_args(doc.get("RawArgs")),
            "routing_key": _json_str(doc, "RoutingKey"),
            "priority": _json_int(doc, "Priority", 0, 255),
            "retry_count": _json_int(doc, "RetryCount"),
            "retry_timeout": _json_int(doc, "RetryTimeout"),
            "wait_time": _json_int(doc, "WaitTime"),
            "retries_done": _json_int(doc, "RetriesDone"),
            "task_timeout": _json_int(doc, "TaskTimeOut"),
            "ignore_when_task_not_registered": ignore,
            "created_at": _json_time("CreatedAt", doc.get("CreatedAt")),
            "eta": _json_time("ETA", doc.get("ETA")),
        }
    )


def _decode_json(body: bytes, headers: Mapping[str, Any] | None) -> Signature:
    try:
        # Like Go, invalid UTF-8 inside strings becomes U+FFFD rather than failing the message.
        data = body if type(body) is bytes else bytes(body)
        doc = _decode(data.decode("utf-8", "replace"))
    except (ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(
            f"message body is not valid JSON: {exc}", raw=body, headers=headers
        ) from None
    try:
        return _from_json_doc(doc)
    except _Invalid as exc:
        raise DecodeError(f"undecodable task message: {exc}", raw=body, headers=headers) from None


def decode_json(body: bytes) -> Signature:
    """Decode a JSON-mode body (Go's rules, see the module docs); DecodeError keeps ``raw``."""
    return _decode_json(body, None)


# --------------------------------------------------------------------------------------------------
# Header mode and dispatch


def encode_message(sig: Signature) -> WireMessage:
    """Encode ``sig`` for publishing.

    Header mode when ``sig.raw_args`` is set, JSON mode otherwise. As in Go's publisher, raw args
    that are empty or ``b"null"`` go in JSON mode instead (Go consumers drop empty bodies).
    """
    raw = sig.raw_args
    if not raw or raw == b"null":
        return WireMessage(encode_json(sig), {}, CONTENT_TYPE_JSON)
    headers: dict[str, Any] = {
        "uuid": sig.uuid,
        "task_name": sig.name,
        "retry_count": sig.retry_count,
        "retry_timeout": sig.retry_timeout,
        "timeout": sig.task_timeout,
        "wait_time": sig.wait_time,
        "retries_done": sig.retries_done,
        "ignore_if_unregistered": sig.ignore_when_task_not_registered,
    }
    if sig.created_at is not None:
        headers["created_at"] = _unix_seconds(sig.created_at)
    if sig.eta is not None:
        headers["eta"] = _unix_seconds(sig.eta)
    return WireMessage(raw, headers, CONTENT_TYPE_HEADERS)


def _text_of(value: Any) -> str | None:
    if type(value) is str:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _header_str(headers: Mapping[str, Any], key: str) -> str:
    value = headers.get(key)
    if value is None:
        return ""
    text = _text_of(value)
    if text is None:
        raise _invalid(f"header {key}", value, "want a string")
    return text


def _int_of(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    text = _text_of(value)
    if text is None:
        return None
    text = text.strip()
    digits = text[1:] if text[:1] in ("+", "-") else text
    if digits and _DIGITS.issuperset(digits):
        return int(text)
    return None


def _header_int(
    headers: Mapping[str, Any], key: str, lo: int = _INT64_MIN, hi: int = _INT64_MAX
) -> int:
    value = headers.get(key)
    if value is None:
        return 0
    number = _int_of(value)
    if number is None or not lo <= number <= hi:
        raise _invalid(f"header {key}", value, f"want an integer {lo}..{hi}")
    return number


def _header_bool(headers: Mapping[str, Any], key: str) -> bool:
    value = headers.get(key)
    if value is None:
        return False
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    text = _text_of(value)
    if text is not None:
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    raise _invalid(f"header {key}", value, "want a bool")


def _header_time(headers: Mapping[str, Any], key: str) -> datetime | None:
    value = headers.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            # AMQP timestamps are UTC; a naive one is taken as UTC.
            if value.utcoffset() is None:
                return value.replace(tzinfo=_UTC)
            return value.astimezone(_UTC)
        if isinstance(value, float) and math.isfinite(value):
            return datetime.fromtimestamp(value, _UTC)
        seconds = _int_of(value)
        if seconds is not None:
            return _EPOCH + timedelta(seconds=seconds)
    except (ValueError, OverflowError, OSError):
        pass
    raise _invalid(f"header {key}", value, "want Unix seconds")


def _from_headers(body: bytes, headers: Mapping[str, Any]) -> Signature:
    return _make_signature(
        {
            "name": _header_str(headers, "task_name"),
            "args": (),
            "uuid": _header_str(headers, "uuid"),
            "raw_args": bytes(body),
            "routing_key": _header_str(headers, "routing_key"),
            "priority": _header_int(headers, "priority", 0, 255),
            "retry_count": _header_int(headers, "retry_count"),
            "retry_timeout": _header_int(headers, "retry_timeout"),
            "wait_time": _header_int(headers, "wait_time"),
            "retries_done": _header_int(headers, "retries_done"),
            "task_timeout": _header_int(headers, "timeout"),
            "ignore_when_task_not_registered": _header_bool(headers, "ignore_if_unregistered"),
            "created_at": _header_time(headers, "created_at"),
            "eta": _header_time(headers, "eta"),
        }
    )


def decode_message(body: bytes, headers: Mapping[str, Any] | None = None) -> Signature:
    """Decode a received message: header mode when ``headers`` has ``task_name``, else JSON mode.

    Raises DecodeError (keeping ``raw`` and ``headers``) on any problem.
    """
    if headers and "task_name" in headers:
        try:
            return _from_headers(body, headers)
        except _Invalid as exc:
            raise DecodeError(
                f"undecodable task message: {exc}", raw=body, headers=headers
            ) from None
    return _decode_json(body, headers)
