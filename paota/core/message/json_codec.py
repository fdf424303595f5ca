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
from string import Template
from typing import TYPE_CHECKING, Any, Final

from paota.core.errors import DecodeError
from paota.core.message._common import Invalid, compile_function, invalid, show
from paota.core.message.fields import FIELDS, GO_KEYS, Field, Kind
from paota.core.message.model import (
    ATTRIBUTE_ORDER,
    Arg,
    Signature,
    make_signature,
    new_object,
    set_attr,
)
from paota.core.message.times import format_time, parse_time

__all__ = ["CONTENT_TYPE_JSON", "decode_json", "encode_json"]

CONTENT_TYPE_JSON: Final = "application/json"

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


_TO_DOC: Final[dict[Kind, Callable[[Any], Any]]] = {
    Kind.STR: lambda value: value,
    Kind.ARGS: lambda args: (
        [{"Name": a.name, "Type": a.type, "Value": a.value} for a in args] or None
    ),
    Kind.RAW: lambda raw: None if raw is None else b64encode(raw).decode("ascii"),
    Kind.UINT8: lambda value: value,
    Kind.INT64: lambda value: value,
    Kind.BOOL: lambda value: value,
    Kind.TIME: lambda dt: None if dt is None else format_time(dt),
}


def _json_doc(sig: Signature) -> dict[str, Any]:
    # The body as a dict, for json's encoder: the slow path of encode_json.
    return {f.go_key: _TO_DOC[f.kind](getattr(sig, f.name)) for f in FIELDS}


# encode_json is generated from the table: statements that compute the JSON text of the fields an
# expression cannot write (one block per field of such a kind), then one f-string that writes every
# field in Go's order (one line per field). Assembled this way it is about twice as fast as
# json.dumps of a dict. Every top-level field has a known type (checked by Signature.__post_init__
# or by the decoder), so ints go in as they are. In the templates, $attr is the Signature attribute,
# which also names the block's local variables. print(_ENCODE_JSON_SOURCE) shows the result.
_ENCODE_BLOCK: Final = {
    Kind.ARGS: """\
    try:
        $attr = sig.$attr
        if $attr:
            parts = []
            for a in $attr:
                value = a.value
                kind = type(value)
                if kind is str:
                    value_json = _es(value)
                elif kind is int:
                    value_json = _int_repr(value)
                else:
                    value_json = _value_json(value)
                parts.append(f'{{"Name":{_es(a.name)},"Type":{_es(a.type)},"Value":{value_json}}}')
            ${attr}_json = "[" + ",".join(parts) + "]"
        else:
            ${attr}_json = "null"
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"cannot encode the args of task {sig.name!r} as JSON: {exc}") from exc
""",
    Kind.RAW: """\
    $attr = sig.$attr
    ${attr}_json = "null" if $attr is None else f'"{b64encode($attr).decode("ascii")}"'
""",
    Kind.TIME: """\
    $attr = sig.$attr
    ${attr}_json = "null" if $attr is None else f'"{format_time($attr)}"'
""",
}
_ENCODE_VALUE: Final = {
    Kind.STR: "{_es(sig.$attr)}",
    Kind.ARGS: "{${attr}_json}",
    Kind.RAW: "{${attr}_json}",
    Kind.UINT8: "{sig.$attr}",
    Kind.INT64: "{sig.$attr}",
    Kind.BOOL: '{"true" if sig.$attr else "false"}',
    Kind.TIME: "{${attr}_json}",
}
_ENCODE_END: Final = """\
    if "<" in text or ">" in text or "&" in text or "\\u2028" in text or "\\u2029" in text:
        text = text.translate(_GO_ESCAPES)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in some string: write \\udXXX escapes instead (still valid JSON).
        return _encode_ascii(_json_doc(sig)).translate(_GO_ESCAPES).encode("ascii")
"""
_ENCODE_LOCALS: Final = frozenset(
    {"sig", "text", "parts", "a", "value", "kind", "value_json", "exc"}
)


def _checked_name(field: Field, reserved: frozenset[str]) -> str:
    # The generated code uses attributes as local names and puts JSON keys in string literals.
    if not field.name.isidentifier() or field.name in reserved or not field.go_key.isidentifier():
        raise ValueError(f"cannot generate code for field {field}: rename it")
    return field.name


def _encode_json_source() -> str:
    lines = [
        "def encode_json(sig):",
        f'    """{_ENCODE_JSON_DOC}"""',
    ]
    pieces = []
    for field in FIELDS:
        attr = _checked_name(field, _ENCODE_LOCALS | _ENCODE_NAMESPACE.keys())
        block = _ENCODE_BLOCK.get(field.kind)
        if block is not None:
            lines.append(Template(block).substitute(attr=attr).rstrip("\n"))
        pieces.append(
            f'"{field.go_key}":' + Template(_ENCODE_VALUE[field.kind]).substitute(attr=attr)
        )
    lines.append("    text = (")
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        start = "{{" if i == 0 else ""
        end = "}}" if i == last else ","
        lines.append(f"        f'{start}{piece}{end}'")
    lines.append("    )")
    lines.append(_ENCODE_END.rstrip("\n"))
    return "\n".join(lines) + "\n"


