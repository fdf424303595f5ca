"""MongoDB settings: :class:`MongoConfig`, variables ``PAOTA_MONGO_*`` (no driver imported)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from paota.core.settings import Section, integer, opt, seconds, text, url

__all__ = ["MongoConfig"]


@dataclass(frozen=True, repr=False)
class MongoConfig(Section):
    """The MongoDB store settings; variables ``PAOTA_MONGO_*``.

    ``result_ttl_s`` of 0 keeps task records forever; ``timeout_s`` is the server selection and
    connect timeout in seconds.
    """

    _label_prefix: ClassVar[str] = "mongo."

    uri: str = opt(
        "mongodb://127.0.0.1:27017",
        "PAOTA_MONGO_URI",
        url("mongodb", "mongodb+srv", required=True),
    )
    database: str = opt("paota", "PAOTA_MONGO_DB", text(required=True))
    collection: str = opt("paota_tasks", "PAOTA_MONGO_COLLECTION", text(required=True))
    max_pool_size: int = opt(100, "PAOTA_MONGO_MAX_POOL_SIZE", integer(1))
    result_ttl_s: int = opt(0, "PAOTA_MONGO_RESULT_TTL", integer(0))
    timeout_s: float = opt(5.0, "PAOTA_MONGO_TIMEOUT", seconds(positive=True))
