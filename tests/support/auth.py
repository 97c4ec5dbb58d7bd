"""Call credentials for tests: a user's or a peer service's bearer token, as gRPC metadata."""

from __future__ import annotations

import uuid

from scripts.devtokens import mint


def user_metadata(user: uuid.UUID) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint(str(user))}"),)


def service_metadata() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint('service:test', roles=('service',))}"),)
