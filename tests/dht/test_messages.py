"""DHT messages: round trips, truncation and trailing bytes, every bound, and fuzzing."""

from functools import cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.codec import push_uint
from zmesh.crypto import signing, xwing
from zmesh.dht.messages import (
    MAX_CONTACTS,
    MAX_MESSAGE_SIZE,
    MAX_RECORDS,
    FindNode,
    FindValue,
    Message,
    MessageType,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    StoreStatus,
    Value,
    decode_message,
    encode_message,
)
from zmesh.dht.records import Record, RecordType, sign_record
from zmesh.dht.routing import Contact
from zmesh.errors import CloseCode, RemoteProtocolError
from zmesh.identity import Flags, Identity
from zmesh.rng import DeterministicRng

NOW = 1_700_000_000


@cache
def record() -> Record:
    rng = DeterministicRng(1, b"dht-messages")
    ident = Identity(rng.bytes(xwing.SEED_SIZE), rng.bytes(signing.SEED_SIZE))
    desc = ident.make_descriptor(
        flags=Flags.RELAY,
        onion_epoch=1,
        onion_pk=ident.kem.public,
        published=NOW,
        lifetime=86400,
        addresses=("ws://10.1.2.3:9000",),
    )
    return sign_record(ident, desc, RecordType.PROVIDER, b"\x07" * 32, published=NOW)


def contact(n: int, address: str | None = "10.0.0.1:9000") -> Contact:
    return Contact(n.to_bytes(32, "big"), address, 0.0)


def examples() -> list[Message]:
    contacts = tuple(contact(n, None if n % 3 == 0 else f"10.0.{n}.1:9000") for n in range(20))
    return [
        Ping(0),
        Pong(2**32 - 1),
        FindNode(7, b"\x01" * 32),
        Nodes(7, contacts),
        Nodes(8, ()),
        FindValue(9, RecordType.PROVIDER, b"\x02" * 32),
        FindValue(9, RecordType.NODE, b"\x03" * 32),
        Value(9, (record(),), contacts[:3]),
        Value(10, (), contacts),
        Value(11, (record(),) * MAX_RECORDS, tuple(contact(n, "x" * 255) for n in range(32))),
        Store(12, record()),
        Stored(12, StoreStatus.REFUSED),
    ]


@pytest.mark.parametrize("msg", examples(), ids=lambda m: type(m).__name__)
def test_round_trip_truncation_and_trailing_bytes(msg: Message) -> None:
    data = encode_message(msg)
    assert len(data) <= MAX_MESSAGE_SIZE
    assert decode_message(data) == msg
    step = max(1, len(data) // 200)
    for cut in [*range(0, len(data), step), len(data) - 1]:
        with pytest.raises(RemoteProtocolError):
            decode_message(data[:cut])
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode_message(data + b"\x00")


def header(kind: int, request_id: int = 1, version: int = 1) -> bytes:
    return bytes([version, kind]) + push_uint(request_id, 4)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (header(MessageType.PING, version=2), "version"),
        (header(99), "type"),
        (header(MessageType.STORED) + b"\x09", "status"),
        (header(MessageType.FIND_VALUE) + b"\x03" + bytes(32), "record type"),
        (header(MessageType.NODES) + bytes([MAX_CONTACTS + 1]), "contacts"),
        (header(MessageType.VALUE) + bytes([MAX_RECORDS + 1]), "records"),
        (header(MessageType.NODES) + b"\x01" + bytes(32) + b"\x02a\x00", "ASCII"),
        (header(MessageType.NODES) + b"\x01" + bytes(32) + b"\x02a\xc3", "ASCII"),
        (header(MessageType.NODES) + b"\x01" + bytes(32) + b"\x02a ", "ASCII"),
        (header(MessageType.STORE) + b"\xff\xff" + bytes(65535), "oversized|exceeds"),
        (bytes(MAX_MESSAGE_SIZE + 1), "oversized"),
    ],
)
def test_malformed_messages(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_message(data)


def test_bounds_carry_the_resource_code() -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(header(MessageType.NODES) + bytes([MAX_CONTACTS + 1]))
    assert exc.value.code is CloseCode.RESOURCE


def test_encoding_refuses_what_no_peer_would_accept() -> None:
    with pytest.raises(ValueError):
        encode_message(Nodes(1, tuple(contact(n) for n in range(MAX_CONTACTS + 1))))
    with pytest.raises(ValueError):
        encode_message(Nodes(1, (Contact(b"short", None, 0.0),)))
    with pytest.raises(ValueError):
        encode_message(Nodes(1, (contact(1, "é"),)))
    with pytest.raises(ValueError):
        encode_message(Nodes(1, (contact(1, "a b"),)))
    with pytest.raises(ValueError):
        encode_message(FindNode(1, b"x"))
    with pytest.raises(ValueError):
        encode_message(Ping(2**32))
    with pytest.raises(ValueError):
        encode_message(Value(1, (record(),) * (MAX_RECORDS + 1), ()))


ADDRESSES = st.one_of(
    st.none(),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255),
)
CONTACTS = st.lists(
    st.builds(Contact, st.binary(min_size=32, max_size=32), ADDRESSES, st.just(0.0)),
    max_size=MAX_CONTACTS,
).map(tuple)
REQUEST_IDS = st.integers(0, 2**32 - 1)
SMALL_MESSAGES = st.one_of(
    st.builds(Ping, REQUEST_IDS),
    st.builds(Pong, REQUEST_IDS),
    st.builds(FindNode, REQUEST_IDS, st.binary(min_size=32, max_size=32)),
    st.builds(Nodes, REQUEST_IDS, CONTACTS),
    st.builds(
        FindValue,
        REQUEST_IDS,
        st.sampled_from(list(RecordType)),
        st.binary(min_size=32, max_size=32),
    ),
    st.builds(Value, REQUEST_IDS, st.just(()), CONTACTS),
    st.builds(Stored, REQUEST_IDS, st.sampled_from(list(StoreStatus))),
)


@settings(max_examples=300, deadline=None)
@given(SMALL_MESSAGES)
def test_fuzz_generated_messages_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
@example(b"")
@example(header(MessageType.PING))
@example(header(MessageType.VALUE) + b"\x01\x00\x00\x00")
def test_fuzz_any_bytes_parse_or_raise_the_remote_error(data: bytes) -> None:
    try:
        decode_message(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(examples()), st.data())
def test_fuzz_mutated_messages_parse_or_raise_the_remote_error(
    msg: Message, data: st.DataObject
) -> None:
    blob = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        decode_message(bytes(blob[:cut]))
    except RemoteProtocolError:
        pass
