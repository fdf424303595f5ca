"""Middleware that ships with paota (see :mod:`paota.core.middleware` for the hooks).

- :class:`~paota.middleware.stats.StatsMiddleware`: the pool's counters (``pool.stats``);
- :class:`~paota.middleware.callbacks.CallbacksMiddleware`: per-task ``on_success`` /
  ``on_failure``.

Every pool installs both; other middleware here are optional and imported on demand.
"""
