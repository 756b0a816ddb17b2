"""The users read model in MongoDB: what the query routes serve, applied from events.

One document per user id (``_id``), denormalised for the queries: ``email_domain``
and ``signup_day`` beside the user's fields; ``state`` "registered", or "deleted"
(with ``deleted_at``) once erased.

Guard: the user's lifecycle, not a version number. The events carry no
per-user sequence, and a user has exactly two, in a fixed order (registered, then
deleted). So ``user.registered`` only ever *inserts* (``$setOnInsert`` with upsert),
and ``user.deleted`` *sets* a terminal tombstone (upsert too, its values taken
from the event only). Each write is idempotent, and the two commute: any number
of repeats, in any order — including a registration redelivered after the
deletion — leave the same document, and an erased user never reappears. This
needs no stored event ids and no read-then-write, so competing workers cannot
race it (a concurrent first insert loses with a duplicate key error, which means
"already applied").
"""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from quartstack.integrations.mongodb import Document, MongoDatabase
from quartstack.worker.events import UserDeleted, UserEvent, UserRegistered

COLLECTION = "users"
REGISTERED, DELETED = "registered", "deleted"


async def apply(mongo: MongoDatabase, event: UserEvent) -> None:
    """Apply ``event`` to the read model (idempotent, commutative: see the module)."""
    if isinstance(event, UserRegistered):
        await mongo.run("project_registered", lambda db: _insert(db, event), idempotent=True)
    else:
        await mongo.run("project_deleted", lambda db: _tombstone(db, event), idempotent=True)


async def _insert(db: AsyncDatabase[Document], event: UserRegistered) -> None:
    document = {
        "email": event.email,
        "name": event.name,
        "email_domain": event.email_domain,
        "created_at": event.created_at,
        "signup_day": event.created_at.date().isoformat(),
        "registered_event_id": event.event_id,
        "state": REGISTERED,
        "deleted_at": None,
    }
    with contextlib.suppress(DuplicateKeyError):  # a competing worker inserted it first
        await db[COLLECTION].update_one(
            {"_id": event.user_id}, {"$setOnInsert": document}, upsert=True
        )


async def _tombstone(db: AsyncDatabase[Document], event: UserDeleted) -> None:
    erased = {
        "state": DELETED,
        "email": None,
        "name": None,
        "email_domain": None,
        "deleted_at": event.occurred_at,
    }
    try:
        await db[COLLECTION].update_one({"_id": event.user_id}, {"$set": erased}, upsert=True)
    except DuplicateKeyError:  # a competing first write: the filter matches now
        await db[COLLECTION].update_one({"_id": event.user_id}, {"$set": erased})


# --- queries ------------------------------------------------------------------------------
async def get_user(mongo: MongoDatabase, user_id: str) -> Document | None:
    """The projected user, tombstones included (``deleted_at`` set)."""
    found: Document | None = await mongo.run(
        "read_user", lambda db: db[COLLECTION].find_one({"_id": user_id}), idempotent=True
    )
    return found


async def list_users(
    mongo: MongoDatabase, *, limit: int, after: str | None = None, domain: str | None = None
) -> list[Document]:
    """Live users in id order, ``limit`` from after id ``after`` (a keyset cursor:
    stable under concurrent inserts, no skipped or repeated rows)."""
    # Equality on a string, not ``deleted_at: null``: nx-27017 (our test stand-in)
    # mismatches null equality combined with a range on _id.
    query: dict[str, Any] = {"state": REGISTERED}
    if domain is not None:
        query["email_domain"] = domain
    if after is not None:
        query["_id"] = {"$gt": after}

    async def find(db: AsyncDatabase[Document]) -> list[Document]:
        cursor = db[COLLECTION].find(query).sort("_id", 1).limit(limit)
        return [document async for document in cursor]

    return await mongo.run("list_users", find, idempotent=True)


async def ensure_indexes(mongo: MongoDatabase) -> None:
    await mongo.run(
        "read_model_indexes",
        lambda db: db[COLLECTION].create_index("email_domain"),
        idempotent=True,
    )
