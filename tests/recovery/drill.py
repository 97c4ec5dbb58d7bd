"""The drills' hands on their own stack instance (scripts/test-recovery.sh): the operator's scripts, the
service as production runs it, and the PostgreSQL and Redis processes they destroy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from library.v1 import playtime_service_pb2 as playtime_pb
from server.core.config import Settings
from tests.support.auth import user_metadata
from tests.support.processes import ROOT, wait_serving

LOCAL_DIR = Path(os.environ["LOCAL_DIR"])
PG_DATA = Path(os.environ["PG_DIR"]) / "data"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs a script of the project (scripts/...) as an operator would, whatever its exit status."""
    return subprocess.run(
        ["bash", *args], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy(), timeout=900
    )


def script(*args: str) -> str:
    """Runs a script of the project that must succeed; returns its output."""
    done = run_script(*args)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def backups() -> list[dict]:
    """The repository's backup sets, oldest first (`pgbackrest info --output=json`)."""
    info = script(
        "-c",
        "source scripts/lib/env.sh && source scripts/lib/stack.sh && source scripts/lib/pgbackrest.sh"
        " && pgbr --output=json info",
    )
    [stanza] = json.loads(info)
    return sorted(stanza["backup"], key=lambda b: b["timestamp"]["stop"])


def superuser() -> psycopg.Connection:
    return psycopg.connect(
        f"postgresql://postgres@127.0.0.1:{os.environ['PG_PORT']}/library", autocommit=True
    )


def service_db(settings: Settings) -> psycopg.Connection:
    url = make_url(settings.database_url).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


@contextlib.asynccontextmanager
async def service(settings: Settings, **env: str) -> AsyncIterator[str]:
    """`python -m server` on the drill's stack until the block ends; yields its gRPC target once SERVING.
    Stopped with SIGTERM; one that has not exited a minute later is killed and fails the drill."""
    target = f"{settings.grpc_host}:{settings.grpc_port}"
    log = await asyncio.to_thread(open, LOCAL_DIR / "logs" / "service.log", "ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=log
    )
    try:
        await wait_serving(target, timeout=180)  # a loaded machine can take a minute to import and start
        yield target
        assert proc.returncode is None, "the service exited during the drill"
    finally:
        log.close()
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"the service ignored SIGTERM for 60s (log: {log.name})") from None


def current_wal_segment() -> str:
    with superuser() as conn:
        return conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]


async def wait_archived(segment: str, timeout: float) -> None:
    """Waits until the archiver has pushed `segment` (nobody forces a switch: archive_timeout must)."""
    deadline = time.monotonic() + timeout
    while True:
        with superuser() as conn:
            last = conn.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").fetchone()[0]
        if last[:24] >= segment:
            return
        assert time.monotonic() < deadline, f"WAL {segment} not archived within {timeout}s (last: {last!r})"
        await asyncio.sleep(0.5)


def destroy_postgres() -> None:
    """The disaster: the cluster stops and its data directory is gone."""
    stop = (
        'source scripts/lib/env.sh && source scripts/lib/stack.sh && pg "$PG_BIN/pg_ctl" -D "$PG_DATA" stop'
    )
    script("-c", stop)
    shutil.rmtree(PG_DATA)


def lose_redis() -> None:
    """The disaster: Redis is killed (no shutdown save) and its data directory deleted."""
    pid = int((LOCAL_DIR / "run" / "redis.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "redis did not die"
        time.sleep(0.05)
    shutil.rmtree(LOCAL_DIR / "redis")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def play(stub, user: uuid.UUID, product: uuid.UUID, seconds: float = 1.2):
    """A session started, played `seconds` (no heartbeat needed: End counts as one) and ended."""
    metadata = user_metadata(user)
    started = await stub.StartPlaytimeSession(
        playtime_pb.StartPlaytimeSessionRequest(product_id=str(product), device_id="pc"), metadata=metadata
    )
    await asyncio.sleep(seconds)
    return await stub.EndPlaytimeSession(
        playtime_pb.EndPlaytimeSessionRequest(product_id=str(product), session_id=started.session_id),
        metadata=metadata,
    )


async def total_playtime(stub, user: uuid.UUID, product: uuid.UUID) -> int:
    stats = await stub.GetPlaytimeStats(
        playtime_pb.GetPlaytimeStatsRequest(product_ids=[str(product)]), metadata=user_metadata(user)
    )
    return sum(s.total_playtime_seconds for s in stats.stats if s.product_id == str(product))
