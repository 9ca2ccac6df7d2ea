"""A node's content store in SQLite: the pieces it shares (pinned) and fetched (cached).

Theory of operation.  One SQLite file, ``chunks.sqlite3`` in the node's data directory
(beside the state database of :mod:`zmesh.runtime.store`), in WAL mode.  Three tables:
``content`` (one row per content id: its manifest, whether it is pinned, the bytes of its
stored pieces and a use stamp for LRU), ``proofs`` (one :class:`~zmesh.chunks.GroupProof`
per group held) and ``pieces``.  Every write is one transaction, so a process killed at
any instant leaves the pieces of the last committed write and nothing half-written
(tests/runtime/test_chunkstore.py kills writers with SIGKILL to show it).  WAL with
``synchronous=NORMAL`` survives a killed process without losing a commit; only a power
failure may lose the last commits (never the file's consistency).

Every piece is checked against its manifest and proof before it is written
(:func:`zmesh.chunks.verify_piece`), so the store only ever holds verified bytes.

Pinned content (what the user shared) is never evicted and is not counted against the
quota.  Cached content (what the node fetched) shares a byte quota: a write that would
exceed it first evicts whole cached contents, least recently used first (never the one
being written); if that cannot make room, it raises :class:`StoreFullError` and the
transaction is rolled back.  A full disk (SQLite's SQLITE_FULL) raises the same error,
with nothing already stored lost.  The number of contents is bounded as well.

Use stamps are a counter, not the clock: each read of a piece or write marks its content
as the most recently used.
"""

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..chunks import (
    ContentId,
    EncodedContent,
    GroupProof,
    Manifest,
    assemble,
    decode_group_proof,
    decode_manifest,
    missing,
    verify_group_proof,
    verify_piece,
)
from ..chunks.errors import ContentError
from .store import StoreError, usable_directory

FILE_NAME = "chunks.sqlite3"
DEFAULT_CACHE_QUOTA = 1 << 30  # bytes of cached pieces
MAX_CONTENTS = 100_000  # rows of ``content``, pinned and cached together

SCHEMA = """
CREATE TABLE IF NOT EXISTS content (
    cid BLOB PRIMARY KEY,
    manifest BLOB NOT NULL,
    pinned INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS content_lru ON content (pinned, used);
CREATE TABLE IF NOT EXISTS proofs (
    cid BLOB NOT NULL,
    grp INTEGER NOT NULL,
    proof BLOB NOT NULL,
    PRIMARY KEY (cid, grp)
);
CREATE TABLE IF NOT EXISTS pieces (
    cid BLOB NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (cid, idx)
);
"""


class ChunkStoreError(StoreError):
    """The content store cannot be used or cannot do what was asked (it says why)."""


class StoreFullError(ChunkStoreError):
    """The cache quota, the content limit or the disk is full; nothing stored was lost."""


class UnknownContentError(ChunkStoreError):
    """The store holds no content under that id."""


@dataclass(frozen=True, slots=True)
class StoredContent:
    """One row of the store's listing."""

    content_id: ContentId
    manifest: Manifest
    pinned: bool
    bytes: int


