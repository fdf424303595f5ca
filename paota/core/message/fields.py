"""The one table of :class:`~paota.core.message.Signature` fields, that everything else derives from.

:data:`FIELDS` lists every field of the Go paota ``Signature`` struct in Go's struct order, which is
the key order of a JSON-mode body. For each field it says:

- ``name``: the :class:`~paota.core.message.Signature` attribute;
- ``go_key``: the Go struct field, which is also the JSON key (Go paota's struct has no JSON tags);
- ``kind``: its Go type (:class:`Kind`), which decides how it is validated, written and read;
- ``header_key``: the AMQP header that carries it in header mode, or ``None`` when no header does
  (``Args`` does not travel in header mode; ``RawArgs`` is the body);
- ``header_order``: where header mode writes that header, or ``None`` when header mode only reads
  it (``routing_key`` and ``priority`` travel as AMQP properties; Go's consumer also accepts them as
  headers).

The signature checks, the JSON encoder and both JSON decoders, and the header encoder and decoder are
built from this table, so a field is added (or a key respelled) here and nowhere else. The
``Signature`` class spells its attributes out as well, for the type checker; the model and the tests
check that they match the table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "FIELDS",
    "FIELDS_BY_NAME",
    "GO_KEYS",
    "HEADER_WRITES",
    "INT64_MAX",
    "INT64_MIN",
    "Field",
    "Kind",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class Kind(enum.Enum):
    """The Go type of a field (the member's value is Go's spelling)."""

    STR = "string"
    ARGS = "[]Arg"
    RAW = "[]byte"
    UINT8 = "uint8"
    INT64 = "int"  # Go's int is 64 bits wide on every platform Go paota runs on
    BOOL = "bool"
    TIME = "*time.Time"

    @property
    def int_range(self) -> tuple[int, int] | None:
        """``(lo, hi)`` for the integer kinds, ``None`` for the others."""
        return _INT_RANGES.get(self)

    @property
    def nullable(self) -> bool:
        """Whether Go's JSON ``null`` sets the field to nil (a slice or a pointer).

        Into any other Go type, decoding ``null`` is a no-op: the field keeps its zero value.
        """
        return self in (Kind.ARGS, Kind.RAW, Kind.TIME)

    @property
    def zero(self) -> Any:
        """Go's zero value, as a :class:`~paota.core.message.Signature` stores it."""
        return _ZEROS[self]


_INT_RANGES: Final = {Kind.UINT8: (0, 255), Kind.INT64: (INT64_MIN, INT64_MAX)}
_ZEROS: Final[dict[Kind, Any]] = {
    Kind.STR: "",
    Kind.ARGS: (),
    Kind.RAW: None,
    Kind.UINT8: 0,
    Kind.INT64: 0,
    Kind.BOOL: False,
    Kind.TIME: None,
}


@dataclass(frozen=True)
class Field:
    """One row of :data:`FIELDS` (see the module docs for the columns)."""

    name: str
    go_key: str
    kind: Kind
    header_key: str | None
    header_order: int | None

    @property
    def header_writes(self) -> bool:
        """Whether header mode writes this field as a header."""
        return self.header_order is not None


STR, ARGS, RAW, UINT8, INT64, BOOL, TIME = Kind

# The order header mode writes its headers in is the order of Go's buildHeadersFromSignature (Go
# itself sends them in map order, which is random); it is kept so that the tables paota publishes
# stay the same from one version to the next.
# fmt: off
FIELDS: Final[tuple[Field, ...]] = tuple(Field(*row) for row in (
    # Signature attribute               Go key = JSON key              kind   header key                order
    ("uuid",                            "UUID",                        STR,   "uuid",                   1),
    ("name",                            "Name",                        STR,   "task_name",              2),
    ("args",                            "Args",                        ARGS,  None,                     None),
    ("raw_args",                        "RawArgs",                     RAW,   None,                     None),
    ("routing_key",                     "RoutingKey",                  STR,   "routing_key",            None),
    ("priority",                        "Priority",                    UINT8, "priority",               None),
    ("retry_count",                     "RetryCount",                  INT64, "retry_count",            3),
    ("retry_timeout",                   "RetryTimeout",                INT64, "retry_timeout",          4),
    ("wait_time",                       "WaitTime",                    INT64, "wait_time",              6),
    ("retries_done",                    "RetriesDone",                 INT64, "retries_done",           7),
    ("task_timeout",                    "TaskTimeOut",                 INT64, "timeout",                5),
    ("ignore_when_task_not_registered", "IgnoreWhenTaskNotRegistered", BOOL,  "ignore_if_unregistered", 8),
    ("created_at",                      "CreatedAt",                   TIME,  "created_at",             9),
    ("eta",                             "ETA",                         TIME,  "eta",                    10),
))
# fmt: on

#: The table by Signature attribute.
FIELDS_BY_NAME: Final = {field.name: field for field in FIELDS}
#: The JSON keys, in Go's struct order.
GO_KEYS: Final = tuple(field.go_key for field in FIELDS)
#: The fields header mode writes as headers, in the order it writes them.
HEADER_WRITES: Final = tuple(
    sorted((f for f in FIELDS if f.header_order is not None), key=lambda f: f.header_order or 0)
)