_ENCODE_JSON_DOC: Final = (
    "The JSON-mode body for ``sig``, as Go's ``json.Marshal`` writes the Go struct (UTF-8)."
)
_ENCODE_NAMESPACE: Final = {
    "__name__": __name__,
    "_GO_ESCAPES": _GO_ESCAPES,
    "_encode_ascii": _encode_ascii,
    "_es": _es,
    "_int_repr": _int_repr,
    "_value_json": _value_json,
    "_json_doc": _json_doc,
    "b64encode": b64encode,
    "format_time": format_time,
}
_ENCODE_JSON_SOURCE: Final = _encode_json_source()

if TYPE_CHECKING:  # what the type checker sees of the generated function

    def encode_json(sig: Signature) -> bytes:
        """The JSON-mode body for ``sig``, as Go's ``json.Marshal`` writes the Go struct (UTF-8)."""

else:
    encode_json = compile_function("encode_json", _ENCODE_JSON_SOURCE, dict(_ENCODE_NAMESPACE))


# --------------------------------------------------------------------------------------------------
# Decoding


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode

_JSON_KEYSET: Final = frozenset(GO_KEYS)
# Go matches keys with Unicode simple case folding (U+017F long s matches "s", U+212A Kelvin "k").
_JSON_FOLDED: Final = {k.casefold(): k for k in GO_KEYS}
# Decoding null into a Go pointer/slice/interface sets it to nil; into anything else it is a no-op.
_JSON_NULLABLE: Final = frozenset(f.go_key for f in FIELDS if f.kind.nullable)
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


def _arg_fields(key: str, index: int, item: Any) -> tuple[str, str, Any]:
    # The careful path for one arg: any key case, nulls, and errors.
    if type(item) is not dict:
        raise invalid(f"{key}[{index}]", item, "want a JSON object {Name, Type, Value}")
    item = _fold_keys(item, _ARG_FOLDED, _ARG_NULLABLE)
    name = item.get("Name", "")
    if type(name) is not str:
        raise invalid(f"{key}[{index}].Name", name, "want a string")
    type_ = item.get("Type", "")
    if type(type_) is not str:
        raise invalid(f"{key}[{index}].Type", type_, "want a string")
    return name, type_, item.get("Value")


