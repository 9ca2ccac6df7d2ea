"""The browser node's content store: the chunk store in memory, mirrored to IndexedDB.

Theory of operation.  :class:`BrowserChunkStore` *is* a
:class:`~zmesh.runtime.chunkstore.ChunkStore` (the same verification, pinned and cached
content, LRU eviction and limits) over an in-memory SQLite database, so the
:class:`~zmesh.runtime.content.Seeder` and :class:`~zmesh.runtime.content_fetch.Fetch`
drive it unchanged, synchronously.  IndexedDB is asynchronous, so every committed write
transaction becomes one :class:`Batch` (the contents it added or pinned, the proofs and
pieces it inserted, the contents it evicted or removed) that a single writer task applies
as **one IndexedDB transaction**, in commit order: a piece is one IndexedDB transaction,
a shared file is one (all of it or nothing).  :meth:`BrowserChunkStore.flush` waits until
every batch committed so far is on IndexedDB, and raises if one of a content's batches
failed: ``zmesh.share`` and ``zmesh.get`` answer only after it, so an id or a Blob handed
to the page is durable.  On start, :meth:`BrowserChunkStore.open` loads everything back,
verifying each piece against its manifest and proof (a tampered piece is dropped).

Failures.  A write IndexedDB refuses (``QuotaExceededError``: the origin's storage is
full, or any other error) is undone in memory: the pieces the batch added are removed (a
content the batch created is removed whole), so memory never holds what IndexedDB lost,
and nothing written before is touched.  The error is kept per content (at most
:data:`MAX_ERRORS`) until :meth:`~BrowserChunkStore.flush` reports it, as a
:class:`~zmesh.runtime.chunkstore.StoreFullError` that says so.  An eviction IndexedDB
could not apply leaves the content there; the load on the next start evicts it again.

Memory.  The pieces live in memory (the worker's WebAssembly heap) as well as in
IndexedDB, so both quotas are small: cached content (what the tab fetched) at most
:data:`DEFAULT_CACHE_QUOTA` bytes with LRU eviction, as natively; pinned content (what
the user shared) is never evicted but, unlike natively, bounded too
(:data:`DEFAULT_PINNED_QUOTA`): a share beyond it raises StoreFullError.  The LRU order
is saved with each content's writes, not on every read (a read costs no IndexedDB write).
"""

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from ..chunks import ContentId, GroupProof, Manifest, decode_group_proof, decode_manifest
from ..chunks.errors import ContentError
from .chunkstore import SCHEMA, ChunkStore, ChunkStoreError, StoreFullError

log = logging.getLogger("zmesh.browser_store")

DEFAULT_CACHE_QUOTA: Final = 128 * 1024 * 1024  # bytes of cached pieces
DEFAULT_PINNED_QUOTA: Final = 256 * 1024 * 1024  # bytes of pinned pieces
MAX_ERRORS: Final = 64  # contents whose failed write is kept until flush reports it
MAX_PENDING: Final = 4096  # batches queued for IndexedDB before a write is refused


@dataclass
class Batch:
    """One committed write transaction, as IndexedDB will apply it (one transaction).

    Keys are content digests; ``contents`` maps a digest to (manifest, pinned, used);
    ``created`` are the digests this batch added (undone whole if the batch fails)."""

    deletes: list[bytes] = field(default_factory=list)
    contents: dict[bytes, tuple[bytes, bool, int]] = field(default_factory=dict)
    proofs: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    pieces: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    created: set[bytes] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.deletes or self.contents or self.proofs or self.pieces)


@dataclass
class Snapshot:
    """What IndexedDB holds, as :meth:`ContentDb.load` returns it."""

    contents: list[tuple[bytes, bytes, bool, int]]  # digest, manifest, pinned, used
    proofs: list[tuple[bytes, int, bytes]]
    pieces: list[tuple[bytes, int, bytes]]


class ContentDb(Protocol):
    """The persistent side: IndexedDB in the worker (:class:`JsContentDb`), a dict in tests."""

    async def load(self) -> Snapshot:
        """Everything stored.  Raises ChunkStoreError if storage is unusable."""
        ...

    async def write(self, batch: Batch) -> None:
        """Apply ``batch`` in one transaction (deletes first).  Raises StoreFullError if
        the storage quota refuses it, ChunkStoreError for any other failure; either way
        nothing of the batch is written."""
        ...


