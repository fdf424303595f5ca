"""JSON mode, the default wire form: the Go ``Signature`` struct as ``encoding/json`` writes it.

The body has Go's field names in struct order and compact separators::

    {"UUID":"…","Name":"…","Args":[{"Name":"…","Type":"int","Value":1}],"RawArgs":null,
     "RoutingKey":"…","Priority":0,"RetryCount":0,"RetryTimeout":0,"WaitTime":0,"RetriesDone":0,
     "TaskTimeOut":0,"IgnoreWhenTaskNotRegistered":false,"CreatedAt":"2026-…Z","ETA":null}

``Args`` is ``null`` when empty, ``RawArgs`` is base64 (Go ``[]byte``) or ``null``, times are
RFC 3339 in UTC (or ``null``). :func:`encode_json` output equals Go's byte for byte (including Go's
escaping of ``<``, ``>``, ``&``, U+2028 and U+2029) except in arg values: Python writes floats in
``repr`` form (``1.0`` where Go writes ``1``) and keeps dict key order (Go sorts map keys). Go reads
both forms the same.

Decoding follows Go's rules: keys match case-insensitively, unknown keys are ignored, missing keys
and ``null`` give zero values, integers must be JSON integers in range (``Priority`` 0..255), times
must be RFC 3339; anything else raises :class:`~paota.core.errors.DecodeError` naming the field and
the bad value. Go writes a ``float64`` arg that holds a whole number as ``1``; the decoder turns such
ints back into floats for args typed ``float64``/``float32`` (and ``[]float64``/``[]float32``).
"""

from __future__ import annotations

import binascii
import json
import math
from base64 import b64decode, b64encode
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from paota.core.errors import DecodeError
from paota.core.message._common import Invalid, invalid, show
from paota.core.message.model import Arg, Signature, make_signature, new_object, set_attr
from paota.core.message.times import format_time, parse_time

__all__ = ["CONTENT_TYPE_JSON", "decode_json", "encode_json"]

CONTENT_TYPE_JSON: Final = "application/json"

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MAX_EXACT_FLOAT_INT: Final = 2**53


# --------------------------------------------------------------------------------------------------
# Encoding

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


# --------------------------------------------------------------------------------------------------
# Decoding


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
        raise invalid(f"Args[{index}]", item, "want a JSON object {Name, Type, Value}")
    item = _fold_keys(item, _ARG_FOLDED, _ARG_NULLABLE)
    name = item.get("Name", "")
    if type(name) is not str:
        raise invalid(f"Args[{index}].Name", name, "want a string")
    type_ = item.get("Type", "")
    if type(type_) is not str:
        raise invalid(f"Args[{index}].Type", type_, "want a string")
    return name, type_, item.get("Value")


def _decode_args(value: Any) -> tuple[Arg, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise invalid("Args", value, "want a JSON array of {Name, Type, Value} objects or null")
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
        arg = new_object(Arg)
        set_attr(arg, "__dict__", {"name": name, "type": type_, "value": val})
        append(arg)
    return tuple(out)


def _decode_raw_args(value: Any) -> bytes | None:
    if value is None:
        return None
    if type(value) is not str:
        raise invalid("RawArgs", value, "want a base64 string or null")
    try:
        # Go's base64 decoder skips \r and \n.
        return b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("RawArgs", value, "want standard base64 with padding") from None


def _json_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise invalid(key, value, "want a string")
    return value


def _json_int(doc: dict[str, Any], key: str, lo: int = _INT64_MIN, hi: int = _INT64_MAX) -> int:
    value = doc.get(key)
    if value is None:
        return 0
    if type(value) is not int or not lo <= value <= hi:
        raise invalid(key, value, f"want a JSON integer {lo}..{hi}")
    return value


def _json_time(key: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if type(value) is str:
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise invalid(key, value, "want an RFC 3339 time string or null")


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
                sig = new_object(Signature)
                set_attr(sig, "__dict__", fields)
                return sig
    return _from_json_doc_careful(doc)


def _from_json_doc_careful(doc: Any) -> Signature:
    if type(doc) is not dict:
        raise Invalid(f"message body is not a JSON object: {show(doc)}")
    doc = _fold_keys(doc, _JSON_FOLDED, _JSON_NULLABLE)
    ignore = doc.get("IgnoreWhenTaskNotRegistered", False)
    if type(ignore) is not bool:
        raise invalid("IgnoreWhenTaskNotRegistered", ignore, "want true or false")
    return make_signature(
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


def decode_json_body(body: bytes, headers: Mapping[str, Any] | None) -> Signature:
    """Decode a JSON-mode body; the DecodeError it raises keeps ``body`` and ``headers``."""
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
    except Invalid as exc:
        raise DecodeError(f"undecodable task message: {exc}", raw=body, headers=headers) from None


def decode_json(body: bytes) -> Signature:
    """Decode a JSON-mode body (Go's rules, see the module docs); DecodeError keeps ``raw``."""
    return decode_json_body(body, None)
