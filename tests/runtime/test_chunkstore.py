"""The content store (zmesh/runtime/chunkstore.py): pinned and cached content, the LRU
quota, full disks, resuming, and writers killed with SIGKILL mid-write."""

import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zmesh.chunks import ContentId, EncodedContent, ProofError, encode_content
from zmesh.chunks.errors import NotEnoughPiecesError
from zmesh.rng import DeterministicRng
from zmesh.runtime import chunkstore
from zmesh.runtime.chunkstore import (
    ChunkStore,
    ChunkStoreError,
    StoreFullError,
    UnknownContentError,
)
from zmesh.runtime.store import StoreError

ROOT = Path(__file__).resolve().parents[2]
CS = 4096


def content(label: bytes, chunks: int = 10, k: int = 3, n: int = 5) -> tuple[bytes, EncodedContent]:
    data = DeterministicRng(label).bytes(chunks * CS - 7)
    return data, encode_content(data, CS, k, n)


Opener = Callable[..., ChunkStore]


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opener]:
    """Open stores in tmp_path (keyword arguments go to ChunkStore); all closed at the end."""
    stores: list[ChunkStore] = []

    def open_store(**kwargs: int) -> ChunkStore:
        stores.append(ChunkStore(tmp_path, **kwargs))
        return stores[-1]

    yield open_store
    for store in stores:
        store.close()


def fetch(store: ChunkStore, enc: EncodedContent, skip_data: bool = False) -> ContentId:
    """Store ``enc`` as cached content, group by group, the way a fetcher would."""
    cid = store.add(enc.manifest, pinned=False)
    lay = enc.manifest.layout
    for g in range(lay.groups):
        indices = lay.group_pieces(g)
        chosen = indices[-lay.group_data_count(g) :] if skip_data else indices
        store.put(cid, g, enc.proof(g), {i: enc.pieces[i] for i in chosen})
    return cid


def test_pinned_content_round_trip_and_reopen(opened: Opener, tmp_path: Path) -> None:
    data, enc = content(b"a")
    store = opened()
    cid = store.pin(enc)
    assert cid == enc.manifest.content_id
    assert store.held(cid) == list(range(enc.manifest.layout.pieces))
    assert store.missing(cid) == []
    assert store.read(cid) == data
    assert store.verify(cid) == []
    assert store.piece(cid, 3) == enc.pieces[3]
    assert store.proof(cid, 1) == enc.proof(1)
    assert store.cached_bytes == 0
    store.close()
    again = opened()
    assert again.manifest(cid) == enc.manifest
    assert again.read(cid) == data
    assert [c.pinned for c in again.contents()] == [True]
    assert (tmp_path / "chunks.sqlite3").stat().st_mode & 0o777 == 0o600


def test_fetched_content_is_cached_and_resumes(opened: Opener) -> None:
    data, enc = content(b"b")
    store = opened()
    cid = store.add(enc.manifest, pinned=False)
    lay = enc.manifest.layout
    assert store.missing(cid) == list(range(lay.pieces))
    store.put(cid, 0, enc.proof(0), {0: enc.pieces[0], 3: enc.pieces[3]})
    store.close()
    store = opened()  # a restart: what is held survives
    assert store.held(cid) == [0, 3]
    assert store.missing(cid) == [1, 2, 4, *range(5, lay.pieces)]
    with pytest.raises(NotEnoughPiecesError):
        store.read(cid)
    fetch(store, enc, skip_data=True)  # rebuilt from parity
    assert store.missing(cid) == []
    assert store.read(cid) == data
    assert store.verify(cid) == []
    assert store.cached_bytes == sum(len(store.piece(cid, i) or b"") for i in store.held(cid))
    assert [c.pinned for c in store.contents()] == [False]


