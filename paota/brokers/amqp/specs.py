"""What paota declares on RabbitMQ, as frozen values: exchanges, queues and their bindings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["ExchangeBinding", "ExchangeSpec", "QueueBinding", "QueueSpec", "frozen"]


def frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy of ``mapping`` (empty for None)."""
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class ExchangeSpec:
    """An exchange to declare (always durable, never auto-deleted)."""

    name: str
    type: str


@dataclass(frozen=True)
class QueueSpec:
    """A durable queue to declare."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=frozen)
    auto_delete: bool = False


@dataclass(frozen=True)
class QueueBinding:
    """``queue`` receives what ``exchange`` routes with ``routing_key`` (and ``arguments``)."""

    queue: str
    exchange: str
    routing_key: str
    arguments: Mapping[str, Any] = field(default_factory=frozen)


@dataclass(frozen=True)
class ExchangeBinding:
    """Exchange ``destination`` receives what exchange ``source`` routes with ``routing_key``."""

    destination: str
    source: str
    routing_key: str
