"""The RabbitMQ broker (needs ``aiormq``: ``pip install 'paota[amqp]'``).

:class:`AMQPBroker` speaks Go paota's wire format on Go paota's topology, with publisher confirms,
an order-keeping delay ladder, several queues and automatic reconnection. The modules:

- :mod:`~paota.brokers.amqp.settings`: :class:`AMQPConfig` (no driver import);
- :mod:`~paota.brokers.amqp.broker`: :class:`AMQPBroker`, the facade;
- :mod:`~paota.brokers.amqp.connection`: the self-healing connection pool over one or more nodes;
- :mod:`~paota.brokers.amqp.publisher`: confirmed publishing;
- :mod:`~paota.brokers.amqp.consumer`: subscriptions and :class:`AMQPDelivery`;
- :mod:`~paota.brokers.amqp.topology`: what is declared, and the delay ladder;
- :mod:`~paota.brokers.amqp.replay`: moving parked messages back;
- :mod:`~paota.brokers.amqp.errors`: the one mapping of aiormq errors to paota errors;
- :mod:`~paota.brokers.amqp.properties`: message properties with Go-compatible header types.

The driver is imported on first use of :class:`AMQPBroker`, never by ``import paota``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paota.brokers.amqp.settings import AMQPConfig

if TYPE_CHECKING:
    from paota.brokers.amqp.broker import AMQPBroker
    from paota.brokers.amqp.consumer import AMQPDelivery

__all__ = ["MAX_DELAY_S", "AMQPBroker", "AMQPConfig", "AMQPDelivery"]

MAX_DELAY_S = 7 * 24 * 3600


def __getattr__(name: str) -> Any:
    if name == "AMQPBroker":
        from paota.brokers.amqp.broker import AMQPBroker

        return AMQPBroker
    if name == "AMQPDelivery":
        from paota.brokers.amqp.consumer import AMQPDelivery

        return AMQPDelivery
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
