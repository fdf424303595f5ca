"""Optional features and the extras that install them.

A feature whose package is missing says so when it is used, naming the extra to install, instead
of a bare ``ModuleNotFoundError`` from deep inside paota: :class:`MissingExtraError` is both a
:class:`~paota.ConfigError` (the ``paota`` command prints it in one line and exits 2) and a
``ModuleNotFoundError`` (code that guards an optional import keeps working).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from paota.core.errors import ConfigError

__all__ = ["EXTRAS", "MissingExtraError", "missing_extra", "require"]

#: The import name of each optional package -> (its distribution, the paota extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "aiormq": ("aiormq", "amqp"),
    "pymongo": ("pymongo", "mongo"),
    "prometheus_client": ("prometheus-client", "metrics"),
    "opentelemetry": ("opentelemetry-api", "tracing"),
    "cronsim": ("cronsim", "schedules"),
    "starlette": ("starlette", "web"),
    "uvicorn": ("uvicorn", "web"),
    "httpx": ("httpx", "webhooks"),
    "watchfiles": ("watchfiles", "reload"),
    "uvloop": ("uvloop", "uvloop"),
}


class MissingExtraError(ConfigError, ModuleNotFoundError):
    """An optional feature was used without the package it needs; the message names the extra."""


def missing_extra(exc: ModuleNotFoundError, feature: str) -> ModuleNotFoundError:
    """For ``except ModuleNotFoundError as exc`` around an optional import: a
    :class:`MissingExtraError` naming the extra when ``exc`` is about one of :data:`EXTRAS`, else
    ``exc`` itself (a broken install of something else stays what it is)."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRAS:
        return exc
    distribution, extra = EXTRAS[top]
    error = MissingExtraError(
        f"{feature} needs {distribution}, which is not installed: pip install 'paota[{extra}]' "
        "(or 'paota[all]' for every optional feature)"
    )
    error.name = exc.name
    return error


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``; a :class:`MissingExtraError` naming the extra if the
    package is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, feature) from None
