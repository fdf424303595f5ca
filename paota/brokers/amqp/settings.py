"""RabbitMQ settings: :class:`AMQPConfig`, variables ``PAOTA_AMQP_*`` (no driver imported)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from paota.core.settings import (
    BOOLEAN,
    JSON_OBJECT,
    Section,
    choice,
    integer,
    opt,
    seconds,
    text,
    url,
    url_list,
)

__all__ = ["AMQPConfig"]


#: Go's defaults for the task exchange, the task queue's binding key and the delayed queue.
DEFAULT_EXCHANGE = "paota_task_exchange"
DEFAULT_BINDING_KEY = "paota_task_binding_key"
DEFAULT_DELAYED_QUEUE = "paota_task_delayed_queue"


@dataclass(frozen=True, repr=False)
class AMQPConfig(Section):
    """The AMQP broker (RabbitMQ) settings; variables ``PAOTA_AMQP_*``.

    ``url`` (or ``urls``) is required when :attr:`Config.broker` is ``"amqp"``. ``urls`` lists
    the nodes of a cluster (``PAOTA_AMQP_URLS``, comma-separated; a Python-only variable, Go reads
    ``PAOTA_AMQP_URL`` alone): connections are spread over them and a lost connection reconnects to
    the next one (:attr:`endpoints`). ``delay_queue_type`` is the queue type of the delay ladder
    (``quorum`` survives broker crashes), ``delay_ladder`` the name prefix of its queues and
    exchanges (empty: ``paota.delay``, one ladder per vhost; ``delayed_queue`` in ``"ladder"``
    mode), ``delay_mode`` whether the last stretch of a delay (under 16.4 s) waits in a worker
    (``"hold"``) or the broker makes the whole delay (``"ladder"``, for deployments without a
    Python worker), and ``delay_hold_max`` how many due-soon messages one worker holds at most (its
    prefetch on the hold queue): see :mod:`paota.brokers.amqp.ladder`. All four are Python-only.
    ``queue_declare_args`` and
    ``queue_binding_args`` are read-only mappings (a plain dict passed in is copied and wrapped);
    pass ``dict(...)`` of them to a driver that wants a dict. Durations are in seconds.
    """

    _label_prefix: ClassVar[str] = "amqp."

    url: str = opt("", "PAOTA_AMQP_URL", url("amqp", "amqps", required=False))
    urls: tuple[str, ...] = opt((), "PAOTA_AMQP_URLS", url_list("amqp", "amqps"))
    exchange: str = opt(DEFAULT_EXCHANGE, "PAOTA_AMQP_EXCHANGE", text())
    exchange_type: str = opt(
        "direct", "PAOTA_AMQP_EXCHANGE_TYPE", choice("direct", "topic", "fanout", "headers")
    )
    queue_declare_args: Mapping[str, Any] = opt({}, "PAOTA_AMQP_QUEUE_DECLARE_ARGS", JSON_OBJECT)
    queue_binding_args: Mapping[str, Any] = opt({}, "PAOTA_AMQP_QUEUE_BINDING_ARGS", JSON_OBJECT)
    binding_key: str = opt(DEFAULT_BINDING_KEY, "PAOTA_AMQP_BINDING_KEY", text())
    prefetch_count: int = opt(100, "PAOTA_AMQP_PREFETCH_COUNT", integer(1))
    auto_delete: bool = opt(False, "PAOTA_AMQP_AUTO_DELETE", BOOLEAN)
    delayed_queue: str = opt(DEFAULT_DELAYED_QUEUE, "PAOTA_AMQP_DELAYED_QUEUE", text(required=True))
    delay_queue_type: str = opt(
        "quorum", "PAOTA_AMQP_DELAY_QUEUE_TYPE", choice("quorum", "classic")
    )
    delay_ladder: str = opt("", "PAOTA_AMQP_DELAY_LADDER", text())
    delay_mode: str = opt("hold", "PAOTA_AMQP_DELAY_MODE", choice("hold", "ladder"))
    delay_hold_max: int = opt(10_000, "PAOTA_AMQP_DELAY_HOLD_MAX", integer(1, 65_535))
    failed_queue: str = opt(
        "paota_task_failed_queue", "PAOTA_AMQP_FAILED_QUEUE", text(required=True)
    )
    timeout_queue: str = opt(
        "paota_task_timeout_queue", "PAOTA_AMQP_TIMEOUT_QUEUE", text(required=True)
    )
    connection_pool_size: int = opt(5, "PAOTA_AMQP_CONNECTION_POOL_SIZE", integer(1))
    heartbeat_interval_s: int = opt(10, "PAOTA_AMQP_HEARTBEAT_INTERVAL", integer(0))
    connection_timeout_s: float = opt(10.0, "PAOTA_AMQP_CONNECTION_TIMEOUT", seconds(positive=True))
    publish_timeout_s: float = opt(30.0, "PAOTA_AMQP_PUBLISH_TIMEOUT", seconds(positive=True))

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every broker URL, ``url`` first, then ``urls`` (each once)."""
        return tuple(dict.fromkeys(u for u in (self.url, *self.urls) if u))
