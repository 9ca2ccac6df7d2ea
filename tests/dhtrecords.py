"""Signed DHT records for tests: fixed identities (ML-DSA hedged through pyca, fast),
their descriptors, provider and node records."""

from functools import cache

from zmesh.crypto import signing, xwing
from zmesh.dht.records import Record, RecordType, sign_record
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.rng import DeterministicRng

NOW = 1_700_000_000
DAY = 24 * 3600
SOURCE = b"\x55" * 32


@cache
def identity(n: int) -> Identity:
    """A fixed identity that signs ML-DSA hedged (pyca, fast), as tests/peer.py does."""
    rng = DeterministicRng(n, b"dht-records")
    return Identity(rng.bytes(xwing.SEED_SIZE), rng.bytes(signing.SEED_SIZE))


@cache
def descriptor(n: int, published: int = NOW - 60, lifetime: int = 7 * DAY) -> Descriptor:
    ident = identity(n)
    return ident.make_descriptor(
        flags=Flags.RELAY,
        onion_epoch=1,
        onion_pk=ident.kem.public,
        published=published,
        lifetime=lifetime,
        addresses=(f"ws://10.0.{n}.1:9000",),
    )


def provider(n: int, key: bytes, published: int = NOW, **kw: int) -> Record:
    return sign_record(
        identity(n),
        descriptor(n),
        RecordType.PROVIDER,
        key,
        published=published,
        value=b"meta",
        **kw,
    )


def node_record(n: int, published: int = NOW) -> Record:
    return sign_record(
        identity(n), descriptor(n), RecordType.NODE, identity(n).node_id, published=published
    )


def key(i: int) -> bytes:
    return i.to_bytes(32, "big")