class ChunkStore:
    """Pinned and cached content pieces in SQLite (see the module's theory of operation)."""

    def __init__(self, directory: Path, cache_quota: int = DEFAULT_CACHE_QUOTA) -> None:
        """Open (or create) the store in ``directory``.

        Raises ChunkStoreError naming the directory if it cannot be used."""
        if cache_quota < 0:
            raise ChunkStoreError("the cache quota cannot be negative")
        usable_directory(directory)
        path = directory / FILE_NAME
        try:
            new = not path.exists()
            self._db = sqlite3.connect(path, isolation_level=None)
            if new:
                os.chmod(path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ChunkStoreError(f"cannot use content store {path}: {exc}") from None
        self.path = path
        self.cache_quota = cache_quota

    # -- reading --------------------------------------------------------------------

    def manifest(self, content_id: ContentId) -> Manifest | None:
        """The manifest of ``content_id``, or None if the store does not hold it."""
        row = self._db.execute(
            "SELECT manifest FROM content WHERE cid = ?", (content_id.digest,)
        ).fetchone()
        return None if row is None else decode_manifest(bytes(row[0]))

    def held(self, content_id: ContentId) -> list[int]:
        """The indices of the pieces held for ``content_id``, in order (empty if none):
        what a fetcher resuming after a restart already has."""
        rows = self._db.execute(
            "SELECT idx FROM pieces WHERE cid = ? ORDER BY idx", (content_id.digest,)
        )
        return [int(i) for (i,) in rows]

    def missing(self, content_id: ContentId) -> list[int]:
        """The pieces still needed to rebuild ``content_id`` (see
        :func:`zmesh.chunks.missing`).  Raises UnknownContentError."""
        return missing(self._manifest(content_id).layout, set(self.held(content_id)))

    def piece(self, content_id: ContentId, index: int) -> bytes | None:
        """Piece ``index`` of ``content_id`` (marking the content as used), or None."""
        row = self._db.execute(
            "SELECT data FROM pieces WHERE cid = ? AND idx = ?", (content_id.digest, index)
        ).fetchone()
        if row is None:
            return None
        with self._transaction():
            self._touch(content_id)
        return bytes(row[0])

    def proof(self, content_id: ContentId, group: int) -> GroupProof | None:
        """The proof of group ``group`` of ``content_id``, or None if not held."""
        row = self._db.execute(
            "SELECT proof FROM proofs WHERE cid = ? AND grp = ?", (content_id.digest, group)
        ).fetchone()
        return None if row is None else decode_group_proof(bytes(row[0]))

    def contents(self) -> list[StoredContent]:
        """Every content held, most recently used first."""
        rows = self._db.execute(
            "SELECT cid, manifest, pinned, bytes FROM content ORDER BY used DESC"
        ).fetchall()
        return [
            StoredContent(ContentId(bytes(c)), decode_manifest(bytes(m)), bool(p), int(b))
            for c, m, p, b in rows
        ]

    @property
    def cached_bytes(self) -> int:
        """The bytes of cached (not pinned) pieces, which the quota bounds."""
        row = self._db.execute("SELECT coalesce(sum(bytes), 0) FROM content WHERE pinned = 0")
        return int(row.fetchone()[0])

    def read(self, content_id: ContentId) -> bytes:
        """The whole file, rebuilt from the pieces held.

        Raises UnknownContentError, or NotEnoughPiecesError if pieces are missing."""
        manifest = self._manifest(content_id)
        digest = content_id.digest
        pieces = {
            int(i): bytes(d)
            for i, d in self._db.execute("SELECT idx, data FROM pieces WHERE cid = ?", (digest,))
        }
        proofs = {
            int(g): decode_group_proof(bytes(p))
            for g, p in self._db.execute("SELECT grp, proof FROM proofs WHERE cid = ?", (digest,))
        }
        return assemble(manifest, pieces, proofs)

    def verify(self, content_id: ContentId) -> list[int]:
        """Check every stored piece and proof of ``content_id`` against its manifest and
        its recorded byte count; the indices of the pieces that fail (none, unless the
        file was tampered with).  Raises UnknownContentError."""
        manifest = self._manifest(content_id)
        digest = content_id.digest
        proofs: dict[int, GroupProof] = {}
        for g, blob in self._db.execute("SELECT grp, proof FROM proofs WHERE cid = ?", (digest,)):
            try:
                proof = decode_group_proof(bytes(blob))
                verify_group_proof(manifest, int(g), proof)
            except ContentError:
                continue
            proofs[int(g)] = proof
        bad, total = [], 0
        for index, data in self._db.execute(
            "SELECT idx, data FROM pieces WHERE cid = ? ORDER BY idx", (digest,)
        ):
            total += len(data)
            try:
                group, _ = manifest.layout.locate(int(index))
                if group not in proofs:
                    raise ContentError(f"no proof for group {group}")
                verify_piece(manifest, int(index), bytes(data), proofs[group])
            except ContentError:
                bad.append(int(index))
        recorded = self._db.execute("SELECT bytes FROM content WHERE cid = ?", (digest,))
        if int(recorded.fetchone()[0]) != total:
            raise ChunkStoreError(f"{self.path}: the byte count of {content_id} is wrong")
        return bad

    # -- writing --------------------------------------------------------------------

    def add(self, manifest: Manifest, pinned: bool) -> ContentId:
        """Record ``manifest`` (pinned: shared by the user; else cached: fetched).

        Adding pinned content that is already cached pins it; adding cached content that
        is pinned leaves it pinned.  Raises StoreFullError if the store holds
        ``MAX_CONTENTS`` contents and no cached one can be evicted."""
        cid = manifest.content_id
        with self._transaction():
            self._add(manifest, pinned)
        return cid

    def put(
        self, content_id: ContentId, group: int, proof: GroupProof, pieces: Mapping[int, bytes]
    ) -> None:
        """Store pieces of one group of ``content_id`` with the group's proof, in one
        transaction, after checking each against the manifest.

        Raises UnknownContentError, ProofError or ManifestError for a bad proof or piece
        (nothing is written), StoreFullError if the quota or the disk cannot take them
        (nothing is written and nothing stored is lost)."""
        manifest = self._manifest(content_id)
        verify_group_proof(manifest, group, proof)
        for index, data in pieces.items():
            if manifest.layout.locate(index)[0] != group:
                raise ChunkStoreError(f"piece {index} is not in group {group}")
            verify_piece(manifest, index, data, proof)
        with self._transaction():
            self._put(content_id, group, proof, pieces)

    def pin(self, encoded: EncodedContent) -> ContentId:
        """Store a whole encoded file as pinned content, in one transaction."""
        manifest = encoded.manifest
        cid = manifest.content_id
        layout = manifest.layout
        with self._transaction():
            self._add(manifest, pinned=True)
            for group in range(layout.groups):
                indices = layout.group_pieces(group)
                self._put(cid, group, encoded.proof(group), {i: encoded.pieces[i] for i in indices})
        return cid

    def remove(self, content_id: ContentId) -> None:
        """Forget ``content_id`` and its pieces (nothing happens if it is not held)."""
        with self._transaction():
            self._delete(content_id.digest)

    def close(self) -> None:
        self._db.close()

    # -- internals ------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; SQLITE_FULL becomes StoreFullError after rollback."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise ChunkStoreError(f"cannot write content store {self.path}: {exc}") from None
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._rolled_back()
            if isinstance(exc, sqlite3.Error):
                if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise StoreFullError(f"the disk holding {self.path} is full") from None
                raise ChunkStoreError(f"cannot write content store {self.path}: {exc}") from None
            raise
        self._committed()

    def _committed(self) -> None:
        """Called after each write transaction commits (a subclass that mirrors the store
        elsewhere, :mod:`zmesh.runtime.browser_store`, hooks it)."""

    def _rolled_back(self) -> None:
        """Called after a write transaction is rolled back (see :meth:`_committed`)."""

    def _manifest(self, content_id: ContentId) -> Manifest:
        manifest = self.manifest(content_id)
        if manifest is None:
            raise UnknownContentError(f"the store holds no content {content_id}")
        return manifest

    def _add(self, manifest: Manifest, pinned: bool) -> None:
        digest = manifest.content_id.digest
        row = self._db.execute("SELECT pinned FROM content WHERE cid = ?", (digest,)).fetchone()
        if row is not None:
            if pinned and not row[0]:
                self._db.execute("UPDATE content SET pinned = 1 WHERE cid = ?", (digest,))
            self._touch(manifest.content_id)
            return
        count = int(self._db.execute("SELECT count(*) FROM content").fetchone()[0])
        if count >= MAX_CONTENTS and not self._evict_one(exclude=digest):
            raise StoreFullError(f"the store holds {MAX_CONTENTS} contents, none evictable")
        self._db.execute(
            "INSERT INTO content VALUES (?, ?, ?, 0, ?)",
            (digest, manifest.encode(), int(pinned), self._next_stamp()),
        )

    def _put(
        self, content_id: ContentId, group: int, proof: GroupProof, pieces: Mapping[int, bytes]
    ) -> None:
        digest = content_id.digest
        low, high = min(pieces, default=0), max(pieces, default=-1)
        held = {
            int(i)
            for (i,) in self._db.execute(
                "SELECT idx FROM pieces WHERE cid = ? AND idx BETWEEN ? AND ?", (digest, low, high)
            )
        }
        new = {i: d for i, d in pieces.items() if i not in held}
        added = sum(len(d) for d in new.values())
        pinned = self._db.execute("SELECT pinned FROM content WHERE cid = ?", (digest,)).fetchone()
        if not pinned[0]:
            self._make_room(added, exclude=digest)
        self._db.execute(
            "INSERT OR IGNORE INTO proofs VALUES (?, ?, ?)", (digest, group, proof.encode())
        )
        self._db.executemany(
            "INSERT INTO pieces VALUES (?, ?, ?)", [(digest, i, d) for i, d in sorted(new.items())]
        )
        self._db.execute(
            "UPDATE content SET bytes = bytes + ?, used = ? WHERE cid = ?",
            (added, self._next_stamp(), digest),
        )

    def _make_room(self, added: int, exclude: bytes) -> None:
        """Evict cached contents, least recently used first, until ``added`` more cached
        bytes fit in the quota; raises StoreFullError if they cannot."""
        while self.cached_bytes + added > self.cache_quota:
            if not self._evict_one(exclude):
                raise StoreFullError(
                    f"the cache quota of {self.cache_quota} bytes cannot take {added} more"
                )

    def _evict_one(self, exclude: bytes) -> bool:
        row = self._db.execute(
            "SELECT cid FROM content WHERE pinned = 0 AND cid != ? ORDER BY used LIMIT 1",
            (exclude,),
        ).fetchone()
        if row is None:
            return False
        self._delete(bytes(row[0]))
        return True

    def _delete(self, digest: bytes) -> None:
        for table in ("pieces", "proofs", "content"):
            self._db.execute(f"DELETE FROM {table} WHERE cid = ?", (digest,))  # noqa: S608

    def _touch(self, content_id: ContentId) -> None:
        self._db.execute(
            "UPDATE content SET used = ? WHERE cid = ?", (self._next_stamp(), content_id.digest)
        )

    def _next_stamp(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(used), 0) + 1 FROM content").fetchone()[0])
