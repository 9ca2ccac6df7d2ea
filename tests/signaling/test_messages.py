"""Signed signaling messages: codec, signatures, freshness, replay."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import CloseCode, RemoteProtocolError
from zmesh.identity import Flags, Identity
from zmesh.rng import DeterministicRng
from zmesh.signaling.messages import (
    MAX_SKEW_MS,
    Kind,
    SignalingMessage,
    decode_message,
    verify_message,
)

RNG = DeterministicRng(5, b"signaling")
ALICE, BOB, MALLORY = (Identity.generate(RNG) for _ in range(3))
NOW = 1_800_000_000.0


def descriptor(identity: Identity):  # type: ignore[no-untyped-def]
    return identity.make_descriptor(
        flags=Flags.RELAY, onion_epoch=1, onion_pk=bytes(1216), published=int(NOW), lifetime=3600
    )


def offer(sender: Identity = ALICE, target: Identity = BOB, **kw: object) -> SignalingMessage:
    fields: dict[str, object] = {
        "kind": Kind.OFFER,
        "sender": sender.node_id,
        "target": target.node_id,
        "timestamp_ms": int(NOW * 1000),
        "nonce": b"n" * 16,
        "fingerprint": b"f" * 32,
        "session": b"compact sdp",
        "descriptor": descriptor(sender).encode(),
    }
    fields.update(kw)
    return SignalingMessage(**fields).sign(sender)  # type: ignore[arg-type]


def check(msg: SignalingMessage, known=None):  # type: ignore[no-untyped-def]
    return verify_message(
        msg, now_ms=int(NOW * 1000), expected_target=BOB.node_id, known=known, now=NOW
    )


def test_round_trip_and_verify_with_the_carried_descriptor() -> None:
    msg = offer()
    data = msg.encode()
    assert decode_message(data) == msg
    assert check(decode_message(data)).node_id == ALICE.node_id


def test_verify_with_a_known_descriptor_and_no_carried_one() -> None:
    msg = offer(descriptor=b"")
    assert check(msg, known=descriptor(ALICE)).node_id == ALICE.node_id
    with pytest.raises(RemoteProtocolError, match="no descriptor"):
        check(msg)


def test_the_signed_fingerprint_cannot_be_swapped() -> None:
    """A man in the middle replaces the DTLS fingerprint: the signature no longer holds."""
    msg = dataclasses.replace(offer(), fingerprint=b"m" * 32)
    with pytest.raises(RemoteProtocolError) as err:
        check(msg)
    assert err.value.code == CloseCode.AUTH


def test_a_message_signed_by_someone_else_is_refused() -> None:
    # Mallory signs an answer claiming to be Alice, with Alice's descriptor attached
    forged = dataclasses.replace(
        offer(sender=MALLORY), sender=ALICE.node_id, descriptor=descriptor(ALICE).encode()
    )
    with pytest.raises(RemoteProtocolError, match="signature"):
        check(forged)
    # ... or with her own descriptor: the keys do not hash to the claimed sender
    forged = dataclasses.replace(offer(sender=MALLORY), sender=ALICE.node_id)
    with pytest.raises(RemoteProtocolError, match="does not match"):
        check(forged)
    # ... or we already know who Alice is
    with pytest.raises(RemoteProtocolError):
        check(offer(sender=MALLORY), known=descriptor(ALICE))


@pytest.mark.parametrize("skew", [MAX_SKEW_MS + 1, -MAX_SKEW_MS - 1])
def test_stale_or_future_messages_are_refused(skew: int) -> None:
    msg = offer(timestamp_ms=int(NOW * 1000) + skew)
    with pytest.raises(RemoteProtocolError, match="stale"):
        check(msg)


def test_messages_for_another_node_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="another node"):
        check(offer(target=MALLORY))


@pytest.mark.parametrize("cut", [0, 1, 2, 50, -1])
def test_truncated_and_trailing(cut: int) -> None:
    data = offer().encode()
    with pytest.raises(RemoteProtocolError):
        decode_message(data[:cut])
    with pytest.raises(RemoteProtocolError):
        decode_message(data + b"\x00")


def test_oversized_and_unknown_kind() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(bytes(20000))
    data = bytearray(offer().encode())
    data[1] = 9
    with pytest.raises(RemoteProtocolError, match="kind"):
        decode_message(bytes(data))


_VALID = offer().encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=6))
def test_fuzz_mutations_only_raise_remote_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_VALID)
    for pos, value in edits:
        data[pos] = value
    try:
        msg = decode_message(bytes(data))
        check(msg)
    except RemoteProtocolError:
        assert bytes(data) != _VALID


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(data)
