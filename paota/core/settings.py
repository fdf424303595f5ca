"""The field and environment machinery every settings dataclass uses (core and backends).

A settings field is declared once, with its ``PAOTA_*`` variable and its *kind* (how a value is
checked, and how the variable's text is parsed): ``field_: T = opt(default, "PAOTA_X", kind)`` in a
frozen dataclass deriving from :class:`Section`. ``Section.__post_init__`` checks and normalises
every field, :func:`read_env` parses the variables; a bad value raises
:class:`~paota.core.errors.ConfigError` naming the variable (from the environment) or the field (in
code), the value and what is allowed. Passwords in URLs are never shown (:func:`redact_url`).
Backends declare their own sections with it (``paota.brokers.amqp.settings.AMQPConfig``,
``paota.stores.mongo.settings.MongoConfig``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import MappingProxyType
from typing import Any, ClassVar

from paota.core.errors import ConfigError

__all__ = [
    "BOOLEAN",
    "JSON_OBJECT",
    "Section",
    "backend",
    "choice",
    "config_error",
    "environment",
    "integer",
    "opt",
    "read_env",
    "redact_url",
    "seconds",
    "text",
    "url",
    "url_list",
    "variables",
]


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its user info replaced by ``***``.

    Works for AMQP and MongoDB URLs, including ``mongodb+srv://`` and several comma-separated
    hosts: ``mongodb://u:pw@h1,h2/db`` becomes ``mongodb://u:***@h1,h2/db``. A URL without a
    password is returned unchanged. A password with reserved characters that were not
    percent-encoded (``/``, ``@``, ``:``) is hidden too: the user info is taken to end at the last
    ``@`` before the query, so none of it is shown even where a driver would refuse the URL.
    """
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    end = min((i for i in (url.find(c, start) for c in "?#") if i >= 0), default=len(url))
    at = url.rfind("@", start, end)
    if at < 0:
        return url
    colon = url.find(":", start, at)
    return url if colon < 0 else f"{url[: colon + 1]}***{url[at:]}"


def _amqp_authority_problem(url: str) -> str:
    """Why ``url`` (amqp:// or amqps://) cannot be connected to, or ``""``: checked here so that
    a driver's parse error, which may quote part of the password, never reaches a log."""
    from urllib.parse import urlsplit

    reserved = (
        "reserved characters in the user name or password must be percent-encoded "
        "(/ as %2F, @ as %40, : as %3A, # as %23, ? as %3F, [ and ] as %5B and %5D)"
    )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        if "@" in url:
            return f"the port is not a number 1-65535, or {reserved}"
        return "the host or port is not valid (a port is a number 1-65535)"
    if "@" in parts.path or "@" in parts.query:
        return reserved
    if not parts.hostname:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return f"port {port} is out of range"
    return ""


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


def _backend(
    group: str, builtin: tuple[str, ...], *, aliases: Mapping[str, str] | None = None
) -> _Kind:
    """A backend name: a built-in one, or the name of an installed entry point of ``group``."""
    table = {a: a for a in builtin} | dict(aliases or {})

    def installed() -> list[str]:
        from importlib.metadata import entry_points

        return sorted(ep.name for ep in entry_points(group=group))

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid
        if value.lower() in table:
            return table[value.lower()]
        found = installed()
        if value in found:
            return value
        raise _Invalid(
            f"installed {group} backends: {', '.join(map(repr, found))}" if found else ""
        )

    return _Kind("expected one of " + ", ".join(map(repr, table)), check)


def _integer(minimum: int, maximum: int | None = None) -> _Kind:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Invalid
        if maximum is not None and value > maximum:
            raise _Invalid
        return value

    def parse(text: str) -> int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise _Invalid
        return int(text)

    if maximum is not None:
        return _Kind(f"expected an integer from {minimum} to {maximum}", check, parse)
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
        if value and scheme.lower() in ("amqp", "amqps"):
            problem = _amqp_authority_problem(value)
            if problem:
                raise _Invalid(problem)
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


#: Where the fields of a config read their variables (:func:`environment`); None: os.environ.
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("paota_environment", default=None)


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Within the block, configs built in this context read their variables from ``env``
    (``{}``: none, every field not given takes its default) instead of :data:`os.environ`."""
    token = _ENVIRONMENT.set(env)
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)


def _current_environment() -> Mapping[str, str]:
    env = _ENVIRONMENT.get()
    return os.environ if env is None else env


def _from_variable(spec: _Spec, raw: str) -> Any:
    """The typed value of variable ``spec.env`` holding ``raw``; a ConfigError naming it."""
    if not raw.strip():
        # empty is the empty value where the field takes one (PAOTA_STORE=: no store), never a
        # fallback to a default that differs (PAOTA_QUEUE_NAME= once bound the shared queue)
        try:
            return spec.kind.check(spec.kind.parse(""))
        except _Invalid:
            raise ConfigError(
                f"{spec.env} is set but empty: unset it to use the default, or give a value "
                f"({spec.kind.env_expected or spec.kind.expected})"
            ) from None
    try:
        return spec.kind.check(spec.kind.parse(raw.strip()))
    except _Invalid as exc:
        expected = spec.kind.env_expected or spec.kind.expected
        raise _error(spec.env, raw, expected, detail=exc.detail, is_url=spec.kind.is_url) from None


def _opt(default: Any, env: str, kind: _Kind) -> Any:
    """A dataclass field with its environment variable and kind.

    A field not given in code takes its variable's value when the variable is set, else
    ``default``: the environment configures a deployment without code changes, and code wins.
    """
    spec = _Spec(env, kind)

    def initial() -> Any:
        raw = _current_environment().get(env)
        if raw is not None:
            return _from_variable(spec, raw)
        return MappingProxyType({}) if isinstance(default, Mapping) else default

    return field(
        default_factory=initial,
        hash=False if isinstance(default, Mapping) else None,
        metadata={"paota": spec},
    )


def _error(
    label: str, value: Any, expected: str, *, detail: str = "", is_url: bool = False
) -> ConfigError:
    shown = _redacted(value) if is_url else value
    because = f"{detail}; " if detail else ""
    return ConfigError(f"{label}={shown!r} is not valid: {because}{expected}")


def _read_env(cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The fields of ``cls`` whose variable is set, parsed and checked (an empty one is the
    field's empty value, or an error naming it when the field takes none)."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        spec: _Spec | None = f.metadata.get("paota")
        raw = env.get(spec.env) if spec else None
        if spec is not None and raw is not None:
            values[f.name] = _from_variable(spec, raw)
    return values


def _variables(cls: type[Any]) -> list[str]:
    """The ``PAOTA_*`` variables the fields of ``cls`` read."""
    return [f.metadata["paota"].env for f in fields(cls) if "paota" in f.metadata]


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


# Public names for backend settings modules.
Section = _Section
opt = _opt
read_env = _read_env
environment = _environment
variables = _variables
config_error = _error
text = _text
choice = _choice
backend = _backend
integer = _integer
seconds = _seconds
url = _url
url_list = _url_list
BOOLEAN = _BOOLEAN
JSON_OBJECT = _JSON_OBJECT
