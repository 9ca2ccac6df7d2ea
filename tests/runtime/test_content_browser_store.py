"""The browser's content store (zmesh/runtime/browser_store.py) on CPython, IndexedDB
played by :class:`MemoryContentDb`: write-through, reload, quotas, a full IndexedDB, and
tampered or orphaned records; then zmesh.share / zmesh.get through BrowserNode's calls.
tests/browser/test_content_page.py runs the same code on real IndexedDB in Chromium."""

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.chunks import ContentId, EncodedContent, encode_content
from zmesh.rng import DeterministicRng
from zmesh.runtime.browser import BrowserConfig, BrowserNode, start
from zmesh.runtime.browser_store import BrowserChunkStore, MemoryContentDb
from zmesh.runtime.chunkstore import ChunkStoreError, StoreFullError

CS = 4096


def content(label: bytes, chunks: int = 10, k: int = 3, n: int = 5) -> tuple[bytes, EncodedContent]:
    data = DeterministicRng(label).bytes(chunks * CS - 7)
    return data, encode_content(data, CS, k, n)


def cache(store: BrowserChunkStore, enc: EncodedContent) -> ContentId:
    """Store ``enc`` as cached content, one piece per write, as a fetch does."""
    cid = store.add(enc.manifest, pinned=False)
    lay = enc.manifest.layout
    for index in range(lay.pieces):
        group, _ = lay.locate(index)
        store.put(cid, group, enc.proof(group), {index: enc.pieces[index]})
    return cid


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_writes_reach_the_db_one_transaction_each_and_load_back() -> None:
    async def main() -> None:
        db = MemoryContentDb()
        store = await BrowserChunkStore.open(db, "t")
        shared_data, shared = content(b"shared")
        fetched_data, fetched = content(b"fetched")
        pinned = store.pin(shared)
        await store.flush(pinned)
        assert db.transactions == 1  # a shared file is one IndexedDB transaction
        cached = cache(store, fetched)
        await store.flush(cached)
        assert db.transactions == 2 + fetched.manifest.layout.pieces  # the add, then a piece each
        store.read(pinned)  # pinned is now the most recently used
        await store.close_async()

        again = await BrowserChunkStore.open(db, "t")
        assert again.read(pinned) == shared_data
        assert again.read(cached) == fetched_data
        listed = {c.content_id: c.pinned for c in again.contents()}
        assert listed == {pinned: True, cached: False}
        assert [c.content_id for c in again.contents()] == [cached, pinned]  # LRU kept
        assert again.cached_bytes == store_bytes(fetched)
        assert db.transactions == 2 + fetched.manifest.layout.pieces  # loading wrote nothing
        await again.close_async()

    run(main())


def store_bytes(enc: EncodedContent) -> int:
    return sum(map(len, enc.pieces))


def test_lru_eviction_is_mirrored_and_pinned_content_has_its_own_quota() -> None:
    async def main() -> None:
        db = MemoryContentDb()
        _, a = content(b"a")
        _, b = content(b"b")
        store = await BrowserChunkStore.open(db, "t", cache_quota=store_bytes(a) + 10)
        first = cache(store, a)
        second = cache(store, b)  # evicts the first
        await store.flush()
        assert store.manifest(first) is None and store.manifest(second) is not None
        assert {d for d, _ in db.pieces} == {second.digest}
        assert set(db.contents) == {second.digest}

        _, big = content(b"big", chunks=40)
        small = BrowserChunkStore(db, "q", pinned_quota=store_bytes(a) + 10)
        small.pin(a)
        with pytest.raises(StoreFullError, match="share quota"):
            small.pin(big)
        assert [c.content_id for c in small.contents()] == [a.manifest.content_id]
        small.close()
        await store.close_async()

    run(main())


