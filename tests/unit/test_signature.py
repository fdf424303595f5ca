"""The Signature model and its wire codecs, checked against the Go paota wire vectors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paota.core.errors import DecodeError
from paota.core.message import (
    Arg,
    Signature,
    WireMessage,
    decode_json,
    decode_message,
    encode_json,
    encode_message,
    format_time,
    parse_time,
)

UTC = UTC

# The wire contract lives in the repo; /work/shared (when present beside the repo) is the source.
VECTORS = Path(__file__).resolve().parent / "vectors" / "go-paota"
SHARED_VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "interop" / "go-paota"
VECTOR_FILES = ("full.json", "minimal.json", "zero_values.json")

CREATED = datetime(2026, 11, 27, 10, 30, 15, 123456, tzinfo=UTC)  # .123456789 truncated

EXPECTED: dict[str, Signature] = {
    "full.json": Signature(
        "ResizeImage",
        uuid="task_1f2e3d4c-5b6a-4789-8a7b-6c5d4e3f2a1b",
        args=(
            Arg("url", "string", "https://example.com/a.png"),
            Arg("width", "int", 640),
            Arg("ratio", "float64", 1.5),
            Arg("keep", "bool", True),
            Arg("tags", "[]string", ["a", "b"]),
        ),
        routing_key="paota_task_binding_key",
        priority=5,
        retry_count=3,
        retry_timeout=20,
        wait_time=0,
        retries_done=1,
        task_timeout=30,
        ignore_when_task_not_registered=False,
        created_at=CREATED,
        eta=datetime(2026, 11, 27, 10, 31, 0, tzinfo=UTC),
    ),
    "minimal.json": Signature(
        "Print",
        uuid="task_8c0e7d2a-4f6b-4f57-9d1e-0b9f3c6a2e11",
        args=(
            Arg(
                "",
                "string",
                '{"id":"1","name":"John Doe","email":"john.doe@example.com"}',
            ),
        ),
        routing_key="paota_task_binding_key",
        retry_count=10,
        ignore_when_task_not_registered=True,
        created_at=CREATED,
    ),
    "zero_values.json": Signature("Noop"),
}


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


# --------------------------------------------------------------------------------------------------
# The Go vectors


@pytest.mark.skipif(not SHARED_VECTORS.is_dir(), reason="no shared/ checkout beside the repo")
@pytest.mark.parametrize("name", [*VECTOR_FILES, "README.md"])
def test_repo_vectors_match_shared_copy(name: str) -> None:
    assert (VECTORS / name).read_bytes() == (SHARED_VECTORS / name).read_bytes()


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_go_vector_decodes_to_expected_signature(name: str) -> None:
    sig = decode_json(vector(name))
    assert sig == EXPECTED[name]
    for dt in (sig.created_at, sig.eta):
        assert dt is None or dt.tzinfo is UTC


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_go_vector_reencodes_like_go(name: str) -> None:
    body = vector(name)
    encoded = encode_json(decode_json(body))
    # Same bytes as Go, except that Python keeps microseconds where Go had nanoseconds.
    assert encoded == body.replace(b".123456789Z", b".123456Z")
    assert decode_json(encoded) == EXPECTED[name]
    # Key order and JSON types as Go writes them.
    go_doc = json.loads(body)
    py_doc = json.loads(encoded)
    assert list(py_doc) == list(go_doc)
    for key, value in go_doc.items():
        assert type(py_doc[key]) is type(value), key


def test_zero_values_vector_is_byte_exact() -> None:
    assert encode_json(Signature("Noop")) == vector("zero_values.json")


def test_message_decoding_of_go_json_vector_without_headers() -> None:
    assert decode_message(vector("full.json")) == EXPECTED["full.json"]
    assert decode_message(vector("full.json"), {}) == EXPECTED["full.json"]
    assert decode_message(vector("full.json"), {"x-death": []}) == EXPECTED["full.json"]


# --------------------------------------------------------------------------------------------------
# Go decoding rules


def test_lower_and_mixed_case_keys_are_accepted() -> None:
    doc = json.loads(vector("full.json"))
    lowered = {key.lower(): value for key, value in doc.items()}
    lowered["args"] = [{k.lower(): v for k, v in arg.items()} for arg in doc["Args"]]
    assert decode_json(json.dumps(lowered).encode()) == EXPECTED["full.json"]
    shouty = {key.upper(): value for key, value in doc.items()}
    assert decode_json(json.dumps(shouty).encode()) == EXPECTED["full.json"]
    # Go folds Unicode: U+212A KELVIN SIGN matches "k" in "TaskTimeOut".
    assert decode_json('{"Name":"x","tas\u212atimeout":7}'.encode()).task_timeout == 7


def test_unknown_fields_are_ignored() -> None:
    doc = json.loads(vector("minimal.json"))
    doc["GroupUUID"] = "g1"
    doc["OnSuccess"] = [{"Name": "next"}]
    doc["Args"][0]["Extra"] = {"x": 1}
    assert decode_json(json.dumps(doc).encode()) == EXPECTED["minimal.json"]


def test_missing_keys_and_nulls_take_zero_values() -> None:
    assert decode_json(b'{"Name":"Noop"}') == Signature("Noop")
    assert decode_json(b"{}") == Signature("")
    nulls: dict[str, Any] = {key: None for key in json.loads(vector("zero_values.json"))}
    nulls["Name"] = "Noop"
    assert decode_json(json.dumps(nulls).encode()) == Signature("Noop")
    sig = decode_json(b'{"Name":"t","Args":[{"Name":null,"Type":null,"Value":null},{}]}')
    assert sig.args == (Arg("", "", None), Arg("", "", None))


def test_duplicate_keys_last_wins_and_null_keeps_scalars() -> None:
    # Go: a later key overwrites; null into a non-pointer field is a no-op.
    assert decode_json(b'{"Name":"a","name":"b"}').name == "b"
    assert decode_json(b'{"Name":"a","Priority":4,"priority":null}').priority == 4


def test_whole_floats_written_by_go_come_back_as_floats() -> None:
    body = (
        b'{"Name":"t","Args":[{"Name":"r","Type":"float64","Value":1},'
        b'{"Name":"l","Type":"[]float64","Value":[1,2.5]},{"Name":"i","Type":"int","Value":1}]}'
    )
    r, lst, i = decode_json(body).args
    assert type(r.value) is float and r.value == 1.0
    assert lst.value == [1.0, 2.5] and all(type(v) is float for v in lst.value)
    assert type(i.value) is int


def test_go_html_escaping_and_unicode() -> None:
    sig = Signature("a<b>&c", args=[Arg.of("x\u2028y\u2029 é ✓", "s")])
    body = encode_json(sig)
    assert b'"Name":"a\\u003cb\\u003e\\u0026c"' in body
    assert b"\\u2028" in body and b"\\u2029" in body
    assert "é ✓".encode() in body  # Go writes non-ASCII as raw UTF-8
    assert decode_json(body) == sig


def test_lone_surrogates_still_encode() -> None:
    sig = Signature("bad\ud800name")
    assert decode_json(encode_json(sig)) == sig


def test_invalid_utf8_inside_strings_is_replaced_like_go() -> None:
    assert decode_json(b'{"Name":"a\xffb"}').name == "a\ufffdb"


def test_raw_args_in_json_mode() -> None:
    sig = Signature("t", raw_args=b"\x00\x01binary\xff")
    body = encode_json(sig)
    assert b'"RawArgs":"AAFiaW5hcnn/"' in body
    assert decode_json(body) == sig
    assert (
        decode_json(b'{"Name":"t","RawArgs":"AAFi\\r\\naW5hcnn/"}').raw_args
        == b"\x00\x01binary\xff"
    )
    assert decode_json(b'{"Name":"t","RawArgs":""}').raw_args == b""


# --------------------------------------------------------------------------------------------------
# Malformed bodies

MALFORMED: list[tuple[bytes, str]] = [
    (b"", "not valid JSON"),
    (b"not json", "not valid JSON"),
    (b'{"Name":"x"', "not valid JSON"),
    (b'{"Name":"x"} trailing', "not valid JSON"),
    (b'{"Name":"x","Args":[{"Name":"n","Type":"float64","Value":NaN}]}', "not valid JSON"),
    (b'{"Name":"x","Priority":Infinity}', "not valid JSON"),
    (b"\xef\xbb\xbf{}", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b"null", "not a JSON object"),
    (b'"Name"', "not a JSON object"),
    (b"42", "not a JSON object"),
    (b'{"Name":5}', "Name"),
    (b'{"Name":true}', "Name"),
    (b'{"Name":["x"]}', "Name"),
    (b'{"Name":"x","UUID":{}}', "UUID"),
    (b'{"Name":"x","RoutingKey":1}', "RoutingKey"),
    (b'{"Name":"x","Priority":"x"}', "Priority"),
    (b'{"Name":"x","Priority":300}', "Priority"),
    (b'{"Name":"x","Priority":256}', "Priority"),
    (b'{"Name":"x","Priority":-1}', "Priority"),
    (b'{"Name":"x","Priority":3.0}', "Priority"),
    (b'{"Name":"x","Priority":1e0}', "Priority"),
    (b'{"Name":"x","Priority":true}', "Priority"),
    (b'{"Name":"x","RetryCount":1.5}', "RetryCount"),
    (b'{"Name":"x","RetryCount":3.0}', "RetryCount"),
    (b'{"Name":"x","RetryCount":true}', "RetryCount"),
    (b'{"Name":"x","RetryCount":"3"}', "RetryCount"),
    (b'{"Name":"x","RetryCount":9223372036854775808}', "RetryCount"),
    (b'{"Name":"x","RetryTimeout":[]}', "RetryTimeout"),
    (b'{"Name":"x","WaitTime":false}', "WaitTime"),
    (b'{"Name":"x","RetriesDone":{}}', "RetriesDone"),
    (b'{"Name":"x","TaskTimeOut":0.5}', "TaskTimeOut"),
    (b'{"Name":"x","IgnoreWhenTaskNotRegistered":"true"}', "IgnoreWhenTaskNotRegistered"),
    (b'{"Name":"x","IgnoreWhenTaskNotRegistered":1}', "IgnoreWhenTaskNotRegistered"),
    (b'{"Name":"x","Args":{}}', "Args"),
    (b'{"Name":"x","Args":"a"}', "Args"),
    (b'{"Name":"x","Args":[1]}', "Args[0]"),
    (b'{"Name":"x","Args":[{"Name":"a","Type":"int","Value":1},"b"]}', "Args[1]"),
    (b'{"Name":"x","Args":[{"Name":1,"Type":"int","Value":1}]}', "Args[0].Name"),
    (b'{"Name":"x","Args":[{"Name":"a","Type":[],"Value":1}]}', "Args[0].Type"),
    (b'{"Name":"x","Args":[{"name":"a","type":7}]}', "Args[0].Type"),
    (b'{"Name":"x","RawArgs":5}', "RawArgs"),
    (b'{"Name":"x","RawArgs":"not base64!"}', "RawArgs"),
    (b'{"Name":"x","RawArgs":"abc"}', "RawArgs"),
    (b'{"Name":"x","RawArgs":[1,2]}', "RawArgs"),
    (b'{"Name":"x","CreatedAt":"yesterday"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-11-27"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-11-27T10:30:15"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-11-27 10:30:15Z"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-11-27T10:30:15.Z"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-11-27T10:30:15.1234567890Z"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-02-30T10:30:15Z"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-11-27T24:00:00Z"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":"2026-11-27T10:30:15+0100"}', "CreatedAt"),
    (b'{"Name":"x","CreatedAt":1795775415}', "CreatedAt"),
    (b'{"Name":"x","ETA":"2026-W48-5T10:30:15Z"}', "ETA"),
    (b'{"Name":"x","ETA":true}', "ETA"),
    (b'{"Name":"x","ETA":"2026-11-27T10:30:15+24:00"}', "ETA"),
]


@pytest.mark.parametrize(("body", "field"), MALFORMED)
def test_malformed_body_raises_decode_error_keeping_raw(body: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_json(body)
    assert info.value.raw is body
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("body", "field"), MALFORMED[::7])
def test_malformed_message_keeps_raw_and_headers(body: bytes, field: str) -> None:
    headers = {"x-death": [{"count": 1}]}
    with pytest.raises(DecodeError) as info:
        decode_message(body, headers)
    assert info.value.raw is body
    assert info.value.headers == headers
    assert field in str(info.value)


def test_decode_error_message_names_the_bad_value() -> None:
    with pytest.raises(DecodeError, match=r"Priority: 300"):
        decode_json(b'{"Name":"x","Priority":300}')
    with pytest.raises(DecodeError, match=r"CreatedAt: 'yesterday'"):
        decode_json(b'{"Name":"x","CreatedAt":"yesterday"}')


def test_huge_bad_values_are_shortened_in_messages() -> None:
    body = json.dumps({"Name": "x" * 10_000, "Priority": "y" * 10_000}).encode()
    with pytest.raises(DecodeError) as info:
        decode_json(body)
    assert len(str(info.value)) < 300


# --------------------------------------------------------------------------------------------------
# Times


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:31:00Z", datetime(2026, 11, 27, 10, 31, tzinfo=UTC)),
        ("2026-11-27T10:30:15.123456789Z", CREATED),
        ("2026-11-27T10:30:15.123456Z", CREATED),
        ("2026-11-27T10:30:15.1Z", datetime(2026, 11, 27, 10, 30, 15, 100000, tzinfo=UTC)),
        ("2026-11-27T10:30:15.000000001Z", datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC)),
        ("2026-11-27T23:59:59Z", datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC)),
        ("2026-11-27t10:30:15z", datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC)),
        ("2026-11-27T12:30:15+02:00", datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC)),
        ("2026-11-27T05:00:15.5-05:30", datetime(2026, 11, 27, 10, 30, 15, 500000, tzinfo=UTC)),
        ("2026-11-27T10:30:15-00:00", datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-27",
        "2026-11-27T10:30:15",
        "2026-11-27T10:30Z",
        "2026-11-27T10:30:15.Z",
        "2026-11-27T10:30:15.1234567890Z",
        "2026-11-27T10:30:15,5Z",
        "2026-11-27T10:30:15 Z",
        "2026-11-27T10:30:15+01",
        "2026-11-27T10:30:15+0100",
        "2026-11-27T10:30:15+01:60",
        "2026-11-27T25:30:15Z",
        "2026-11-27T24:00:00Z",
        "2026-13-27T10:30:15Z",
        "2026-11-27T10:30:60Z",
        "+2026-11-27T10:30:15Z",
        "2026-11-\uff127T10:30:15Z",  # FULLWIDTH DIGIT TWO
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time(text)


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (CREATED, "2026-11-27T10:30:15.123456Z"),
        (datetime(2026, 11, 27, 10, 31, tzinfo=UTC), "2026-11-27T10:31:00Z"),
        (datetime(2026, 11, 27, 10, 31, 0, 120000, tzinfo=UTC), "2026-11-27T10:31:00.12Z"),
        (datetime(2026, 11, 27, 10, 31, 0, 1, tzinfo=UTC), "2026-11-27T10:31:00.000001Z"),
        (
            datetime(2026, 11, 27, 12, 31, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-27T10:31:00.5Z",
        ),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
    ],
)
def test_format_time(dt: datetime, text: str) -> None:
    assert format_time(dt) == text
    assert parse_time(text) == dt


def test_format_time_rejects_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 11, 27))


# --------------------------------------------------------------------------------------------------
# Header mode

GO_HEADERS_EXAMPLE: dict[str, Any] = {
    # What amqp091-go's table looks like once aiormq/pamqp decoded it (Go int -> 32-bit AMQP int).
    "uuid": "task_8c0e7d2a-4f6b-4f57-9d1e-0b9f3c6a2e11",
    "task_name": "Print",
    "retry_count": 10,
    "retry_timeout": 0,
    "timeout": 30,
    "wait_time": 0,
    "retries_done": 2,
    "ignore_if_unregistered": True,
    "created_at": 1795775415,
}


def test_decode_go_style_headers() -> None:
    body = b'{"id":"1","name":"John Doe"}'
    sig = decode_message(body, GO_HEADERS_EXAMPLE)
    assert sig == Signature(
        "Print",
        uuid="task_8c0e7d2a-4f6b-4f57-9d1e-0b9f3c6a2e11",
        raw_args=body,
        retry_count=10,
        task_timeout=30,
        retries_done=2,
        ignore_when_task_not_registered=True,
        created_at=datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC),
    )
    assert sig.args == ()
    assert sig.eta is None


def test_decode_headers_in_other_shapes() -> None:
    headers = {
        "uuid": b"task_1",
        "task_name": b"Resize",
        "retry_count": b"3",
        "retry_timeout": "20",
        "timeout": " -1 ",
        "wait_time": 2**40,
        "ignore_if_unregistered": b"false",
        "created_at": datetime(2026, 11, 27, 10, 30, 15),  # pamqp-style naive -> UTC
        "eta": 1795775460.5,
        "priority": 7,  # read by Go's consumer too
        "routing_key": "rk",
    }
    sig = decode_message(memoryview(b"raw"), headers)  # type: ignore[arg-type]
    assert sig == Signature(
        "Resize",
        uuid="task_1",
        raw_args=b"raw",
        retry_count=3,
        retry_timeout=20,
        task_timeout=-1,
        wait_time=2**40,
        created_at=datetime(2026, 11, 27, 10, 30, 15, tzinfo=UTC),
        eta=datetime(2026, 11, 27, 10, 31, 0, 500000, tzinfo=UTC),
        priority=7,
        routing_key="rk",
    )
    assert type(sig.raw_args) is bytes
    aware = datetime(2026, 11, 27, 12, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    assert decode_message(b"x", {"task_name": "t", "eta": aware}).eta == aware


def test_header_mode_needs_task_name() -> None:
    # Without task_name the body is JSON, whatever other headers say.
    assert decode_message(vector("zero_values.json"), {"uuid": "u"}) == Signature("Noop")


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"task_name": 5}, "task_name"),
        ({"task_name": b"\xff"}, "task_name"),
        ({"task_name": "t", "uuid": 1.5}, "uuid"),
        ({"task_name": "t", "retry_count": "three"}, "retry_count"),
        ({"task_name": "t", "retry_count": True}, "retry_count"),
        ({"task_name": "t", "retry_count": 1.5}, "retry_count"),
        ({"task_name": "t", "retry_count": "1_000"}, "retry_count"),
        ({"task_name": "t", "timeout": 2**63}, "timeout"),
        ({"task_name": "t", "priority": 256}, "priority"),
        ({"task_name": "t", "ignore_if_unregistered": "maybe"}, "ignore_if_unregistered"),
        ({"task_name": "t", "ignore_if_unregistered": 2}, "ignore_if_unregistered"),
        ({"task_name": "t", "created_at": "yesterday"}, "created_at"),
        ({"task_name": "t", "eta": 10**20}, "eta"),
        ({"task_name": "t", "eta": float("nan")}, "eta"),
        ({"task_name": "t", "eta": [1]}, "eta"),
    ],
)
def test_bad_headers_raise_decode_error(headers: dict[str, Any], field: str) -> None:
    body = b"raw args"
    with pytest.raises(DecodeError) as info:
        decode_message(body, headers)
    assert info.value.raw is body
    assert info.value.headers == headers
    assert field in str(info.value)


def test_encode_header_mode() -> None:
    sig = Signature(
        "Resize",
        uuid="task_1",
        raw_args=b'{"w":640}',
        args=[Arg.of(1, "dropped")],
        routing_key="rk",
        priority=4,
        retry_count=3,
        retry_timeout=20,
        wait_time=5,
        retries_done=1,
        task_timeout=30,
        ignore_when_task_not_registered=True,
        created_at=CREATED,
        eta=datetime(2026, 11, 27, 10, 31, 0, 999999, tzinfo=UTC),
    )
    message = encode_message(sig)
    assert message == WireMessage(
        body=b'{"w":640}',
        headers={
            "uuid": "task_1",
            "task_name": "Resize",
            "retry_count": 3,
            "retry_timeout": 20,
            "timeout": 30,
            "wait_time": 5,
            "retries_done": 1,
            "ignore_if_unregistered": True,
            "created_at": 1795775415,
            "eta": 1795775460,
        },
        content_type="application/octet-stream",
    )
    # Header mode carries neither args, nor priority/routing key (AMQP properties), nor sub-seconds.
    assert decode_message(message.body, message.headers) == sig.replace(
        args=(),
        priority=0,
        routing_key="",
        created_at=CREATED.replace(microsecond=0),
        eta=datetime(2026, 11, 27, 10, 31, tzinfo=UTC),
    )


def test_encode_header_mode_floors_pre_epoch_seconds_like_go() -> None:
    sig = Signature("t", raw_args=b"x", created_at=datetime(1969, 12, 31, 23, 59, 59, 500000, UTC))
    assert encode_message(sig).headers["created_at"] == -1


def test_header_mode_leaves_out_unset_times() -> None:
    headers = encode_message(Signature("t", raw_args=b"x")).headers
    assert "created_at" not in headers and "eta" not in headers


@pytest.mark.parametrize("raw", [None, b"", b"null"])
def test_json_mode_unless_raw_args_has_content(raw: bytes | None) -> None:
    # As Go's publisher: empty or "null" raw args go in JSON mode (Go consumers drop empty bodies).
    sig = Signature("t", raw_args=raw, args=[Arg.of(1)])
    message = encode_message(sig)
    assert message.content_type == "application/json"
    assert message.headers == {}
    assert message.body == encode_json(sig)
    assert decode_message(message.body, message.headers) == sig


# --------------------------------------------------------------------------------------------------
# The Signature and Arg API


def test_signature_defaults_and_keyword_only() -> None:
    sig = Signature("t")
    assert sig.args == () and sig.uuid == "" and sig.raw_args is None and sig.priority == 0
    with pytest.raises(TypeError):
        Signature("t", ())  # type: ignore[call-arg]


def test_signature_args_become_a_tuple() -> None:
    args = [Arg.of(1, "a"), Arg.of("x", "b")]
    sig = Signature("t", args=args)
    assert sig.args == tuple(args)
    assert type(sig.args) is tuple
    assert Signature("t", args=(a for a in args)).args == tuple(args)


@pytest.mark.parametrize("bad", [[1], ["x"], [("a", "int", 1)], "abc", 5])
def test_signature_args_must_be_args(bad: Any) -> None:
    with pytest.raises(TypeError, match="args"):
        Signature("t", args=bad)


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"priority": 256}, ValueError, "priority"),
        ({"priority": -1}, ValueError, "priority"),
        ({"priority": 1.0}, TypeError, "priority"),
        ({"priority": True}, TypeError, "priority"),
        ({"retry_count": "3"}, TypeError, "retry_count"),
        ({"task_timeout": 2**63}, ValueError, "task_timeout"),
        ({"uuid": None}, TypeError, "uuid"),
        ({"routing_key": 1}, TypeError, "routing_key"),
        ({"raw_args": "text"}, TypeError, "raw_args"),
        ({"ignore_when_task_not_registered": 1}, TypeError, "ignore_when_task_not_registered"),
        ({"created_at": datetime(2026, 11, 27)}, ValueError, "created_at"),
        ({"eta": datetime(2026, 11, 27)}, ValueError, "eta"),
        ({"eta": "2026-11-27T10:31:00Z"}, TypeError, "eta"),
    ],
)
def test_signature_validation(changes: dict[str, Any], error: type[Exception], field: str) -> None:
    with pytest.raises(error, match=field):
        Signature("t", **changes)
    with pytest.raises(error, match=field):
        Signature("t").replace(**changes)


def test_signature_name_must_be_str() -> None:
    with pytest.raises(TypeError, match="name"):
        Signature(b"t")  # type: ignore[arg-type]


def test_raw_args_bytearray_is_stored_as_bytes() -> None:
    sig = Signature("t", raw_args=bytearray(b"ab"))
    assert sig.raw_args == b"ab" and type(sig.raw_args) is bytes


def test_replace_and_frozen() -> None:
    sig = EXPECTED["full.json"]
    retried = sig.replace(retries_done=2, eta=None)
    assert retried.retries_done == 2 and retried.eta is None and retried.name == sig.name
    assert sig.retries_done == 1
    with pytest.raises(AttributeError):
        sig.name = "x"  # type: ignore[misc]


def test_arg_lookup_and_kwargs() -> None:
    sig = EXPECTED["full.json"]
    assert sig.arg("width") == 640
    assert sig.arg("nope", None) is None
    assert sig.arg("nope", default=3) == 3
    with pytest.raises(KeyError) as info:
        sig.arg("height")
    message = str(info.value)
    assert "ResizeImage" in message and "height" in message and "width" in message
    assert sig.kwargs == {
        "url": "https://example.com/a.png",
        "width": 640,
        "ratio": 1.5,
        "keep": True,
        "tags": ["a", "b"],
    }
    assert EXPECTED["minimal.json"].kwargs == {}  # the unnamed arg is positional only
    decoded = decode_json(vector("full.json"))
    assert decoded.kwargs == sig.kwargs and decoded.arg("keep") is True


@pytest.mark.parametrize(
    ("value", "go_type"),
    [
        (True, "bool"),
        (0, "int"),
        (-(2**70), "int"),
        (1.5, "float64"),
        ("s", "string"),
        (None, "interface{}"),
        (["a", "b"], "[]string"),
        ([1, 2], "[]int"),
        ([1.5, 2], "[]float64"),
        ([True, False], "[]bool"),
        ([], "[]interface{}"),
        ([1, "a", None], "[]interface{}"),
        ({"k": [1, {"x": None}]}, "map[string]interface{}"),
        ({}, "map[string]interface{}"),
    ],
)
def test_arg_of_infers_go_types(value: Any, go_type: str) -> None:
    arg = Arg.of(value, "n")
    assert arg == Arg("n", go_type, value)
    assert Arg.of(value).name == ""


def test_arg_of_tuple_becomes_list() -> None:
    assert Arg.of(("a", "b")) == Arg("", "[]string", ["a", "b"])


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"bytes", TypeError),
        (object(), TypeError),
        ({1: "x"}, TypeError),
        ({"k": {1, 2}}, TypeError),
        ([datetime(2026, 1, 1)], TypeError),
        (float("nan"), ValueError),
        ([float("inf")], ValueError),
    ],
)
def test_arg_of_rejects_non_json(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Arg.of(value)


def test_encode_rejects_non_json_arg_values() -> None:
    with pytest.raises(TypeError, match="'t'"):
        encode_json(Signature("t", args=[Arg("x", "set", {1, 2})]))
    with pytest.raises(ValueError, match="'t'"):
        encode_json(Signature("t", args=[Arg("x", "float64", float("nan"))]))
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="'t'"):
        encode_json(Signature("t", args=[Arg("x", "[]interface{}", cycle)]))


# --------------------------------------------------------------------------------------------------
# Property: every Signature survives the trip

INT64 = st.integers(-(2**63), 2**63 - 1)
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
TIMES = st.none() | st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
GO_TYPES = st.sampled_from(
    ["string", "int", "int64", "float64", "bool", "[]string", "[]float64", "interface{}", ""]
)
ARGS = st.builds(Arg, st.text(max_size=12), GO_TYPES, JSON_VALUES) | st.builds(
    Arg.of, JSON_VALUES, st.text(max_size=12)
)
SIGNATURES = st.builds(
    Signature,
    st.text(),
    args=st.lists(ARGS, max_size=4),
    uuid=st.text(max_size=40),
    raw_args=st.none() | st.binary(max_size=64),
    routing_key=st.text(max_size=20),
    priority=st.integers(0, 255),
    retry_count=INT64,
    retry_timeout=INT64,
    wait_time=INT64,
    retries_done=INT64,
    task_timeout=INT64,
    ignore_when_task_not_registered=st.booleans(),
    created_at=TIMES,
    eta=TIMES,
)


@given(SIGNATURES)
def test_json_round_trip(sig: Signature) -> None:
    body = encode_json(sig)
    decoded = decode_json(body)
    assert decoded == sig
    assert decode_json(encode_json(decoded)) == sig  # stable (whole floats may gain ".0")
    assert list(json.loads(body)) == list(json.loads(vector("zero_values.json")))


@given(SIGNATURES)
def test_message_round_trip(sig: Signature) -> None:
    message = encode_message(sig)
    decoded = decode_message(message.body, message.headers)
    if message.content_type == "application/json":
        assert decoded == sig
        return

    def whole_seconds(dt: datetime | None) -> datetime | None:
        return None if dt is None else dt.replace(microsecond=0)

    assert message.body == sig.raw_args
    assert decoded == sig.replace(
        args=(),
        priority=0,
        routing_key="",
        created_at=whole_seconds(sig.created_at),
        eta=whole_seconds(sig.eta),
    )


@pytest.mark.parametrize(("name", "go_type"), [(1, "int"), ("n", None)])
def test_arg_name_and_type_must_be_str(name: Any, go_type: Any) -> None:
    with pytest.raises(TypeError, match="Arg"):
        Arg(name, go_type, 1)
