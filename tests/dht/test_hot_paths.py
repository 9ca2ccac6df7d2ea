"""The DHT's hot paths keep their meaning: a record or descriptor checks its signature once
per object (a success only; the time checks always run), and the routing table's ``rank``
counts what a sort would."""

from dataclasses import replace

import pytest
from dhtrecords import NOW, descriptor, node_record
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.crypto import signing
from zmesh.dht.records import decode_record
from zmesh.dht.routing import ID_SIZE, Contact, RoutingTable, distance
from zmesh.errors import RemoteProtocolError
from zmesh.identity import decode_descriptor
from zmesh.rng import DeterministicRng

DAY = 24 * 3600


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = signing.verify

    def verify(public: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
        calls.append(1)
        return real(public, signature, message, context)

    monkeypatch.setattr(signing, "verify", verify)
    return calls


def test_a_record_checks_its_signatures_once_per_object(monkeypatch: pytest.MonkeyPatch) -> None:
    record = decode_record(node_record(1).encode())  # a fresh object, nothing remembered
    calls = _counting(monkeypatch)
    record.verify(NOW)
    assert len(calls) == 2  # the descriptor's, then the record's
    record.verify(NOW + 60)
    assert len(calls) == 2
    decode_record(record.encode()).verify(NOW)  # another object checks afresh
    assert len(calls) == 4


def test_the_time_checks_run_after_a_remembered_success() -> None:
    record = decode_record(node_record(1).encode())
    record.verify(NOW)
    with pytest.raises(RemoteProtocolError):
        record.verify(record.expires)  # expired now
    desc = decode_descriptor(descriptor(1).encode())
    desc.verify(NOW)
    with pytest.raises(RemoteProtocolError):
        desc.verify(NOW + 8 * DAY)


def test_a_failed_check_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    record = node_record(1)
    forged = replace(record, signature=bytes(len(record.signature)))
    calls = _counting(monkeypatch)
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            forged.verify(NOW, descriptor_verified=True)
    assert len(calls) == 2  # checked (and refused) each time
    broken = replace(descriptor(1), signature=bytes(signing.SIGNATURE_SIZE))
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            broken.verify(NOW)
    assert len(calls) == 4


def test_a_derived_copy_forgets_the_remembered_verdict() -> None:
    record = node_record(1)
    record.verify(NOW)
    with pytest.raises(RemoteProtocolError):
        replace(record, published=record.published + 1).verify(NOW)
    desc = descriptor(1)
    desc.verify(NOW)
    assert replace(desc, flags=desc.flags).node_id == desc.node_id
    with pytest.raises(RemoteProtocolError):
        replace(desc, published=desc.published + 1).verify(NOW)


@settings(max_examples=60, deadline=None)
@given(
    own=st.binary(min_size=ID_SIZE, max_size=ID_SIZE),
    ids=st.lists(st.binary(min_size=ID_SIZE, max_size=ID_SIZE), max_size=120, unique=True),
    target=st.binary(min_size=ID_SIZE, max_size=ID_SIZE),
    near=st.booleans(),
)
def test_rank_counts_the_entries_closer_than_us(
    own: bytes, ids: list[bytes], target: bytes, near: bool
) -> None:
    if near:  # a target that shares a long prefix with our id, as a node record's key does
        target = own[:20] + target[20:]
    table = RoutingTable(own, DeterministicRng(1, b"rank"), 0.0, subnet_table_cap=None)
    for i, node_id in enumerate(ids):
        table.seen(Contact(node_id, f"10.{i}.0.1", 0.0), 0.0)
    entries = [c.node_id for c in table.contacts()]
    mine = distance(own, target)
    assert table.rank(target) == sum(distance(e, target) < mine for e in entries)
    assert table.rank(own) == 0
