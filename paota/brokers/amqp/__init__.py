"""The RabbitMQ broker (needs ``aiormq``: ``pip install 'paota[amqp]'``).

:class:`AMQPBroker` speaks Go paota's wire format on Go paota's topology, with publisher confirms,
an order-keeping delay ladder and automatic reconnection. The modules:

- :mod:`~paota.brokers.amqp.broker`: :class:`AMQPBroker` and its :class:`AMQPDelivery`;
- :mod:`~paota.brokers.amqp.connection`: the self-healing connection pool;
- :mod:`~paota.brokers.amqp.topology`: what is declared, and the delay ladder;
- :mod:`~paota.brokers.amqp.properties`: message properties with Go-compatible header types.
"""

from __future__ import annotations

from paota.brokers.amqp.broker import AMQPBroker, AMQPDelivery
from paota.brokers.amqp.topology import MAX_DELAY_S

__all__ = ["MAX_DELAY_S", "AMQPBroker", "AMQPDelivery"]
