"""Publishing for tests, the way a build pipeline does it: files written to a directory, then the SDK's
publish (the `publish` CLI's code path) against the service with a service token."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

from client.sdk.connection import Connection
from client.sdk.publishing import PublishReport, publish
from scripts.devtokens import mint


def service_token() -> str:
    return mint("service:publisher", roles=("service",))


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    """Writes `files` (relative path → content) under `root`, which is created."""
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


async def publish_files(
    target: str,
    product_id: uuid.UUID,
    version_name: str,
    files: Mapping[str, bytes],
    directory: Path,
    *,
    branch: str = "",
    release_notes: str = "",
) -> PublishReport:
    """Publishes `files` as version `version_name` of the product (written under `directory` first)."""
    write_tree(directory, files)
    async with Connection(service_token(), target) as conn:
        return await publish(
            conn,
            directory,
            product_id=str(product_id),
            version_name=version_name,
            branch=branch,
            release_notes=release_notes,
        )
