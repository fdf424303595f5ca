"""Configuration: :class:`Config`, read from ``PAOTA_*`` environment variables.

One rule at every entry point (``Config()``, ``Client``, ``WorkerPool``, every CLI command): a
field given in code wins, else its ``PAOTA_*`` variable when set, else the default. A variable
set but empty is never the default: it is the empty value where the field takes one, else an
error naming it.

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

from paota.brokers.amqp.settings import (
    DEFAULT_BINDING_KEY,
    DEFAULT_DELAYED_QUEUE,
    DEFAULT_EXCHANGE,
    AMQPConfig,
)
from paota.core.errors import ConfigError
from paota.core.settings import (
    Section,
    backend,
    config_error,
    environment,
    integer,
    opt,
    redact_url,
    seconds,
    text,
)
from paota.stores.mongo.settings import MongoConfig

__all__ = ["AMQPConfig", "Config", "MongoConfig", "redact_url"]

_AMQP_URL_EXPECTED = (
    "required when broker is 'amqp' (PAOTA_BROKER=amqp): set amqp.url (PAOTA_AMQP_URL) or "
    "amqp.urls (PAOTA_AMQP_URLS) to a URL starting with amqp:// or amqps://"
)


@dataclass(frozen=True, repr=False)
class Config(Section):
    """The whole paota configuration. Fields not given read their ``PAOTA_*`` variable from the
    environment when it is set (see :meth:`from_env`), so ``Config()`` is what the deployment says.

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
        if self.broker == "amqp":
            _refuse_copying_binding(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a config from the ``PAOTA_*`` variables of ``env`` (default :data:`os.environ`).

        ``Config()`` reads :data:`os.environ` the same way for every field not given in code;
        ``from_env(env)`` reads ``env`` instead (``from_env({})``: the defaults alone). A variable
        set but empty is the empty value where the field takes one, else an error, never the
        default. Durations accept plain seconds (``"2.5"``) or a Go duration (``"1m30s"``,
        ``"500ms"``); booleans accept true/false, 1/0, yes/no, on/off; the ``*_ARGS`` variables
        hold a JSON object. Errors name the variable.
        """
        with environment(os.environ if env is None else env):
            return cls()


_DEFAULT_QUEUE = "paota_tasks"


def _refuse_copying_binding(config: Config) -> None:
    """A renamed task queue on the default exchange and binding key would be bound beside every
    other queue of that key (``paota_tasks`` first): each task copied into each. Refused, with the
    fix (Go's defaults stay where nothing is set)."""
    amqp = config.amqp
    if (
        config.task_queue_name == _DEFAULT_QUEUE
        or amqp.exchange_type != "direct"
        or amqp.exchange != DEFAULT_EXCHANGE
        or amqp.binding_key != DEFAULT_BINDING_KEY
    ):
        return
    queue = config.task_queue_name
    fix = f"PAOTA_AMQP_BINDING_KEY={queue}"
    if amqp.delayed_queue == DEFAULT_DELAYED_QUEUE:
        fix += f" and PAOTA_AMQP_DELAYED_QUEUE={queue}_delayed (Go's delayed queue forwards "
        fix += "by the binding key, so each key needs its own)"
    raise ConfigError(
        f"task_queue_name={queue!r} (PAOTA_QUEUE_NAME) is bound to the default exchange "
        f"{amqp.exchange!r} with the default binding key {amqp.binding_key!r}, like the default "
        f"queue {_DEFAULT_QUEUE!r}: every task sent to either would be copied into both. Give "
        f"the queue a binding key of its own: {fix}; or its own exchange (PAOTA_AMQP_EXCHANGE). "
        "Go workers and producers of this queue need the same settings"
    )
