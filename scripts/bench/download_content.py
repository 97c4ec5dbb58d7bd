"""Bench cases: published content (SPEC §10), each a ratio against a baseline measured in the same run.

publish      chunk + hash + compress (content_store/builds.py, one worker thread: per core) vs
             hashlib.sha256 + zstd at the same level over the same bytes in 1 MiB blocks, CPU seconds
             (process time, every thread), back to back per 16 MiB part in each of
             BENCH_CONTENT_ROUNDS rounds; the median over every part and round of such a pair's ratio;
             goal >= 0.8. The build is half text-like (compressible) and half random (like packed
             assets), BENCH_PUBLISH_MIB MiB (128). Printed beside it: the contract's least work as a
             bare loop (cut, the three SHA-256s, zstd) against both, the wall throughput on every
             core, and (no goal) the same ratio over a game-shaped build (small files, a repeated pack)
             and over one part all text-like and one all random, beside the contract loop's own ratio.
update       bytes to fetch after 3 edits (insert 3 KiB, delete 2 KiB, change 4 KiB) in a 64 MiB file
             with the store's FastCDC chunks vs fixed 1 MiB chunks; goal: CDC <= (edits + 1) x 2 MiB.
manifest     a synthesised 10 GiB / 10,000-chunk version (100 files x 100 chunks of 1 MiB; rows only,
updates      no bytes) and a second version differing in 10 chunks: every page of GetDownloadManifest
             of a download of the new version over the old one (links cached: the steady state; the
             first, signing pass is printed apart), and CheckUpdates from the old version, over gRPC
             against one service process; each vs a bare psycopg read of the same rows; goal <= 3x.
             BENCH_CONTENT_ROUNDS rounds (5), medians.
"""

from __future__ import annotations

import hashlib
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import psycopg
import zstandard

from content_store.builds import scan
from content_store.chunking import ZSTD_LEVEL, cut
from download.v1 import download_service_pb2 as pb
from download.v1 import download_service_pb2_grpc
from library.v1 import library_service_pb2, library_service_pb2_grpc
from scripts.bench import fixtures
from scripts.bench.procs import process_cpu_seconds

GOAL_PUBLISH = 0.8
PART_MIB = 16
GOAL_VS_SQL = 3.0
MiB = 1024 * 1024
CONTENT_PRODUCT = uuid.uuid5(uuid.NAMESPACE_URL, "https://library.platform/bench/content-product")
FILES, CHUNKS_PER_FILE, CHANGED = 100, 100, 10
_ACTIVE = [pb.DownloadSession.QUEUED, pb.DownloadSession.DOWNLOADING, pb.DownloadSession.PAUSED]


def _text_like(rng: random.Random, size: int) -> bytes:
    words = [rng.randbytes(rng.randint(2, 6)).hex().encode() for _ in range(4000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=4096)) + b"\n"
    return bytes(out[:size])


