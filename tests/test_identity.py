"""Node identities and signed descriptors (zmesh/identity.py)."""

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zmesh.crypto import signing, xwing
from zmesh.errors import CloseCode, LocalProtocolError, RemoteProtocolError
from zmesh.identity import (
    CLOCK_SKEW,
    DESCRIPTOR_VERSION,
    MAX_ADDRESSES,
    MAX_DESCRIPTOR_SIZE,
    MAX_LIFETIME,
    NODE_ID_SIZE,
    Descriptor,
    Flags,
    Identity,
    decode_descriptor,
    node_id_of,
    short_id,
)
from zmesh.rng import DeterministicRng

PUBLISHED = 1_700_000_000
LIFETIME = 3600
NOW = PUBLISHED + 60

# byte offsets of the wire format (module docstring of zmesh/identity.py)
OFF_KEM = 1
OFF_SIGNING = OFF_KEM + xwing.PUBLIC_KEY_SIZE
OFF_FLAGS = OFF_SIGNING + signing.PUBLIC_KEY_SIZE
OFF_EPOCH = OFF_FLAGS + 1
OFF_ONION = OFF_EPOCH + 4
OFF_PUBLISHED = OFF_ONION + xwing.PUBLIC_KEY_SIZE
OFF_EXPIRES = OFF_PUBLISHED + 8
OFF_N_ADDR = OFF_EXPIRES + 8
FIXED_SIZE = OFF_N_ADDR + 1 + signing.SIGNATURE_SIZE  # a descriptor without addresses

ALICE = Identity.generate(DeterministicRng(1))
BOB = Identity.generate(DeterministicRng(2))
ONION_PK = xwing.PrivateKey(DeterministicRng(b"onion").bytes(xwing.SEED_SIZE)).public


def make(
    identity: Identity = ALICE,
    *,
    flags: Flags = Flags.RELAY | Flags.EXIT,
    published: int = PUBLISHED,
    lifetime: int = LIFETIME,
    addresses: tuple[str, ...] = ("203.0.113.7:4433", "wss://relay.example/zmesh"),
) -> Descriptor:
    return identity.make_descriptor(
        flags=flags,
        onion_epoch=7,
        onion_pk=ONION_PK,
        published=published,
        lifetime=lifetime,
        addresses=addresses,
    )


DESC = make()
ENCODED = DESC.encode()
SIGNED_LEN = len(DESC.signed_part())


def patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def decode_and_verify(data: bytes, now: float = NOW) -> Descriptor:
    d = decode_descriptor(data)
    d.verify(now)
    return d


# -- round trip and field semantics --------------------------------------------------------


def test_layout_matches_the_documented_format() -> None:
    assert ENCODED[0] == DESCRIPTOR_VERSION
    assert ENCODED[OFF_KEM:OFF_SIGNING] == ALICE.kem.public
    assert ENCODED[OFF_SIGNING:OFF_FLAGS] == ALICE.signing.public
    assert ENCODED[OFF_FLAGS] == Flags.RELAY | Flags.EXIT
    assert ENCODED[OFF_EPOCH:OFF_ONION] == (7).to_bytes(4, "big")
    assert ENCODED[OFF_ONION:OFF_PUBLISHED] == ONION_PK
    assert int.from_bytes(ENCODED[OFF_PUBLISHED:OFF_EXPIRES]) == PUBLISHED
    assert int.from_bytes(ENCODED[OFF_EXPIRES:OFF_N_ADDR]) == PUBLISHED + LIFETIME
    assert ENCODED[OFF_N_ADDR] == 2
    assert ENCODED[SIGNED_LEN:] == DESC.signature
    assert len(DESC.signature) == signing.SIGNATURE_SIZE
    assert len(ENCODED) == FIXED_SIZE + sum(1 + len(a) for a in DESC.addresses)


def test_round_trip() -> None:
    d = decode_descriptor(ENCODED)
    assert d == DESC
    assert d.encode() == ENCODED
    d.verify(NOW)


@pytest.mark.parametrize("flags", [Flags.NONE, Flags.RELAY, Flags.EXIT, Flags.RELAY | Flags.EXIT])
@pytest.mark.parametrize("addresses", [(), ("a",), ("",), tuple(f"h{i}:1" for i in range(8))])
def test_round_trip_variants(flags: Flags, addresses: tuple[str, ...]) -> None:
    d = make(flags=flags, addresses=addresses)
    back = decode_and_verify(d.encode())
    assert back == d
    assert back.flags == flags
    assert back.addresses == addresses


def test_make_descriptor_is_deterministic_in_content() -> None:
    # Ed25519 is deterministic, ML-DSA is hedged: the signed part is stable regardless
    again = make()
    assert again.signed_part() == DESC.signed_part()
    decode_and_verify(again.encode())


