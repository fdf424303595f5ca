"""Configuration: :class:`Config`, read from ``PAOTA_*`` environment variables.

The variable names are those of the Go library, so one env file configures Go and Python workers
alike. Every field is declared once, together with its variable and its *kind*
(:mod:`paota.core.settings`); :meth:`Config.from_env` and ``__post_init__`` both work from that
table. A bad value raises :class:`~paota.core.errors.ConfigError` with a one-line message naming
the variable (from the environment) or the field (in code), the value and what is allowed.
Passwords in URLs are never shown: see :func:`redact_url`. The backends' sections live with the
backends (:class:`~paota.brokers.amqp.settings.AMQPConfig`,
:class:`~paota.stores.mongo.settings.MongoConfig`) and are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from paota.brokers.amqp.settings import AMQPConfig
from paota.core.settings import (
    Section,
    backend,
    config_error,
    integer,
    opt,
    read_env,
    redact_url,
    seconds,
    text,
)
from paota.stores.mongo.settings import MongoConfig

__all__ = ["AMQPConfig", "Config", "MongoConfig", "redact_url"]

_AMQP_URL_EXPECTED = (
    "required when broker is 'amqp' (or amqp.urls); expected a URL starting with amqp:// or "
    "amqps://"
)


@dataclass(frozen=True, repr=False)
class Config(Section):
    """The whole paota configuration; variables ``PAOTA_*`` (see :meth:`from_env`).

    ``broker`` is ``"memory"`` (embedded, no server), ``"amqp"`` or an installed third-party
    broker (entry point group ``paota.brokers``); ``store`` is ``""`` (no task state is recorded;
    ``"none"`` is accepted and normalised to ``""``), ``"memory"``, ``"mongodb"`` or an installed
    store (``paota.stores``). Durations are in seconds; ``max_task_execution_duration_s`` of 0 means no limit.
    Construction validates every field and raises :class:`~paota.core.errors.ConfigError`.
    """

    broker: str = opt("memory", "PAOTA_BROKER", backend("paota.brokers", ("memory", "amqp")))
    store: str = opt(
        "",
        "PAOTA_STORE",
        backend("paota.stores", ("", "memory", "mongodb"), aliases={"none": ""}),
    )
    task_queue_name: str = opt("paota_tasks", "PAOTA_QUEUE_NAME", text(required=True))
    store_queue_name: str = opt("", "PAOTA_STORE_QUEUE_NAME", text())
    max_task_execution_duration_s: float = opt(
        0.0, "PAOTA_MAX_TASK_EXEC_DURATION", seconds(positive=False)
    )
    retry_backoff_cap_s: float = opt(10.0, "PAOTA_RETRY_BACKOFF_CAP", seconds(positive=True))
    unknown_task_max_returns: int = opt(5, "PAOTA_UNKNOWN_TASK_MAX_RETURNS", integer(0))
    shutdown_grace_s: float = opt(30.0, "PAOTA_SHUTDOWN_GRACE", seconds(positive=False))
    # Python only: a delivered body over this many bytes is parked as `too-large` without being
    # decoded (0: no limit). 32 MiB: twice RabbitMQ 4's default limit (16 MiB); 3.x takes 128.
    max_message_bytes: int = opt(32 * 1024 * 1024, "PAOTA_MAX_MESSAGE_BYTES", integer(0))
    # Python only: how often a worker records that it is alive (0: never); see
    # paota.middleware.heartbeat.
    heartbeat_interval_s: float = opt(10.0, "PAOTA_HEARTBEAT_INTERVAL", seconds(positive=False))
    amqp: AMQPConfig = field(default_factory=AMQPConfig)
    mongo: MongoConfig = field(default_factory=MongoConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, cls in (("amqp", AMQPConfig), ("mongo", MongoConfig)):
            if not isinstance(getattr(self, name), cls):
                raise config_error(
                    name, getattr(self, name), f"expected an instance of {cls.__name__}"
                )
        if self.broker == "amqp" and not self.amqp.endpoints:
            raise config_error("amqp.url", self.amqp.url, _AMQP_URL_EXPECTED)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a config from ``PAOTA_*`` variables of ``env`` (default :data:`os.environ`).

        Unset or empty variables keep the default. Durations accept plain seconds (``"2.5"``) or a
        Go duration (``"1m30s"``, ``"500ms"``); booleans accept true/false, 1/0, yes/no, on/off;
        the ``*_ARGS`` variables hold a JSON object. Errors name the variable.
        """
        env = os.environ if env is None else env
        values = read_env(cls, env)
        amqp = AMQPConfig(**read_env(AMQPConfig, env))
        if values.get("broker") == "amqp" and not amqp.endpoints:
            expected = _AMQP_URL_EXPECTED.replace("broker is", "PAOTA_BROKER is").replace(
                "amqp.urls", "PAOTA_AMQP_URLS"
            )
            raise config_error("PAOTA_AMQP_URL", env.get("PAOTA_AMQP_URL", ""), expected)
        return cls(**values, amqp=amqp, mongo=MongoConfig(**read_env(MongoConfig, env)))
