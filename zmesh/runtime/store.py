"""A node's persistent state in SQLite: its identity, its peer cache and its guards.

Onion (circuit) keys are deliberately *not* stored: they live one epoch plus a grace
period in memory, which is what gives circuits forward secrecy.  The identity seeds are
written once, with the file readable by its owner only.

The guard state (:mod:`zmesh.circuit.guarding`: the guard set and the familiarity table,
kept for months) is one JSON document in its own row.  A corrupt one (bad JSON, or a
document the guard component refuses) is logged and replaced by a fresh start at the next
save; it never stops the node and never touches the other tables.
"""

import json
import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from ..circuit.guarding import Guards
from ..crypto import signing, xwing
from ..errors import RemoteProtocolError, UsageError
from ..identity import Descriptor, Identity, decode_descriptor
from ..onion.guards import GuardStateError
from ..rng import Rng

log = logging.getLogger("zmesh.store")

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
CREATE TABLE IF NOT EXISTS state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
MAX_PEERS = 10_000
MAX_GUARD_STATE = 1 << 20  # bytes of guard state JSON we read (ours is ~300 KB at most)


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

    def save_guards(self, state: dict[str, object]) -> None:
        """Store the guard state (:class:`~zmesh.circuit.guarding.GuardStateChanged`)."""
        text = json.dumps(state, separators=(",", ":"), allow_nan=False)
        self._db.execute("INSERT OR REPLACE INTO state VALUES ('guards', ?)", (text,))

    def load_guards(self) -> object | None:
        """The stored guard state as parsed JSON; None if there is none, or (logged) if
        it is not JSON or is oversized."""
        row = self._db.execute("SELECT value FROM state WHERE name = 'guards'").fetchone()
        if row is None:
            return None
        text = row[0]
        if not isinstance(text, str) or len(text) > MAX_GUARD_STATE:
            log.warning("guard state in %s is oversized or not text; starting afresh", self.path)
            return None
        try:
            state: object = json.loads(text)
        except (ValueError, RecursionError) as exc:  # not JSON, or nested too deep
            log.warning("guard state in %s is not JSON (%s); starting afresh", self.path, exc)
            return None
        return state

    def restore_guards(self, guards: Guards, now: float) -> bool:
        """Load the stored guard state into ``guards``; False (logged, ``guards`` left
        fresh) if there is none or it is corrupt.  Never raises for bad content."""
        state = self.load_guards()
        if state is None:
            return False
        try:
            guards.restore(state, now)
        except GuardStateError as exc:
            log.warning("guard state in %s is corrupt (%s); starting afresh", self.path, exc)
            return False
        return True

    def close(self) -> None:
        self._db.close()
