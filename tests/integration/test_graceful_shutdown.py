"""SIGTERM drains in-flight RPCs before the process exits (SPEC §9)."""

from __future__ import annotations

import asyncio
import signal
import uuid

import grpc
import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from library.v1 import library_service_pb2 as pb
from library.v1 import library_service_pb2_grpc
from server.library.tables import LibraryItem
from tests.support.auth import user_metadata
from tests.support.ownership import grant
from tests.support.processes import free_port, python_server, wait_serving


@pytest.fixture
def server_to_stop():
    port = free_port()
    env = {"GRPC_PORT": str(port), "METRICS_PORT": str(free_port()), "WORKERS_ENABLED": "0"}
    with python_server("test-shutdown-server.log", **env) as proc:
        yield proc, f"127.0.0.1:{port}"


async def test_sigterm_lets_an_in_flight_call_finish_then_exits_cleanly(server_to_stop, sessions, settings):
    proc, target = server_to_stop
    await wait_serving(target)
    user, product = uuid.uuid4(), uuid.uuid4()
    await grant(sessions, user, product)
    async with sessions() as session:
        item_id = await session.scalar(select(LibraryItem.id).where(LibraryItem.user_id == user))

    # Hold the item's row lock so the update below is still in flight when SIGTERM arrives.
    dsn = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(dsn) as blocker:
        await blocker.execute("SELECT 1 FROM library_items WHERE id = %s FOR UPDATE", (item_id,))
        async with grpc.aio.insecure_channel(target) as channel:
            stub = library_service_pb2_grpc.LibraryServiceStub(channel)
            in_flight = asyncio.ensure_future(
                stub.UpdateLibraryItem(
                    pb.UpdateLibraryItemRequest(library_item_id=str(item_id), is_hidden=True),
                    metadata=user_metadata(user),
                )
            )
            await asyncio.sleep(0.5)
            assert not in_flight.done()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert proc.poll() is None, "the server must wait for the in-flight call"
            await blocker.rollback()  # release the lock: the call can complete
            reply = await asyncio.wait_for(in_flight, timeout=10)
    assert reply.library_item.is_hidden
    assert await asyncio.to_thread(proc.wait, 15) == 0
