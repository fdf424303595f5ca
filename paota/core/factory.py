"""Config -> broker / store implementation, by name.

Names: brokers ``memory`` and ``amqp``; stores ``memory`` and ``mongodb`` (``Config`` validates
them). Drivers are imported here lazily, only when their backend is chosen. Any other object that
satisfies the Protocols can be passed to ``WorkerPool(broker=..., store=...)`` directly.
"""

from __future__ import annotations

from paota.core.clock import Clock
from paota.core.config import Config
from paota.core.errors import ConfigError
from paota.core.protocols import Broker, Store

__all__ = ["make_broker", "make_store"]


def _missing_extra(what: str, extra: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{what} needs an optional dependency that is not installed ({exc}); "
        f"install it with: pip install 'paota[{extra}]'"
    )


def make_broker(config: Config, *, worker_name: str = "", clock: Clock | None = None) -> Broker:
    """The broker ``config.broker`` names (not connected yet)."""
    if config.broker == "memory":
        from paota.brokers.memory import MemoryBroker
        from paota.core.protocols import ParkQueue

        return MemoryBroker(
            clock=clock,
            default_queue=config.task_queue_name,
            parking={
                ParkQueue.FAILED: config.amqp.failed_queue,
                ParkQueue.TIMEOUT: config.amqp.timeout_queue,
            },
        )
    if config.broker == "amqp":
        try:
            from paota.brokers.amqp import AMQPBroker
        except ImportError as exc:
            raise _missing_extra("broker 'amqp'", "amqp", exc) from exc
        return AMQPBroker(config, worker_name=worker_name)
    raise ConfigError(f"broker {config.broker!r} is not known: expected 'memory' or 'amqp'")


def make_store(config: Config) -> Store | None:
    """The store ``config.store`` names (not connected yet), or None when no store is configured."""
    if not config.store:
        return None
    if config.store == "memory":
        from paota.stores.memory import MemoryStore

        return MemoryStore()
    if config.store == "mongodb":
        try:
            from paota.stores.mongo import MongoStore
        except ImportError as exc:
            raise _missing_extra("store 'mongodb'", "mongo", exc) from exc
        return MongoStore(config)
    raise ConfigError(f"store {config.store!r} is not known: expected 'memory' or 'mongodb'")
