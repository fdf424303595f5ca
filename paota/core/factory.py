"""Config -> broker / store implementation, by name; third-party backends by entry point.

Built in: brokers ``memory`` and ``amqp``, stores ``memory`` and ``mongodb``. Any other name is
looked up among the installed entry points of group ``paota.brokers`` (or ``paota.stores``): the
entry point names a factory ``factory(config, *, worker_name, clock)`` (stores: ``factory(config)``)
returning a connected-on-demand Broker (Store). A package declares one in its ``pyproject.toml``::

    [project.entry-points."paota.brokers"]
    redis = "paota_redis:make_broker"

Drivers are imported lazily, only when their backend is chosen. Any object that satisfies the
Protocols can also be passed to ``WorkerPool(broker=..., store=...)`` directly.
"""

from __future__ import annotations

from typing import Any

from paota.core.clock import Clock
from paota.core.config import Config
from paota.core.errors import ConfigError
from paota.core.protocols import Broker, ParkQueue, Store

__all__ = ["BROKER_GROUP", "STORE_GROUP", "backend_names", "make_broker", "make_store"]

BROKER_GROUP = "paota.brokers"
STORE_GROUP = "paota.stores"
_BUILTIN = {BROKER_GROUP: ("memory", "amqp"), STORE_GROUP: ("memory", "mongodb")}


def entry_points(*, group: str) -> Any:
    """The installed entry points of ``group``. ``importlib.metadata`` is imported here, on
    first use: it costs every worker process about 3 MB of memory, and the built-in backends never
    need it."""
    from importlib import metadata

    return metadata.entry_points(group=group)


def backend_names(group: str) -> tuple[str, ...]:
    """The built-in and installed backend names of an entry-point group."""
    installed = sorted(ep.name for ep in entry_points(group=group))
    return tuple(dict.fromkeys([*_BUILTIN[group], *installed]))


def _missing_extra(what: str, extra: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{what} needs an optional dependency that is not installed ({exc}); "
        f"install it with: pip install 'paota[{extra}]'"
    )


def _from_entry_point(group: str, name: str, kind: str) -> Any:
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        allowed = ", ".join(map(repr, backend_names(group)))
        raise ConfigError(f"{kind} {name!r} is not known: expected one of {allowed}")
    try:
        return found[0].load()
    except Exception as exc:
        raise ConfigError(
            f"{kind} {name!r} (entry point {found[0].value}) failed to load: {exc}"
        ) from exc


def make_broker(config: Config, *, worker_name: str = "", clock: Clock | None = None) -> Broker:
    """The broker ``config.broker`` names (not connected yet)."""
    if config.broker == "memory":
        from paota.brokers.memory import MemoryBroker

        return MemoryBroker(
            clock=clock,
            default_queue=config.task_queue_name,
            parking={
                ParkQueue.FAILED: config.amqp.failed_queue,
                ParkQueue.TIMEOUT: config.amqp.timeout_queue,
            },
            binding_key=config.amqp.binding_key,
        )
    if config.broker == "amqp":
        try:
            from paota.brokers.amqp.broker import AMQPBroker
        except ImportError as exc:
            raise _missing_extra("broker 'amqp'", "amqp", exc) from exc
        return AMQPBroker(config, worker_name=worker_name)
    factory = _from_entry_point(BROKER_GROUP, config.broker, "broker")
    broker: Broker = factory(config, worker_name=worker_name, clock=clock)
    return broker


def make_store(config: Config) -> Store | None:
    """The store ``config.store`` names (not connected yet), or None when no store is configured."""
    if not config.store:
        return None
    if config.store == "memory":
        from paota.stores.memory import MemoryStore

        return MemoryStore()
    if config.store == "mongodb":
        try:
            from paota.stores.mongo.store import MongoStore
        except ImportError as exc:
            raise _missing_extra("store 'mongodb'", "mongo", exc) from exc
        return MongoStore(config)
    factory = _from_entry_point(STORE_GROUP, config.store, "store")
    store: Store = factory(config)
    return store