def test_node_id_is_derived_from_both_long_term_keys() -> None:
    assert len(ALICE.node_id) == NODE_ID_SIZE
    assert ALICE.node_id == node_id_of(ALICE.kem.public, ALICE.signing.public)
    assert DESC.node_id == ALICE.node_id
    assert BOB.node_id != ALICE.node_id
    # changing either key changes the id
    assert node_id_of(BOB.kem.public, ALICE.signing.public) != ALICE.node_id
    assert node_id_of(ALICE.kem.public, BOB.signing.public) != ALICE.node_id
    # the onion key and metadata are not part of the id
    assert make(addresses=()).node_id == ALICE.node_id
    assert short_id(ALICE.node_id) == ALICE.node_id[:4].hex()


def test_same_seed_same_identity() -> None:
    again = Identity.generate(DeterministicRng(1))
    assert again.node_id == ALICE.node_id
    assert again.kem.public == ALICE.kem.public
    assert again.signing.public == ALICE.signing.public


def test_repr_never_contains_secrets() -> None:
    secrets = [ALICE.kem_seed, ALICE.signing.seed, ALICE.signing.seed[:32], ALICE.signing.seed[32:]]
    for text in (repr(ALICE), str(ALICE), repr(ALICE.signing), str(ALICE.signing)):
        for secret in secrets:
            assert secret.hex() not in text
            assert secret.hex()[:16] not in text
            assert repr(secret) not in text
    assert short_id(ALICE.node_id) in repr(ALICE)


# -- validity window ---------------------------------------------------------------------


def test_verify_window_edges() -> None:
    DESC.verify(PUBLISHED)
    DESC.verify(PUBLISHED + LIFETIME - 1)
    DESC.verify(PUBLISHED - CLOCK_SKEW)  # published slightly in the future is tolerated


def test_rejects_expired() -> None:
    for now in (PUBLISHED + LIFETIME, PUBLISHED + LIFETIME + 1, PUBLISHED + 10 * MAX_LIFETIME):
        with pytest.raises(RemoteProtocolError, match="expired") as exc:
            DESC.verify(now)
        assert exc.value.code is CloseCode.AUTH


def test_rejects_published_in_the_future() -> None:
    with pytest.raises(RemoteProtocolError, match="future") as exc:
        DESC.verify(PUBLISHED - CLOCK_SKEW - 1)
    assert exc.value.code is CloseCode.AUTH
    future = make(published=NOW + CLOCK_SKEW + 1)
    with pytest.raises(RemoteProtocolError, match="future"):
        decode_and_verify(future.encode())


def test_lifetime_limit() -> None:
    decode_and_verify(make(lifetime=MAX_LIFETIME).encode(), now=PUBLISHED)
    too_long = make(lifetime=MAX_LIFETIME + 1)
    with pytest.raises(RemoteProtocolError, match="lifetime") as exc:
        decode_and_verify(too_long.encode(), now=PUBLISHED)
    assert exc.value.code is CloseCode.AUTH


# -- forgery -----------------------------------------------------------------------------


def test_rejects_signature_from_another_identity() -> None:
    other = make(BOB)
    with pytest.raises(RemoteProtocolError, match="signature") as exc:
        dataclasses.replace(DESC, signature=other.signature).verify(NOW)
    assert exc.value.code is CloseCode.AUTH


def test_rejects_signing_key_and_signature_swapped_in() -> None:
    other = make(BOB)
    forged = dataclasses.replace(DESC, signing_pk=other.signing_pk, signature=other.signature)
    with pytest.raises(RemoteProtocolError, match="signature"):
        decode_and_verify(forged.encode())


def test_rejects_identity_key_swapped_in() -> None:
    forged = dataclasses.replace(DESC, identity_kem_pk=BOB.kem.public)
    with pytest.raises(RemoteProtocolError, match="signature"):
        decode_and_verify(forged.encode())


def test_resigned_with_another_key_does_not_claim_the_node_id() -> None:
    # Bob may sign a descriptor carrying Alice's KEM key, but it names a different node.
    unsigned = dataclasses.replace(DESC, signing_pk=BOB.signing.public, signature=b"")
    sig = BOB.signing.sign(unsigned.signed_part(), b"zmesh-descriptor-v1")
    forged = dataclasses.replace(unsigned, signature=sig)
    decode_and_verify(forged.encode())
    assert forged.node_id != ALICE.node_id


def test_rejects_wrong_signature_context() -> None:
    sig = ALICE.signing.sign(DESC.signed_part(), b"zmesh-other-context")
    with pytest.raises(RemoteProtocolError, match="signature"):
        dataclasses.replace(DESC, signature=sig).verify(NOW)


