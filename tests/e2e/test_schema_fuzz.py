"""A third-party schema fuzzer against the running stack through Envoy (SPEC §3/§4): schemathesis reads
the document Envoy serves at /api/v1/docs and drives every operation (coverage, fuzzing and stateful
phases, deterministic seed, a few examples each), authenticated as a freshly minted user. It must find no
5xx and no response that contradicts the document (status codes and bodies), and the document's rules
must be enough for it to make requests the server accepts: every operation is answered 2xx at least once
(a rule across fields is stated in the document as alternatives, scripts/openapi.py CROSS_FIELD_SCHEMAS).

The user owns a product with a published version, a download of it, a library item, a committed save and
family links, and the fuzzer is told those ids (schemathesis.toml `parameters`): ids it invents would
point at nothing and only ever be answered 404, which says nothing about the rules."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import grpc

from library.v1 import (
    achievement_service_pb2_grpc,
    cloud_save_service_pb2_grpc,
    library_service_pb2_grpc,
    playtime_service_pb2_grpc,
)
from library.v1 import cloud_save_service_pb2 as save_pb
from library.v1 import playtime_service_pb2 as playtime_pb
from scripts.devtokens import mint
from tests.support.achievements import achievement, define
from tests.support.auth import user_metadata
from tests.support.family import act, invite
from tests.support.grpc_errors import failure
from tests.support.library import grant_entitlements, upsert_products
from tests.support.processes import ROOT
from tests.support.rest import ENVOY, RestClient
from tests.support.saves import SaveFile, push, put, upload_request
from tests.support.versions import publish

SLOT = "slot-1"
DOWNLOADS = "/api/v1/download-client/downloads"


async def _owned_product(me: RestClient, library, sessions) -> tuple[str, str]:
    """A product in the catalog, owned by the user, with a published version: (product id, version id)."""
    product = uuid.uuid4()
    await upsert_products(library, {product: f"Fuzzed Game {product.hex[:6]}"})
    await grant_entitlements(library, me.user, product)
    version = await publish(sessions, product, {"game.bin": [b"g" * 4000]})
    return str(product), str(version.version_id)


async def _download(me: RestClient, product: str) -> str:
    status, started = await me.call("POST", DOWNLOADS, json={"productId": product, "installationPath": "/g"})
    assert status == 200, started
    return started["download"]["downloadId"]


async def _seed(http, sessions, channel):
    """A user with one of everything an operation's path or body can name: (user, path parameters for every
    operation, per-operation overrides, the (product, session) pairs of its play sessions). Operations that
    change a resource's state (cancel, pause, resume, end a session, resolve a conflict) get a resource of
    their own, so the order the fuzzer calls them in does not matter."""
    me = RestClient(http, uuid.uuid4())
    library = library_service_pb2_grpc.LibraryServiceStub(channel)
    saves = cloud_save_service_pb2_grpc.CloudSaveServiceStub(channel)
    playtime = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
    (product, version), (to_cancel, _), (to_pause, _), (to_resume, _), (to_end, _) = [
        await _owned_product(me, library, sessions) for _ in range(5)
    ]
    status, _ = await me.call(
        "PATCH", "/api/v1/download-client/settings", json={"maxConcurrentDownloads": 10}
    )
    assert status == 200
    download = await _download(me, product)
    cancel, pause, resume = [await _download(me, p) for p in (to_cancel, to_pause, to_resume)]
    status, _ = await me.call("POST", f"{DOWNLOADS}/{resume}/pause", json={})
    assert status == 200
    status, items = await me.call("GET", "/api/v1/library/me/items")
    assert status == 200, items
    wished = str(uuid.uuid4())  # on the wishlist for UpdateWishlistItem, whatever RemoveWishlistItem removes
    status, _ = await me.call("POST", "/api/v1/library/me/wishlist", json={"productId": wished})
    assert status == 200
    category, to_delete = [
        (await me.call("POST", "/api/v1/library/me/categories", json={"name": name}))[1]["category"]["id"]
        for name in ("Fuzzed", "Fuzzed to delete")
    ]
    await define(
        achievement_service_pb2_grpc.AchievementServiceStub(channel),
        uuid.UUID(product),
        achievement("FUZZ_WIN", max_progress=100),
    )
    metadata = user_metadata(me.user)
    heartbeat, end = [
        (
            await playtime.StartPlaytimeSession(
                playtime_pb.StartPlaytimeSessionRequest(product_id=p, device_id="pc"), metadata=metadata
            )
        ).session_id
        for p in (product, to_end)
    ]
    saved = await push(saves, me.user, uuid.UUID(product), SLOT, SaveFile(b"save"))
    pending = await saves.RequestSaveGameUploadURL(
        upload_request(uuid.UUID(product), "pending", SaveFile(b"pending")), metadata=metadata
    )
    assert (await put(pending, b"pending")).status_code == 200
    await push(saves, me.user, uuid.UUID(product), "conflict", SaveFile(b"cloud"), device="a")
    candidate = await saves.RequestSaveGameUploadURL(
        upload_request(uuid.UUID(product), "conflict", SaveFile(b"local"), device="b"), metadata=metadata
    )
    assert (await put(candidate, b"local")).status_code == 200
    code, _, _ = await failure(
        saves.ConfirmSaveGameUpload(
            save_pb.ConfirmSaveGameUploadRequest(savegame_id=candidate.savegame_id), metadata=metadata
        )
    )
    assert code == grpc.StatusCode.ABORTED
    listed = await saves.ListSaveGames(save_pb.ListSaveGamesRequest(product_id=product), metadata=metadata)
    conflict_etag = next(slot.etag for slot in listed.slots if slot.slot_name == "conflict")
    # family links (one per transition, each in the state it needs): others invite the user (accept,
    # decline; revoke once accepted); the user invites someone (cancel)
    to_accept, to_decline, to_revoke = [await invite(library, uuid.uuid4(), me.user) for _ in range(3)]
    await act(library, me.user, "Accept", to_revoke)
    to_cancel_link = await invite(library, me.user, uuid.uuid4())
    links = "/api/v1/library/me/family/links/{link_id}"
    paths = {
        "link_id": to_cancel_link.link_id,
        "product_id": product,
        "download_id": download,
        "library_item_id": items["items"][0]["id"],
        "savegame_id": saved.save_game.savegame_id,
        "slot_name": SLOT,
        "category_id": category,
    }
    body = {
        "productId": product,
        "versionId": version,
        "sessionId": heartbeat,
        "achievementApiName": "FUZZ_WIN",
    }
    overrides = {
        f"POST {links}/accept": {"path.link_id": to_accept.link_id},
        f"POST {links}/decline": {"path.link_id": to_decline.link_id},
        f"POST {links}/revoke": {"path.link_id": to_revoke.link_id},
        "PATCH /api/v1/library/me/wishlist/{product_id}": {"path.product_id": wished},
        "DELETE /api/v1/library/me/categories/{category_id}": {"path.category_id": to_delete},
        f"POST {DOWNLOADS}/{{download_id}}/cancel": {"path.download_id": cancel},
        f"POST {DOWNLOADS}/{{download_id}}/pause": {"path.download_id": pause},
        f"POST {DOWNLOADS}/{{download_id}}/resume": {"path.download_id": resume},
        "POST /api/v1/library/me/playtime/sessions/end": {"body.productId": to_end, "body.sessionId": end},
        "POST /api/v1/library/me/savegames/confirm-upload": {"body.savegameId": pending.savegame_id},
        "POST /api/v1/library/me/savegames/{product_id}/slots/{slot_name}/resolve": {
            "path.slot_name": "conflict",
            "body.savegameId": candidate.savegame_id,
            "body.etag": conflict_etag,
        },
        "POST /api/v1/library/me/playtime/sessions/heartbeat": {
            "body.productId": product,
            "body.sessionId": heartbeat,
        },
    }
    return (
        me.user,
        {**{f"path.{k}": v for k, v in paths.items()}, **{f"body.{k}": v for k, v in body.items()}},
        overrides,
        [(product, heartbeat), (to_end, end)],
    )


async def _keep_playing(channel, user: uuid.UUID, playing: list[tuple[str, str]]) -> None:
    """Heartbeats the seeded sessions as a running game would, every 50 s (under the limit of 2 per 60 s
    interval, so the fuzzer's own heartbeats keep their burst): a fuzz that takes minutes on a busy machine
    would otherwise reach them after the reaper ended them (3 silent intervals)."""
    playtime = playtime_service_pb2_grpc.PlaytimeTrackerServiceStub(channel)
    while True:
        await asyncio.sleep(50)
        for product, session in playing:
            request = playtime_pb.RecordPlaytimeHeartbeatRequest(product_id=product, session_id=session)
            with contextlib.suppress(grpc.aio.AioRpcError):  # the fuzzer may have ended it meanwhile
                await playtime.RecordPlaytimeHeartbeat(request, metadata=user_metadata(user))


def _config(path: Path, parameters: dict[str, str], overrides: dict[str, dict[str, str]]) -> Path:
    """schemathesis.toml: path parameters always the seeded ids; body fields the seeded id most of the time
    (a dictionary binding), an invented one otherwise."""
    dictionaries: dict[str, str] = {}

    def bind(key: str, value: str) -> str:
        if not key.startswith("body."):
            return f'"{key}" = "{value}"'
        name = dictionaries.setdefault(value, f"d{len(dictionaries)}")
        return f'"{key}" = {{ dictionary = "{name}", probability = 0.8 }}'

    lines = ["[parameters]", *(bind(k, v) for k, v in parameters.items())]
    for operation, values in overrides.items():
        lines += ["", "[[operations]]", f'include-name = "{operation}"', "[operations.parameters]"]
        lines += [bind(k, v) for k, v in values.items()]
    for value, name in dictionaries.items():
        lines += ["", f"[dictionaries.{name}]", f'values = ["{value}"]']
    path.write_text("\n".join(lines) + "\n")
    return path


def _accepted_per_operation(har: Path) -> dict[str, Counter]:
    """Statuses per documented operation (`METHOD /path/{template}`) from the fuzzer's HAR report."""
    document = json.loads((ROOT / "gen" / "openapi.json").read_text())
    templates = [
        (method.upper(), template, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"))
        for template, operations in document["paths"].items()
        for method in operations
    ]
    statuses: dict[str, Counter] = defaultdict(Counter)
    for entry in json.loads(har.read_text())["log"]["entries"]:
        method, url = entry["request"]["method"], entry["request"]["url"]
        path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
        for m, template, pattern in templates:
            if m == method and pattern.match(path):
                statuses[f"{m} {template}"][entry["response"]["status"] // 100] += 1
                break
    for m, template, _ in templates:
        statuses.setdefault(f"{m} {template}", Counter())
    return statuses


async def test_the_schema_fuzzer_finds_no_server_error_and_no_response_contradicting_the_document(
    http, sessions, channel, tmp_path
):
    user, parameters, overrides, playing = await _seed(http, sessions, channel)
    har = tmp_path / "fuzz.har"
    playing_task = asyncio.create_task(_keep_playing(channel, user, playing))
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(ROOT / ".venv" / "bin" / "st"),
            "--config-file",
            str(_config(tmp_path / "schemathesis.toml", parameters, overrides)),
            "run",
            f"{ENVOY}/api/v1/docs",
            "--url",
            ENVOY,
            "-H",
            f"Authorization: Bearer {mint(str(user))}",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance",
            "--max-examples",
            "5",
            "--seed",
            "1",
            "--no-color",
            "--report",
            "har",
            "--report-har-path",
            str(har),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    playing_task.cancel()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Selected: " in result.stdout and " passed" in result.stdout
    never_accepted = {
        operation: dict(counts) for operation, counts in _accepted_per_operation(har).items() if not counts[2]
    }
    assert not never_accepted, json.dumps(never_accepted, indent=1)
