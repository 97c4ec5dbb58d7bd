"""Retried writes (AIP-155): the first response to a `request_id` is stored with the change it made, and a
replay gets that response back without changing anything.

The request id is claimed at the start of the use case's transaction, so a concurrent duplicate waits on the
claim's row lock and then reads the committed response; if the first attempt rolls back, its claim goes with
it and the retry runs for real.
"""

from __future__ import annotations

import dataclasses
import json
import types
import uuid
from datetime import datetime, time
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from sqlalchemy import DateTime, String, Text, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base
from server.core.uow import UnitOfWork

T = TypeVar("T")


class RequestReplay(Base):
    """First response of a retried write (AIP-155), keyed by caller, method and request id."""

    __tablename__ = "request_replays"

    caller: Mapped[str] = mapped_column(Text, primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


@dataclasses.dataclass(frozen=True)
class RequestKey:
    caller: str
    method: str
    request_id: uuid.UUID

    def _where(self):
        return (
            RequestReplay.caller == self.caller,
            RequestReplay.method == self.method,
            RequestReplay.request_id == self.request_id,
        )


def request_key(caller: uuid.UUID | str, method: str, request_id: uuid.UUID | None) -> RequestKey | None:
    """The replay key of a call; None when the client sent no request_id (nothing to remember)."""
    return None if request_id is None else RequestKey(str(caller), method, request_id)


async def claim(uow: UnitOfWork, key: RequestKey | None, result_type: type[T]) -> T | None:
    """None when this request id is new (go ahead, then `remember`); else the first response."""
    if key is None:
        return None
    inserted = await uow.session.scalar(
        pg_insert(RequestReplay)
        .values(caller=key.caller, method=key.method, request_id=key.request_id)
        .on_conflict_do_nothing()
        .returning(RequestReplay.request_id)
    )
    if inserted is not None:
        return None
    stored = await uow.session.scalar(select(RequestReplay.response).where(*key._where()))
    return from_json(result_type, stored)


async def peek(uow: UnitOfWork, key: RequestKey | None, result_type: type[T]) -> T | None:
    """The first response of a request id that completed, without claiming it: for use cases that run
    several transactions and claim in the last one."""
    if key is None:
        return None
    stored = await uow.session.scalar(select(RequestReplay.response).where(*key._where()))
    return None if stored is None else from_json(result_type, stored)


async def remember(uow: UnitOfWork, key: RequestKey | None, result: Any) -> None:
    if key is not None:
        await uow.session.execute(update(RequestReplay).where(*key._where()).values(response=to_json(result)))


def to_json(value: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(value), default=_scalar))


def _scalar(value: Any) -> str:
    if isinstance(value, datetime | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__}")


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    hints = get_type_hints(cls)
    return cls(**{f.name: _decode(hints[f.name], data[f.name]) for f in dataclasses.fields(cls)})


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _decode(next(a for a in get_args(hint) if a is not type(None)), value)
    if origin is list:
        return [_decode(get_args(hint)[0], v) for v in value]
    if hint is uuid.UUID:
        return uuid.UUID(value)
    if hint is datetime:
        return datetime.fromisoformat(value)
    if hint is time:
        return time.fromisoformat(value)
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value)
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        return _named_tuple(hint, value)
    return value


def _named_tuple(cls: Any, value: list[Any] | dict[str, Any]) -> Any:
    """A NamedTuple stored as the JSON array its values make (or as an object: a value that was a
    dataclass when it was stored)."""
    hints = get_type_hints(cls)
    items = value if isinstance(value, dict) else dict(zip(cls._fields, value, strict=True))
    return cls(**{name: _decode(hints[name], v) for name, v in items.items()})
