"""Backends by name: built in, or third-party through entry points."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

import paota.core.factory as factory
from paota import Config, ConfigError
from paota.brokers.memory import MemoryBroker
from paota.stores.memory import MemoryStore


class FakeEntryPoint:
    def __init__(self, name: str, target: Any, value: str = "third_party:make") -> None:
        self.name = name
        self.value = value
        self._target = target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def install(monkeypatch: pytest.MonkeyPatch, group: str, *points: FakeEntryPoint) -> None:
    real = importlib.metadata.entry_points

    def entry_points(*, group: str = "", **kw: Any) -> Any:
        return [p for p in points if p.group == group] if group in groups else real(group=group)

    for point in points:
        point.group = group  # type: ignore[attr-defined]
    groups = {group}
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(factory, "entry_points", entry_points)


def test_a_third_party_broker_and_store_load_by_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[Any] = []

    def make_broker(config: Config, *, worker_name: str, clock: Any) -> MemoryBroker:
        made.append((config.broker, worker_name))
        return MemoryBroker(clock=clock)

    install(monkeypatch, "paota.brokers", FakeEntryPoint("redis", make_broker))
    config = Config(broker="redis")
    assert isinstance(factory.make_broker(config, worker_name="w"), MemoryBroker)
    assert made == [("redis", "w")]
    install(monkeypatch, "paota.stores", FakeEntryPoint("sqlite", lambda config: MemoryStore()))
    assert isinstance(factory.make_store(Config(store="sqlite")), MemoryStore)


def test_an_unknown_backend_names_what_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, "paota.brokers", FakeEntryPoint("redis", object()))
    with pytest.raises(ConfigError, match="'memory', 'amqp'") as raised:
        Config(broker="kafka")
    assert "installed paota.brokers backends: 'redis'" in str(raised.value)


def test_a_backend_that_fails_to_load_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, "paota.brokers", FakeEntryPoint("broken", ImportError("no module x")))
    with pytest.raises(ConfigError, match=r"'broken' .* failed to load: no module x"):
        factory.make_broker(Config(broker="broken"))
