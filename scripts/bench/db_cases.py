"""The database path against its driver (issue 14): each DB-backed RPC against a DB echo of itself.

For each case the service (one process, WORKERS_ENABLED=0) and the DB echo (scripts/bench/db_echo.py: bare
grpc.aio + a psycopg async pool running the very SQL the service ran for that request, recorded by
scripts/bench/sqlcapture.py) get the same request from the same h2load command line, back to back, in
BENCH_DB_ROUNDS rounds. Reported per case: req/s, p50/p99 and the server process's CPU per call of both,
and the medians over rounds of service/echo within a round (throughput and CPU per call).

Cases (BENCH_CASES selects, see README):
  list_library_items     ListLibraryItems, a page of 50 owned games with product metadata and categories
  list_categories        ListCategories, the user's 10 categories
  playtime_stats         GetPlaytimeStats ALL_TIME over the 50 owned games (20 played sessions)
  achievement_statuses   ListAchievementStatuses of one game (20 definitions, 10 with progress)
  wishlist_add_remove    AddWishlistItem then RemoveWishlistItem of the same product, alternately: every
                         call a write with an outbox event (h2load sends one fixed body, and the two requests
                         share their wire form); BENCH_DB_CLIENTS h2load processes of one connection and one
                         stream each, each with a product of its own, so that the calls of one product stay
                         in order
  achievement_progress   UpdateAchievementProgress re-reporting the stored progress (the common report:
                         nothing changes, no event; an unlock happens once per achievement, which a fixed
                         request cannot repeat)
  settings_get           GetGameSettings of an owned game with a stored document (game settings' read)
  settings_update        UpdateGameSettings replacing the document, each h2load process its own game: a
                         compare-and-swap write with a `gameSettingsUpdated` notification in the outbox
  saves_list             ListSaveGames of a game with 3 slots of committed saves (cloud saves' read)
  saves_upload_url       RequestSaveGameUploadURL, each h2load process its own slot: ownership, the quota
                         reservation row and the presigned PUT (cloud saves' write; no event until the
                         confirm, which needs the upload and cannot repeat); the reservations are deleted
                         after each load
  download_settings_get  GetDownloadSettings of a user with stored settings (downloads' read)
  download_settings_update
                         UpdateDownloadSettings setting the bandwidth limit, a compare-and-swap write with
                         a `downloadSettingsUpdated` notification (downloads' write); one stream, since
                         the settings are one row per user and a player does not race themself
In the echo, a compare-and-swap write replays the recorded `UPDATE … WHERE version = n`, which matches no
row after its first call: the echo then skips the row write the service makes, a stricter baseline.
Reads run with BENCH_CONNECTIONS x BENCH_STREAMS like the heartbeat; so does achievement_progress.

The bench user of these cases and its data are made through the service's own RPCs (idempotent, so reruns
reuse them). The outbox rows the write cases leave (the service's and the echo's) are deleted afterwards
(nobody consumes the bench user's events), and so are the save reservations (no upload follows them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pickle
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import psycopg
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from download.v1 import download_service_pb2 as dl_pb
from library.v1 import (
    achievement_service_pb2 as ach_pb,
)
from library.v1 import (
    cloud_save_service_pb2 as saves_pb,
)
from library.v1 import (
    game_settings_service_pb2 as settings_pb,
)
from library.v1 import (
    library_service_pb2 as lib_pb,
)
from library.v1 import (
    playtime_service_pb2 as play_pb,
)
from scripts.bench import fixtures, loadgen, sqlcapture
from scripts.bench.db_echo import Recipe
from scripts.bench.procs import CpuMeter, pick_port
from scripts.devtokens import mint
from server.core.config import Settings
from server.core.db import DbTimeouts

GOALS = {"read": (1.5, 0.6), "write": (2.0, 0.5)}  # kind -> (max CPU ratio, min throughput ratio)

DB_USER = uuid.uuid5(uuid.NAMESPACE_URL, "https://library.platform/bench/db-user")
LIBRARY_SIZE = 50
CATEGORIES = 10
ACHIEVEMENTS = 20
PLAYED_SESSIONS = 20
ACHIEVEMENT_PRODUCT_INDEX = 0

SAVE_SLOTS = 3

LIB = "/library.v1.LibraryService/"
PLAY = "/library.v1.PlaytimeTrackerService/"
ACH = "/library.v1.AchievementService/"
SETTINGS = "/library.v1.GameSettingsSyncService/"
SAVES = "/library.v1.CloudSaveService/"
DOWNLOADS = "/download.v1.DownloadService/"


def _product(index: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://library.platform/bench/db-product/{index}")


def _wish_product(index: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://library.platform/bench/wish-product/{index}")


def _ts(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


@dataclass(frozen=True)
class DbCase:
    name: str
    kind: str  # "read" | "write" (a write's echo runs its statements in one transaction)
    methods: tuple[str, ...]  # the URIs each h2load client sends, in this order, over and over
    bodies: tuple[bytes, ...]  # one (shared load) or one per h2load process (per-client load)
    single_stream: bool = False  # a shared load of one connection and one stream

    @property
    def per_client(self) -> bool:
        return len(self.bodies) > 1


def _cases(write_clients: int) -> list[DbCase]:
    product0 = str(_product(ACHIEVEMENT_PRODUCT_INDEX))
    return [
        DbCase(
            "list_library_items",
            "read",
            (LIB + "ListLibraryItems",),
            (lib_pb.ListLibraryItemsRequest(page_size=LIBRARY_SIZE).SerializeToString(),),
        ),
        DbCase("list_categories", "read", (LIB + "ListCategories",), (b"",)),
        DbCase(
            "playtime_stats",
            "read",
            (PLAY + "GetPlaytimeStats",),
            (
                play_pb.GetPlaytimeStatsRequest(
                    period=play_pb.GetPlaytimeStatsRequest.ALL_TIME
                ).SerializeToString(),
            ),
        ),
        DbCase(
            "achievement_statuses",
            "read",
            (ACH + "ListAchievementStatuses",),
            (ach_pb.ListAchievementStatusesRequest(product_ids=[product0]).SerializeToString(),),
        ),
        DbCase(
            "wishlist_add_remove",
            "write",
            (LIB + "AddWishlistItem", LIB + "RemoveWishlistItem"),
            tuple(
                lib_pb.AddWishlistItemRequest(product_id=str(_wish_product(i))).SerializeToString()
                for i in range(write_clients)
            ),
        ),
        DbCase(
            "achievement_progress",
            "write",
            (ACH + "UpdateAchievementProgress",),
            (
                ach_pb.UpdateAchievementProgressRequest(
                    product_id=product0, achievement_api_name="ACH_00", progress=50
                ).SerializeToString(),
            ),
        ),
        DbCase(
            "settings_get",
            "read",
            (SETTINGS + "GetGameSettings",),
            (settings_pb.GetGameSettingsRequest(product_id=product0).SerializeToString(),),
        ),
        DbCase(
            "settings_update",
            "write",
            (SETTINGS + "UpdateGameSettings",),
            tuple(_settings_update(_product(i)).SerializeToString() for i in range(write_clients)),
        ),
        DbCase(
            "saves_list",
            "read",
            (SAVES + "ListSaveGames",),
            (saves_pb.ListSaveGamesRequest(product_id=product0).SerializeToString(),),
        ),
        DbCase(
            "saves_upload_url",
            "write",
            (SAVES + "RequestSaveGameUploadURL",),
            tuple(
                _upload_request(_product(i), f"bench upload {i}", SAVE_BODY).SerializeToString()
                for i in range(write_clients)
            ),
        ),
        DbCase(
            "download_settings_get",
            "read",
            (DOWNLOADS + "GetDownloadSettings",),
            (dl_pb.GetDownloadSettingsRequest().SerializeToString(),),
        ),
        DbCase(
            "download_settings_update",
            "write",
            (DOWNLOADS + "UpdateDownloadSettings",),
            (
                dl_pb.UpdateDownloadSettingsRequest(
                    settings=dl_pb.DownloadSettings(bandwidth_limit_kbps=20000), device_id="bench"
                ).SerializeToString(),
            ),
            single_stream=True,
        ),
    ]


SAVE_BODY = b"bench save " * 93  # 1 KiB


def _settings_update(product: uuid.UUID) -> settings_pb.UpdateGameSettingsRequest:
    payload = Struct()
    payload.update({"graphics": {"quality": "high", "vsync": True, "fov": 90}, "audio": {"volume": 0.8}})
    return settings_pb.UpdateGameSettingsRequest(
        product_id=str(product), settings_payload=payload, device_id="bench"
    )


def _upload_request(product: uuid.UUID, slot: str, body: bytes) -> saves_pb.RequestSaveGameUploadURLRequest:
    request = saves_pb.RequestSaveGameUploadURLRequest(
        product_id=str(product),
        slot_name=slot,
        file_size_bytes=len(body),
        file_hash_sha256=hashlib.sha256(body).hexdigest(),
        device_id="bench",
        client_modified_at=_ts(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    )
    return request


CASE_NAMES = [c.name for c in _cases(1)]


@dataclass(frozen=True)
class Selection:
    heartbeat: bool
    modules: list[str]
    db_cases: list[str]


def selection(value: str, modules: list[str]) -> Selection:
    """BENCH_CASES: comma-separated `heartbeat` (the heartbeat stages), bench module names (`modules`, e.g.
    `cloud_saves`), `db` (every DB case) or DB case names; empty or `all`: everything."""
    names = [n.strip() for n in value.split(",") if n.strip()] or ["all"]
    unknown = set(names) - {"all", "heartbeat", "db", *modules, *CASE_NAMES}
    if unknown:
        known = ", ".join(["all", "heartbeat", *modules, "db", *CASE_NAMES])
        raise ValueError(f"BENCH_CASES: unknown {', '.join(sorted(unknown))} (known: {known})")
    everything = "all" in names
    db = CASE_NAMES if everything or "db" in names else [n for n in CASE_NAMES if n in names]
    return Selection(
        heartbeat=everything or "heartbeat" in names,
        modules=[m for m in modules if everything or m in names],
        db_cases=db,
    )


@dataclass
class DbConfig:
    duration: float = float(os.environ.get("BENCH_DB_DURATION", 5))
    warmup: float = float(os.environ.get("BENCH_DB_WARMUP", 1))
    rounds: int = int(os.environ.get("BENCH_DB_ROUNDS", 3))
    write_clients: int = int(os.environ.get("BENCH_DB_CLIENTS", 8))
    echo_port: int = int(os.environ.get("BENCH_DB_ECHO_PORT", 50073))
    # a directory: py-spy records the service under each case's load into it (its CPU figures then carry
    # the sampler's cost: profile and measure in separate runs)
    profile: str = os.environ.get("BENCH_DB_PROFILE", "")


# ---------------------------------------------------------------------------------------------- calls
def _md(token: str, request_id: str = "") -> tuple[tuple[str, str], ...]:
    md = (("authorization", f"Bearer {token}"),)
    return (*md, ("x-request-id", request_id)) if request_id else md


def call(target: str, method: str, message: bytes, token: str, request_id: str = "") -> bytes:
    """One unary call with raw bytes; the response bytes (raises grpc.RpcError)."""
    with grpc.insecure_channel(target) as channel:
        rpc = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return rpc(message, metadata=_md(token, request_id), timeout=30)


def _call_ok(target: str, method: str, message, token: str, allowed=()) -> bytes:
    try:
        return call(target, method, message.SerializeToString(), token)
    except grpc.RpcError as exc:
        if exc.code() in allowed:
            return b""
        raise RuntimeError(
            f"{method.rsplit('/', 1)[-1]} answered {exc.code().name}: {exc.details()}"
        ) from exc


def prepare(target: str, write_clients: int) -> None:
    """The bench user's library, categories, achievements, playtime; its wishlist empty (idempotent)."""
    service, user = fixtures.service_token(), mint(str(DB_USER), ttl=3 * 3600)
    now = dt.datetime.now(dt.UTC)
    library = [_product(i) for i in range(LIBRARY_SIZE)]
    wished = [_wish_product(i) for i in range(write_clients)]
    products = [
        lib_pb.Product(
            product_id=str(p),
            name=f"Bench Game {i:02d}",
            product_type=lib_pb.Product.GAME,
            cover_image_url=f"https://cdn.example.com/covers/{p}.jpg",
            icon_url=f"https://cdn.example.com/icons/{p}.png",
            developer="Bench Studio",
            publisher="Bench Publishing",
            release_date=_ts(dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i)),
            genres=["action", "adventure"],
        )
        for i, p in enumerate(library + wished)
    ]
    _call_ok(target, LIB + "UpsertProducts", lib_pb.UpsertProductsRequest(products=products), service)
    grants = [
        lib_pb.EntitlementGrant(product_id=str(p), acquisition_type=lib_pb.LibraryItem.PURCHASE)
        for p in library
    ]
    _call_ok(
        target,
        LIB + "GrantEntitlements",
        lib_pb.GrantEntitlementsRequest(user_id=str(DB_USER), items=grants),
        service,
    )
    for i in range(CATEGORIES):
        request = lib_pb.CreateCategoryRequest(name=f"Bench category {i:02d}")
        _call_ok(target, LIB + "CreateCategory", request, user, allowed=(grpc.StatusCode.ALREADY_EXISTS,))
    categories = lib_pb.ListCategoriesResponse.FromString(
        _call_ok(target, LIB + "ListCategories", lib_pb.ListCategoriesRequest(), user)
    ).categories
    items = lib_pb.ListLibraryItemsResponse.FromString(
        _call_ok(
            target, LIB + "ListLibraryItems", lib_pb.ListLibraryItemsRequest(page_size=LIBRARY_SIZE), user
        )
    ).items
    for i, item in enumerate(items):
        wanted = [categories[i % len(categories)].id]
        if i % 3 == 0:
            wanted.append(categories[(i + 1) % len(categories)].id)
        if list(item.category_ids) != wanted:
            request = lib_pb.UpdateLibraryItemRequest(library_item_id=item.id, category_ids=wanted)
            _call_ok(target, LIB + "UpdateLibraryItem", request, user)
    product0 = str(_product(ACHIEVEMENT_PRODUCT_INDEX))
    definitions = [
        ach_pb.AchievementDefinition(
            api_name=f"ACH_{i:02d}",
            display_name=f"Bench achievement {i:02d}",
            description="Do the bench thing",
            max_progress=100,
            icon_url="https://cdn.example.com/a.png",
            icon_locked_url="https://cdn.example.com/a-locked.png",
            display_order=i,
        )
        for i in range(ACHIEVEMENTS)
    ]
    request = ach_pb.UpsertAchievementDefinitionsRequest(product_id=product0, definitions=definitions)
    _call_ok(target, ACH + "UpsertAchievementDefinitions", request, service)
    for i in range(ACHIEVEMENTS // 2):
        request = ach_pb.UpdateAchievementProgressRequest(
            product_id=product0, achievement_api_name=f"ACH_{i:02d}", progress=50
        )
        _call_ok(target, ACH + "UpdateAchievementProgress", request, user)
    sessions = []
    for i in range(PLAYED_SESSIONS):
        start = now - dt.timedelta(hours=2 * i + 3)
        sessions.append(
            play_pb.OfflineSession(
                client_session_id=str(uuid.uuid5(DB_USER, f"offline-{i}")),
                product_id=str(library[i % 10]),
                device_id="bench-device",
                start_time=_ts(start),
                end_time=_ts(start + dt.timedelta(hours=1)),
            )
        )
    _call_ok(
        target, PLAY + "RecordOfflineSessions", play_pb.RecordOfflineSessionsRequest(sessions=sessions), user
    )
    for p in wished:
        _call_ok(
            target, LIB + "RemoveWishlistItem", lib_pb.RemoveWishlistItemRequest(product_id=str(p)), user
        )
    _call_ok(target, SETTINGS + "UpdateGameSettings", _settings_update(_product(0)), user)
    stored = dl_pb.DownloadSettings(max_concurrent_downloads=3, bandwidth_limit_kbps=20000)
    request = dl_pb.UpdateDownloadSettingsRequest(settings=stored, device_id="bench")
    _call_ok(target, DOWNLOADS + "UpdateDownloadSettings", request, user)
    _prepare_saves(target, user)


def _prepare_saves(target: str, user: str) -> None:
    """SAVE_SLOTS committed saves in the first game: upload URL, the PUT to the store, confirm."""
    product0 = _product(ACHIEVEMENT_PRODUCT_INDEX)
    request = saves_pb.ListSaveGamesRequest(product_id=str(product0))
    reply = _call_ok(target, SAVES + "ListSaveGames", request, user)
    listing = saves_pb.ListSaveGamesResponse.FromString(reply)
    have = {slot.slot_name for slot in listing.slots if slot.HasField("head")}
    for i in range(SAVE_SLOTS):
        if (slot := f"bench slot {i}") in have:
            continue
        upload = _upload_request(product0, slot, SAVE_BODY)
        ticket = saves_pb.RequestSaveGameUploadURLResponse.FromString(
            _call_ok(target, SAVES + "RequestSaveGameUploadURL", upload, user)
        )
        put = httpx.put(ticket.upload_url, content=SAVE_BODY, headers=dict(ticket.required_headers))
        put.raise_for_status()
        confirm = saves_pb.ConfirmSaveGameUploadRequest(savegame_id=ticket.savegame_id)
        _call_ok(target, SAVES + "ConfirmSaveGameUpload", confirm, user)


def record(
    target: str, capture_file: Path, cases: list[DbCase], token: str
) -> dict[str, dict[bytes, Recipe]]:
    """Each distinct request of the cases, called twice through the capturing service (the first call warms
    its caches); the second call's statements and response become the echo's recipe for that request."""
    recipes: dict[str, dict[bytes, Recipe]] = {}
    responses: dict[str, tuple[str, bytes, bytes]] = {}
    for case in cases:
        for body in case.bodies:
            for attempt in ("warm", "rec"):
                for method in case.methods:
                    rid = f"bench-{case.name}-{attempt}-{uuid.uuid4().hex}"
                    response = call(target, method, body, token, rid)
                    if attempt == "rec":
                        responses[rid] = (method, body, response)
    recorded = sqlcapture.read(capture_file)
    for case in cases:
        for rid, (method, body, response) in responses.items():
            if rid.startswith(f"bench-{case.name}-") and method in case.methods:
                ops = recorded.get(rid)
                if not ops:
                    raise RuntimeError(f"{case.name}: nothing recorded for {method}")
                recipes.setdefault(method, {})[body] = Recipe(ops, case.kind == "write", response)
    return recipes


def delete_bench_writes(libpq_url: str) -> int:
    """What the write cases leave behind: the bench user's unsent outbox rows (nobody consumes them) and
    its pending save reservations (no upload follows them)."""
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        cur = conn.execute("DELETE FROM outbox WHERE key = %s AND published_at IS NULL", (str(DB_USER),))
        conn.execute("DELETE FROM savegames WHERE user_id = %s AND status = 'pending'", (DB_USER,))
        return cur.rowcount


# ---------------------------------------------------------------------------------------------- load
def _merge(name: str, parts: list[loadgen.LoadResult], logs: list[Path]) -> loadgen.LoadResult:
    latencies = sorted(v for log in logs for v in loadgen.read_h2load_log(log)[0])
    merged = loadgen.LoadResult(tool="h2load", target=f"{name} x{len(parts)}", command=parts[0].command)
    merged.requests = sum(p.requests for p in parts)
    merged.seconds = max(p.seconds for p in parts)
    merged.rps = sum(p.rps for p in parts)
    merged.errors = sum(p.errors for p in parts)
    merged.bad_status = sum(p.bad_status for p in parts)
    merged.in_flight_at_end = sum(p.in_flight_at_end for p in parts)
    if latencies:
        merged.p50_ms = loadgen.percentile(latencies, 50) / 1000
        merged.p99_ms = loadgen.percentile(latencies, 99) / 1000
        merged.mean_ms = sum(latencies) / len(latencies) / 1000
    return merged


@dataclass
class Side:
    """One case on one server (the service or its echo) over the rounds."""

    rounds: list[loadgen.LoadResult] = field(default_factory=list)

    def cpu(self, i: int) -> float | None:
        per = self.rounds[i].cpu.get("cpu_us_per_call") or {}
        return sum(v for k, v in per.items() if k != "redis") or None


class DbBench:
    def __init__(self, bench, names: list[str]):
        self.bench = bench
        self.cfg = DbConfig()
        self.cases = [c for c in _cases(self.cfg.write_clients) if c.name in names]
        self.token = mint(str(DB_USER), ttl=3 * 3600)
        self.work: Path = bench.work
        self.results: dict[str, dict[str, Side]] = {
            c.name: {"echo": Side(), "service": Side()} for c in self.cases
        }
        self.codes: dict[str, dict[str, int]] = {}

    def log(self, message: str) -> None:
        print(f"bench: {message}", flush=True)

    def load(self, case: DbCase, target: str, process: str, metrics_port: int | None) -> loadgen.LoadResult:
        cfg, bench = self.cfg, self.bench
        headers = {
            "content-type": "application/grpc",
            "te": "trailers",
            "authorization": f"Bearer {self.token}",
        }
        urls = [f"http://{target}{m}" for m in case.methods]
        before = {m: fixtures.handled_codes(metrics_port, m) for m in case.methods} if metrics_port else {}
        meter = CpuMeter({process: bench.procs.pid(process)})
        bodies, logs = [], []
        for i, body in enumerate(case.bodies):
            path = self.work / f"db-{case.name}-{i}.bin"
            path.write_bytes(loadgen.grpc_frame(body))
            bodies.append(path)
            logs.append(self.work / f"db-{case.name}-{i}.h2load.log")
        common = dict(duration=cfg.duration, warmup=cfg.warmup, target=f"{target} {case.name}")
        profiler = self._profile(case, process) if metrics_port and cfg.profile else None
        if not case.per_client:
            result = loadgen.h2load(
                urls,
                bodies[0],
                headers,
                clients=1 if case.single_stream else bench.cfg.connections,
                streams=1 if case.single_stream else bench.cfg.streams,
                log_file=logs[0],
                meter=meter,
                **common,
            )
        else:
            parts: list[loadgen.LoadResult | BaseException] = [None] * len(bodies)  # type: ignore[list-item]

            def run(i: int) -> None:
                try:
                    parts[i] = loadgen.h2load(
                        urls, bodies[i], headers, clients=1, streams=1, log_file=logs[i], **common
                    )
                except BaseException as exc:  # reported below, from the main thread
                    parts[i] = exc

            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
            for t in threads:
                t.start()
            time.sleep(cfg.warmup)
            meter.start()
            for t in threads:
                t.join()
            meter.stop()
            for part in parts:
                if isinstance(part, BaseException):
                    raise part
            result = _merge(case.name, parts, logs)  # type: ignore[arg-type]
        result.cpu = meter.report(result.requests)
        if profiler is not None:
            profiler.wait()
        for log in logs:
            log.unlink(missing_ok=True)
        if metrics_port:
            total: dict[str, int] = {}
            for m in case.methods:
                for code, n in fixtures.codes_delta(
                    before[m], fixtures.handled_codes(metrics_port, m)
                ).items():
                    total[code] = total.get(code, 0) + n
            result.grpc_codes = total
            bad = fixtures.unexpected_calls(total, "OK", result.in_flight_at_end)
            result.bad_grpc_status = bad if total else result.requests
        return result

    def _profile(self, case: DbCase, process: str) -> subprocess.Popen:
        """py-spy (collapsed stacks of the busy threads) on `process` for the length of one load."""
        out = Path(self.cfg.profile)
        out.mkdir(parents=True, exist_ok=True)
        rounds = len(self.results[case.name]["service"].rounds)
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--nonblocking",  # Python frames only, sampled without stopping the process
                "--rate",
                "250",
                "--format",
                "raw",
                "--duration",
                str(round(self.cfg.duration + self.cfg.warmup)),
                "--pid",
                str(self.bench.procs.pid(process)),
                "--output",
                str(out / f"{case.name}-{rounds + 1}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def run(self) -> dict:
        bench, cfg = self.bench, self.cfg
        libpq = fixtures.libpq_url(bench.cfg.database_url)
        svc = bench.start_service(0, workers=False, name="server-db")
        self.log(f"db cases: preparing the bench user {DB_USER}")
        prepare(svc, cfg.write_clients)
        bench.procs.stop("server-db")

        capture_file = self.work / "sqlcapture.pickle"
        capture_file.unlink(missing_ok=True)
        capture = bench.start_service(
            0,
            workers=False,
            name="server-capture",
            module="scripts.bench.sqlcapture",
            args=[str(capture_file)],
        )
        recipes = record(capture, capture_file, self.cases, self.token)
        bench.procs.stop("server-capture")
        recipes_file = self.work / "db-echo-recipes.pickle"
        recipes_file.write_bytes(pickle.dumps(recipes))
        for method, table in recipes.items():
            for recipe in table.values():
                self.log(
                    f"  recorded {method.rsplit('/', 1)[-1]}: {sum(op.kind == 'sql' for op in recipe.ops)} "
                    f"statements, {sum(op.kind != 'sql' for op in recipe.ops)} Redis round trips, "
                    f"{len(recipe.response)}-byte response"
                )
                break

        port = pick_port(cfg.echo_port, set())
        bench.procs.start(
            "db-echo",
            [
                sys.executable,
                "-m",
                "scripts.bench.db_echo",
                "--port",
                str(port),
                "--recipes",
                str(recipes_file),
                "--database-url",
                libpq,
                "--redis-url",
                os.environ.get("REDIS_URL", ""),
                "--pool-size",
                os.environ.get("DB_POOL_SIZE", "10"),
                "--options",
                DbTimeouts.from_settings(Settings.from_env()).connect_kwargs()["options"],
            ],
        )
        echo = f"127.0.0.1:{port}"
        bench.procs.wait_ready("db-echo", lambda: self._echo_answers(echo, recipes))
        svc = bench.start_service(0, workers=False, name="server-db")
        metrics_port = bench.cfg.metrics_ports[0]
        try:
            for n in range(1, cfg.rounds + 1):
                self.log(f"db round {n}/{cfg.rounds}")
                for case in self.cases:
                    for side, target, process, port_ in (
                        ("echo", echo, "db-echo", None),
                        ("service", svc, "server-db", metrics_port),
                    ):
                        result = self.load(case, target, process, port_)
                        if case.per_client:  # h2load stops mid-cycle: end each client's cycle
                            for body in case.bodies:
                                call(svc, case.methods[-1], body, self.token)
                        self.results[case.name][side].rounds.append(result)
                        cpu = self.results[case.name][side].cpu(n - 1)
                        self.log(
                            f"  {case.name} {side}: {result.rps:.0f} req/s, p50 {result.p50_ms or 0:.1f} ms, "
                            f"p99 {result.p99_ms or 0:.1f} ms, {cpu or 0:.0f} us CPU/call, "
                            f"{result.failures} failed"
                        )
                    if case.kind == "write":
                        delete_bench_writes(libpq)
        finally:
            bench.procs.stop("server-db")
            bench.procs.stop("db-echo")
            delete_bench_writes(libpq)
        return self.summary()

    def _echo_answers(self, target: str, recipes: dict[str, dict[bytes, Recipe]]) -> bool:
        """Ready when every recipe answers its recorded response (read cases only: writes would write)."""
        for case in self.cases:
            if case.kind == "read":
                [method], [body] = case.methods, case.bodies
                if call(target, method, body, self.token) != recipes[method][body].response:
                    raise RuntimeError(f"db echo: unexpected answer to {case.name}")
        return True

    def summary(self) -> dict:
        out: dict = {
            "config": {
                **self.cfg.__dict__,
                "connections": self.bench.cfg.connections,
                "streams": self.bench.cfg.streams,
            },
            "cases": {},
        }
        for case in self.cases:
            echo, service = self.results[case.name]["echo"], self.results[case.name]["service"]
            pairs = list(range(len(echo.rounds)))
            rps = [service.rounds[i].rps / echo.rounds[i].rps for i in pairs if echo.rounds[i].rps]
            cpu = [service.cpu(i) / echo.cpu(i) for i in pairs if service.cpu(i) and echo.cpu(i)]
            max_cpu, min_rps = GOALS[case.kind]
            rps_ratio = statistics.median(rps) if rps else None
            cpu_ratio = statistics.median(cpu) if cpu else None
            failures = sum(r.failures for r in service.rounds)
            out["cases"][case.name] = {
                "kind": case.kind,
                "methods": list(case.methods),
                "echo": [_round(r, echo.cpu(i)) for i, r in enumerate(echo.rounds)],
                "service": [_round(r, service.cpu(i)) for i, r in enumerate(service.rounds)],
                "rps_ratio": rps_ratio,
                "cpu_ratio": cpu_ratio,
                "failures": failures,
                "goals": {
                    f"CPU/call service/echo <= {max_cpu}": _verdict(
                        cpu_ratio is not None and cpu_ratio <= max_cpu
                    ),
                    f"req/s service/echo >= {min_rps}": _verdict(
                        rps_ratio is not None and rps_ratio >= min_rps
                    ),
                    "0 failed calls": _verdict(failures == 0),
                },
            }
        self.print_table(out)
        return out

    def print_table(self, out: dict) -> None:
        cfg = self.cfg
        print()
        print(
            f"DB cases: the service against its DB echo (same SQL through a bare psycopg pool), {cfg.rounds} "
            f"rounds of {cfg.duration:g}s (+{cfg.warmup:g}s warm-up); medians of the rounds"
        )
        header = (
            f"  {'case':<22} {'side':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'us/call':>8} {'busy':>5}"
            f" {'steal':>5}"
            f"   {'req/s ratio':>11} {'CPU ratio':>9}  goals"
        )
        print(header)
        print("  " + "-" * (len(header) - 2))
        for name, c in out["cases"].items():
            for side in ("echo", "service"):
                rs = c[side]
                med = {
                    k: statistics.median([r[k] for r in rs if r[k] is not None] or [0])
                    for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_call", "machine_busy", "machine_steal")
                }
                tail = ""
                if side == "service":
                    rr = "-" if c["rps_ratio"] is None else f"{c['rps_ratio']:.2f}"
                    cr = "-" if c["cpu_ratio"] is None else f"{c['cpu_ratio']:.2f}"
                    tail = f"   {rr:>11} {cr:>9}  " + " ".join(f"{v}" for v in c["goals"].values())
                label = name if side == "echo" else ""
                print(
                    f"  {label:<22} {side:<8} {med['rps']:>8.0f} {med['p50_ms']:>7.2f} "
                    f"{med['p99_ms']:>7.2f} {med['cpu_us_per_call']:>8.0f} {med['machine_busy']:>5.0%} "
                    f"{med['machine_steal']:>5.0%}{tail}"
                )
        print(
            "  (us/call: CPU time per call of the server process; busy: all CPUs of the machine, the load"
            " generator and other work included; ratios: service/echo within a round, median"
            " over rounds; goals, reads: CPU <= 1.5x and req/s >= 0.6x; writes: CPU <= 2x and req/s >= 0.5x;"
            " each goal PASS/MISS, then the failed-calls check)"
        )
        print()


def _round(r: loadgen.LoadResult, cpu: float | None) -> dict:
    return {
        "rps": round(r.rps, 1),
        "requests": r.requests,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "cpu_us_per_call": cpu,
        "machine_busy": r.cpu.get("machine_busy"),
        "machine_steal": r.cpu.get("machine_steal"),
        "failures": r.failures,
        "grpc_codes": r.grpc_codes,
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