class BrowserChunkStore(ChunkStore):
    """The chunk store in memory, every write mirrored to a :class:`ContentDb`."""

    def __init__(
        self,
        db: ContentDb,
        name: str,
        cache_quota: int = DEFAULT_CACHE_QUOTA,
        pinned_quota: int = DEFAULT_PINNED_QUOTA,
    ) -> None:
        """An empty store named ``name`` (for messages); :meth:`open` loads it.

        Raises ChunkStoreError for a negative quota."""
        if cache_quota < 0 or pinned_quota < 0:
            raise ChunkStoreError("a quota cannot be negative")
        # ChunkStore.__init__ opens a file; this store is the same tables in memory
        self._db = sqlite3.connect(":memory:", isolation_level=None)
        self._db.executescript(SCHEMA)
        self.path = Path(f"IndexedDB:{name}")
        self.cache_quota = cache_quota
        self.pinned_quota = pinned_quota
        self.content_db = db
        self._batch = Batch()
        self._recording = True
        self._queue: asyncio.Queue[tuple[Batch, asyncio.Future[None]]] = asyncio.Queue()
        self._pending: list[asyncio.Future[None]] = []
        self._errors: dict[bytes, ChunkStoreError] = {}
        self._writer: asyncio.Future[None] | None = None
        self.writes = 0  # IndexedDB transactions done
        self.write_failures = 0

    @classmethod
    async def open(
        cls,
        db: ContentDb,
        name: str,
        cache_quota: int = DEFAULT_CACHE_QUOTA,
        pinned_quota: int = DEFAULT_PINNED_QUOTA,
    ) -> "BrowserChunkStore":
        """The store with everything ``db`` holds loaded back and verified, its writer
        running.  Raises ChunkStoreError if ``db`` cannot be read."""
        store = cls(db, name, cache_quota, pinned_quota)
        await store._load(await db.load())
        store._writer = asyncio.ensure_future(store._write_loop())
        return store

    # -- the pinned quota ---------------------------------------------------------------
    @property
    def pinned_bytes(self) -> int:
        """The bytes of pinned pieces, which :attr:`pinned_quota` bounds here."""
        row = self._db.execute("SELECT coalesce(sum(bytes), 0) FROM content WHERE pinned = 1")
        return int(row.fetchone()[0])

    def _put(
        self, content_id: ContentId, group: int, proof: GroupProof, pieces: Mapping[int, bytes]
    ) -> None:
        digest = content_id.digest
        row = self._db.execute("SELECT pinned FROM content WHERE cid = ?", (digest,)).fetchone()
        if row is not None and row[0]:
            held = set(self.held(content_id))
            added = sum(len(d) for i, d in pieces.items() if i not in held)
            if self.pinned_bytes + added > self.pinned_quota:
                raise StoreFullError(
                    f"the browser's share quota of {self.pinned_quota} bytes cannot take "
                    f"{added} more"
                )
        before = set(self.held(content_id)) if self._recording else set()
        super()._put(content_id, group, proof, pieces)
        if self._recording:
            self._batch.proofs.append((digest, group, proof.encode()))
            self._batch.pieces += [(digest, i, d) for i, d in pieces.items() if i not in before]
            self._record_content(digest)

    # -- recording the writes --------------------------------------------------------------
    def _add(self, manifest: Manifest, pinned: bool) -> None:
        digest = manifest.content_id.digest
        new = self.manifest(manifest.content_id) is None
        super()._add(manifest, pinned)
        if self._recording:
            if new:
                self._batch.created.add(digest)
            self._record_content(digest)

    def _delete(self, digest: bytes) -> None:
        super()._delete(digest)
        self._batch.deletes.append(digest)
        self._batch.contents.pop(digest, None)
        self._batch.created.discard(digest)
        self._batch.proofs = [p for p in self._batch.proofs if p[0] != digest]
        self._batch.pieces = [p for p in self._batch.pieces if p[0] != digest]

    def _record_content(self, digest: bytes) -> None:
        row = self._db.execute(
            "SELECT manifest, pinned, used FROM content WHERE cid = ?", (digest,)
        ).fetchone()
        if row is not None:
            self._batch.contents[digest] = (bytes(row[0]), bool(row[1]), int(row[2]))

    def _committed(self) -> None:
        batch, self._batch = self._batch, Batch()
        if not self._recording:  # loading or undoing: only evictions go to IndexedDB
            batch = Batch(deletes=batch.deletes)
        if not batch:
            return
        if len(self._pending) >= MAX_PENDING:
            self._undo(batch)
            raise StoreFullError(f"{MAX_PENDING} writes are waiting for IndexedDB; try later")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(done)
        self._queue.put_nowait((batch, done))

    def _rolled_back(self) -> None:
        self._batch = Batch()

    # -- the writer ------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            batch, done = await self._queue.get()
            try:
                await self.content_db.write(batch)
            except Exception as exc:  # the writer must outlive any failure, or flush hangs
                error = exc if isinstance(exc, ChunkStoreError) else ChunkStoreError(str(exc))
                self.write_failures += 1
                log.warning("store event=write_failed reason=%r", str(error))
                self._undo(batch)
                for digest in {*batch.contents, *(p[0] for p in batch.pieces)}:
                    if digest in self._errors or len(self._errors) < MAX_ERRORS:
                        self._errors[digest] = error
            else:
                self.writes += 1
            finally:
                self._pending.remove(done)
                done.set_result(None)

    def _undo(self, batch: Batch) -> None:
        """Remove from memory what ``batch`` added, since IndexedDB did not take it."""
        self._recording = False
        try:
            with self._transaction():
                for digest in batch.created:
                    self._delete(digest)
                for digest, index, data in batch.pieces:
                    if digest in batch.created:
                        continue
                    gone = self._db.execute(
                        "DELETE FROM pieces WHERE cid = ? AND idx = ?", (digest, index)
                    ).rowcount
                    if gone:
                        minus = "UPDATE content SET bytes = bytes - ? WHERE cid = ?"
                        self._db.execute(minus, (len(data), digest))
        finally:
            self._recording = True
            self._batch = Batch()

    async def flush(self, content_id: ContentId | None = None) -> None:
        """Wait until every write committed so far is on IndexedDB.  With ``content_id``,
        raise the error of a write of that content that failed (once): StoreFullError for
        a full quota, ChunkStoreError otherwise; its pieces are no longer in the store."""
        pending = list(self._pending)
        if pending:
            await asyncio.gather(*pending)
        if content_id is not None and (error := self._errors.pop(content_id.digest, None)):
            message = f"{content_id} could not be saved in the browser: {error}"
            raise type(error)(message)

    # -- loading back ----------------------------------------------------------------------
    async def _load(self, snapshot: Snapshot) -> None:
        """Load ``snapshot`` (least recently used first, so the LRU order is kept),
        verifying every piece; what fails to parse or verify is left out."""
        self._recording = False
        try:
            proofs: dict[tuple[bytes, int], GroupProof] = {}
            for digest, group, blob in snapshot.proofs:
                with contextlib.suppress(ContentError):
                    proofs[digest, group] = decode_group_proof(blob)
            pieces: dict[tuple[bytes, int], dict[int, bytes]] = {}
            for content in sorted(snapshot.contents, key=lambda c: c[3]):
                digest, blob, pinned = content[0], content[1], content[2]
                try:
                    manifest = decode_manifest(blob)
                    if manifest.content_id.digest != digest:
                        raise ContentError("the manifest does not match its id")
                    self.add(manifest, pinned)
                except (ContentError, ChunkStoreError) as exc:
                    log.warning("store event=load_skipped reason=%r", str(exc))
            orphans: set[bytes] = set()
            for digest, index, data in snapshot.pieces:
                held = self.manifest(ContentId(digest))
                if held is None:
                    orphans.add(digest)  # a content whose own write failed
                    continue
                with contextlib.suppress(ContentError):
                    group, _ = held.layout.locate(index)
                    pieces.setdefault((digest, group), {})[index] = data
            for (digest, group), group_pieces in pieces.items():
                proof = proofs.get((digest, group))
                if proof is None:
                    continue
                for index, data in sorted(group_pieces.items()):  # one bad piece: only it
                    try:
                        self.put(ContentId(digest), group, proof, {index: data})
                    except (ContentError, ChunkStoreError) as exc:
                        log.warning("store event=load_skipped reason=%r", str(exc))
            for digest in sorted(orphans):
                with self._transaction():
                    self._delete(digest)  # from IndexedDB: no row here
            # re-apply the contents' LRU order (puts above stamped them in load order)
            for content in sorted(snapshot.contents, key=lambda c: c[3]):
                if self.manifest(ContentId(content[0])) is not None:
                    with self._transaction():
                        self._touch(ContentId(content[0]))
        finally:
            self._recording = True
            self._batch = Batch()

    async def close_async(self) -> None:
        """Finish the writes queued, stop the writer and close the memory database."""
        await self.flush()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self.close()