def test_a_full_indexeddb_loses_nothing_stored_and_says_so() -> None:
    async def main() -> None:
        _, a = content(b"a")
        _, big = content(b"big", chunks=60)
        db = MemoryContentDb(quota=2 * store_bytes(a) + 4000)
        store = await BrowserChunkStore.open(db, "t")
        kept = store.pin(a)
        await store.flush(kept)
        lost = store.pin(big)  # memory takes it, IndexedDB refuses it
        with pytest.raises(StoreFullError, match=r"could not be saved.*QuotaExceededError"):
            await store.flush(lost)
        assert store.manifest(lost) is None  # undone in memory too
        assert store.write_failures == 1
        await store.flush(lost)  # reported once
        _, c = content(b"c", chunks=40)
        cached = store.add(c.manifest, pinned=False)
        await store.flush(cached)
        lay = c.manifest.layout
        for index in range(lay.pieces):  # piece by piece until IndexedDB is full
            group, _ = lay.locate(index)
            store.put(cached, group, c.proof(group), {index: c.pieces[index]})
            await store.flush()
        with pytest.raises(StoreFullError):
            await store.flush(cached)
        stored = {i for (d, i) in db.pieces if d == cached.digest}
        assert set(store.held(cached)) == stored and 0 < len(stored) < lay.pieces
        reloaded = await BrowserChunkStore.open(db, "x")
        assert reloaded.read(kept) == store.read(kept)
        assert reloaded.held(cached) == store.held(cached)
        await reloaded.close_async()
        await store.close_async()

    run(main())


def test_tampered_and_orphaned_records_are_dropped_on_load() -> None:
    async def main() -> None:
        db = MemoryContentDb()
        store = await BrowserChunkStore.open(db, "t")
        data, a = content(b"a", k=3, n=5)
        cid = store.pin(a)
        await store.close_async()
        db.pieces[cid.digest, 0] = b"x" * len(db.pieces[cid.digest, 0])  # tampered
        _, orphan = content(b"orphan")
        odigest = orphan.manifest.content_id.digest
        db.pieces[odigest, 0] = orphan.pieces[0]  # its content record never made it
        db.contents[b"\x01" * 32] = (b"garbage", False, 5)
        again = await BrowserChunkStore.open(db, "t")
        assert 0 not in again.held(cid)
        assert again.read(cid) == data  # erasure coding covers the dropped piece
        await again.flush()
        assert (odigest, 0) not in db.pieces  # the orphan was deleted
        await again.close_async()

    run(main())


# -- zmesh.share and zmesh.get through the node's calls ----------------------------------------


