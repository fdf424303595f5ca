"""Configuration: frozen dataclasses, read from ``PAOTA_*`` environment variables.

The variable names are those of the Go library, so one env file configures Go and Python workers
alike. Every field is declared once, together with its variable and its *kind* (how a value is
checked, and how the variable's text is parsed); :meth:`Config.from_env` and ``__post_init__`` both
work from that table. A bad value raises :class:`~paota.core.errors.ConfigError` with a one-line
message naming the variable (from the environment) or the field (in code), the value and what is
allowed. Passwords in URLs are never shown: see :func:`redact_url`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ClassVar

from paota.core.errors import ConfigError

__all__ = ["AMQPConfig", "Config", "MongoConfig", "redact_url"]


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its user info replaced by ``***``.

    Works for AMQP and MongoDB URLs, including ``mongodb+srv://`` and several comma-separated
    hosts: ``mongodb://u:pw@h1,h2/db`` becomes ``mongodb://u:***@h1,h2/db``. A URL without a
    password is returned unchanged. Reserved characters in the password must be percent-encoded,
    as the drivers require anyway.
    """
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    end = min((i for i in (url.find(c, start) for c in "/?#") if i >= 0), default=len(url))
    at = url.rfind("@", start, end)
    colon = url.find(":", start, at) if at >= 0 else -1
    return url if colon < 0 else f"{url[: colon + 1]}***{url[at:]}"


# --- kinds: how a value is checked (in code) and parsed (from the environment) ----------------


