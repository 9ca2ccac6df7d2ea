"""A node's persistent state in SQLite: its identity and its peer cache.

Onion (circuit) keys are deliberately *not* stored: they live one epoch plus a grace
period in memory, which is what gives circuits forward secrecy.  The identity seeds are
written once, with the file readable by its owner only.
"""

import os
import sqlite3
import tempfile
import time
from pathlib import Path

from ..crypto import signing, xwing
from ..errors import RemoteProtocolError, UsageError
from ..identity import Descriptor, Identity, decode_descriptor
from ..rng import Rng

SCHEMA = """
CREATE TABLE IF NOT EXISTS identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    kem_seed BLOB NOT NULL,
    signing_seed BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS peers (
    node_id BLOB PRIMARY KEY,
    descriptor BLOB NOT NULL,
    last_seen REAL NOT NULL
);
"""
MAX_PEERS = 10_000


class StoreError(UsageError):
    """The state directory cannot be used (it says which and why)."""


def usable_directory(directory: Path) -> Path:
    """Create ``directory`` if need be and check that we can write in it.

    Raises StoreError naming the directory and the reason."""
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"cannot use state directory {directory}: it is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise StoreError(f"cannot use state directory {directory}: {exc.strerror or exc}") from None
    return directory


class Store:
    def __init__(self, directory: Path) -> None:
        usable_directory(directory)
        try:
            path = directory / "zmesh.sqlite3"
            new = not path.exists()
            self._db = sqlite3.connect(path, isolation_level=None)
            if new:
                os.chmod(path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot use state directory {directory}: {exc}") from None
        self.path = path

    def load_or_create_identity(self, rng: Rng) -> Identity:
        """The node's identity; created and saved on first use, so restarts keep the id."""
        row = self._db.execute("SELECT kem_seed, signing_seed FROM identity").fetchone()
        if row is not None:
            kem_seed, signing_seed = bytes(row[0]), bytes(row[1])
            if len(kem_seed) != xwing.SEED_SIZE or len(signing_seed) != signing.SEED_SIZE:
                raise StoreError(f"corrupt identity in {self.path}; refusing to replace it")
            return Identity(kem_seed, signing_seed)
        identity = Identity.generate(rng)
        self._db.execute(
            "INSERT INTO identity VALUES (1, ?, ?, ?)",
            (identity.kem_seed, identity.signing.seed, time.time()),
        )
        return identity

    def remember_peer(self, descriptor: Descriptor) -> None:
        count = self._db.execute("SELECT count(*) FROM peers").fetchone()[0]
        if count >= MAX_PEERS:
            self._db.execute(
                "DELETE FROM peers WHERE node_id IN "
                "(SELECT node_id FROM peers ORDER BY last_seen LIMIT ?)",
                (count - MAX_PEERS + 1,),
            )
        self._db.execute(
            "INSERT OR REPLACE INTO peers VALUES (?, ?, ?)",
            (descriptor.node_id, descriptor.encode(), time.time()),
        )

    def peers(self, now: float) -> list[Descriptor]:
        """Cached descriptors that still verify (others are skipped, not deleted)."""
        out = []
        for (blob,) in self._db.execute("SELECT descriptor FROM peers ORDER BY last_seen DESC"):
            try:
                desc = decode_descriptor(bytes(blob))
                desc.verify(now)
            except RemoteProtocolError:
                continue
            out.append(desc)
        return out

    def close(self) -> None:
        self._db.close()
