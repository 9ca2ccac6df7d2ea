"""Provider lookups run by another node (zmesh/dht/relayed.py): the request and reply
codec, and a reply's records checked again by the fetcher (forged, expired, foreign)."""

from dataclasses import replace

import pytest
from dhtrecords import NOW, key, node_record, provider
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.codec import push_vector
from zmesh.dht.relayed import (
    MAX_REPLY_RECORDS,
    MAX_REPLY_SIZE,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from zmesh.errors import RemoteProtocolError


def test_request_round_trip_and_refusals() -> None:
    assert decode_request(encode_request(key(1))) == key(1)
    for bad in (b"", key(1)[:31], key(1) + b"\x00"):
        with pytest.raises(RemoteProtocolError):
            decode_request(bad)
    with pytest.raises(ValueError):
        encode_request(b"short")


def test_reply_round_trip_keeps_verified_providers_for_the_key() -> None:
    records = [provider(n, key(7)) for n in range(3)]
    kept, refused = decode_reply(encode_reply(records), key(7), NOW)
    assert kept == records and refused == 0
    assert decode_reply(encode_reply([]), key(7), NOW) == ([], 0)


def test_reply_refuses_forged_foreign_expired_and_repeated_records() -> None:
    good = provider(1, key(7))
    forged = replace(good, signature=bytes(len(good.signature)))  # fresh object: not cached
    foreign = provider(2, key(8))  # another content id
    node = node_record(3)  # another type
    repeated = provider(1, key(7), published=NOW - 10)  # the same publisher again
    kept, refused = decode_reply(encode_reply([good, forged, foreign, node, repeated]), key(7), NOW)
    assert kept == [good] and refused == 4
    late = good.expires + 1  # every record has expired by then
    assert decode_reply(encode_reply([good]), key(7), late) == ([], 1)


def test_reply_carries_at_most_the_bound() -> None:
    records = [provider(n, key(7)) for n in range(MAX_REPLY_RECORDS + 3)]
    kept, _ = decode_reply(encode_reply(records), key(7), NOW)
    assert len(kept) == MAX_REPLY_RECORDS
    one = push_vector(provider(0, key(7)).encode(), 2)
    with pytest.raises(RemoteProtocolError):  # a count past the bound
        decode_reply(bytes([MAX_REPLY_RECORDS + 1]) + one * (MAX_REPLY_RECORDS + 1), key(7), NOW)
    with pytest.raises(RemoteProtocolError):  # past the size bound
        decode_reply(b"\x01" + b"\x00" * MAX_REPLY_SIZE, key(7), NOW)
    with pytest.raises(RemoteProtocolError):  # truncated
        decode_reply(b"\x01" + one[:-1], key(7), NOW)
    with pytest.raises(RemoteProtocolError):  # trailing bytes
        decode_reply(b"\x01" + one + b"\x00", key(7), NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_reply(data: bytes) -> None:
    try:
        kept, refused = decode_reply(data, key(7), NOW)
    except RemoteProtocolError:
        return
    assert not kept and refused >= 0  # nothing random verifies


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3), st.binary(min_size=1, max_size=64))
def test_fuzz_mangled_record_is_refused_not_raised(n: int, junk: bytes) -> None:
    record = provider(n, key(7)).encode()
    mangled = record[: len(record) // 2] + junk + record[len(record) // 2 + len(junk) :]
    try:
        kept, refused = decode_reply(b"\x01" + push_vector(mangled, 2), key(7), NOW)
    except RemoteProtocolError:
        return
    assert len(kept) + refused == 1
