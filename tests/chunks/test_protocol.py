"""The chunk protocol: round trips, split input, trailing data, fuzzing, and its bounds."""

import random

import pytest
from helpers import splits
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.chunks import Layout, encode_content
from zmesh.chunks.manifest import MAX_CHUNK_SIZE
from zmesh.chunks.protocol import (
    HEADER_SIZE,
    MAX_HAVE_BYTES,
    Cancel,
    ChunkProtocolError,
    Have,
    ManifestReply,
    ManifestRequest,
    Message,
    MessageDecoder,
    MessageType,
    NotHeld,
    PieceReply,
    PieceRequest,
    ProofReply,
    ProofRequest,
    Role,
    ServeQueue,
    Wanted,
    encode,
    have_messages,
)
from zmesh.errors import LocalProtocolError, RemoteProtocolError

CONTENT = encode_content(bytes(range(256)) * 200, chunk_size=4096, k=4, n=6)
REQUESTS: list[Message] = [ManifestRequest(), ProofRequest(3), PieceRequest(70), Cancel(2**32 - 1)]
REPLIES: list[Message] = [
    ManifestReply(CONTENT.manifest.encode()),
    Have(0, b"\xff\x01"),
    ProofReply(1, CONTENT.proof(1)),
    PieceReply(5, CONTENT.pieces[5]),
    NotHeld(Wanted.PIECE, 9),
    NotHeld(Wanted.PROOF, 0),
]


def decode_all(role: Role, parts: list[bytes]) -> list[Message]:
    decoder = MessageDecoder(role)
    out = []
    for part in parts:
        decoder.feed(part)
        while (m := decoder.next_message()) is not None:
            out.append(m)
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize(("role", "messages"), [(Role.PROVIDER, REQUESTS), (Role.FETCHER, REPLIES)])
def test_round_trip_whole_split_and_trailing(role: Role, messages: list[Message]) -> None:
    wire = b"".join(encode(m) for m in messages)
    assert decode_all(role, [wire]) == messages
    assert decode_all(role, [wire[i : i + 1] for i in range(len(wire))]) == messages
    assert decode_all(role, list(splits(wire, random.Random(3), 40))) == messages
    decoder = MessageDecoder(role)
    decoder.feed(encode(messages[0]) + encode(messages[1])[:3])  # trailing: a partial header
    assert decoder.next_message() == messages[0]
    assert decoder.next_message() is None
    assert decoder.buffered == 3


def test_a_side_refuses_the_other_sides_messages() -> None:
    with pytest.raises(ChunkProtocolError, match="not for this side"):
        MessageDecoder(Role.FETCHER).feed(encode(PieceRequest(1)))
    with pytest.raises(ChunkProtocolError, match="not for this side"):
        MessageDecoder(Role.PROVIDER).feed(encode(PieceReply(1, b"x")))
    with pytest.raises(ChunkProtocolError, match="unknown chunk message type 99"):
        MessageDecoder(Role.PROVIDER).feed(b"\x63")


def test_lengths_are_checked_at_the_header() -> None:
    # a piece longer than the largest chunk is refused before its body arrives
    header = bytes([MessageType.PIECE]) + (4 + MAX_CHUNK_SIZE + 1).to_bytes(4, "big")
    decoder = MessageDecoder(Role.FETCHER)
    with pytest.raises(ChunkProtocolError, match="PIECE message of"):
        decoder.feed(header)
    # a request with a body of the wrong size
    with pytest.raises(ChunkProtocolError, match="PIECE_REQUEST message of 5"):
        MessageDecoder(Role.PROVIDER).feed(bytes([MessageType.PIECE_REQUEST]) + b"\0\0\0\x05")
    with pytest.raises(ChunkProtocolError, match="MANIFEST_REQUEST"):
        MessageDecoder(Role.PROVIDER).feed(bytes([1]) + b"\0\0\0\x01x")
    # the largest piece decodes
    big = encode(PieceReply(0, bytes(MAX_CHUNK_SIZE)))
    assert decode_all(Role.FETCHER, [big]) == [PieceReply(0, bytes(MAX_CHUNK_SIZE))]


def test_bad_bodies() -> None:
    bad_proof = bytes([MessageType.PROOF]) + (6).to_bytes(4, "big") + b"\0\0\0\0\x05\x00"
    decoder = MessageDecoder(Role.FETCHER)
    decoder.feed(bad_proof)
    with pytest.raises(ChunkProtocolError, match="bad group proof"):
        decoder.next_message()
    decoder = MessageDecoder(Role.FETCHER)
    decoder.feed(bytes([MessageType.NOT_HELD]) + b"\0\0\0\x05\x07\0\0\0\0")
    with pytest.raises(ChunkProtocolError, match="unknown kind 7"):
        decoder.next_message()


def test_encode_refuses_what_no_peer_accepts() -> None:
    with pytest.raises(LocalProtocolError):
        encode(Have(0, bytes(MAX_HAVE_BYTES + 1)))
    with pytest.raises(LocalProtocolError):
        encode(PieceRequest(2**32))
    with pytest.raises(LocalProtocolError):
        encode(PieceReply(0, b""))


def test_have_messages_mark_exactly_the_held_pieces() -> None:
    layout = Layout(300_000 * 4096, 4096, 8, 10)  # 375,000 pieces: several messages
    held = sorted({0, 1, 9, 65_535, 65_536, 200_000, layout.pieces - 1})
    messages = have_messages(layout, held)
    assert len(messages) == 4
    assert all(len(m.bitmap) <= MAX_HAVE_BYTES for m in messages)
    assert [i for m in messages for i in m.indices()] == held
    wire = b"".join(encode(m) for m in messages)
    assert decode_all(Role.FETCHER, [wire]) == messages
    assert have_messages(layout, []) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(Role))
def test_fuzz_parses_or_raises_the_remote_error(data: bytes, role: Role) -> None:
    decoder = MessageDecoder(role)
    try:
        decoder.feed(data)
        while decoder.next_message() is not None:
            pass
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(REPLIES), max_size=6), st.data())
def test_fuzz_split_round_trip(messages: list[Message], data: st.DataObject) -> None:
    wire = b"".join(encode(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parts = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert decode_all(Role.FETCHER, parts) == messages


def test_serve_queue_orders_dedups_cancels_and_bounds() -> None:
    layout = CONTENT.manifest.layout
    queue = ServeQueue(layout, limit=3)
    queue.add(ManifestRequest())
    queue.add(PieceRequest(1))
    queue.add(PieceRequest(1))  # a repeat waits once
    queue.add(Cancel(7))  # nothing to cancel
    queue.add(ProofRequest(0))
    assert len(queue) == 3
    with pytest.raises(ChunkProtocolError, match="more than 3 requests"):
        queue.add(PieceRequest(2))
    queue.add(Cancel(1))
    assert queue.next_request() == ManifestRequest()
    assert queue.next_request() == ProofRequest(0)
    assert queue.next_request() is None
    with pytest.raises(ChunkProtocolError, match="asked for already"):
        queue.add(ManifestRequest())
    with pytest.raises(ChunkProtocolError, match="outside the content"):
        queue.add(PieceRequest(layout.pieces))
    with pytest.raises(ChunkProtocolError, match="outside the content"):
        queue.add(ProofRequest(layout.groups))
    assert HEADER_SIZE == 5