class MemoryContentDb:
    """:class:`ContentDb` in a dict: where IndexedDB is unusable (the tab then keeps its
    content only while open), and the test double of IndexedDB.  ``quota`` (bytes of
    manifests, proofs and pieces) makes a write beyond it fail as a full IndexedDB does."""

    def __init__(self, quota: int | None = None) -> None:
        self.quota = quota
        self.contents: dict[bytes, tuple[bytes, bool, int]] = {}
        self.proofs: dict[tuple[bytes, int], bytes] = {}
        self.pieces: dict[tuple[bytes, int], bytes] = {}
        self.transactions = 0

    @property
    def bytes(self) -> int:
        return (
            sum(len(m) for m, _, _ in self.contents.values())
            + sum(map(len, self.proofs.values()))
            + sum(map(len, self.pieces.values()))
        )

    async def load(self) -> Snapshot:
        return Snapshot(
            [(d, m, p, u) for d, (m, p, u) in self.contents.items()],
            [(d, g, b) for (d, g), b in self.proofs.items()],
            [(d, i, b) for (d, i), b in self.pieces.items()],
        )

    async def write(self, batch: Batch) -> None:
        contents, proofs, pieces = dict(self.contents), dict(self.proofs), dict(self.pieces)
        for digest in batch.deletes:
            contents.pop(digest, None)
            proofs = {k: v for k, v in proofs.items() if k[0] != digest}
            pieces = {k: v for k, v in pieces.items() if k[0] != digest}
        contents.update(batch.contents)
        proofs.update({(d, g): b for d, g, b in batch.proofs})
        pieces.update({(d, i): b for d, i, b in batch.pieces})
        size = (
            sum(len(m) for m, _, _ in contents.values())
            + sum(map(len, proofs.values()))
            + sum(map(len, pieces.values()))
        )
        if self.quota is not None and size > self.quota:
            raise StoreFullError(f"the storage quota is full (QuotaExceededError, {size} bytes)")
        self.contents, self.proofs, self.pieces = contents, proofs, pieces
        self.transactions += 1


