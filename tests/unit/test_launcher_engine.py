"""The download engine's pure parts: the token bucket (a controlled clock), the journal format, the plan of
which chunks to fetch or copy, and file assembly; and the fetcher's rules against a fake store."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest

from client.engine.fetch import Counters, Fetcher, FetchError, Link, Links
from client.engine.journal import Journal, chunk_record, file_record, header, parse
from client.engine.plan import Assembly, Chunk, ChunkJob, FileSpec, Source, build_plan
from client.engine.throttle import MIN_BURST, Gate, Throttle, TokenBucket, bytes_per_second
from content_store.chunking import compress

A, B, C, D, E = (ch * 64 for ch in "abcde")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ token bucket


def test_the_bucket_starts_empty_and_charges_debt_paid_at_the_rate():
    clock = Clock()
    bucket = TokenBucket(1000.0, clock=clock)
    assert bucket.charge(500) == pytest.approx(0.5)  # nothing saved up: the first bytes already owe
    clock.now += 0.5
    assert bucket.charge(100) == pytest.approx(0.1)


def test_over_any_window_the_bytes_let_through_stay_within_rate_times_window_plus_burst():
    clock = Clock()
    rate = 200_000.0
    bucket = TokenBucket(rate, clock=clock)
    moved = 0
    for _ in range(2000):  # a reader that always waits exactly what it is told
        moved += 16_384
        clock.now += bucket.charge(16_384)
    elapsed = clock.now - 100.0
    assert moved / elapsed == pytest.approx(rate, rel=0.01)


def test_idle_time_saves_up_at_most_one_burst():
    clock = Clock()
    bucket = TokenBucket(1_000_000.0, clock=clock)
    clock.now += 60
    assert bucket.charge(bucket.capacity) == 0  # one burst passes at once
    assert bucket.charge(1000) > 0  # and no more
    assert bucket.capacity == pytest.approx(100_000.0)
    assert TokenBucket(1000.0, clock=clock).capacity == MIN_BURST


def test_a_lower_rate_applies_to_what_is_still_owed():
    clock = Clock()
    bucket = TokenBucket(1000.0, clock=clock)
    bucket.charge(1000)  # owes one second at 1000 B/s
    bucket.set_rate(100.0)
    assert bucket.charge(0) == pytest.approx(10.0)  # the same debt, now at 100 B/s
    bucket.set_rate(0)
    assert bucket.charge(10**9) == 0  # unlimited


def test_kbps_are_kilobits():
    assert bytes_per_second(8000) == 1_000_000
    assert bytes_per_second(0) == 0


async def test_a_gate_follows_a_new_limit_and_holds_everyone_while_closed():
    gate = Gate(1)
    inside = []

    async def holder(i: int, release: asyncio.Event) -> None:
        async with gate:
            inside.append(i)
            await release.wait()

    release = asyncio.Event()
    tasks = [asyncio.create_task(holder(i, release)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert inside == [0]
    await gate.set_limit(3)
    await asyncio.sleep(0.01)
    assert sorted(inside) == [0, 1, 2]
    release.set()
    await asyncio.gather(*tasks)
    await gate.set_open(False)
    late = asyncio.create_task(holder(9, release))
    await asyncio.sleep(0.01)
    assert 9 not in inside
    await gate.set_open(True)
    await late
    assert inside[-1] == 9


# ------------------------------------------------------------------ journal


def test_a_journal_records_chunks_and_files_and_ignores_a_torn_last_line():
    text = header("v1", "d1") + chunk_record(A) + file_record("dir/ä b.txt") + chunk_record(B)[:-5]
    state = parse(text)
    assert (state.version_id, state.download_id) == ("v1", "d1")
    assert state.chunks == {A}
    assert state.files == {"dir/ä b.txt"}


@pytest.mark.parametrize(
    "text", ["", "launcher-journal 1 v1 d1", "something else\n" + chunk_record(A), "launcher-journal 2 v d\n"]
)
def test_a_journal_without_a_complete_header_is_no_journal(text):
    assert parse(text) is None


def test_garbage_lines_are_skipped(tmp_path):
    journal = Journal(tmp_path / "j")
    journal.start("v1", "d1")
    journal.chunk_done(A)
    with open(journal.path, "a") as handle:
        handle.write("C not-a-hash\nF {broken\nX what\n")
    journal.file_done("f")
    journal.close()
    state = journal.read()
    assert (state.chunks, state.files) == ({A}, {"f"})
    journal.start("v1", "d2", keep=state)  # restarted under a new session, records carried over
    assert journal.read().download_id == "d2" and journal.read().chunks == {A}
    journal.remove()
    assert journal.read() is None


# ------------------------------------------------------------------ plan and assembly


def spec(path: str, *chunks: tuple[str, int]) -> FileSpec:
    offset, listed = 0, []
    for chunk_id, size in chunks:
        listed.append(Chunk(chunk_id, offset, size, size // 2))
        offset += size
    return FileSpec(path, offset, path.replace("/", "-"), tuple(listed))


def test_a_fresh_install_fetches_each_distinct_chunk_once_for_every_place_of_it():
    target = [spec("a", (A, 10), (B, 10), (A, 10)), spec("copy-of-a", (A, 10), (B, 10), (A, 10)), spec("e")]
    plan = build_plan(target, None, None)
    assert [f.path for f in plan.write] == ["a", "copy-of-a", "e"]
    jobs = {j.chunk_id: j for j in plan.jobs}
    assert set(jobs) == {A, B} and all(j.local is None for j in plan.jobs)
    assert jobs[A].destinations == [("a", 0), ("a", 20), ("copy-of-a", 0), ("copy-of-a", 20)]
    assert plan.fetch_bytes == 5 + 5 and plan.write_bytes == 60 and plan.remove == []


def test_an_update_writes_only_changing_files_copies_held_chunks_and_removes_dropped_files():
    installed = [spec("big", (A, 10), (B, 10), (C, 10)), spec("same", (D, 4)), spec("dropped", (E, 4))]
    target = [spec("big", (A, 10), (E, 3), (C, 10)), spec("same", (D, 4)), spec("moved", (B, 10))]
    plan = build_plan(target, {"big", "moved"}, installed)
    assert [f.path for f in plan.write] == ["big", "moved"]
    jobs = {j.chunk_id: j for j in plan.jobs}
    assert jobs[A].local == Source("big", 0) and jobs[C].local == Source("big", 20)
    assert jobs[B].local == Source("big", 10)  # a chunk of another file is copied, not downloaded
    assert jobs[E].local == Source("dropped", 0)  # even from a file the new version drops
    assert plan.fetch_jobs == [] and plan.remove == ["dropped"]


def test_a_resumed_plan_skips_placed_files_and_sets_journaled_chunks_apart():
    installed = [spec("big", (A, 10))]
    target = [spec("big", (A, 10), (B, 10)), spec("new", (C, 10)), spec("done", (D, 10))]
    state = parse(header("v2", "d") + chunk_record(B) + file_record("done"))
    plan = build_plan(target, {"big", "new", "done"}, installed, state)
    assert [f.path for f in plan.write] == ["big", "new"]
    assert [j.chunk_id for j in plan.journaled] == [B]
    assert {j.chunk_id: j.local for j in plan.jobs} == {A: Source("big", 0), C: None}


def test_a_placed_file_of_the_new_version_is_a_source_instead_of_the_old_one():
    installed = [spec("x", (A, 10))]
    target = [spec("x", (B, 10)), spec("y", (B, 10), (A, 10))]
    plan = build_plan(target, {"x", "y"}, installed, parse(header("v", "d") + file_record("x")))
    jobs = {j.chunk_id: j for j in plan.jobs}
    assert jobs[B].local == Source("x", 0)
    assert jobs[A].local is None  # "x" no longer holds it


def test_assembly_says_when_each_file_is_whole():
    target = [spec("a", (A, 10), (B, 10), (A, 10)), spec("b", (B, 10)), spec("empty")]
    plan = build_plan(target, None, None)
    assembly = Assembly(plan.write)
    assert assembly.whole_from_start() == ["empty"]
    jobs = {j.chunk_id: j for j in plan.jobs}
    assert assembly.filled(jobs[B]) == ["b"]
    assert assembly.filled(jobs[A]) == ["a"]
    assert assembly.remaining == 0


# ------------------------------------------------------------------ fetcher, against a fake store


@pytest.fixture
def chunk(monkeypatch) -> tuple[ChunkJob, bytes, bytes]:
    """(job, the chunk's bytes, its compressed object); backoff waits are skipped (not what is tested)."""

    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    data = os.urandom(5000)
    blob = compress(data)
    return ChunkJob(hashlib.sha256(data).hexdigest(), len(data), len(blob), [("f", 0)]), data, blob


async def fetch_from(job: ChunkJob, replies: list[tuple[int, bytes]], *, renew=None):
    """Fetches `job` from a store answering `replies` in turn; (bytes placed, counters, URLs asked)."""
    asked: list[str] = []

    def store(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        status, body = replies.pop(0)
        return httpx.Response(status, stream=httpx.ByteStream(body))  # read as the network is: streamed

    links = Links(renew)
    links.put(job.chunk_id, Link("http://store/old", None, "page-1" if renew else None))
    placed, counters = [], Counters()
    async with httpx.AsyncClient(transport=httpx.MockTransport(store)) as http:
        await Fetcher(http, Throttle(), Gate(4), links, counters).fetch(job, placed.append)
    return placed, counters, asked


async def test_a_5xx_or_bytes_that_do_not_verify_are_retried_and_nothing_bad_is_written(chunk):
    job, data, blob = chunk
    placed, counters, asked = await fetch_from(job, [(503, b""), (200, blob[:-1] + b"x"), (200, blob)])
    assert placed == [data]  # written once, only the verified bytes
    assert (counters.retries, counters.fetched_chunks, counters.fetched_bytes) == (2, 1, len(blob))
    assert len(asked) == 3


async def test_a_refused_link_is_renewed_from_its_manifest_page(chunk):
    job, data, blob = chunk
    renewed = []

    async def renew(token: str) -> dict[str, Link]:
        renewed.append(token)
        return {job.chunk_id: Link("http://store/new", None, token)}

    placed, counters, asked = await fetch_from(job, [(403, b"expired"), (200, blob)], renew=renew)
    assert placed == [data] and renewed == ["page-1"]
    assert asked == ["http://store/old", "http://store/new"]
    assert (counters.link_refreshes, counters.retries) == (1, 0)


async def test_a_missing_object_fails_at_once_and_persistent_5xx_fail_after_the_retries(chunk):
    job, _, _ = chunk
    with pytest.raises(FetchError, match="HTTP 404"):
        await fetch_from(job, [(404, b"")])
    with pytest.raises(FetchError, match="HTTP 500"):
        await fetch_from(job, [(500, b"")] * 6)