def _cpu(fn) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def _sha_and_zstd(data: dict[str, bytes], *, contract: bool) -> None:
    """The baseline loop over the same bytes in 1 MiB blocks. With `contract`, the least a publisher
    must do instead: cut each file with the store's FastCDC, hash each chunk, the whole file (unless it
    is one chunk) and each chunk's compressed object (the presigned PUT is bound to it)."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    for content in data.values():
        if not contract:
            view = memoryview(content)
            for at in range(0, len(view), MiB):
                block = view[at : at + MiB]
                hashlib.sha256(block).digest()
                compressor.compress(block)
            continue
        pieces = [piece for _, piece in cut(content)]
        if len(pieces) > 1:
            hashlib.sha256(content).digest()
        for piece in pieces:
            hashlib.sha256(piece).digest()
            hashlib.sha256(compressor.compress(piece)).digest()


def _write(root: Path, data: dict[str, bytes]) -> None:
    for name, content in data.items():
        Path(root, name).parent.mkdir(parents=True, exist_ok=True)
        Path(root, name).write_bytes(content)


def publish_case(work: Path, rounds: int) -> dict:
    """The build is BENCH_PUBLISH_MIB MiB in parts of PART_MIB, one directory each holding a random and a
    text-like file of half that (`_measure_parts` measures them)."""
    size = int(os.environ.get("BENCH_PUBLISH_MIB", "128")) * MiB
    rng = random.Random(5)
    half = PART_MIB * MiB // 2
    parts = [
        {"assets.pak": rng.randbytes(half), "scripts.txt": _text_like(rng, half)}
        for _ in range(max(1, size // (PART_MIB * MiB)))
    ]
    size = sum(len(c) for part in parts for c in part.values())
    times, wall = _measure_parts(work, parts, rounds, all_cores=True)

    def paired(numerator: str, denominator: str) -> float:
        return _paired(times, numerator, denominator)

    per_round = {name: [sum(part[r] for part in times[name]) for r in range(rounds)] for name in times}
    round_ratios = [b / o for b, o in zip(per_round["baseline"], per_round["ours"], strict=True)]
    ratio = paired("baseline", "ours")
    return {
        "bytes": size,
        "ours_mib_per_cpu_s": size / MiB / statistics.median(per_round["ours"]),
        "baseline_mib_per_cpu_s": size / MiB / statistics.median(per_round["baseline"]),
        "contract_mib_per_cpu_s": size / MiB / statistics.median(per_round["contract"]),
        "all_cores_mib_per_s": size / MiB / wall,
        "ratio": ratio,
        "round_ratios": round_ratios,
        "ratio_vs_contract_loop": paired("contract", "ours"),
        "contract_loop_vs_baseline": paired("baseline", "contract"),
        "load": os.getloadavg(),
        "goal": {"goal": f"publish per core / sha256+zstd >= {GOAL_PUBLISH}", "value": ratio}
        | {"status": "PASS" if ratio >= GOAL_PUBLISH else "MISS"},
    }


def content_mix_case(work: Path, rounds: int) -> dict:
    """The same three measurements over one part of PART_MIB all text-like and one all random: how the
    ratio, and the contract's least work, depend on what the build holds (informational, no goal)."""
    rng = random.Random(10)
    half = PART_MIB * MiB // 2
    mixes = {
        "text": {"a.txt": _text_like(rng, half), "b.txt": _text_like(rng, half)},
        "random": {"a.pak": rng.randbytes(half), "b.pak": rng.randbytes(half)},
    }
    result = {}
    for name, part in mixes.items():
        times, _ = _measure_parts(work, [part], rounds, all_cores=False)
        result[name] = {
            "ratio": _paired(times, "baseline", "ours"),
            "contract_loop_vs_baseline": _paired(times, "baseline", "contract"),
        }
    return result


def _measure_parts(work: Path, parts: list[dict[str, bytes]], rounds: int, *, all_cores: bool):
    """CPU seconds [part][round] of ours (the scan of the part), the baseline and the contract loop over
    that part's bytes, one right after the other, in an order rotating from part to part: the three take
    a third of a second together, so the machine's load hardly moves between them. With `all_cores`, also
    the wall time of one scan of every part on every core."""
    names = ("ours", "baseline", "contract")
    times = {name: [[] for _ in parts] for name in names}
    wall = 0.0
    with tempfile.TemporaryDirectory(dir=work) as root:
        dirs = [Path(root, f"part-{i:02d}") for i in range(len(parts))]
        for directory, part in zip(dirs, parts, strict=True):
            _write(directory, part)
            scan(directory, workers=1)  # warm the page cache and the code
        _sha_and_zstd(parts[0], contract=True)
        for _ in range(rounds):
            for i, (directory, part) in enumerate(zip(dirs, parts, strict=True)):
                runs = [
                    ("ours", lambda d=directory: scan(d, workers=1)),
                    ("baseline", lambda p=part: _sha_and_zstd(p, contract=False)),
                    ("contract", lambda p=part: _sha_and_zstd(p, contract=True)),
                ]
                for name, fn in runs[i % 3 :] + runs[: i % 3]:
                    times[name][i].append(_cpu(fn))
        if all_cores:
            wall = time.perf_counter()
            scan(root)
            wall = time.perf_counter() - wall
    return times, wall


def _paired(times: dict, numerator: str, denominator: str) -> float:
    """The median over every part of every round of the ratio of a back-to-back pair (a slow moment skews
    one pair, not the result)."""
    pairs = zip(_flat(times[numerator]), _flat(times[denominator]), strict=True)
    return statistics.median(n / d for n, d in pairs)


def _flat(per_part: list[list[float]]) -> list[float]:
    return [t for part in per_part for t in part]


