"""The :class:`~paota.core.protocols.Coordination` operations on MongoDB (MongoStore's).

They live in a collection of their own, ``{collection}_coord``, one document per entry, ``_id``
built from the entry's kind and key (``claim:...``, ``set:...``, ``slot:...:N``, ``start:...``,
``doc:KIND:KEY``). Each operation is one atomic single-document write (an insert that fails on a
duplicate ``_id``, a conditional update, ``$addToSet``), or a compare-and-set loop for start
reservations, so any number of processes can share them. Entries with a time to live carry
``expires_at``: reads treat an expired entry as absent, and a TTL index removes it later. Only
basic query and update operators are used, so MongoDB-protocol servers without aggregation
pipelines in updates work too.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import DuplicateKeyError, PyMongoError

from paota.core.errors import StoreError

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["MongoCoordination", "create_coordination_indexes"]

Document = dict[str, Any]
_CAS_ATTEMPTS = 50


def _now() -> datetime:
    return datetime.now(UTC)


def _expires(ttl_s: float | None) -> datetime | None:
    return None if ttl_s is None else _now() + timedelta(seconds=ttl_s)


def _ceil_ms(when: datetime) -> datetime:
    """``when`` rounded up to the millisecond (BSON's resolution)."""
    extra = when.microsecond % 1000
    return when if extra == 0 else when + timedelta(microseconds=1000 - extra)


def _live(now: datetime) -> Document:
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


async def create_coordination_indexes(coord: AsyncCollection[Document]) -> None:
    """The TTL index that removes expired entries, and the index of documents by kind."""
    await coord.create_index([("expires_at", pymongo.ASCENDING)], expireAfterSeconds=0)
    await coord.create_index([("kind", pymongo.ASCENDING), ("seq", pymongo.ASCENDING)])


class MongoCoordination:
    """Claims, sets, slots, start reservations and documents in ``{collection}_coord``."""

    def _coord(self) -> AsyncCollection[Document]:  # provided by the store
        raise NotImplementedError

    def _failed(self, action: str, exc: BaseException) -> StoreError:  # provided by the store
        raise NotImplementedError

    async def claim(self, key: str, owner: str, *, ttl_s: float | None = None) -> bool:
        """Create ``key`` for ``owner`` unless a live claim exists (an insert, or the takeover of
        an expired one)."""
        coord = self._coord()
        now = _now()
        doc: Document = {"_id": f"claim:{key}", "owner": owner, "expires_at": _expires(ttl_s)}
        try:
            try:
                await coord.insert_one(doc)
                return True
            except DuplicateKeyError:
                pass
            taken = await coord.update_one(
                {"_id": doc["_id"], "expires_at": {"$ne": None, "$lte": now}},
                {"$set": {"owner": owner, "expires_at": doc["expires_at"]}},
            )
            return taken.modified_count == 1
        except PyMongoError as exc:
            raise self._failed(f"claiming {key!r}", exc) from exc

    async def get_claim(self, key: str) -> str | None:
        """The owner of a live claim of ``key``, or None."""
        try:
            doc = await self._coord().find_one({"_id": f"claim:{key}", **_live(_now())})
        except PyMongoError as exc:
            raise self._failed(f"reading claim {key!r}", exc) from exc
        return None if doc is None else str(doc["owner"])

    async def release_claim(self, key: str, owner: str) -> bool:
        """Delete ``owner``'s claim of ``key``."""
        try:
            result = await self._coord().delete_one({"_id": f"claim:{key}", "owner": owner})
        except PyMongoError as exc:
            raise self._failed(f"releasing claim {key!r}", exc) from exc
        return result.deleted_count == 1

    async def add_member(
        self, key: str, member: str, *, ttl_s: float | None = None
    ) -> tuple[int, bool]:
        """``$addToSet`` on the set's document; the document before the update tells whether
        the member was new."""
        coord = self._coord()
        try:
            before = await coord.find_one_and_update(
                {"_id": f"set:{key}"},
                {
                    "$addToSet": {"members": member},
                    "$setOnInsert": {"expires_at": _expires(ttl_s)},
                },
                upsert=True,
                return_document=pymongo.ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:  # two first adds raced to create it: the loser updates
            return await self.add_member(key, member, ttl_s=ttl_s)
        except PyMongoError as exc:
            raise self._failed(f"adding to set {key!r}", exc) from exc
        members = [] if before is None else list(before.get("members") or [])
        if member in members:
            return len(members), False
        return len(members) + 1, True

    async def members(self, key: str) -> builtins.list[str]:
        """The members of the set ``key``."""
        try:
            doc = await self._coord().find_one({"_id": f"set:{key}", **_live(_now())})
        except PyMongoError as exc:
            raise self._failed(f"reading set {key!r}", exc) from exc
        return [] if doc is None else [str(m) for m in doc.get("members") or []]

    async def acquire_slot(self, key: str, holder: str, limit: int, *, ttl_s: float) -> bool:
        """Slots are ``limit`` documents; take the first that is free, expired or ours."""
        coord = self._coord()
        now = _now()
        expires = now + timedelta(seconds=ttl_s)
        try:
            for index in range(limit):
                slot_id = f"slot:{key}:{index}"
                taken = await coord.update_one(
                    {
                        "_id": slot_id,
                        "$or": [
                            {"holder": None},
                            {"holder": holder},
                            {"expires_at": {"$lte": now}},
                        ],
                    },
                    {"$set": {"holder": holder, "expires_at": expires, "key": key}},
                )
                if taken.matched_count:
                    await coord.update_many(  # a holder keeps one slot
                        {"key": key, "holder": holder, "_id": {"$ne": slot_id}},
                        {"$set": {"holder": None, "expires_at": None}},
                    )
                    return True
                try:
                    await coord.insert_one(
                        {"_id": slot_id, "key": key, "holder": holder, "expires_at": expires}
                    )
                    return True
                except DuplicateKeyError:
                    continue  # held by another holder
        except PyMongoError as exc:
            raise self._failed(f"taking a slot of {key!r}", exc) from exc
        return False

    async def release_slot(self, key: str, holder: str) -> None:
        """Free ``holder``'s slot of ``key``."""
        try:
            await self._coord().update_many(
                {"key": key, "holder": holder}, {"$set": {"holder": None, "expires_at": None}}
            )
        except PyMongoError as exc:
            raise self._failed(f"releasing a slot of {key!r}", exc) from exc

    async def reserve_start(self, key: str, interval_s: float, *, now: datetime) -> float:
        """Compare-and-set on the last reserved start: the next one is ``interval_s`` after it,
        or ``now`` when that is later."""
        coord = self._coord()
        step = timedelta(seconds=interval_s)
        doc_id = f"start:{key}"
        try:
            for _ in itertools.repeat(None, _CAS_ATTEMPTS):
                doc = await coord.find_one({"_id": doc_id})
                if doc is None:
                    try:
                        await coord.insert_one({"_id": doc_id, "last": _ceil_ms(now)})
                        return 0.0
                    except DuplicateKeyError:
                        continue
                last: datetime = doc["last"]
                if last.tzinfo is None:
                    last = last.replace(tzinfo=UTC)
                start: datetime = max(now, last + step)
                # BSON keeps milliseconds: compare against the stored value itself, and store
                # the start rounded up, so the next start is never less than interval_s after
                # the one returned here (truncating would let starts come up to 1 ms closer).
                done = await coord.update_one(
                    {"_id": doc_id, "last": doc["last"]}, {"$set": {"last": _ceil_ms(start)}}
                )
                if done.modified_count == 1:
                    wait_s: float = (start - now).total_seconds()
                    return max(0.0, wait_s)
        except PyMongoError as exc:
            raise self._failed(f"reserving a start of {key!r}", exc) from exc
        raise StoreError(f"reserving a start of {key!r}: too much contention, try again")

    async def put_doc(
        self, kind: str, key: str, doc: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> None:
        """Upsert ``(kind, key)``; its place in :meth:`list_docs` order is kept on update."""
        coord = self._coord()
        try:
            await coord.update_one(
                {"_id": f"doc:{kind}:{key}"},
                {
                    "$set": {"doc": dict(doc), "expires_at": _expires(ttl_s)},
                    "$setOnInsert": {"kind": kind, "key": key, "seq": _now()},
                },
                upsert=True,
            )
        except PyMongoError as exc:
            raise self._failed(f"writing {kind} {key!r}", exc) from exc

    async def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        """``(kind, key)``, or None."""
        try:
            found = await self._coord().find_one({"_id": f"doc:{kind}:{key}", **_live(_now())})
        except PyMongoError as exc:
            raise self._failed(f"reading {kind} {key!r}", exc) from exc
        return None if found is None else {**found.get("doc", {}), "_key": key}

    async def list_docs(self, kind: str, *, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        """Live documents of ``kind``, oldest first."""
        if limit <= 0:
            return []
        try:
            cursor = (
                self._coord()
                .find({"kind": kind, **_live(_now())})
                .sort("seq", pymongo.ASCENDING)
                .limit(limit)
            )
            return [{**d.get("doc", {}), "_key": d["key"]} async for d in cursor]
        except PyMongoError as exc:
            raise self._failed(f"listing {kind}", exc) from exc

    async def delete_doc(self, kind: str, key: str) -> bool:
        """Delete ``(kind, key)``."""
        try:
            result = await self._coord().delete_one({"_id": f"doc:{kind}:{key}"})
        except PyMongoError as exc:
            raise self._failed(f"deleting {kind} {key!r}", exc) from exc
        return result.deleted_count == 1
