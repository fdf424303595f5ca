"""The field table against Go's struct and headers, and every codec against the table.

A field added, renamed or respelled in one place only must fail here (or at import).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import linecache
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import paota.core.message as message
from paota.core.errors import DecodeError
from paota.core.message import (
    FIELDS,
    Arg,
    Field,
    Kind,
    Signature,
    decode_json,
    decode_message,
    encode_json,
    encode_message,
)
from paota.core.message.fields import FIELDS_BY_NAME, GO_KEYS, HEADER_WRITES
from paota.core.message.header_codec import HEADER_MODE_KEY

VECTORS = Path(__file__).resolve().parent / "vectors" / "go-paota"
UTC = UTC
WHEN = datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC)

# Go's side, as its publisher writes it (vectors/go-paota/README.md, buildHeadersFromSignature) and
# as its consumer reads it (routing_key and priority too).
GO_HEADERS_WRITTEN = [
    "uuid",
    "task_name",
    "retry_count",
    "retry_timeout",
    "timeout",
    "wait_time",
    "retries_done",
    "ignore_if_unregistered",
    "created_at",
    "eta",
]
GO_HEADERS_READ = {*GO_HEADERS_WRITTEN, "routing_key", "priority"}

# A value of each kind that is not the zero value, as a Signature holds it, as JSON carries it and
# as a header carries it.
SAMPLE: dict[Kind, tuple[Any, Any, Any]] = {
    Kind.STR: ("x", "x", "x"),
    Kind.ARGS: ((Arg("a", "int", 1),), [{"Name": "a", "Type": "int", "Value": 1}], None),
    Kind.RAW: (b"\x00raw", "AHJhdw==", None),
    Kind.UINT8: (7, 7, 7),
    Kind.INT64: (-(2**40), -(2**40), -(2**40)),
    Kind.BOOL: (True, True, True),
    Kind.TIME: (WHEN, "2026-11-27T10:30:15Z", 1795775415),
}
# A value of the wrong type for each kind.
WRONG_TYPE: dict[Kind, Any] = {
    Kind.STR: 1,
    Kind.ARGS: 5,
    Kind.RAW: "text",
    Kind.UINT8: "1",
    Kind.INT64: 1.0,
    Kind.BOOL: 1,
    Kind.TIME: "2026-11-27T10:30:15Z",
}
INT_FIELDS = [f for f in FIELDS if f.kind.int_range is not None]


def ids(field: Field) -> str:
    return field.name


# --------------------------------------------------------------------------------------------------
# The table against Go


@pytest.mark.parametrize("vector", ["full.json", "minimal.json", "zero_values.json"])
def test_go_keys_are_go_struct_order(vector: str) -> None:
    assert list(json.loads((VECTORS / vector).read_bytes())) == list(GO_KEYS)


def test_header_keys_are_gos() -> None:
    assert [f.header_key for f in HEADER_WRITES] == GO_HEADERS_WRITTEN
    assert {f.header_key for f in FIELDS if f.header_key is not None} == GO_HEADERS_READ
    assert HEADER_MODE_KEY == "task_name"


def test_table_is_consistent() -> None:
    names = [f.name for f in FIELDS]
    assert len(set(names)) == len(names)
    # Go matches JSON keys case-insensitively, so two keys must differ by more than case.
    assert len({f.go_key.casefold() for f in FIELDS}) == len(FIELDS)
    header_keys = [f.header_key for f in FIELDS if f.header_key is not None]
    assert len(set(header_keys)) == len(header_keys)
    orders = [f.header_order for f in FIELDS if f.header_order is not None]
    assert sorted(orders) == list(range(1, len(orders) + 1))
    for field in FIELDS:
        assert field.header_writes == (field.header_order is not None)
        assert field.header_key is not None or not field.header_writes, field
    assert {f.name: f for f in FIELDS} == FIELDS_BY_NAME


# --------------------------------------------------------------------------------------------------
# The model against the table


def test_signature_fields_are_the_tables() -> None:
    # Spelled out in the class for the type checker: attributes, constructor, defaults.
    assert {f.name for f in dataclasses.fields(Signature)} == set(FIELDS_BY_NAME)
    params = inspect.signature(Signature.__init__).parameters
    assert set(params) - {"self"} == set(FIELDS_BY_NAME)
    for f in dataclasses.fields(Signature):
        kind = FIELDS_BY_NAME[f.name].kind
        if f.name != "name":
            assert f.default == kind.zero, f.name
            assert params[f.name].default == kind.zero, f.name
    sig = Signature("")
    assert {f.name: getattr(sig, f.name) for f in FIELDS} == {f.name: f.kind.zero for f in FIELDS}
    assert list(vars(sig)) == [f.name for f in dataclasses.fields(Signature)]


@pytest.mark.parametrize("field", FIELDS, ids=ids)
def test_every_field_is_type_checked(field: Field) -> None:
    with pytest.raises(TypeError, match=rf"Signature\.{field.name}\b"):
        Signature("t").replace(**{field.name: WRONG_TYPE[field.kind]})
    value = SAMPLE[field.kind][0]
    assert getattr(Signature("t").replace(**{field.name: value}), field.name) == value


@pytest.mark.parametrize("field", INT_FIELDS, ids=ids)
def test_every_int_field_is_range_checked(field: Field) -> None:
    lo, hi = field.kind.int_range or (0, 0)
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ValueError, match=rf"Signature\.{field.name}\b"):
            Signature("t").replace(**{field.name: bad})
    assert getattr(Signature("t").replace(**{field.name: hi}), field.name) == hi


# --------------------------------------------------------------------------------------------------
# JSON mode against the table


def test_json_encoder_writes_the_tables_keys_in_order() -> None:
    body = json.loads(encode_json(Signature("t")))
    assert list(body) == list(GO_KEYS)
    assert body == {f.go_key: None if f.kind.nullable else f.kind.zero for f in FIELDS} | {
        "Name": "t"
    }


@pytest.mark.parametrize("field", FIELDS, ids=ids)
def test_json_mode_carries_every_field(field: Field) -> None:
    value, json_value, _ = SAMPLE[field.kind]
    sig = Signature("t").replace(**{field.name: value})
    doc = json.loads(encode_json(sig))
    assert doc[field.go_key] == json_value
    assert decode_json(encode_json(sig)) == sig  # the fast path
    folded = {key.lower(): item for key, item in doc.items()}
    assert decode_json(json.dumps(folded).encode()) == sig  # the careful path
    alone = json.dumps({field.go_key: json_value}).encode()
    assert getattr(decode_json(alone), field.name) == value


@pytest.mark.parametrize("field", [f for f in FIELDS if f.kind is not Kind.ARGS], ids=ids)
def test_json_decoders_name_a_bad_field_by_its_go_key(field: Field) -> None:
    doc = json.loads(encode_json(Signature("t")))
    doc[field.go_key] = [] if field.kind is not Kind.RAW else 5
    for body in (doc, {field.go_key.lower(): doc[field.go_key]}):  # fast, careful
        with pytest.raises(DecodeError, match=rf"invalid {field.go_key}:"):
            decode_json(json.dumps(body).encode())


@pytest.mark.parametrize("field", INT_FIELDS, ids=ids)
def test_json_decoders_check_int_ranges(field: Field) -> None:
    _, hi = field.kind.int_range or (0, 0)
    doc = json.loads(encode_json(Signature("t")))
    doc[field.go_key] = hi + 1
    for body in (doc, {field.go_key: hi + 1}):  # fast, careful
        with pytest.raises(DecodeError, match=rf"invalid {field.go_key}: {hi + 1}"):
            decode_json(json.dumps(body).encode())


# --------------------------------------------------------------------------------------------------
# Header mode against the table


def test_header_encoder_writes_the_tables_header_keys_in_order() -> None:
    every = Signature("t", raw_args=b"x", created_at=WHEN, eta=WHEN)
    assert list(encode_message(every).headers) == [f.header_key for f in HEADER_WRITES]
    untimed = Signature("t", raw_args=b"x")
    expected = [f.header_key for f in HEADER_WRITES if f.kind is not Kind.TIME]
    assert list(encode_message(untimed).headers) == expected


@pytest.mark.parametrize("field", FIELDS, ids=ids)
def test_header_mode_carries_what_the_table_says(field: Field) -> None:
    value, _, header_value = SAMPLE[field.kind]
    sig = Signature("t", raw_args=b"x").replace(**{field.name: value})
    message = encode_message(sig)
    decoded = decode_message(message.body, message.headers)
    key = field.header_key
    if field.header_writes:
        assert key is not None
        assert message.headers[key] == header_value
        assert getattr(decoded, field.name) == value
    elif field.kind is Kind.RAW:
        assert message.body == value == decoded.raw_args
    else:
        assert getattr(decoded, field.name) == field.kind.zero
    if key is not None:  # read even where not written
        headers = {HEADER_MODE_KEY: "t", key: header_value}
        assert getattr(decode_message(b"x", headers), field.name) == value


@pytest.mark.parametrize("field", [f for f in FIELDS if f.header_key is not None], ids=ids)
def test_header_decoder_names_a_bad_header(field: Field) -> None:
    key = str(field.header_key)
    headers = {HEADER_MODE_KEY: "t", key: [1]}
    with pytest.raises(DecodeError, match=rf"invalid header {key}:"):
        decode_message(b"x", headers)


# --------------------------------------------------------------------------------------------------
# The generated code and the compatibility module


@pytest.mark.parametrize(
    "function",
    [encode_json, Signature.__post_init__, message.header_codec.encode_headers],
    ids=lambda f: f.__qualname__,
)
def test_generated_functions_read_like_the_module_they_belong_to(function: Any) -> None:
    assert function.__module__.startswith("paota.core.message.")
    assert function.__doc__
    code = function.__code__
    assert linecache.getline(code.co_filename, code.co_firstlineno).startswith("def ")