def test_bad_pieces_and_proofs_are_refused_and_nothing_is_written(opened: Opener) -> None:
    _, enc = content(b"c")
    _, other = content(b"d")
    store = opened()
    cid = store.add(enc.manifest, pinned=False)
    bad = bytearray(enc.pieces[1])
    bad[100] ^= 4
    with pytest.raises(ProofError):
        store.put(cid, 0, enc.proof(0), {0: enc.pieces[0], 1: bytes(bad)})
    with pytest.raises(ProofError):
        store.put(cid, 0, other.proof(0), {0: enc.pieces[0]})
    with pytest.raises(ProofError):
        store.put(cid, 1, enc.proof(0), {5: enc.pieces[5]})
    with pytest.raises(ChunkStoreError, match="not in group"):
        store.put(cid, 0, enc.proof(0), {5: enc.pieces[5]})
    with pytest.raises(UnknownContentError):
        store.put(other.manifest.content_id, 0, other.proof(0), {0: other.pieces[0]})
    assert store.held(cid) == []
    assert store.cached_bytes == 0
    assert store.proof(cid, 0) is None


def test_pinning_wins_over_caching(opened: Opener) -> None:
    _, enc = content(b"e")
    store = opened(cache_quota=10**6)
    cid = fetch(store, enc)
    assert store.cached_bytes > 0
    store.pin(enc)  # the user shares what it fetched: now pinned, off the quota
    assert store.cached_bytes == 0
    store.add(enc.manifest, pinned=False)
    assert [c.pinned for c in store.contents()] == [True]
    assert store.verify(cid) == []
    store.remove(cid)
    assert store.manifest(cid) is None and store.held(cid) == []


def test_cache_quota_evicts_least_recently_used_and_never_pinned(opened: Opener) -> None:
    encs = [content(bytes([i]))[1] for i in range(4)]
    size = sum(len(p) for p in encs[0].pieces)
    store = opened(cache_quota=2 * size + 100)
    pinned = store.pin(content(b"pinned", chunks=30)[1])
    a, b = fetch(store, encs[0]), fetch(store, encs[1])
    assert store.piece(a, 0) is not None  # reading a makes b the least recently used
    c = fetch(store, encs[2])
    assert store.manifest(b) is None and store.held(b) == []
    assert store.manifest(a) is not None and store.manifest(c) is not None
    fetch(store, encs[3])
    assert store.manifest(a) is None
    assert store.cached_bytes <= store.cache_quota
    assert store.verify(pinned) == []
    assert len(store.held(pinned)) == 30 + 10 * 2


