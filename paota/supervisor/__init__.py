"""Several worker processes under one supervisor: ``paota worker MODULE:POOL --processes N``.

The :class:`Supervisor` starts N child processes (each a ``paota worker`` of its own, in its own
session so a terminal's Ctrl-C reaches only the supervisor) and keeps N running:

- a child that dies is started again, at once the first time and then with a growing delay
  (0.5 s, 1 s, 2 s ... up to 30 s) while it keeps dying within 5 s of its start; a child that
  fails with a configuration error (exit status 2) before it ever consumed stops the supervisor
  (its code will not fix itself); with ``--reload``, a child that fails before it consumed
  waits for the next change instead;
- a child recycles itself (:class:`SupervisedChild`) after ``--max-tasks-per-child`` tasks or
  beyond ``--max-memory-per-child``: it tells the supervisor, which starts its replacement at
  once, then stops taking work, lets its running tasks finish and exits;
- SIGTERM (or a first SIGINT) stops every child gracefully: running tasks finish within the
  children's ``shutdown_grace_s``, the deliveries they had not started go back to the broker; a
  child still running after its grace period and 10 s more is killed (its unacked deliveries go
  back to the broker too). A second SIGINT kills every child at once;
- ``--reload`` (``pip install 'paota[reload]'``, watchfiles) replaces every child when a ``.py``
  file under the watched directories changes: for development.

Supervisor and children talk over a socket pair, one JSON object a line, child to supervisor
(``ready``, ``recycling``); the child reads nothing from it but its end: when the supervisor dies,
even by SIGKILL, its children see the socket close and stop gracefully instead of living on as
orphans. POSIX only (the socket is handed down as a file descriptor).
"""

from paota.supervisor.child import FD_ENV, SupervisedChild, current_rss_bytes, supervised_child
from paota.supervisor.parent import Supervisor, parse_memory, restart_delay_s

__all__ = [
    "FD_ENV",
    "SupervisedChild",
    "Supervisor",
    "current_rss_bytes",
    "parse_memory",
    "restart_delay_s",
    "supervised_child",
]