# -- IndexedDB in the worker -------------------------------------------------------------------


class JsContentDb:
    """:class:`ContentDb` over ``web/src/contentdb.js`` (one IndexedDB database per node,
    named ``name``).  Runs only in Pyodide."""

    def __init__(self, js: Any, name: str) -> None:
        from pyodide.ffi import to_js  # noqa: PLC0415 (exists only in Pyodide)

        self._js = js
        self._name = name
        self._to_js = to_js

    async def load(self) -> Snapshot:
        try:
            raw = await self._js.load(self._name)
        except Exception as exc:  # a rejected promise: JsException
            raise ChunkStoreError(f"cannot read the browser's content store: {exc}") from None

        def rows(key: str) -> list[Any]:
            return list(getattr(raw, key))

        return Snapshot(
            [(bytes.fromhex(str(c[0])), _bytes(c[1]), bool(c[2]), int(c[3]))
             for c in rows("contents")],
            [(bytes.fromhex(str(p[0])), int(p[1]), _bytes(p[2])) for p in rows("proofs")],
            [(bytes.fromhex(str(p[0])), int(p[1]), _bytes(p[2])) for p in rows("pieces")],
        )  # fmt: skip

    async def write(self, batch: Batch) -> None:
        to_js = self._to_js
        plain = {
            "deletes": [d.hex() for d in batch.deletes],
            "contents": [[d.hex(), to_js(m), p, u] for d, (m, p, u) in batch.contents.items()],
            "proofs": [[d.hex(), g, to_js(b)] for d, g, b in batch.proofs],
            "pieces": [[d.hex(), i, to_js(b)] for d, i, b in batch.pieces],
        }
        try:
            await self._js.write(self._name, to_js(plain, dict_converter=_object_from_entries()))
        except Exception as exc:  # a rejected promise: JsException
            text = str(exc)
            if "QuotaExceeded" in text:
                raise StoreFullError(f"the browser's storage quota is full ({text})") from None
            raise ChunkStoreError(f"IndexedDB refused a write ({text})") from None


def _bytes(value: Any) -> bytes:
    convert = getattr(value, "to_bytes", None)
    return bytes(value) if convert is None else bytes(convert())


def _object_from_entries() -> Any:
    from js import Object  # noqa: PLC0415 (exists only in Pyodide)

    return Object.fromEntries


__all__ = [
    "DEFAULT_CACHE_QUOTA",
    "DEFAULT_PINNED_QUOTA",
    "Batch",
    "BrowserChunkStore",
    "ContentDb",
    "JsContentDb",
    "MemoryContentDb",
    "Snapshot",
]
