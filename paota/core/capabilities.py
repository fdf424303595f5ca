"""Capabilities a backend states about itself, asked for by features instead of testing classes.

The optional protocols (:class:`~paota.core.protocols.Coordination`, ``ControlChannel``,
``QueueDepths``, ...) are asked for with ``has_coordination(store)`` and its siblings in
:mod:`paota.core.protocols`; this module holds the stated ones that are not protocols.
"""

from __future__ import annotations

__all__ = ["is_shared", "prefetch_limit"]


def is_shared(backend: object) -> bool:
    """Whether ``backend`` (a broker or a store) is seen by other processes: its ``shared``
    attribute; True when it states none (a server, or a third-party backend). The in-process
    memory broker and store state ``shared = False``: a second process never sees what they
    hold."""
    return bool(getattr(backend, "shared", True))


def prefetch_limit(broker: object) -> int | None:
    """The most unacknowledged deliveries ``broker`` wants per consumer: its ``prefetch_limit``
    attribute (RabbitMQ's: ``amqp.prefetch_count``); None when it states none (the pool then asks
    for twice a queue's concurrency)."""
    limit = getattr(broker, "prefetch_limit", None)
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