def _flip_positions() -> list[int]:
    fields = [0, OFF_KEM, OFF_SIGNING, OFF_SIGNING + 32, OFF_FLAGS, OFF_EPOCH + 3, OFF_ONION]
    fields += [OFF_PUBLISHED + 7, OFF_EXPIRES, OFF_N_ADDR, OFF_N_ADDR + 1, SIGNED_LEN - 1]
    fields += [SIGNED_LEN, SIGNED_LEN + 63, SIGNED_LEN + 64, len(ENCODED) - 1]
    rng = random.Random(1234)
    fields += rng.sample(range(len(ENCODED)), 8)
    return sorted(set(fields))


@pytest.mark.parametrize("pos", _flip_positions())
@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_any_flipped_byte_is_rejected(pos: int, mask: int) -> None:
    data = bytearray(ENCODED)
    data[pos] ^= mask
    with pytest.raises(RemoteProtocolError):
        decode_and_verify(bytes(data))


# -- malformed encodings -----------------------------------------------------------------


def test_rejects_oversized_before_parsing() -> None:
    with pytest.raises(RemoteProtocolError, match="oversized") as exc:
        decode_descriptor(ENCODED + bytes(MAX_DESCRIPTOR_SIZE + 1 - len(ENCODED)))
    assert exc.value.code is CloseCode.RESOURCE
    with pytest.raises(RemoteProtocolError, match="oversized"):
        decode_descriptor(b"\xff" * (10 * MAX_DESCRIPTOR_SIZE))


def _addresses_for_size(total: int) -> tuple[str, ...]:
    """Addresses that make an encoded descriptor exactly ``total`` bytes long."""
    room = total - FIXED_SIZE
    addresses = []
    while room > 0:
        n = min(255, room - 1)
        addresses.append("x" * n)
        room -= n + 1
    assert room == 0
    assert len(addresses) <= MAX_ADDRESSES
    return tuple(addresses)


def test_largest_descriptor_parses_and_one_more_byte_does_not() -> None:
    biggest = make(addresses=_addresses_for_size(MAX_DESCRIPTOR_SIZE))
    data = biggest.encode()
    assert len(data) == MAX_DESCRIPTOR_SIZE
    assert decode_and_verify(data) == biggest
    addresses = list(biggest.addresses)
    addresses[-1] += "x"
    with pytest.raises(LocalProtocolError):  # we never sign what no peer would accept
        make(addresses=tuple(addresses))
    over = dataclasses.replace(biggest, addresses=tuple(addresses)).encode()
    assert len(over) == MAX_DESCRIPTOR_SIZE + 1
    with pytest.raises(RemoteProtocolError, match="oversized"):
        decode_descriptor(over)


@pytest.mark.parametrize("length", [*range(0, len(ENCODED), 97), len(ENCODED) - 1])
def test_rejects_every_truncation(length: int) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_descriptor(ENCODED[:length])


@pytest.mark.parametrize("extra", [b"\x00", b"\x01", bytes(100)])
def test_rejects_trailing_data(extra: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode_descriptor(ENCODED + extra)


@pytest.mark.parametrize("version", [0, 2, 0xFF])
def test_rejects_unknown_version(version: int) -> None:
    with pytest.raises(RemoteProtocolError, match="version"):
        decode_descriptor(patched(ENCODED, 0, bytes([version])))


@pytest.mark.parametrize("flags", [4, 8, 0x80, 0xFF, 0x07])
def test_rejects_unknown_flags(flags: int) -> None:
    with pytest.raises(RemoteProtocolError, match="flags"):
        decode_descriptor(patched(ENCODED, OFF_FLAGS, bytes([flags])))


@pytest.mark.parametrize("count", [MAX_ADDRESSES + 1, 0xFF])
def test_rejects_too_many_addresses(count: int) -> None:
    with pytest.raises(RemoteProtocolError, match="too many addresses"):
        decode_descriptor(patched(ENCODED, OFF_N_ADDR, bytes([count])))


@pytest.mark.parametrize("count", [0, 1, 3, MAX_ADDRESSES])
def test_rejects_address_count_mismatch(count: int) -> None:
    # the declared count disagrees with the addresses present: the signature or the
    # field boundaries no longer line up
    with pytest.raises(RemoteProtocolError):
        decode_descriptor(patched(ENCODED, OFF_N_ADDR, bytes([count])))


def test_rejects_address_length_past_the_end() -> None:
    data = ENCODED[: OFF_N_ADDR + 1] + b"\xff" + b"x" * 10
    data = patched(data, OFF_N_ADDR, b"\x01")
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_descriptor(data)


@pytest.mark.parametrize("raw", [b"\xff", b"caf\xc3\xa9", b"\x80abc", b"ok\xfe"])
def test_rejects_non_ascii_address(raw: bytes) -> None:
    data = b"".join(
        [
            ENCODED[:OFF_N_ADDR],
            b"\x01",
            bytes([len(raw)]),
            raw,
            DESC.signature,
        ]
    )
    with pytest.raises(RemoteProtocolError, match="ASCII"):
        decode_descriptor(data)


def test_non_ascii_address_is_refused_when_signing_and_when_decoding() -> None:
    with pytest.raises(LocalProtocolError):
        make(addresses=("café:1",))
    with pytest.raises(LocalProtocolError):
        make(addresses=tuple(f"h{i}:1" for i in range(9)))
    forged = dataclasses.replace(DESC, addresses=("café:1",))
    with pytest.raises(RemoteProtocolError, match="ASCII"):
        decode_descriptor(forged.encode())


# -- fuzzing -----------------------------------------------------------------------------


def _parses_or_rejects(data: bytes) -> None:
    try:
        d = decode_descriptor(data)
    except RemoteProtocolError:
        return
    # anything accepted is canonical: it re-encodes to exactly the input
    assert d.encode() == data
    try:
        d.verify(NOW)
    except RemoteProtocolError:
        return


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(st.binary(max_size=64), st.binary(min_size=1, max_size=9000)))
@example(b"")
@example(b"\x01")
@example(ENCODED)
@example(ENCODED[:-1])
@example(ENCODED + b"\x00")
@example(bytes([DESCRIPTOR_VERSION]) * MAX_DESCRIPTOR_SIZE)
@example(bytes([DESCRIPTOR_VERSION]) * (MAX_DESCRIPTOR_SIZE + 1))
@example(bytes([DESCRIPTOR_VERSION]) + bytes(FIXED_SIZE - 1))
@example(bytes([DESCRIPTOR_VERSION]) + bytes(FIXED_SIZE - 2))
@example(bytes([DESCRIPTOR_VERSION]) + bytes(FIXED_SIZE))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _parses_or_rejects(data)