def game_like_case(work: Path, rounds: int) -> dict:
    """Publish per core over a build shaped like a game's: 400 small files (4-256 KiB, half text), one
    8 MiB pack shipped in 4 levels, a 32 MiB world file; vs the same baseline over the same bytes, the
    two back to back in each round, which of them first alternating."""
    rng = random.Random(7)
    data = {}
    for i in range(400):
        n = rng.randint(4 * 1024, 256 * 1024)
        data[f"small/{i:04d}.bin"] = _text_like(rng, n) if i % 2 else rng.randbytes(n)
    pack = rng.randbytes(8 * MiB)
    data |= {f"levels/{level}/shared.pak": pack for level in range(4)}
    data["world.pak"] = rng.randbytes(16 * MiB) + _text_like(rng, 16 * MiB)
    ratios = []
    with tempfile.TemporaryDirectory(dir=work) as root:
        _write(Path(root), data)
        scan(root, workers=1)
        for n in range(rounds):
            first, second = (lambda: scan(root, workers=1)), (lambda: _sha_and_zstd(data, contract=False))
            if n % 2:
                baseline, ours = _cpu(second), _cpu(first)
            else:
                ours, baseline = _cpu(first), _cpu(second)
            ratios.append(baseline / ours)
    return {
        "bytes": sum(map(len, data.values())),
        "files": len(data),
        "ratio": statistics.median(ratios),
        "round_ratios": ratios,
    }


def _edit(data: bytes) -> bytes:
    rng = random.Random(8)
    edited = data[: 10 * MiB] + rng.randbytes(3072) + data[10 * MiB : 30 * MiB] + data[30 * MiB + 2048 :]
    return edited[: 50 * MiB] + rng.randbytes(4096) + edited[50 * MiB + 4096 :]


def update_case() -> dict:
    data = random.Random(6).randbytes(64 * MiB)
    edited, edits = _edit(data), 3

    def new_bytes(pieces_before, pieces_after) -> int:
        known = {hashlib.sha256(p).digest() for p in pieces_before}
        return sum(len(p) for p in pieces_after if hashlib.sha256(p).digest() not in known)

    cdc = new_bytes([p for _, p in cut(data)], [p for _, p in cut(edited)])
    fixed = new_bytes(
        [data[i : i + MiB] for i in range(0, len(data), MiB)],
        [edited[i : i + MiB] for i in range(0, len(edited), MiB)],
    )
    limit = (edits + 1) * 2 * MiB
    return {
        "cdc_bytes": cdc,
        "fixed_1mib_bytes": fixed,
        "limit_bytes": limit,
        "goal": {"goal": f"update bytes (CDC) <= (edits + 1) x 2 MiB = {limit}", "value": cdc}
        | {"status": "PASS" if cdc <= limit else "MISS"},
    }


# -- manifest and update checks over synthesised rows ----------------------------------------------------


