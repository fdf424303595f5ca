"""The RabbitMQ topology paota uses: what is declared, with which arguments, and how delays route.

Everything here is a frozen description built from :class:`~paota.core.config.Config`
(:meth:`Topology.from_config`); :func:`declare` sends it to RabbitMQ. Declaring is idempotent, so
every worker and producer declares the whole topology when it connects.

The names, types and arguments shared with Go paota are exactly Go's, so Go and Python processes
can declare the same topology in any order without a ``PRECONDITION_FAILED`` clash:

- the task exchange (``amqp.exchange``, ``amqp.exchange_type``, durable);
- the task queue (``task_queue_name``, durable, ``amqp.queue_declare_args``), bound to the task
  exchange with ``amqp.binding_key`` (and ``amqp.queue_binding_args``);
- the failed and timeout queues (durable, declared with ``amqp.queue_declare_args`` as Go does),
  bound to the task exchange with their own names as routing keys;
- Go's delayed queue (``amqp.delayed_queue``): Go publishes a delayed task to the task exchange with
  routing key ``delayed_queue`` and a per-message TTL; on expiry it is dead-lettered back to the
  task exchange with Go's routing key. paota declares it the same way so Go producers keep working,
  but does not use it for its own delays: per-message TTLs on one queue block at the head (a 1 s
  message waits behind a 60 s one).

Delayed messages go through a delay ladder and (by default) a hold queue whose last stretch waits
in a worker: :mod:`paota.brokers.amqp.ladder` says how, and the trade-off of ``amqp.delay_mode``
and ``amqp.delay_queue_type``. Delete at-least-once ladder queues one at a time
(:func:`delete_ladder`): RabbitMQ 3.10 to 4.x supervise their dead-letter workers together, and a
burst of many worker exits within a second (deleting dozens of such queues at once) exceeds the
supervisor's restart limit and leaves the node's at-least-once queues unable to dead-letter until
it restarts (rabbitmq-server#16652).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paota.brokers.amqp.ladder import (
    DEFAULT_HOLD_LADDER,
    DELAY_LEVELS,
    DELAY_MODES,
    DELAY_QUEUE_TYPES,
    Ladder,
    strip_ladder_deaths,
)
from paota.brokers.amqp.specs import ExchangeBinding, ExchangeSpec, QueueBinding, QueueSpec
from paota.brokers.amqp.specs import frozen as _frozen
from paota.core.errors import TopologyError
from paota.core.protocols import MAX_DELAY_S

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel

    from paota.core.config import Config

__all__ = [
    "DELAY_LEVELS",
    "DELAY_MODES",
    "DELAY_QUEUE_TYPES",
    "MAX_DELAY_S",
    "ExchangeBinding",
    "ExchangeSpec",
    "Ladder",
    "QueueBinding",
    "QueueSpec",
    "Topology",
    "check_queue_name",
    "declare",
    "delete_ladder",
    "strip_ladder_deaths",
]

logger = logging.getLogger("paota.brokers.amqp")

_ROUTING_KEY_MAX = 255
# Exchange types whose bindings filter by routing key; on fanout/headers exchanges a binding keyed
# by a queue name would copy every task into that queue.
_KEYED_EXCHANGE_TYPES = frozenset({"direct", "topic"})


def check_queue_name(name: str) -> str:
    """``name`` if it can be a task queue (the last word of a delay routing key), else
    :class:`~paota.core.errors.TopologyError` saying why."""
    if not isinstance(name, str) or not name:
        raise TopologyError(f"queue name {name!r} is not valid: expected a non-empty string")
    words = name.split(".")
    if "*" in words or "#" in words:
        raise TopologyError(
            f"queue name {name!r} cannot route delayed messages: a dot-separated word '*' or "
            "'#' is a topic wildcard"
        )
    if len(name.encode()) + 2 * DELAY_LEVELS > _ROUTING_KEY_MAX:
        raise TopologyError(
            f"queue name {name!r} is too long to route delayed messages: at most "
            f"{_ROUTING_KEY_MAX - 2 * DELAY_LEVELS} bytes"
        )
    return name


def ladder_name(config: Config, mode: str) -> str:
    """The delay ladder's name for ``config`` in ``mode``: ``amqp.delay_ladder``, else
    ``paota.delay`` (``"hold"``, one per vhost) or ``amqp.delayed_queue`` (``"ladder"``)."""
    amqp = config.amqp
    if amqp.delay_ladder:
        return amqp.delay_ladder
    return DEFAULT_HOLD_LADDER if mode == "hold" else amqp.delayed_queue


@dataclass(frozen=True)
class Topology:
    """Everything paota declares for one :class:`~paota.core.config.Config`, in declaration order.

    ``exchange`` and ``routing_key`` are where immediate tasks are published; :meth:`delay_route`
    says where a delayed one goes, through ``ladder`` (:class:`~paota.brokers.amqp.ladder.Ladder`).
    ``ladder_queues`` are the ladder's queue names (the levels, lowest first, then the hold queue)
    and ``delivery_exchange`` the exchange below its lowest level.
    """

    exchange: str
    routing_key: str
    task_queue: str
    failed_queue: str
    timeout_queue: str
    ladder: Ladder
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    queue_bindings: tuple[QueueBinding, ...]
    exchange_bindings: tuple[ExchangeBinding, ...]
    keyed: bool = True
    queue_arguments: Mapping[str, Any] = field(default_factory=_frozen)

    @property
    def ladder_queues(self) -> tuple[str, ...]:
        """The delay ladder's queues (levels lowest first, then the hold queue if any)."""
        return self.ladder.queue_names

    @property
    def delivery_exchange(self) -> str:
        """The exchange below the ladder's lowest level (delivery or hold exchange)."""
        return self.ladder.bottom

    @classmethod
    def from_config(
        cls, config: Config, *, delay_queue_type: str | None = None, delay_mode: str | None = None
    ) -> Topology:
        """The topology for ``config``, with a delay ladder of ``delay_queue_type`` queues in
        ``delay_mode`` (defaults: ``config.amqp.delay_queue_type`` and ``config.amqp.delay_mode``).

        Raises :class:`~paota.core.errors.TopologyError` when the task queue name cannot be the
        last part of a delay routing key (a word ``*`` or ``#``, or too long), and ValueError for
        a ``delay_queue_type`` not in :data:`DELAY_QUEUE_TYPES` or a ``delay_mode`` not in
        :data:`DELAY_MODES`.
        """
        amqp = config.amqp
        ladder = Ladder.build(
            ladder_name(config, delay_mode or amqp.delay_mode),
            mode=delay_mode or amqp.delay_mode,
            queue_type=delay_queue_type or amqp.delay_queue_type,
        )
        task_queue = check_queue_name(config.task_queue_name)
        keyed = amqp.exchange_type in _KEYED_EXCHANGE_TYPES
        # Go: the binding key on a direct exchange, the task queue name otherwise.
        go_routing_key = (
            amqp.binding_key if amqp.binding_key and amqp.exchange_type == "direct" else task_queue
        )
        exchanges = [ExchangeSpec(amqp.exchange, amqp.exchange_type), *ladder.exchanges()]
        queues = [
            # Go declares its task queue with auto_delete=false whatever its config says; a
            # declaration that differs would fail (PRECONDITION_FAILED) on a shared queue.
            QueueSpec(task_queue, _frozen(amqp.queue_declare_args)),
            QueueSpec(amqp.failed_queue, _frozen(amqp.queue_declare_args)),
            QueueSpec(amqp.timeout_queue, _frozen(amqp.queue_declare_args)),
            QueueSpec(
                amqp.delayed_queue,
                _frozen(
                    {
                        "x-dead-letter-exchange": amqp.exchange,
                        "x-dead-letter-routing-key": go_routing_key,
                    }
                ),
            ),
            *ladder.queues(),
        ]
        queue_bindings = [
            QueueBinding(
                task_queue, amqp.exchange, amqp.binding_key, _frozen(amqp.queue_binding_args)
            ),
            *ladder.target_bindings(task_queue),
        ]
        if keyed:
            queue_bindings += [
                QueueBinding(amqp.failed_queue, amqp.exchange, amqp.failed_queue),
                QueueBinding(amqp.timeout_queue, amqp.exchange, amqp.timeout_queue),
                QueueBinding(amqp.delayed_queue, amqp.exchange, amqp.delayed_queue),
            ]
        queue_bindings += ladder.queue_bindings()
        return cls(
            exchange=amqp.exchange,
            routing_key=amqp.binding_key or task_queue,
            task_queue=task_queue,
            failed_queue=amqp.failed_queue,
            timeout_queue=amqp.timeout_queue,
            ladder=ladder,
            exchanges=tuple(exchanges),
            queues=tuple(queues),
            queue_bindings=tuple(queue_bindings),
            exchange_bindings=tuple(ladder.exchange_bindings()),
            keyed=keyed,
            queue_arguments=_frozen(amqp.queue_declare_args),
        )

    def extra_queue(self, name: str) -> Topology:
        """What declaring another task queue ``name`` takes: the queue (with the task queue's
        arguments), bound to the task exchange with its own name as routing key (on direct and
        topic exchanges, so Go producers can reach it with ``RoutingKey``) and, in ``"ladder"``
        mode, to the ladder's delivery exchange. A topology of just those items, for
        :func:`declare`."""
        check_queue_name(name)
        bindings = self.ladder.target_bindings(name)
        if self.keyed:
            bindings.insert(0, QueueBinding(name, self.exchange, name))
        return Topology(
            exchange=self.exchange,
            routing_key=name,
            task_queue=name,
            failed_queue=self.failed_queue,
            timeout_queue=self.timeout_queue,
            ladder=self.ladder,
            exchanges=(),
            queues=(QueueSpec(name, self.queue_arguments),),
            queue_bindings=tuple(bindings),
            exchange_bindings=(),
            keyed=self.keyed,
            queue_arguments=self.queue_arguments,
        )

    def route(self, queue: str) -> tuple[str, str]:
        """``(exchange, routing_key)`` that reaches ``queue`` at once: the task queue through the
        task exchange with the binding key (as Go publishes), a parking queue through the default
        exchange, another task queue through the task exchange by its name (the default exchange
        on fanout and headers exchanges)."""
        if queue == self.task_queue:
            return self.exchange, self.routing_key
        if queue in (self.failed_queue, self.timeout_queue) or not self.keyed:
            return "", queue
        return self.exchange, queue

    def delay_route(self, delay_ms: int, queue: str | None = None) -> tuple[str, str]:
        """``(exchange, routing_key)`` that delivers to ``queue`` (default: the task queue) after
        ``delay_ms`` ms (:meth:`Ladder.route <paota.brokers.amqp.ladder.Ladder.route>`).

        Raises ValueError unless 1 <= ``delay_ms`` <= 7 days.
        """
        return self.ladder.route(delay_ms, queue or self.task_queue)

    def names(self) -> tuple[list[str], list[str]]:
        """``(queue names, exchange names)`` this topology declares (for tooling and tests)."""
        return [q.name for q in self.queues], [e.name for e in self.exchanges]


