"""How paota delays a message on RabbitMQ: the delay ladder and the hold queue (:class:`Ladder`).

A delay ladder (the "delay infrastructure" of NServiceBus) is a column of durable queues, level
*k* with a queue-level ``x-message-ttl`` of 2**k ms, each with a topic exchange of the same name.
A delayed message is published with its delay in the routing key, one binary digit per word, most
significant first, to the exchange of its highest set bit. The exchange of level *k* routes a key
with ``1`` at bit *k* to its queue, and one with ``0`` there on to the exchange of level *k-1* (an
exchange-to-exchange binding). When the message expires from the queue of level *k* it is
dead-lettered, routing key unchanged, to the exchange of level *k-1*, which sends it on by the next
bit. A message thus waits the sum of the TTLs of its set bits. Every queue has one TTL, so its FIFO
order is its expiry order and nothing waits behind a longer delay.

Two modes (``amqp.delay_mode``, :data:`DELAY_MODES`):

- ``"hold"`` (the default). The ladder has the levels 14 to 29 only (16.4 s to 12 days, 16
  queues), and below it a *hold queue*: the last stretch of every delay, under 16.4 s, waits in a
  paota worker. A delay shorter than that (most retries, throttled deferrals, near ETAs) skips the
  ladder: it is published straight to the hold queue. Every paota worker consumes the hold queue
  (:mod:`paota.brokers.amqp.hold`) with a large prefetch, keeps each message unacknowledged until
  it is due (the ``x-paota-delay-due`` header, Unix milliseconds, written at the publish), then
  publishes it, confirmed, to its queue (``x-paota-delay-queue``) through the default exchange
  and only then acks it. A worker that dies or loses its connection holding messages hands them
  back to RabbitMQ unacked, and another worker holds them; a message is never given to its queue
  before it is due (an ETA is also checked again by the worker that runs it), and at worst twice
  (at-least-once, as the ladder's dead-lettering). One ladder serves a whole vhost: its default
  name ``paota.delay`` is shared by every application (``amqp.delay_ladder`` names another one).
  Delayed messages need a paota worker to move them: Go workers do not consume the hold queue.
- ``"ladder"``: the broker alone. 30 levels (1 ms to 12 days) that end in the delivery exchange
  ``{ladder}.deliver``, to which every task queue is bound with the pattern ``*.*. ... .*.<task
  queue>`` (30 wildcards, then the queue name): the last word of the key names the target queue.
  No worker is needed to move a delayed message (a deployment whose workers are all Go), at the
  cost of up to 30 queue hops, each a topic routing of a 31-word key and (quorum) a confirmed
  dead-lettering: about 40 times the broker's CPU of an immediate task, and seconds of lateness
  in a burst (``bench/amqp.py`` measures both modes side by side). Its name is
  ``amqp.delay_ladder`` or, when that is empty, ``amqp.delayed_queue``: the layout of paota
  before the hold queue.

Queue type of the levels and the hold queue (``amqp.delay_queue_type``, :data:`DELAY_QUEUE_TYPES`):

- ``"quorum"`` (the default, RabbitMQ >= 3.10): quorum queues, the levels with
  ``x-dead-letter-strategy: at-least-once`` (and the ``x-overflow: reject-publish`` it requires).
  A quorum queue keeps a dead-lettered message until the next level has confirmed it, so a delayed
  message survives a broker crash (SIGKILL) or restart at any point of its way, and a node loss in
  a cluster.
- ``"classic"``: classic queues dead-letter *at most once*: a message dead-lettered while the
  broker stops or crashes is dropped (a few per thousand in-flight delays per restart). Cheaper on
  the broker; use it only where a lost retry or ETA is acceptable.

Each mode and queue type has names of its own (``{ladder}.h14``/``.hold``, ``{ladder}.c14``/
``.hold-c``, ``{ladder}.q00``, ``{ladder}.l00``), so a deployment that switches leaves the other
ladder alone. From ``"ladder"`` to ``"hold"``, what waits in the old ladder still arrives (it keeps
its queues, exchanges and bindings until they are deleted). Away from a ``"hold"`` ladder it does
not by itself: workers consume only their own hold queue, so one worker must keep the old setting
until the old ladder is empty (``paota ladders`` shows it). Dead-lettering
keeps the body and all properties; RabbitMQ adds its ``x-death`` headers, which are removed again
(:func:`strip_ladder_deaths`). Delays go up to 2**30 - 1 ms; paota allows up to 7 days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paota.brokers.amqp.specs import ExchangeBinding, ExchangeSpec, QueueBinding, QueueSpec, frozen
from paota.core.protocols import MAX_DELAY_S

__all__ = [
    "DEFAULT_HOLD_LADDER",
    "DELAY_LEVELS",
    "DELAY_MODES",
    "DELAY_QUEUE_TYPES",
    "DUE_HEADER",
    "FAILED_HEADER",
    "HOLD_BITS",
    "TARGET_HEADER",
    "Ladder",
    "every_ladder_queue",
    "strip_ladder_deaths",
]

#: Levels of the delay ladder; the longest representable delay is 2**DELAY_LEVELS - 1 ms.
DELAY_LEVELS = 30
#: In ``"hold"`` mode the last ``2**HOLD_BITS`` ms (16.4 s) of a delay wait in a worker.
HOLD_BITS = 14
#: The quorum hold queue's ``x-delivery-limit``: as good as none (RabbitMQ 4's default is 20).
HOLD_DELIVERY_LIMIT = 1_000_000
#: Queue types the delay ladder can use (see the module docs for the trade-off).
DELAY_QUEUE_TYPES = ("quorum", "classic")
#: How delays are made (see the module docs).
DELAY_MODES = ("hold", "ladder")
#: The ladder's name in ``"hold"`` mode when ``amqp.delay_ladder`` is empty: one per vhost.
DEFAULT_HOLD_LADDER = "paota.delay"
#: When a held message is due: Unix time in milliseconds, written by the publisher.
DUE_HEADER = "x-paota-delay-due"
#: The queue a held message goes to when it is due.
TARGET_HEADER = "x-paota-delay-queue"
#: The failed queue of the application that delayed the message: where it is parked when its
#: queue is gone at its due time.
FAILED_HEADER = "x-paota-delay-failed"

_MAX_DELAY_MS = MAX_DELAY_S * 1000
# The level queues' name infix per mode and queue type: ``{ladder}.h14``, ``{ladder}.q07``, ...
_INFIX = {("hold", "quorum"): "h", ("hold", "classic"): "c", ("ladder", "quorum"): "q"}
_INFIX[("ladder", "classic")] = "l"
_HOLD_SUFFIX = {"quorum": "hold", "classic": "hold-c"}
_USES_ARGUMENTS = {"x-queue-type": "classic", "x-max-length": 1, "x-overflow": "drop-head"}
_DEATH_HEADERS = ("x-first-death-exchange", "x-first-death-queue", "x-first-death-reason")
_LAST_DEATH_HEADERS = ("x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")


@dataclass(frozen=True)
class Ladder:
    """One delay ladder: its queues (and the exchanges of the same names), lowest level first.

    ``bottom`` is the exchange below the lowest level: the delivery exchange (``"ladder"`` mode,
    topic, task queues bound to it) or the hold exchange (``"hold"`` mode, fanout to
    ``hold_queue``).
    """

    name: str
    mode: str
    queue_type: str
    levels: tuple[str, ...]
    first_level: int
    bottom: str
    hold_queue: str

    @classmethod
    def build(cls, prefix: str, *, mode: str, queue_type: str) -> Ladder:
        """The ladder named ``prefix`` of ``mode`` and ``queue_type`` (ValueError for others)."""
        if mode not in DELAY_MODES:
            raise ValueError(
                f"delay_mode={mode!r} is not valid: expected one of "
                + ", ".join(map(repr, DELAY_MODES))
            )
        if queue_type not in DELAY_QUEUE_TYPES:
            raise ValueError(
                f"delay_queue_type={queue_type!r} is not valid: expected one of "
                + ", ".join(map(repr, DELAY_QUEUE_TYPES))
            )
        infix = _INFIX[(mode, queue_type)]
        first = HOLD_BITS if mode == "hold" else 0
        levels = tuple(f"{prefix}.{infix}{k:02d}" for k in range(first, DELAY_LEVELS))
        if mode == "hold":
            hold = f"{prefix}.{_HOLD_SUFFIX[queue_type]}"
            return cls(prefix, mode, queue_type, levels, first, hold, hold)
        return cls(prefix, mode, queue_type, levels, first, f"{prefix}.deliver", "")

    @property
    def uses_queue(self) -> str:
        """The queue that keeps the ladder's last use: one small record (``x-max-length`` 1) that
        every producer and worker declaring the ladder publishes
        (:func:`~paota.brokers.amqp.ladders.note_use`)."""
        return f"{self.name}.uses-{self.mode}-{self.queue_type}"

    @property
    def queue_names(self) -> tuple[str, ...]:
        """Every queue of the ladder: the levels, lowest first, the hold queue, the uses queue."""
        hold = (self.hold_queue,) if self.hold_queue else ()
        return (*self.levels, *hold, self.uses_queue)

    @property
    def _words(self) -> int:
        return DELAY_LEVELS - self.first_level

    def _pattern(self, level: int, digit: str) -> str:
        """The topic pattern matching a key with ``digit`` at bit ``level``."""
        words = ["*"] * self._words
        words[DELAY_LEVELS - 1 - level] = digit
        return ".".join([*words, "#"])

    def exchanges(self) -> list[ExchangeSpec]:
        """The level exchanges (topic), then the bottom one."""
        specs = [ExchangeSpec(name, "topic") for name in self.levels]
        specs.append(ExchangeSpec(self.bottom, "fanout" if self.hold_queue else "topic"))
        return specs

    def queues(self) -> list[QueueSpec]:
        """The level queues (one TTL each, dead-lettering one level down), then the hold queue."""
        at_least_once: Mapping[str, Any] = (
            {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
            if self.queue_type == "quorum"
            else {}
        )
        specs = []
        for index, name in enumerate(self.levels):
            arguments = {
                "x-queue-type": self.queue_type,
                "x-message-ttl": 2 ** (self.first_level + index),
                "x-dead-letter-exchange": self.levels[index - 1] if index else self.bottom,
                **at_least_once,
            }
            specs.append(QueueSpec(name, frozen(arguments)))
        if self.hold_queue:
            hold: dict[str, Any] = {"x-queue-type": self.queue_type}
            if self.queue_type == "quorum":
                # RabbitMQ 4 drops a quorum queue's message after 20 returns by default; a held
                # message comes back at each connection loss of the worker holding it
                hold["x-delivery-limit"] = HOLD_DELIVERY_LIMIT
            specs.append(QueueSpec(self.hold_queue, frozen(hold)))
        specs.append(QueueSpec(self.uses_queue, frozen(_USES_ARGUMENTS)))
        return specs

    def queue_bindings(self) -> list[QueueBinding]:
        """Each level queue to its exchange for keys with a 1 at its bit; the hold queue to the
        hold exchange."""
        bindings = [
            QueueBinding(name, name, self._pattern(self.first_level + index, "1"))
            for index, name in enumerate(self.levels)
        ]
        if self.hold_queue:
            bindings.append(QueueBinding(self.hold_queue, self.bottom, ""))
        return bindings

    def exchange_bindings(self) -> list[ExchangeBinding]:
        """Each level exchange passes keys with a 0 at its bit one level down."""
        return [
            ExchangeBinding(
                self.levels[index - 1] if index else self.bottom,
                name,
                self._pattern(self.first_level + index, "0"),
            )
            for index, name in enumerate(self.levels)
        ]

    def target_bindings(self, queue: str) -> list[QueueBinding]:
        """What a task queue ``queue`` needs to receive delayed messages: in ``"ladder"`` mode a
        binding to the delivery exchange by its name; nothing in ``"hold"`` mode (a worker sends
        due messages through the default exchange)."""
        if self.hold_queue:
            return []
        return [QueueBinding(queue, self.bottom, ".".join(["*"] * DELAY_LEVELS + [queue]))]

    def route(self, delay_ms: int, queue: str) -> tuple[str, str]:
        """``(exchange, routing_key)`` that delays a message ``delay_ms`` ms on its way to
        ``queue``: into the ladder at the level of its highest bit, or (``"hold"`` mode, a delay
        under ``2**HOLD_BITS`` ms) straight to the hold queue.

        Raises ValueError unless 1 <= ``delay_ms`` <= 7 days.
        """
        if not 1 <= delay_ms <= _MAX_DELAY_MS:
            raise ValueError(f"delay of {delay_ms} ms is out of range: 1 ms .. {MAX_DELAY_S} s")
        high = delay_ms >> self.first_level
        if not high:
            return "", self.hold_queue
        words = list(format(high, f"0{self._words}b"))
        if not self.hold_queue:
            words.append(queue)
        return self.levels[high.bit_length() - 1], ".".join(words)


def strip_ladder_deaths(headers: dict[str, Any], ladder_queues: frozenset[str]) -> dict[str, Any]:
    """Remove the ``x-death`` bookkeeping the delay ladder added, if it is the only dead-lettering.

    Messages that were also dead-lettered elsewhere keep all their death headers.
    """
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths:
        return headers
    for death in deaths:
        if not isinstance(death, Mapping):
            return headers
        queue = death.get("queue")
        if isinstance(queue, bytes):
            queue = queue.decode("utf-8", "replace")
        if queue not in ladder_queues:
            return headers
    stripped = {k: v for k, v in headers.items() if k != "x-death"}
    for name in (*_DEATH_HEADERS, *_LAST_DEATH_HEADERS):
        stripped.pop(name, None)
    return stripped


def every_ladder_queue(prefixes: Mapping[str, str]) -> frozenset[str]:
    """The queues of every mode and queue type, ``prefixes`` giving each mode's ladder name:
    after a switch, messages still come from the other ladders for a while."""
    return frozenset(
        name
        for mode, prefix in prefixes.items()
        for kind in DELAY_QUEUE_TYPES
        for name in Ladder.build(prefix, mode=mode, queue_type=kind).queue_names
    )
