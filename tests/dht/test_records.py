"""Signed DHT records and the record store: verification, rejection of forged, oversized,
expired and future-dated records, the bounds under attack, expiry and republishing."""

from dataclasses import replace

import pytest
from dhtrecords import DAY, NOW, SOURCE, descriptor, identity, key, node_record, provider
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.codec import push_vector
from zmesh.crypto import signing
from zmesh.dht.records import (
    MAX_LIFETIME,
    MAX_RECORD_SIZE,
    MAX_VALUE,
    REPUBLISH_RETRY,
    PutOutcome,
    RecordStore,
    RecordType,
    Replicate,
    Republish,
    decode_record,
    sign_record,
)
from zmesh.errors import CloseCode, LocalProtocolError, RemoteProtocolError
from zmesh.identity import Descriptor

# -- records -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: node_record(1), lambda: provider(1, key(7))])
def test_sign_encode_decode_verify(make: object) -> None:
    record = make()  # type: ignore[operator]
    assert record.publisher == identity(1).node_id
    data = record.encode()
    assert len(data) <= MAX_RECORD_SIZE
    assert decode_record(data) == record
    record.verify(NOW)
    for cut in (0, 1, 34, len(data) // 2, len(data) - 1):
        with pytest.raises(RemoteProtocolError):
            decode_record(data[:cut])
    with pytest.raises(RemoteProtocolError):
        decode_record(data + b"\x00")


def test_forged_records_are_rejected() -> None:
    record = provider(1, key(7))
    bad_sig = replace(record, signature=bytes(len(record.signature)))
    other_value = replace(record, value=b"evil")
    other_key = replace(record, key=key(8))
    later = replace(record, expires=record.expires - 1)
    # another node's valid descriptor under our signature: the publisher changes too
    stolen = replace(record, descriptor=descriptor(2))
    for forged in (bad_sig, other_value, other_key, later, stolen):
        with pytest.raises(RemoteProtocolError) as exc:
            forged.verify(NOW)
        assert exc.value.code is CloseCode.AUTH
    # a descriptor whose own signature is broken
    broken = replace(descriptor(1), signature=bytes(signing.SIGNATURE_SIZE))
    with pytest.raises(RemoteProtocolError):
        replace(record, descriptor=broken).verify(NOW)


def test_a_node_record_names_its_publisher() -> None:
    record = node_record(1)
    with pytest.raises(RemoteProtocolError):
        replace(record, key=identity(2).node_id).verify(NOW)
    with pytest.raises(RemoteProtocolError):
        replace(record, value=b"x").verify(NOW)


def test_expired_future_dated_and_long_lived_records_are_rejected() -> None:
    record = provider(1, key(7), lifetime=3600)
    with pytest.raises(RemoteProtocolError, match="expired"):
        record.verify(record.expires)
    future = provider(1, key(7), published=NOW + 3600)
    with pytest.raises(RemoteProtocolError, match="future"):
        future.verify(NOW)
    future.verify(NOW + 3600 - 300)  # within the clock skew
    long_lived = replace(record, expires=record.published + MAX_LIFETIME + 1)
    with pytest.raises(RemoteProtocolError, match="too long"):
        long_lived.check_shape(NOW)
    short_desc = descriptor(3, lifetime=3600)
    outliving = sign_record(
        identity(3), short_desc, RecordType.PROVIDER, key(1), published=NOW, lifetime=DAY
    )
    assert outliving.expires == short_desc.expires  # cut to the descriptor
    with pytest.raises(RemoteProtocolError, match="outlives"):
        replace(outliving, expires=short_desc.expires + 1).check_shape(NOW)


def test_oversized_records_are_rejected() -> None:
    record = provider(1, key(7))
    with pytest.raises(RemoteProtocolError) as exc:
        decode_record(bytes(MAX_RECORD_SIZE + 1))
    assert exc.value.code is CloseCode.RESOURCE
    head = record.signed_part()
    value_at = len(head) - 2 - len(record.value)
    big = head[:value_at] + push_vector(bytes(MAX_VALUE + 1), 2) + record.signature
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decode_record(big)


def test_sign_record_refuses_what_no_peer_would_accept() -> None:
    with pytest.raises(LocalProtocolError):
        sign_record(identity(1), descriptor(2), RecordType.PROVIDER, key(1), published=NOW)
    with pytest.raises(LocalProtocolError):
        sign_record(identity(1), descriptor(1), RecordType.NODE, key(1), published=NOW)
    with pytest.raises(LocalProtocolError):
        sign_record(
            identity(1),
            descriptor(1),
            RecordType.PROVIDER,
            key(1),
            published=NOW,
            value=b"x" * 2000,
        )
    with pytest.raises(LocalProtocolError):
        sign_record(
            identity(1), descriptor(1), RecordType.PROVIDER, key(1), published=NOW, lifetime=0
        )
    with pytest.raises(LocalProtocolError):
        sign_record(
            identity(1), descriptor(1), RecordType.PROVIDER, key(1), published=NOW + 8 * DAY
        )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_decode_record_parses_or_raises_remote_error(data: st.DataObject) -> None:
    base = bytearray(provider(1, key(7)).encode())
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    blob = data.draw(st.one_of(st.just(bytes(base[:cut])), st.binary(max_size=300)))
    try:
        decode_record(blob)
    except RemoteProtocolError:
        pass


# -- the store ---------------------------------------------------------------------------


def store(**kw: float) -> RecordStore:
    return RecordStore(bytes(32), NOW, **kw)  # type: ignore[arg-type]


def test_store_get_duplicate_update() -> None:
    s = store()
    rec = provider(1, key(7))
    assert s.put(rec, NOW, SOURCE) is PutOutcome.STORED
    assert s.get(RecordType.PROVIDER, key(7), NOW, 10) == [rec]
    assert s.get(RecordType.NODE, key(7), NOW, 10) == []
    # a duplicate or an older one is dropped before any signature check
    forged_old = replace(rec, signature=bytes(len(rec.signature)))
    assert s.put(forged_old, NOW, SOURCE) is PutOutcome.DUPLICATE
    newer = provider(1, key(7), published=NOW + 10)
    assert s.put(newer, NOW + 10, SOURCE) is PutOutcome.TOO_SOON  # within 60 s
    assert s.put(newer, NOW + 61, SOURCE) is PutOutcome.UPDATED
    assert s.get(RecordType.PROVIDER, key(7), NOW + 61, 10) == [newer]
    assert len(s) == 1 and s.count_by_publisher(identity(1).node_id) == 1


def test_store_rejects_forged_expired_and_future_records() -> None:
    s = store()
    rec = provider(1, key(7))
    with pytest.raises(RemoteProtocolError):
        s.put(replace(rec, value=b"evil"), NOW, SOURCE)
    with pytest.raises(RemoteProtocolError):
        s.put(rec, rec.expires + 1, SOURCE)
    with pytest.raises(RemoteProtocolError):
        s.put(provider(1, key(8), published=NOW + 3600), NOW, SOURCE)
    assert len(s) == 0


def test_the_per_publisher_bound_holds_under_attack() -> None:
    s = store(max_per_publisher=8)
    outcomes = [s.put(provider(1, key(i)), NOW, SOURCE) for i in range(30)]
    assert outcomes.count(PutOutcome.STORED) == 8
    assert outcomes[8:] == [PutOutcome.FULL] * 22
    assert s.put(provider(2, key(1)), NOW, b"other") is PutOutcome.STORED  # others unaffected
    assert s.put(provider(1, key(3), published=NOW + 100), NOW + 100, SOURCE) is PutOutcome.UPDATED


def test_the_per_key_bound() -> None:
    s = store(max_per_key=3)
    got = [s.put(provider(n, key(9)), NOW, SOURCE) for n in range(1, 6)]
    assert got == [PutOutcome.STORED] * 3 + [PutOutcome.FULL] * 2
    assert len(s.get(RecordType.PROVIDER, key(9), NOW, 20)) == 3


def test_a_full_store_sheds_the_farthest_key_for_a_closer_one() -> None:
    s = store(max_records=3)
    for i in (5, 1 << 200, 1 << 100):
        assert s.put(provider(1, key(i)), NOW, SOURCE) is PutOutcome.STORED
    assert s.put(provider(1, key(1 << 250)), NOW, SOURCE) is PutOutcome.FULL  # farther
    assert s.put(provider(1, key(6)), NOW, SOURCE) is PutOutcome.STORED  # closer
    assert s.get(RecordType.PROVIDER, key(1 << 200), NOW, 5) == []
    assert len(s) == 3


def test_a_forged_record_sheds_nothing_from_a_full_store() -> None:
    s = store(max_records=2)
    far = [provider(1, key(1 << 200)), provider(1, key(1 << 201))]
    for rec in far:
        s.put(rec, NOW, SOURCE)
    with pytest.raises(RemoteProtocolError):
        s.put(replace(provider(2, key(3)), value=b"evil"), NOW, SOURCE)
    assert [s.get(RecordType.PROVIDER, r.key, NOW, 1) for r in far] == [[r] for r in far]


def test_own_records_are_never_shed_and_a_store_full_of_them_refuses() -> None:
    s = store(max_records=2)
    s.publish(provider(1, key(1 << 250)), NOW)
    s.publish(provider(1, key(1 << 251)), NOW)
    assert s.put(provider(2, key(1)), NOW, SOURCE) is PutOutcome.FULL
    with pytest.raises(LocalProtocolError):
        s.publish(provider(1, key(5)), NOW)
    s.publish(provider(1, key(1 << 250), published=NOW + 1), NOW + 1)  # an update fits
    assert len(s) == 2


def test_the_byte_and_type_bounds() -> None:
    one = len(provider(1, key(1)).encode())
    s = store(max_bytes=2 * one + 10)
    assert s.put(provider(1, key(1 << 10)), NOW, SOURCE) is PutOutcome.STORED
    assert s.put(provider(1, key(1 << 20)), NOW, SOURCE) is PutOutcome.STORED
    assert s.put(provider(1, key(1 << 30)), NOW, SOURCE) is PutOutcome.FULL
    assert s.size_bytes <= 2 * one + 10
    t = store(max_per_type=1)
    assert t.put(provider(1, key(1 << 50)), NOW, SOURCE) is PutOutcome.STORED
    assert t.put(node_record(2), NOW, SOURCE) is PutOutcome.STORED  # another type
    assert t.put(provider(1, key(1 << 60)), NOW, SOURCE) is PutOutcome.FULL


def test_the_verification_budget_per_source_and_in_all() -> None:
    s = store(verify_rate=1.0, verify_burst=3.0, verify_rate_total=1000.0)
    forged = [replace(provider(1, key(i)), value=b"evil") for i in range(5)]
    for rec in forged[:3]:
        with pytest.raises(RemoteProtocolError):
            s.put(rec, NOW, SOURCE)
    assert s.put(forged[3], NOW, SOURCE) is PutOutcome.OVER_BUDGET  # no signature check
    assert s.put(provider(1, key(50)), NOW, b"another source") is PutOutcome.STORED
    assert s.put(provider(1, key(51)), NOW + 1, SOURCE) is PutOutcome.STORED  # refilled
    everyone = store(verify_rate=100.0, verify_burst=100.0, verify_rate_total=1.0)
    got = [everyone.put(provider(1, key(i)), NOW, bytes([i]) * 32) for i in range(4)]
    assert got == [PutOutcome.STORED] * 2 + [PutOutcome.OVER_BUDGET] * 2


def test_a_known_descriptor_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    s = store()
    assert s.put(provider(1, key(1)), NOW, SOURCE) is PutOutcome.STORED
    calls = []
    monkeypatch.setattr(Descriptor, "verify", lambda self, now: calls.append(now))
    assert s.put(provider(1, key(2)), NOW, SOURCE) is PutOutcome.STORED
    assert calls == []
    assert s.put(provider(2, key(2)), NOW, SOURCE) is PutOutcome.STORED
    assert calls == [NOW]


def test_expiry_sweep() -> None:
    s = store()
    short = provider(1, key(1), lifetime=600)
    s.put(short, NOW, SOURCE)
    s.put(provider(1, key(2)), NOW, SOURCE)
    s.handle_timer(NOW + 599)  # not yet due... the sweep runs, nothing expired
    assert len(s) == 2
    s.handle_timer(NOW + 700)
    assert len(s) == 1 and s.get(RecordType.PROVIDER, key(1), NOW + 700, 5) == []
    assert s.get_timer() == NOW + 760


def test_replication_is_due_hourly_unless_someone_else_replicated() -> None:
    s = store()
    a, b = provider(1, key(1)), provider(2, key(2))
    s.put(a, NOW, SOURCE)
    s.put(b, NOW, SOURCE)
    s.put(b, NOW + 1800, b"a replica")  # the same record again: its clock restarts
    s.handle_timer(NOW + 3600)
    assert s.next_event() == Replicate(a)
    assert s.next_event() is None
    s.handle_timer(NOW + 5400)
    assert s.next_event() == Replicate(b)


def test_own_records_are_republished_halfway_and_retried() -> None:
    s = store()
    own = provider(1, key(1), lifetime=DAY)
    s.publish(own, NOW)
    s.handle_timer(NOW + DAY / 2 - 1)
    assert s.next_event() is None
    s.handle_timer(s.get_timer())  # sweeps run every 60 s
    assert s.next_event() == Republish(own)
    due = s.get_timer() - 60 + REPUBLISH_RETRY  # the driver did not publish a fresh one
    s.handle_timer(s.get_timer())
    assert s.next_event() is None
    s.handle_timer(due)
    assert s.next_event() == Republish(own)
    fresh = provider(1, key(1), published=NOW + DAY // 2, lifetime=DAY)
    s.publish(fresh, NOW + DAY / 2)
    assert s.get(RecordType.PROVIDER, key(1), NOW + DAY / 2, 5) == [fresh]
    s.unpublish(RecordType.PROVIDER, key(1), identity(1).node_id)
    assert len(s) == 0
    with pytest.raises(LocalProtocolError):
        s.publish(own, own.expires)