def _steps(topology: Topology) -> Iterator[tuple[str, str, Any]]:
    for exchange in topology.exchanges:
        yield "exchange", exchange.name, exchange
    for queue in topology.queues:
        yield "queue", queue.name, queue
    for binding in topology.queue_bindings:
        yield "binding", f"{binding.queue!r} to exchange {binding.exchange!r}", binding
    for e_binding in topology.exchange_bindings:
        yield (
            "binding",
            f"exchange {e_binding.destination!r} to exchange {e_binding.source!r}",
            e_binding,
        )


async def declare(channel: AbstractChannel, topology: Topology, *, timeout_s: float) -> None:
    """Declare ``topology`` on ``channel`` (a channel without publisher confirms).

    A refusal by RabbitMQ (``PRECONDITION_FAILED`` for an existing queue or exchange with other
    arguments, ``ACCESS_REFUSED``, ...) closes the channel and raises
    :class:`~paota.core.errors.TopologyError` with RabbitMQ's reply text, which names the queue and
    the argument that differs. Connection errors propagate unchanged.

    In a cluster, a classic queue lives on one node; while that node is down RabbitMQ refuses to
    declare it (``NOT_FOUND - home node ... is down or inaccessible``). Such a queue (Go's delayed
    queue, typically, which Go declares classic) is skipped with a WARNING, with its bindings, so a
    connection to a surviving node still comes up; everything else is declared as usual.
    """
    import aiormq

    unreachable: set[str] = set()
    for kind, label, item in _steps(topology):
        if isinstance(item, QueueBinding) and item.queue in unreachable:
            continue
        try:
            if isinstance(item, ExchangeSpec):
                await channel.exchange_declare(
                    item.name, exchange_type=item.type, durable=True, timeout=timeout_s
                )
            elif isinstance(item, QueueSpec):
                await channel.queue_declare(
                    item.name,
                    durable=True,
                    auto_delete=item.auto_delete,
                    arguments=dict(item.arguments),
                    timeout=timeout_s,
                )
            elif isinstance(item, QueueBinding):
                await channel.queue_bind(
                    item.queue,
                    item.exchange,
                    routing_key=item.routing_key,
                    arguments=dict(item.arguments),
                    timeout=timeout_s,
                )
            else:
                await channel.exchange_bind(
                    item.destination, item.source, item.routing_key, timeout=timeout_s
                )
        except aiormq.ChannelClosed as exc:
            reply = " ".join(str(arg) for arg in exc.args if arg is not None) or repr(exc)
            if isinstance(item, QueueSpec) and "home node" in reply and "down" in reply:
                logger.warning(
                    "queue %r is not declared: its home node is down (%s); its messages come "
                    "back with that node",
                    item.name,
                    reply,
                )
                unreachable.add(item.name)
                channel = await channel.connection.channel(publisher_confirms=False)
                continue
            if isinstance(item, QueueSpec):
                what = f"queue {label!r} (arguments {dict(item.arguments)}, durable, auto_delete="
                what += f"{item.auto_delete})"
            elif isinstance(item, ExchangeSpec):
                what = f"exchange {label!r} (type {item.type!r}, durable)"
            else:
                what = f"{kind} of {label}"
            advice = _advice(item, reply)
            raise TopologyError(
                f"RabbitMQ refused to declare {what}: {reply}{'. ' + advice if advice else ''}"
            ) from exc