def _decode_args(value: Any, key: str) -> tuple[Arg, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise invalid(key, value, "want a JSON array of {Name, Type, Value} objects or null")
    out: list[Arg] = []
    append = out.append
    for index, item in enumerate(value):
        # Fast path: exactly {"Name": str, "Type": str, "Value": ...}.
        if type(item) is dict and len(item) == 3:
            try:
                name = item["Name"]
                type_ = item["Type"]
                val = item["Value"]
            except KeyError:
                name, type_, val = _arg_fields(key, index, item)
            else:
                if type(name) is not str or type(type_) is not str:
                    name, type_, val = _arg_fields(key, index, item)
        else:
            name, type_, val = _arg_fields(key, index, item)
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


def _decode_raw_args(value: Any, key: str) -> bytes | None:
    if value is None:
        return None
    if type(value) is not str:
        raise invalid(key, value, "want a base64 string or null")
    try:
        # Go's base64 decoder skips \r and \n.
        return b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(key, value, "want standard base64 with padding") from None


# The careful path reads each kind with one of these; ``doc`` has Go's keys (folded, nulls that Go
# ignores dropped), and a missing key gives the zero value.


def _json_str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise invalid(key, value, "want a string")
    return value


def _json_int(doc: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = doc.get(key)
    if value is None:
        return 0
    if type(value) is not int or not lo <= value <= hi:
        raise invalid(key, value, f"want a JSON integer {lo}..{hi}")
    return value


def _json_bool(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if type(value) is not bool:
        raise invalid(key, value, "want true or false")
    return value


def _json_time(doc: dict[str, Any], key: str) -> datetime | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is str:
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise invalid(key, value, "want an RFC 3339 time string or null")


# Both paths of the decoder are generated from the table (print _FROM_JSON_DOC_SOURCE to read
# them). The careful path takes any key case, nulls and missing keys, and names the first bad field
# in attribute order; it reads each field with one call. In the templates, $attr is the Signature
# attribute (also a local name), $key the JSON key as a literal, $lo/$hi the range of an integer.
_CAREFUL_VALUE: Final = {
    Kind.STR: "_json_str(doc, $key)",
    Kind.ARGS: "_decode_args(doc.get($key), $key)",
    Kind.RAW: "_decode_raw_args(doc.get($key), $key)",
    Kind.UINT8: "_json_int(doc, $key, $lo, $hi)",
    Kind.INT64: "_json_int(doc, $key, $lo, $hi)",
    Kind.BOOL: "_json_bool(doc, $key)",
    Kind.TIME: "_json_time(doc, $key)",
}


def _careful_source() -> str:
    lines = [
        "def _from_json_doc_careful(doc):",
        "    if type(doc) is not dict:",
        '        raise Invalid(f"message body is not a JSON object: {show(doc)}")',
        "    doc = _fold_keys(doc, _JSON_FOLDED, _JSON_NULLABLE)",
        "    return make_signature({",
    ]
    for f in ATTRIBUTE_ORDER:
        lo, hi = f.kind.int_range or (0, 0)
        value = Template(_CAREFUL_VALUE[f.kind]).substitute(key=repr(f.go_key), lo=lo, hi=hi)
        lines.append(f"        {f.name!r}: {value},")
    lines.append("    })")
    return "\n".join(lines) + "\n"


# The fast path: when the document has exactly Go's keys (what every Go or paota publisher sends),
# read every field, check the scalars in one condition, decode the others in one dict literal;
# anything else goes the careful path.
_FAST_CHECK: Final = {
    Kind.STR: ("type($attr) is str",),
    Kind.UINT8: ("type($attr) is int", "$lo <= $attr <= $hi"),
    Kind.INT64: ("type($attr) is int", "$lo <= $attr <= $hi"),
    Kind.BOOL: ("type($attr) is bool",),
}
_FAST_VALUE: Final = {
    Kind.ARGS: "() if $attr is None else _decode_args($attr, $key)",
    Kind.RAW: "None if $attr is None else _decode_raw_args($attr, $key)",
    Kind.TIME: "None if $attr is None else parse_time($attr)",
}
_DECODE_LOCALS: Final = frozenset({"doc", "fields", "sig"})


def _from_json_doc_source() -> str:
    reserved = _DECODE_LOCALS | _DECODE_NAMESPACE.keys()
    scalars = [f for f in FIELDS if f.kind in _FAST_CHECK]
    others = [f for f in FIELDS if f.kind not in _FAST_CHECK]
    lines = [
        "def _from_json_doc(doc):",
        "    if type(doc) is dict and doc.keys() == _JSON_KEYSET:",
        "        # Fast path: exactly Go's keys, scalars well typed.",
    ]
    lines += [f"        {_checked_name(f, reserved)} = doc[{f.go_key!r}]" for f in scalars]
    checks = []
    for f in scalars:
        lo, hi = f.kind.int_range or (0, 0)
        checks += [Template(c).substitute(attr=f.name, lo=lo, hi=hi) for c in _FAST_CHECK[f.kind]]
    lines.append("        if (")
    lines.append(f"            {checks[0]}")
    lines += [f"            and {check}" for check in checks[1:]]
    lines.append("        ):")
    lines += [f"            {_checked_name(f, reserved)} = doc[{f.go_key!r}]" for f in others]
    lines.append("            try:")
    lines.append("                fields = {")
    for f in ATTRIBUTE_ORDER:
        template = _FAST_VALUE.get(f.kind, "$attr")
        value = Template(template).substitute(attr=f.name, key=repr(f.go_key))
        lines.append(f"                    {f.name!r}: {value},")
    lines += [
        "                }",
        "            except (ValueError, TypeError):",
        "                pass  # a bad time: the careful path says which",
        "            else:",
        "                sig = new_object(Signature)",
        '                set_attr(sig, "__dict__", fields)',
        "                return sig",
        "    return _from_json_doc_careful(doc)",
    ]
    return "\n".join(lines) + "\n"


_DECODE_NAMESPACE: Final = {
    "__name__": __name__,
    "Invalid": Invalid,
    "show": show,
    "make_signature": make_signature,
    "_fold_keys": _fold_keys,
    "_JSON_FOLDED": _JSON_FOLDED,
    "_JSON_NULLABLE": _JSON_NULLABLE,
    "_json_str": _json_str,
    "_json_int": _json_int,
    "_json_bool": _json_bool,
    "_json_time": _json_time,
    "_JSON_KEYSET": _JSON_KEYSET,
    "Signature": Signature,
    "new_object": new_object,
    "set_attr": set_attr,
    "parse_time": parse_time,
    "_decode_args": _decode_args,
    "_decode_raw_args": _decode_raw_args,
}
_FROM_JSON_DOC_SOURCE: Final = _careful_source() + "\n\n" + _from_json_doc_source()
_from_json_doc: Callable[[Any], Signature] = compile_function(
    "_from_json_doc", _FROM_JSON_DOC_SOURCE, dict(_DECODE_NAMESPACE)
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