def _synthesise(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Two committed versions of the content product (rows only); reused by later runs."""
    with psycopg.connect(url, autocommit=False) as conn:
        found = conn.execute(
            "SELECT version_name, version_id FROM download_product_versions WHERE product_id = %s",
            (CONTENT_PRODUCT,),
        ).fetchall()
        if len(found) == 2:
            ids = dict(found)
            return ids["bench-a"], ids["bench-b"]
        rng = random.Random(9)
        base = [[rng.randbytes(32).hex() for _ in range(CHUNKS_PER_FILE)] for _ in range(FILES)]
        changed = [row[:] for row in base]
        for n in range(CHANGED):
            changed[n * 7 % FILES][n % CHUNKS_PER_FILE] = rng.randbytes(32).hex()
        ids = []
        for name, files, hour in (("bench-a", base, 1), ("bench-b", changed, 2)):
            version = uuid.uuid4()
            conn.execute(
                "INSERT INTO download_product_versions (version_id, product_id, version_name, branch, "
                "release_notes, state, total_size_bytes, file_count, chunk_count, published_at) VALUES "
                "(%s, %s, %s, 'public', 'bench', 'committed', %s, %s, %s, "
                "'2026-01-01T00:00:00Z'::timestamptz + %s * interval '1 hour')",
                (
                    version,
                    CONTENT_PRODUCT,
                    name,
                    FILES * CHUNKS_PER_FILE * MiB,
                    FILES,
                    FILES * CHUNKS_PER_FILE,
                    hour,
                ),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO download_version_chunks VALUES (%s, %s, %s, %s, %s)",
                    [(version, c, MiB, MiB // 2, c) for row in files for c in row],
                )
                for index, row in enumerate(files):
                    file_id = uuid.uuid4()
                    cur.execute(
                        "INSERT INTO download_version_files VALUES (%s, %s, %s, %s, %s)",
                        (file_id, version, f"data/file-{index:03d}.pak", CHUNKS_PER_FILE * MiB, row[0]),
                    )
                    cur.executemany(
                        'INSERT INTO download_file_chunks (file_id, position, chunk_id, "offset", '
                        "size_bytes, compressed_size_bytes, compressed_sha256) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [(file_id, p, c, p * MiB, MiB, MiB // 2, c) for p, c in enumerate(row)],
                    )
            ids.append(version)
        conn.commit()
        return ids[0], ids[1]


_BARE_MANIFEST = (
    'SELECT f.file_id, f.path, f.size_bytes, f.sha256, fc.position, fc.chunk_id, fc."offset", '
    "fc.size_bytes, fc.compressed_size_bytes, fc.compressed_sha256, "
    "EXISTS (SELECT 1 FROM download_version_chunks h "
    "WHERE h.version_id = %(old)s AND h.chunk_id = fc.chunk_id) "
    "FROM download_version_files f JOIN download_file_chunks fc ON fc.file_id = f.file_id "
    "WHERE f.version_id = %(new)s ORDER BY f.path, fc.position"
)
_BARE_UPDATE = (
    "SELECT chunk_id, compressed_size_bytes FROM download_version_chunks "
    "WHERE version_id IN (%(old)s, %(new)s)"
)
_BARE_UPDATE_FILES = (
    "SELECT path, sha256, size_bytes FROM download_version_files WHERE version_id IN (%(old)s, %(new)s)"
)


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _manifest_pass(stub, download_id: str, md) -> int:
    token, chunks = "", 0
    while True:
        page = stub.GetDownloadManifest(
            pb.GetDownloadManifestRequest(download_id=download_id, page_size=200, page_token=token),
            metadata=md,
            timeout=120,
        )
        chunks += sum(len(f.chunks) for f in page.files)
        token = page.next_page_token
        if not token:
            return chunks


def _grant_content_product(stub, notes: list[str]) -> None:
    request = library_service_pb2.GrantEntitlementsRequest(
        user_id=str(fixtures.BENCH_USER),
        items=[
            library_service_pb2.EntitlementGrant(
                product_id=str(CONTENT_PRODUCT), acquisition_type=library_service_pb2.LibraryItem.PURCHASE
            )
        ],
    )
    try:
        stub.GrantEntitlements(request, metadata=(("authorization", f"Bearer {fixtures.service_token()}"),))
    except grpc.RpcError as exc:
        notes.append(f"grant of the content product: {exc.code().name}")


def rows_case(bench, rounds: int) -> dict:
    cfg = bench.cfg
    url = fixtures.libpq_url(cfg.database_url)
    old, new = _synthesise(url)
    notes: list[str] = []
    svc = bench.start_service(0, workers=False)
    md = (("authorization", f"Bearer {fixtures.user_token()}"),)
    with grpc.insecure_channel(svc, options=[("grpc.max_receive_message_length", 64 * MiB)]) as channel:
        _grant_content_product(library_service_pb2_grpc.LibraryServiceStub(channel), notes)
        stub = download_service_pb2_grpc.DownloadServiceStub(channel)
        active = stub.ListDownloads(pb.ListDownloadsRequest(status=_ACTIVE, page_size=200), metadata=md)
        for download in active.downloads:
            stub.CancelDownload(pb.CancelDownloadRequest(download_id=download.download_id), metadata=md)
        started = stub.StartDownload(
            pb.StartDownloadRequest(
                product_id=str(CONTENT_PRODUCT),
                version_id=str(new),
                installed_version_id=str(old),
                installation_path="/bench/content",
                start_now=True,
            ),
            metadata=md,
        ).download
        check = pb.CheckUpdatesRequest(
            installed_products=[
                pb.InstalledProduct(product_id=str(CONTENT_PRODUCT), installed_version_id=str(old))
            ]
        )
        first_pass = _timed(lambda: _manifest_pass(stub, started.download_id, md))
        chunks = _manifest_pass(stub, started.download_id, md)
        reply = stub.CheckUpdates(check, metadata=md)
        pid = bench.procs.pid("server-1-noworkers")
        with psycopg.connect(url) as conn:
            params = {"old": old, "new": new}
            times = {"manifest": [], "manifest_sql": [], "updates": [], "updates_sql": []}
            server_cpu = []
            for _ in range(rounds):
                cpu = process_cpu_seconds(pid)
                times["manifest"].append(_timed(lambda: _manifest_pass(stub, started.download_id, md)))
                server_cpu.append(process_cpu_seconds(pid) - cpu)
                times["manifest_sql"].append(_timed(lambda: conn.execute(_BARE_MANIFEST, params).fetchall()))
                times["updates"].append(_timed(lambda: stub.CheckUpdates(check, metadata=md)))
                times["updates_sql"].append(
                    _timed(
                        lambda: (
                            conn.execute(_BARE_UPDATE, params).fetchall(),
                            conn.execute(_BARE_UPDATE_FILES, params).fetchall(),
                        )
                    )
                )
    bench.procs.stop("server-1-noworkers")
    medians = {k: statistics.median(v) for k, v in times.items()}
    manifest_ratio = medians["manifest"] / medians["manifest_sql"]
    updates_ratio = medians["updates"] / medians["updates_sql"]
    return {
        "chunks": chunks,
        "first_pass_seconds": first_pass,
        "manifest_server_cpu_seconds": statistics.median(server_cpu),
        "load": os.getloadavg(),
        "median_seconds": medians,
        "update_bytes_to_download": reply.updates[0].bytes_to_download,
        "notes": notes,
        "goals": [
            {"goal": f"manifest pages (10,000 chunks) / bare SQL <= {GOAL_VS_SQL}", "value": manifest_ratio}
            | {"status": "PASS" if manifest_ratio <= GOAL_VS_SQL else "MISS"},
            {"goal": f"CheckUpdates (10,000 chunks) / bare SQL <= {GOAL_VS_SQL}", "value": updates_ratio}
            | {"status": "PASS" if updates_ratio <= GOAL_VS_SQL else "MISS"},
        ],
    }


def run(bench) -> dict:
    """Runs the cases; prints their lines; returns the results for latest.json."""
    rounds = int(os.environ.get("BENCH_CONTENT_ROUNDS", "5"))
    print(
        "bench: published content: publish throughput, update bytes, manifest and update checks", flush=True
    )
    publish = publish_case(bench.work, rounds)
    game = game_like_case(bench.work, rounds)
    mix = content_mix_case(bench.work, rounds)
    update = update_case()
    rows = rows_case(bench, rounds)
    goals = [publish["goal"], update["goal"], *rows["goals"]]
    print()
    print("Published content")
    print(
        f"  publish (1 core)  {publish['ours_mib_per_cpu_s']:.0f} MiB/cpu-s vs sha256+zstd "
        f"{publish['baseline_mib_per_cpu_s']:.0f} MiB/cpu-s; "
        f"all cores {publish['all_cores_mib_per_s']:.0f} MiB/s; rounds "
        f"{', '.join(f'{r:.2f}' for r in publish['round_ratios'])}; load "
        + ", ".join(f"{x:.1f}" for x in publish["load"])
    )
    print(
        f"  publish vs the contract's least work (FastCDC cut, chunk, file and object SHA-256, zstd "
        f"every chunk) {publish['contract_mib_per_cpu_s']:.0f} MiB/cpu-s: "
        f"{publish['ratio_vs_contract_loop']:.2f}; that loop itself is "
        f"{publish['contract_loop_vs_baseline']:.2f} of sha256+zstd"
    )
    print(
        f"  publish, game-like {game['bytes'] / MiB:.0f} MiB ({game['files']} files, a pack repeated 4x): "
        f"{game['ratio']:.2f} of sha256+zstd (informational: repeats are compressed once, one-chunk files "
        "hashed once)"
    )
    print(
        "  publish by content (informational): "
        + "; ".join(
            f"all {name} {m['ratio']:.2f} of sha256+zstd (the contract's least work alone: "
            f"{m['contract_loop_vs_baseline']:.2f})"
            for name, m in mix.items()
        )
    )
    print(
        f"  update bytes      CDC {update['cdc_bytes'] / MiB:.2f} MiB vs fixed 1 MiB chunks "
        f"{update['fixed_1mib_bytes'] / MiB:.2f} MiB (3 edits in 64 MiB)"
    )
    m = rows["median_seconds"]
    print(
        f"  manifest          {rows['chunks']} chunks: {m['manifest'] * 1000:.0f} ms (links cached; first "
        f"pass {rows['first_pass_seconds'] * 1000:.0f} ms) vs SQL {m['manifest_sql'] * 1000:.0f} ms; "
        f"service CPU {rows['manifest_server_cpu_seconds'] * 1000:.0f} ms a pass; load "
        + ", ".join(f"{x:.1f}" for x in rows["load"])
    )
    print(f"  CheckUpdates      {m['updates'] * 1000:.1f} ms vs SQL {m['updates_sql'] * 1000:.1f} ms")
    for g in goals:
        value = g["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {g['status']:<4}  {g['goal']:<62} {shown}")
    print()
    return {
        "publish": publish,
        "publish_game_like": game,
        "publish_by_content": mix,
        "update": update,
        "rows": rows,
        "goals": goals,
    }