#: Which setting a queue argument paota declares comes from, and what to do when it differs.
_ARGUMENT_SETTINGS = {
    "x-dead-letter-routing-key": (
        "amqp.binding_key (PAOTA_AMQP_BINDING_KEY): the delayed queue forwards due tasks with the "
        "binding key, so each binding key needs a delayed queue of its own; set amqp.delayed_queue "
        "(PAOTA_AMQP_DELAYED_QUEUE) to a new name"
    ),
    "x-dead-letter-exchange": (
        "amqp.exchange (PAOTA_AMQP_EXCHANGE): the delayed queue forwards due tasks to the "
        "exchange, so each exchange needs a delayed queue of its own; set amqp.delayed_queue "
        "(PAOTA_AMQP_DELAYED_QUEUE) to a new name"
    ),
    "x-queue-type": (
        "amqp.delay_queue_type (PAOTA_AMQP_DELAY_QUEUE_TYPE) for the delay ladder, "
        "amqp.queue_declare_args (PAOTA_AMQP_QUEUE_DECLARE_ARGS) for the task queues"
    ),
}
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)' for (queue|exchange) '([^']*)'")


def _advice(item: object, reply: str) -> str:
    """For a PRECONDITION_FAILED reply: the setting that declares what differs, and how to move
    on. Empty for other replies."""
    match = _INEQUIVALENT.search(reply)
    if match is None:
        return ""
    argument, kind, name = match.groups()
    if kind == "exchange":
        setting = (
            "amqp.exchange_type (PAOTA_AMQP_EXCHANGE_TYPE)"
            if argument == "type"
            else "the exchange's declaration (paota declares it durable)"
        )
    elif argument in _ARGUMENT_SETTINGS:
        setting = _ARGUMENT_SETTINGS[argument]
    elif argument in ("durable", "auto_delete", "exclusive"):
        setting = "how another client declared it (paota declares queues durable, not auto-delete)"
    else:
        setting = "amqp.queue_declare_args (PAOTA_AMQP_QUEUE_DECLARE_ARGS)"
    delete = f"rabbitmqctl delete_{kind} {name}" if kind == "queue" else ""
    return (
        f"The {kind} {name!r} exists with another {argument!r}; this config's comes from "
        f"{setting}. RabbitMQ keeps a {kind}'s arguments for its life: keep the value it has, "
        f"or use a {kind} of another name, or drain and delete it"
        + (f" ({delete})" if delete else "")
    )


async def delete_ladder(
    channel: AbstractChannel, topology: Topology, *, pause_s: float = 0.2
) -> None:
    """Delete the delay ladder of ``topology`` (its queues and exchanges), one queue at a time,
    ``pause_s`` apart, whatever waits in it (those messages are lost: call it on a drained ladder),
    so an at-least-once ladder never ends dozens of dead-letter workers within one second (see the
    module docs): :func:`~paota.brokers.amqp.ladders.delete_ladder_queues` with ``force``.
    Missing queues and exchanges are skipped; a ``"ladder"`` mode delivery exchange goes with the
    last queue type of its name."""
    from paota.brokers.amqp.ladders import delete_ladder_queues

    await delete_ladder_queues(channel.connection, topology.ladder, force=True, pause_s=pause_s)