class _Invalid(Exception):
    """Internal: a value does not fit its kind; ``detail`` says why, when that is useful."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class _Kind:
    expected: str  # what is allowed, e.g. "expected an integer >= 1"
    check: Callable[[Any], Any]  # validate a typed value and return it normalised
    parse: Callable[[str], Any] = lambda text: text  # variable text -> typed value
    env_expected: str = ""  # what is allowed in the variable, when it differs from ``expected``
    is_url: bool = False  # the value may hold a password: show it redacted


def _text(*, required: bool = False) -> _Kind:
    def check(value: Any) -> str:
        if not isinstance(value, str) or (required and not value):
            raise _Invalid
        return value

    return _Kind("expected a non-empty string" if required else "expected a string", check)


def _choice(*allowed: str, aliases: Mapping[str, str] | None = None) -> _Kind:
    table = {a: a for a in allowed} | dict(aliases or {})

    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in table:
            raise _Invalid
        return table[value.lower()]

    return _Kind("expected one of " + ", ".join(map(repr, table)), check)


def _integer(minimum: int) -> _Kind:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid
        return value

    def parse(text: str) -> int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise _Invalid
        return int(text)

    return _Kind(f"expected an integer >= {minimum}", check, parse)


_GO_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),  # micro sign
    "\u03bcs": Decimal("1e-6"),  # Greek mu
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_NUMBER = r"(?:\d+\.?\d*|\.\d+)"
_UNIT = "|".join(sorted(_GO_UNITS, key=len, reverse=True))  # "ms" is tried before "m"
_GO_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_GO_DURATION = re.compile(rf"([+-]?)((?:{_NUMBER}(?:{_UNIT}))+)")
_PLAIN_SECONDS = re.compile(rf"[+-]?{_NUMBER}(?:[eE][+-]?\d+)?")


def _parse_seconds(text: str) -> float:
    """Plain seconds (``"30"``, ``"2.5"``) or a Go ``time.Duration`` (``"1m30s"``, ``"500ms"``)."""
    if _PLAIN_SECONDS.fullmatch(text):
        return float(text)
    match = _GO_DURATION.fullmatch(text)
    if not match:
        raise _Invalid
    total = sum(Decimal(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(match[2]))
    return float(-total if match[1] == "-" else total)


def _seconds(*, positive: bool) -> _Kind:
    bound = "> 0" if positive else ">= 0"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise _Invalid
        return float(value)

    return _Kind(
        f"expected a number of seconds {bound}",
        check,
        _parse_seconds,
        f"expected a number of seconds {bound} ('2.5') or a Go duration ('1m30s', '500ms')",
    )


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _parse_bool(text: str) -> bool:
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    raise _Invalid


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid
    return value


_BOOLEAN = _Kind(
    "expected True or False",
    _check_bool,
    _parse_bool,
    "expected one of true/false, 1/0, yes/no, on/off",
)


def _check_mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _Invalid
    return MappingProxyType(dict(value))  # a copy: later changes to the caller's dict don't leak


_JSON_TYPES = {list: "array", str: "string", bool: "boolean", type(None): "null"}


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _Invalid(f"malformed JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _Invalid(f"got a JSON {_JSON_TYPES.get(type(value), 'number')}")
    return value


_JSON_OBJECT = _Kind(
    "expected a mapping with string keys",
    _check_mapping,
    _parse_json_object,
    'expected a JSON object such as {"x-max-priority": 10}',
)


def _url(*schemes: str, required: bool) -> _Kind:
    def check(value: Any) -> str:
        if not isinstance(value, str) or (required and not value):
            raise _Invalid
        scheme, sep, _ = value.partition("://")
        if value and (not sep or scheme.lower() not in schemes):
            raise _Invalid
        return value

    allowed = " or ".join(f"{s}://" for s in schemes)
    return _Kind(f"expected a URL starting with {allowed}", check, is_url=True)


def _url_list(*schemes: str) -> _Kind:
    one = _url(*schemes, required=True)

    def check(value: Any) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise _Invalid
        return tuple(one.check(item) for item in value)

    def parse(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    allowed = " or ".join(f"{s}://" for s in schemes)
    return _Kind(
        f"expected a list of URLs starting with {allowed}",
        check,
        parse,
        f"expected comma-separated URLs starting with {allowed}",
        is_url=True,
    )


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return type(value)(redact_url(item) for item in value)
    return value


# --- the field table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    env: str
    kind: _Kind


def _opt(default: Any, env: str, kind: _Kind) -> Any:
    """A dataclass field with its environment variable and kind."""
    spec = _Spec(env, kind)
    if isinstance(default, Mapping):
        return field(
            default_factory=lambda: MappingProxyType({}), hash=False, metadata={"paota": spec}
        )
    return field(default=default, metadata={"paota": spec})


def _error(
    label: str, value: Any, expected: str, *, detail: str = "", is_url: bool = False
) -> ConfigError:
    shown = _redacted(value) if is_url else value
    because = f"{detail}; " if detail else ""
    return ConfigError(f"{label}={shown!r} is not valid: {because}{expected}")


def _read_env(cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The fields of ``cls`` whose variable is set and not empty, parsed and checked."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        spec: _Spec | None = f.metadata.get("paota")
        raw = env.get(spec.env) if spec else None
        if spec is None or raw is None or not raw.strip():
            continue
        try:
            values[f.name] = spec.kind.check(spec.kind.parse(raw.strip()))
        except _Invalid as exc:
            expected = spec.kind.env_expected or spec.kind.expected
            raise _error(
                spec.env, raw, expected, detail=exc.detail, is_url=spec.kind.is_url
            ) from None
    return values


class _Section:
    """Shared by the config dataclasses: checks and normalises every field, redacts the repr."""

    _label_prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            spec: _Spec | None = f.metadata.get("paota")
            if spec is None:
                continue
            value = getattr(self, f.name)
            try:
                normalised = spec.kind.check(value)
            except _Invalid as exc:
                label = self._label_prefix + f.name
                raise _error(
                    label, value, spec.kind.expected, detail=exc.detail, is_url=spec.kind.is_url
                ) from None
            if normalised is not value:
                object.__setattr__(self, f.name, normalised)

    def __repr__(self) -> str:
        def shown(f: Any) -> str:
            value = getattr(self, f.name)
            spec: _Spec | None = f.metadata.get("paota")
            return repr(_redacted(value) if spec and spec.kind.is_url else value)

        parts = ", ".join(f"{f.name}={shown(f)}" for f in fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({parts})"


# --- the public dataclasses ---------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class AMQPConfig(_Section):
    """The AMQP broker (RabbitMQ) settings; variables ``PAOTA_AMQP_*``.

    ``url`` (or ``urls``) is required when :attr:`Config.broker` is ``"amqp"``. ``urls`` lists
    the nodes of a cluster (``PAOTA_AMQP_URLS``, comma-separated; a Python-only variable, Go reads
    ``PAOTA_AMQP_URL`` alone): connections are spread over them and a lost connection reconnects to
    the next one (:attr:`endpoints`). ``delay_queue_type`` is the queue type of the delay ladder
    (``quorum`` survives broker crashes, see :mod:`paota.brokers.amqp.topology`), ``delay_ladder``
    the name prefix of its queues and exchanges (empty: ``delayed_queue``); both are Python-only.
    ``queue_declare_args`` and
    ``queue_binding_args`` are read-only mappings (a plain dict passed in is copied and wrapped);
    pass ``dict(...)`` of them to a driver that wants a dict. Durations are in seconds.
    """

    _label_prefix: ClassVar[str] = "amqp."

    url: str = _opt("", "PAOTA_AMQP_URL", _url("amqp", "amqps", required=False))
    urls: tuple[str, ...] = _opt((), "PAOTA_AMQP_URLS", _url_list("amqp", "amqps"))
    exchange: str = _opt("paota_task_exchange", "PAOTA_AMQP_EXCHANGE", _text())
    exchange_type: str = _opt(
        "direct", "PAOTA_AMQP_EXCHANGE_TYPE", _choice("direct", "topic", "fanout", "headers")
    )
    queue_declare_args: Mapping[str, Any] = _opt({}, "PAOTA_AMQP_QUEUE_DECLARE_ARGS", _JSON_OBJECT)
    queue_binding_args: Mapping[str, Any] = _opt({}, "PAOTA_AMQP_QUEUE_BINDING_ARGS", _JSON_OBJECT)
    binding_key: str = _opt("paota_task_binding_key", "PAOTA_AMQP_BINDING_KEY", _text())
    prefetch_count: int = _opt(100, "PAOTA_AMQP_PREFETCH_COUNT", _integer(1))
    auto_delete: bool = _opt(False, "PAOTA_AMQP_AUTO_DELETE", _BOOLEAN)
    delayed_queue: str = _opt(
        "paota_task_delayed_queue", "PAOTA_AMQP_DELAYED_QUEUE", _text(required=True)
    )
    delay_queue_type: str = _opt(
        "quorum", "PAOTA_AMQP_DELAY_QUEUE_TYPE", _choice("quorum", "classic")
    )
    delay_ladder: str = _opt("", "PAOTA_AMQP_DELAY_LADDER", _text())
    failed_queue: str = _opt(
        "paota_task_failed_queue", "PAOTA_AMQP_FAILED_QUEUE", _text(required=True)
    )
    timeout_queue: str = _opt(
        "paota_task_timeout_queue", "PAOTA_AMQP_TIMEOUT_QUEUE", _text(required=True)
    )
    connection_pool_size: int = _opt(5, "PAOTA_AMQP_CONNECTION_POOL_SIZE", _integer(1))
    heartbeat_interval_s: int = _opt(10, "PAOTA_AMQP_HEARTBEAT_INTERVAL", _integer(0))
    connection_timeout_s: float = _opt(
        10.0, "PAOTA_AMQP_CONNECTION_TIMEOUT", _seconds(positive=True)
    )
    publish_timeout_s: float = _opt(30.0, "PAOTA_AMQP_PUBLISH_TIMEOUT", _seconds(positive=True))

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every broker URL, ``url`` first, then ``urls`` (each once)."""
        return tuple(dict.fromkeys(u for u in (self.url, *self.urls) if u))