class ReplyHost:
    """The worker's host with no WebRTC: records replies (the node never links)."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[bool, Any, bytes | None]] = {}
        self.replied = asyncio.Event()
        self.kv: dict[str, bytes] = {}

    async def rtc(self, op: str, pc: int, sdp: str | None) -> str | None:
        raise OSError("no WebRTC here")

    def send(self, pc: int, data: bytes) -> None: ...

    def close(self, pc: int) -> None: ...

    def publish(self, status_json: str) -> None: ...

    def reply(self, call_id: int, ok: bool, value_json: str, body: bytes | None) -> None:
        self.replies[call_id] = (ok, json.loads(value_json), body)
        self.replied.set()

    async def load(self, key: str) -> bytes | None:
        return self.kv.get(key)

    async def save(self, key: str, value: bytes) -> None:
        self.kv[key] = value

    async def lock(self, name: str, wait_ms: int) -> bool:
        return True

    def random(self, n: int) -> bytes:
        return bytes(DeterministicRng(b"r").bytes(n))


async def _call(
    host: ReplyHost,
    node: BrowserNode,
    call_id: int,
    method: str,
    args: Any,
    body: bytes | None = None,
) -> tuple[bool, Any, bytes | None]:
    host.replied.clear()
    node.on_call(call_id, method, json.dumps(args), body)
    while call_id not in host.replies:
        await asyncio.wait_for(host.replied.wait(), 10)
        host.replied.clear()
    return host.replies[call_id]


def test_share_then_get_from_the_tabs_own_store_and_clear_rejections() -> None:
    async def main() -> None:
        host = ReplyHost()
        db = MemoryContentDb()
        node = await start(BrowserConfig([]), host, content_db=lambda _: db)  # type: ignore[arg-type]
        try:
            data = DeterministicRng(b"file").bytes(700_000)
            ok, value, _ = await _call(host, node, 1, "share", {}, data)
            assert ok, value
            cid = value["id"]
            assert value["bytes"] == len(data) and cid.startswith("zm1")
            assert set(db.contents) == {ContentId.parse(cid).digest}
            ok, value, body = await _call(host, node, 2, "get", {"id": cid})
            assert ok and body == data and value["bytes"] == len(data), value

            ok, value, _ = await _call(host, node, 3, "get", {"id": "zm1nope"})
            assert not ok and "not a content id" in value["error"], value
            ok, value, _ = await _call(host, node, 4, "get", {"id": 5})
            assert not ok and "content id" in value["error"], value
            unknown = str(encode_content(b"nobody has this").manifest.content_id)
            ok, value, _ = await _call(host, node, 5, "get", {"id": unknown, "timeout": 0.3})
            assert not ok and "timed out after 0.3 s (no provider found)" in value["error"], value
            ok, value, _ = await _call(host, node, 6, "share", {}, b"")
            assert not ok and "empty" in value["error"], value
            status = node.status()["content"]
            assert status["contents"] == 1 and status["pinned"] == 1 and status["shares"] == 1
            assert status["getFailures"] == 3 and status["getsDone"] == 1, status
        finally:
            await node.close()

    run(main())


class FlakyDb(MemoryContentDb):
    """IndexedDB that fails its next write with an unexpected error (not a store error)."""

    fail_next = False

    async def write(self, batch: Any) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("DataCloneError: the value could not be cloned")
        await super().write(batch)


def test_the_writer_survives_an_unexpected_failure() -> None:
    async def main() -> None:
        db = FlakyDb()
        store = await BrowserChunkStore.open(db, "t")
        _, a = content(b"a")
        db.fail_next = True
        lost = store.pin(a)
        with pytest.raises(ChunkStoreError, match=r"could not be saved.*DataCloneError"):
            await store.flush(lost)
        data, b = content(b"b")
        kept = store.pin(b)
        await store.flush(kept)  # the writer still runs
        assert set(db.contents) == {kept.digest}
        assert store.manifest(lost) is None and store.read(kept) == data
        await store.close_async()

    run(main())


@settings(max_examples=60, deadline=None)
@given(
    contents=st.lists(
        st.tuples(
            st.binary(min_size=32, max_size=32),
            st.binary(max_size=80),
            st.booleans(),
            st.integers(-5, 5),
        ),
        max_size=4,
    ),
    records=st.lists(
        st.tuples(st.integers(0, 2), st.integers(-3, 40), st.binary(max_size=600)), max_size=12
    ),
)
def test_any_indexeddb_content_loads_or_is_left_out(contents: Any, records: Any) -> None:
    """Whatever IndexedDB holds (another script of the origin may write there), the store
    opens; only verified pieces of parseable manifests are kept."""

    async def main() -> None:
        _, a = content(b"a")
        db = MemoryContentDb()
        store = await BrowserChunkStore.open(db, "t")
        cid = store.pin(a)
        await store.close_async()
        digests = [cid.digest, *(c[0] for c in contents)]
        for digest, blob, pinned, used in contents:
            db.contents[digest] = (blob, pinned, used)
        for which, index, blob in records:
            digest = digests[which % len(digests)]
            (db.proofs if index % 2 else db.pieces)[digest, index] = blob
        again = await BrowserChunkStore.open(db, "t")
        for stored in again.contents():
            assert again.verify(stored.content_id) == []
        await again.close_async()

    run(main())