def test_a_write_the_quota_cannot_take_fails_and_loses_nothing(opened: Opener) -> None:
    _, small = content(b"small", chunks=2)
    _, big = content(b"big", chunks=12)
    store = opened(cache_quota=9 * CS // 2)  # the small one (4 pieces) fits, 5 never do
    cid = fetch(store, small)
    big_id = store.add(big.manifest, pinned=False)
    with pytest.raises(StoreFullError, match="quota"):
        store.put(big_id, 0, big.proof(0), {i: big.pieces[i] for i in range(5)})
    # the eviction it tried was rolled back with it
    assert store.held(cid) == list(range(small.manifest.layout.pieces))
    assert store.verify(cid) == []
    assert store.held(big_id) == []


def test_a_full_disk_fails_clearly_and_loses_nothing(opened: Opener) -> None:
    data, enc = content(b"f")
    _, huge = content(b"huge", chunks=200)
    store = opened()
    cid = store.pin(enc)
    # a disk that is full: SQLite may not grow the file past its current size (+2 pages)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(StoreFullError, match=r"disk .* is full"):
        store.pin(huge)
    huge_id = huge.manifest.content_id
    with pytest.raises(StoreFullError, match=r"disk .* is full"):
        fetch(store, huge)
    assert store.read(cid) == data
    assert store.verify(cid) == []
    assert store.held(huge_id) == []
    store.close()
    reopened = opened()
    assert reopened.read(cid) == data
    assert reopened._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_number_of_contents_is_bounded(opened: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunkstore, "MAX_CONTENTS", 3)
    encs = [content(bytes([i]), chunks=1)[1] for i in range(5)]
    store = opened()
    store.pin(encs[0])
    for enc in encs[1:4]:
        store.add(enc.manifest, pinned=False)
    assert len(store.contents()) == 3  # the oldest cached one made room
    assert store.manifest(encs[1].manifest.content_id) is None
    store.pin(encs[4])  # evicts encs[2]
    store.pin(content(b"third pinned", chunks=1)[1])  # evicts encs[3]
    assert [c.pinned for c in store.contents()] == [True, True, True]
    with pytest.raises(StoreFullError, match="3 contents, none evictable"):
        store.pin(content(b"one too many", chunks=1)[1])
    assert len(store.contents()) == 3


def test_tampering_is_found_by_verify(opened: Opener) -> None:
    _, enc = content(b"g")
    store = opened()
    cid = store.pin(enc)
    store._db.execute(
        "UPDATE pieces SET data = zeroblob(length(data)) WHERE cid = ? AND idx = 4", (cid.digest,)
    )
    assert store.verify(cid) == [4]
    with pytest.raises(UnknownContentError):
        store.verify(content(b"h")[1].manifest.content_id)


def test_unusable_directory_is_a_clear_error(opened: Opener, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        ChunkStore(blocker)
    assert issubclass(ChunkStoreError, StoreError)
    with pytest.raises(ChunkStoreError, match="negative"):
        opened(cache_quota=-1)


WRITER = Path(__file__).with_name("chunkstore_writer.py")


def uncommitted_wal_frames(directory: Path) -> int:
    """How many frames the WAL file holds after its last commit frame (SQLite's WAL
    format: a 32-byte header, then frames of a 24-byte header and a page; a frame whose
    "database size" field is non-zero ends a transaction).  They are what a writer
    killed mid-transaction left, and what recovery must ignore."""
    wal = (directory / "chunks.sqlite3-wal").read_bytes()
    _, _, page_size, _, salt1, salt2 = struct.unpack(">6I", wal[:24])
    frames, pos = [], 32
    while pos + 24 + page_size <= len(wal):
        _, commit, s1, s2 = struct.unpack(">4I", wal[pos : pos + 16])
        if (s1, s2) != (salt1, salt2):
            break
        frames.append(commit)
        pos += 24 + page_size
    last = max((i for i, c in enumerate(frames) if c), default=-1)
    return len(frames) - 1 - last


def test_writers_killed_mid_write_leave_a_store_that_opens_and_verifies(
    opened: Opener, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    chance = random.Random(os.urandom(8))  # kill instants, not secrets
    pinned_committed: set[int] = set()
    for round_ in range(6):
        writer = subprocess.Popen(
            [sys.executable, str(WRITER), str(tmp_path), str(round_), ["kill", "die"][round_ % 2]],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert writer.stdout is not None
        if round_ % 2:  # it kills itself inside the long transaction
            for line in writer.stdout:
                number, *indices = map(int, line.split()) if line != "big\n" else (-1,)
                if number == 0:
                    pinned_committed.update(indices)
        else:  # we kill it after a random number of committed writes, at a random instant
            for _ in range(chance.randrange(1, 150)):
                line = writer.stdout.readline()
                assert line, "the writer died on its own"
                number, *indices = map(int, line.split()) if line != "big\n" else (-1,)
                if number == 0:
                    pinned_committed.update(indices)
            time.sleep(chance.uniform(0, 0.004))
            writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL
        if round_ % 2:  # the kill left half a transaction on disk
            assert uncommitted_wal_frames(tmp_path) > 0
        store = opened()
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = store.contents()
        assert stored, "nothing was committed"
        for item in stored:
            assert store.verify(item.content_id) == []  # also checks the byte counts
            held = store.held(item.content_id)
            assert item.bytes == sum(len(store.piece(item.content_id, i) or b"") for i in held)
            if item.manifest.layout.size == 4_000_000:  # the long transaction: all or nothing
                assert not round_ % 2, "the transaction killed midway left pieces"
                assert held == list(range(item.manifest.layout.pieces))
            elif item.pinned:
                # every write the writer saw committed to pinned content is there
                assert pinned_committed <= set(held)
        assert store.cached_bytes <= store.cache_quota
        store.close()
    store = opened()
    pinned = [c for c in store.contents() if c.pinned and c.manifest.layout.size != 4_000_000]
    assert len(pinned) == 1
    if not store.missing(pinned[0].content_id):
        data = store.read(pinned[0].content_id)
        assert data == DeterministicRng(bytes([0])).bytes(24 * 16384 - 11)
