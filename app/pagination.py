"""Cursor paging over time-ordered ids, shared by every list endpoint."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import InvalidRequest

T = TypeVar("T")

MAX_LIMIT = 200


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        last_id = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        if not last_id.isprintable() or not last_id:
            raise ValueError("empty cursor")
        return last_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(
            "cursor is not valid; pass the next_cursor of the previous page",
            details={"fields": {"cursor": "not a cursor this server issued"}},
        ) from exc


async def paginate(
    session: AsyncSession,
    statement: Select[*tuple[Any, ...]],
    key: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
) -> Page[Any]:
    if cursor:
        statement = statement.where(key > decode_cursor(cursor))
    rows = (await session.execute(statement.order_by(key).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [row[0] if len(row) == 1 else tuple(row) for row in rows]
    next_cursor = None
    if more:
        # The key belongs to the statement's first entity.
        next_cursor = encode_cursor(str(getattr(rows[-1][0], key.key)))
    return Page(items=items, next_cursor=next_cursor)
