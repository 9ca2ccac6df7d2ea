"""The guard state in a native node's store: saved and restored across restarts, and a
corrupt one logged and replaced by a fresh start without touching the other tables."""

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from zmesh.circuit.guarding import Guards, GuardStateChanged
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.link.table import LinkTable
from zmesh.rng import DeterministicRng
from zmesh.runtime.store import Store


def descriptors(n: int) -> dict[bytes, Descriptor]:
    out = {}
    for i in range(n):
        identity = Identity.generate(DeterministicRng(i, b"relay"))
        desc = identity.make_descriptor(
            flags=Flags.RELAY,
            onion_epoch=0,
            onion_pk=b"\0" * 1216,
            published=0,
            lifetime=3600,
            addresses=(f"http://10.{i}.0.1:9000",),
        )
        out[desc.node_id] = desc
    return out


RELAYS = descriptors(6)


def guards(private: bool = False) -> Guards:
    return Guards(
        b"\1" * 32,
        RELAYS,
        LinkTable(),
        DeterministicRng(3),
        0.0,
        dial=lambda d, t: True,
        private=private,
    )


def test_guard_state_survives_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path)
    identity = store.load_or_create_identity(DeterministicRng(1))
    g = guards()
    g.update(10.0)
    [offer] = [e for e in g.events if isinstance(e, GuardStateChanged)]
    store.save_guards(offer.state)
    store.close()
    again = Store(tmp_path)
    assert again.load_or_create_identity(DeterministicRng(2)).node_id == identity.node_id
    fresh = guards()
    assert again.restore_guards(fresh, 20.0)
    assert fresh.primary() == g.primary() and len(fresh.primary()) == 3
    assert dict(fresh.familiarity) == dict(g.familiarity)
    again.close()


def test_no_state_is_a_fresh_start(tmp_path: Path) -> None:
    store = Store(tmp_path)
    g = guards()
    assert not store.restore_guards(g, 0.0)
    assert g.primary() == []
    store.close()


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[" * 100_000,  # nested beyond the parser's recursion limit
        json.dumps({"version": 1, "guards": {"version": 1, "guards": [{}]}, "familiarity": {}}),
        json.dumps({"version": 9, "guards": {}, "familiarity": {}}),
        json.dumps("x" * (2 << 20)),  # oversized
        "1e999999",
    ],
)
def test_a_corrupt_state_is_logged_and_replaced_never_fatal(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path)
    identity = store.load_or_create_identity(DeterministicRng(1))
    store.remember_peer(next(iter(RELAYS.values())))
    store.close()
    db = sqlite3.connect(tmp_path / "zmesh.sqlite3")
    db.execute("INSERT OR REPLACE INTO state VALUES ('guards', ?)", (text,))
    db.commit()
    db.close()
    store = Store(tmp_path)
    g = guards()
    with caplog.at_level(logging.WARNING, logger="zmesh.store"):
        assert not store.restore_guards(g, 0.0)
    assert "starting afresh" in caplog.text
    assert g.primary() == []  # fresh, and usable
    g.update(1.0)
    assert len(g.primary()) == 3
    store.save_guards(g.state())  # the next save replaces the corrupt row
    assert store.restore_guards(guards(), 2.0)
    # the other tables are untouched
    assert store.load_or_create_identity(DeterministicRng(9)).node_id == identity.node_id
    assert [d.node_id for d in store.peers(0.0)] == [next(iter(RELAYS))]
    store.close()
