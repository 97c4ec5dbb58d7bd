"""What the family-sharing use cases return: plain values the servicer maps and the replay store keeps."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class FamilyLinkView:
    link_id: uuid.UUID
    owner_user_id: uuid.UUID
    shared_user_id: uuid.UUID
    status: str
    end_reason: str | None
    created_at: datetime
    updated_at: datetime
    accepted_at: datetime | None


@dataclass(frozen=True)
class LibraryUse:
    """Who may be playing from the library a (user, product) play session would use: the library's owner
    (the lender of a borrowed game, else the player) and what its borrowers hold from it (user → products).
    `lender` is None when the player plays their own game."""

    lender: uuid.UUID | None
    owner: uuid.UUID
    borrowed: dict[uuid.UUID, set[uuid.UUID]]

    @property
    def shared(self) -> bool:
        """Whether anyone else plays from this library (no: no family rule applies)."""
        return self.lender is not None or bool(self.borrowed)