@FUZZ
@given(
    flags=st.integers(0, 255),
    count=st.integers(0, 255),
    middle=st.binary(max_size=300),
    sig_len=st.integers(signing.SIGNATURE_SIZE - 2, signing.SIGNATURE_SIZE + 2),
)
@example(
    flags=3, count=2, middle=ENCODED[OFF_N_ADDR + 1 : SIGNED_LEN], sig_len=signing.SIGNATURE_SIZE
)
def test_fuzz_address_section(flags: int, count: int, middle: bytes, sig_len: int) -> None:
    """Valid keys and times, arbitrary flags, address list and signature length."""
    sig = (DESC.signature + bytes(2))[:sig_len]
    head = patched(ENCODED[:OFF_N_ADDR], OFF_FLAGS, bytes([flags]))
    _parses_or_rejects(head + bytes([count]) + middle + sig)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(ENCODED)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "xor", "insert", "delete", "truncate", "append"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "xor" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FUZZ
@given(mutations())
def test_fuzz_mutated_descriptor(data: bytes) -> None:
    if data == ENCODED:
        decode_and_verify(data)
        return
    with pytest.raises(RemoteProtocolError):
        decode_and_verify(data)


@settings(max_examples=100, deadline=None)
@given(
    flags=st.sampled_from(list(Flags)),
    epoch=st.integers(0, 2**32 - 1),
    published=st.integers(0, 2**63),
    lifetime=st.integers(1, MAX_LIFETIME),
    addresses=st.lists(
        st.text(st.characters(max_codepoint=127), max_size=40), max_size=MAX_ADDRESSES
    ),
)
def test_fuzz_round_trip(
    flags: Flags, epoch: int, published: int, lifetime: int, addresses: list[str]
) -> None:
    d = ALICE.make_descriptor(
        flags=flags,
        onion_epoch=epoch,
        onion_pk=ONION_PK,
        published=published,
        lifetime=lifetime,
        addresses=tuple(addresses),
    )
    data = d.encode()
    assert decode_descriptor(data) == d
    d.verify(published)


class _OsLikeRng:
    """A non-reproducible Rng (the drivers' kind), for the signing-mode choice."""

    reproducible = False

    def __init__(self) -> None:
        self._inner = DeterministicRng(b"os-like")

    def bytes(self, n: int) -> bytes:
        return self._inner.bytes(n)


def test_reproducible_rng_gives_reproducible_descriptors() -> None:
    """Identity.generate remembers rng.reproducible: seeded identities sign ML-DSA
    deterministically, so a descriptor's bytes are a function of the seed (D3)."""
    again = Identity.generate(DeterministicRng(1))
    assert ALICE.signing.deterministic and again.signing.deterministic
    assert make(again).encode() == make(ALICE).encode()
    assert not Identity.generate(_OsLikeRng()).signing.deterministic
    restored = Identity(ALICE.kem_seed, ALICE.signing.seed)  # as the stores restore it
    assert not restored.signing.deterministic
    make(restored).verify(NOW)