@dataclass(frozen=True, repr=False)
class MongoConfig(_Section):
    """The MongoDB store settings; variables ``PAOTA_MONGO_*``.

    ``result_ttl_s`` of 0 keeps task records forever; ``timeout_s`` is the server selection and
    connect timeout in seconds.
    """

    _label_prefix: ClassVar[str] = "mongo."

    uri: str = _opt(
        "mongodb://127.0.0.1:27017",
        "PAOTA_MONGO_URI",
        _url("mongodb", "mongodb+srv", required=True),
    )
    database: str = _opt("paota", "PAOTA_MONGO_DB", _text(required=True))
    collection: str = _opt("paota_tasks", "PAOTA_MONGO_COLLECTION", _text(required=True))
    max_pool_size: int = _opt(100, "PAOTA_MONGO_MAX_POOL_SIZE", _integer(1))
    result_ttl_s: int = _opt(0, "PAOTA_MONGO_RESULT_TTL", _integer(0))
    timeout_s: float = _opt(5.0, "PAOTA_MONGO_TIMEOUT", _seconds(positive=True))


_AMQP_URL_EXPECTED = (
    "required when broker is 'amqp' (or amqp.urls); expected a URL starting with amqp:// or "
    "amqps://"
)


@dataclass(frozen=True, repr=False)
class Config(_Section):
    """The whole paota configuration; variables ``PAOTA_*`` (see :meth:`from_env`).

    ``broker`` is ``"memory"`` (embedded, no server) or ``"amqp"``; ``store`` is ``""`` (no task
    state is recorded; ``"none"`` is accepted and normalised to ``""``), ``"memory"`` or
    ``"mongodb"``. Durations are in seconds; ``max_task_execution_duration_s`` of 0 means no limit.
    Construction validates every field and raises :class:`~paota.core.errors.ConfigError`.
    """

    broker: str = _opt("memory", "PAOTA_BROKER", _choice("memory", "amqp"))
    store: str = _opt("", "PAOTA_STORE", _choice("", "memory", "mongodb", aliases={"none": ""}))
    task_queue_name: str = _opt("paota_tasks", "PAOTA_QUEUE_NAME", _text(required=True))
    store_queue_name: str = _opt("", "PAOTA_STORE_QUEUE_NAME", _text())
    max_task_execution_duration_s: float = _opt(
        0.0, "PAOTA_MAX_TASK_EXEC_DURATION", _seconds(positive=False)
    )
    retry_backoff_cap_s: float = _opt(10.0, "PAOTA_RETRY_BACKOFF_CAP", _seconds(positive=True))
    unknown_task_max_returns: int = _opt(5, "PAOTA_UNKNOWN_TASK_MAX_RETURNS", _integer(0))
    shutdown_grace_s: float = _opt(30.0, "PAOTA_SHUTDOWN_GRACE", _seconds(positive=False))
    amqp: AMQPConfig = field(default_factory=AMQPConfig)
    mongo: MongoConfig = field(default_factory=MongoConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, cls in (("amqp", AMQPConfig), ("mongo", MongoConfig)):
            if not isinstance(getattr(self, name), cls):
                raise _error(name, getattr(self, name), f"expected an instance of {cls.__name__}")
        if self.broker == "amqp" and not self.amqp.endpoints:
            raise _error("amqp.url", self.amqp.url, _AMQP_URL_EXPECTED)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a config from ``PAOTA_*`` variables of ``env`` (default :data:`os.environ`).

        Unset or empty variables keep the default. Durations accept plain seconds (``"2.5"``) or a
        Go duration (``"1m30s"``, ``"500ms"``); booleans accept true/false, 1/0, yes/no, on/off;
        the ``*_ARGS`` variables hold a JSON object. Errors name the variable.
        """
        env = os.environ if env is None else env
        values = _read_env(cls, env)
        amqp = AMQPConfig(**_read_env(AMQPConfig, env))
        if values.get("broker") == "amqp" and not amqp.endpoints:
            expected = _AMQP_URL_EXPECTED.replace("broker is", "PAOTA_BROKER is").replace(
                "amqp.urls", "PAOTA_AMQP_URLS"
            )
            raise _error("PAOTA_AMQP_URL", env.get("PAOTA_AMQP_URL", ""), expected)
        return cls(**values, amqp=amqp, mongo=MongoConfig(**_read_env(MongoConfig, env)))
