"""Node identity and signed node descriptors.

A node has a long-term X-Wing key (used to authenticate links) and a hybrid signing key
(Ed25519 + ML-DSA-44).  Its node id is SHA-256 over both public keys, so an id commits to
the keys that prove it.  A descriptor publishes those keys, the current onion (circuit
setup) key and its epoch, the node's flags and its addresses, signed by the node.

Wire format, version 1 (all integers big-endian)::

    u8 version | identity_kem_pk[1216] | signing_pk[1344] | u8 flags
    | u32 onion_epoch | onion_pk[1216] | u64 published | u64 expires
    | u8 n_addresses | n * (u8 len | address) | signature[2484]
"""

from dataclasses import dataclass, field, replace
from enum import IntFlag

from .codec import Buffer, push_uint, push_vector
from .crypto import sha256, signing, xwing
from .errors import CloseCode, LocalProtocolError, RemoteProtocolError
from .rng import Rng

DESCRIPTOR_VERSION = 1
MAX_DESCRIPTOR_SIZE = 8192
MAX_ADDRESSES = 8
MAX_LIFETIME = 7 * 24 * 3600
CLOCK_SKEW = 300
SIGNATURE_CONTEXT = b"zmesh-descriptor-v1"
NODE_ID_SIZE = 32


class Flags(IntFlag):
    NONE = 0
    RELAY = 1
    EXIT = 2


def node_id_of(identity_kem_pk: bytes, signing_pk: bytes) -> bytes:
    """The node id: SHA-256 over a label and both long-term public keys."""
    return sha256(b"zmesh-node-id-v1" + identity_kem_pk + signing_pk)


def short_id(node_id: bytes) -> str:
    """A printable prefix of a node id, for logs and the demo."""
    return node_id[:4].hex()


@dataclass(frozen=True, slots=True)
class Descriptor:
    identity_kem_pk: bytes
    signing_pk: bytes
    flags: Flags
    onion_epoch: int
    onion_pk: bytes
    published: int
    expires: int
    addresses: tuple[str, ...]
    signature: bytes
    # derived once (a descriptor is immutable): its id, the bytes it signs, and whether
    # its signature verified (only a success is remembered; the time checks always run)
    _node_id: bytes = field(default=b"", init=False, repr=False, compare=False)
    _signed: bytes = field(default=b"", init=False, repr=False, compare=False)
    _signature_ok: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def node_id(self) -> bytes:
        if not self._node_id:
            object.__setattr__(self, "_node_id", node_id_of(self.identity_kem_pk, self.signing_pk))
        return self._node_id

    def signed_part(self) -> bytes:
        if not self._signed:
            object.__setattr__(self, "_signed", self._build_signed_part())
        return self._signed

    def _build_signed_part(self) -> bytes:
        out = [
            bytes([DESCRIPTOR_VERSION]),
            self.identity_kem_pk,
            self.signing_pk,
            bytes([int(self.flags)]),
            push_uint(self.onion_epoch, 4),
            self.onion_pk,
            push_uint(self.published, 8),
            push_uint(self.expires, 8),
            bytes([len(self.addresses)]),
        ]
        out.extend(push_vector(a.encode(), 1) for a in self.addresses)
        return b"".join(out)

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def verify(self, now: float) -> None:
        """Check the signature (once per object) and the validity window; raise
        RemoteProtocolError if bad."""
        if not self._signature_ok:
            if not signing.verify(
                self.signing_pk, self.signature, self.signed_part(), SIGNATURE_CONTEXT
            ):
                raise RemoteProtocolError("descriptor signature does not verify", CloseCode.AUTH)
            object.__setattr__(self, "_signature_ok", True)
        if self.expires <= now:
            raise RemoteProtocolError("descriptor has expired", CloseCode.AUTH)
        if self.published > now + CLOCK_SKEW:
            raise RemoteProtocolError("descriptor is published in the future", CloseCode.AUTH)
        if self.expires - self.published > MAX_LIFETIME:
            raise RemoteProtocolError("descriptor lifetime is too long", CloseCode.AUTH)


def decode_descriptor(data: bytes) -> Descriptor:
    """Parse a descriptor (without verifying it); raise RemoteProtocolError if malformed."""
    if len(data) > MAX_DESCRIPTOR_SIZE:
        raise RemoteProtocolError("descriptor is oversized", CloseCode.RESOURCE)
    buf = Buffer(data)
    version = buf.pull_uint8()
    if version != DESCRIPTOR_VERSION:
        raise RemoteProtocolError(f"unknown descriptor version {version}")
    identity_kem_pk = buf.pull_bytes(xwing.PUBLIC_KEY_SIZE)
    signing_pk = buf.pull_bytes(signing.PUBLIC_KEY_SIZE)
    raw_flags = buf.pull_uint8()
    if raw_flags & ~int(Flags.RELAY | Flags.EXIT):
        raise RemoteProtocolError("unknown descriptor flags")
    onion_epoch = buf.pull_uint32()
    onion_pk = buf.pull_bytes(xwing.PUBLIC_KEY_SIZE)
    published = buf.pull_uint64()
    expires = buf.pull_uint64()
    n = buf.pull_uint8()
    if n > MAX_ADDRESSES:
        raise RemoteProtocolError("too many addresses in descriptor")
    addresses = []
    for _ in range(n):
        try:
            addresses.append(buf.pull_vector(1, 255).decode("ascii"))
        except UnicodeDecodeError:
            raise RemoteProtocolError("descriptor address is not ASCII") from None
    signature = buf.pull_bytes(signing.SIGNATURE_SIZE)
    buf.expect_eof()
    return Descriptor(
        identity_kem_pk,
        signing_pk,
        Flags(raw_flags),
        onion_epoch,
        onion_pk,
        published,
        expires,
        tuple(addresses),
        signature,
    )


class Identity:
    """A node's long-term secrets.  Never logged or printed.

    ``deterministic`` makes every signature a function of the keys and the message (FIPS 204's
    deterministic ML-DSA), so a seeded simulation is reproducible byte for byte.
    """

    def __init__(
        self, kem_seed: bytes, signing_seed: bytes, *, deterministic: bool = False
    ) -> None:
        self.kem_seed = kem_seed
        self.kem = xwing.PrivateKey(kem_seed)
        self.signing = signing.SigningKey.from_seed(signing_seed, deterministic=deterministic)
        self.node_id = node_id_of(self.kem.public, self.signing.public)

    @classmethod
    def generate(cls, rng: Rng) -> "Identity":
        """Draw fresh seeds from ``rng``; a reproducible Rng gives deterministic signatures."""
        return cls(
            rng.bytes(xwing.SEED_SIZE),
            rng.bytes(signing.SEED_SIZE),
            deterministic=rng.reproducible,
        )

    def make_descriptor(
        self,
        *,
        flags: Flags,
        onion_epoch: int,
        onion_pk: bytes,
        published: int,
        lifetime: int,
        addresses: tuple[str, ...] = (),
    ) -> Descriptor:
        """Sign a descriptor; raises LocalProtocolError for one no peer could decode."""
        if len(addresses) > MAX_ADDRESSES or any(
            not a.isascii() or len(a) > 255 for a in addresses
        ):
            raise LocalProtocolError(f"at most {MAX_ADDRESSES} ASCII addresses of up to 255 bytes")
        unsigned = Descriptor(
            self.kem.public,
            self.signing.public,
            flags,
            onion_epoch,
            onion_pk,
            published,
            published + lifetime,
            addresses,
            b"",
        )
        signed = replace(
            unsigned, signature=self.signing.sign(unsigned.signed_part(), SIGNATURE_CONTEXT)
        )
        if len(signed.encode()) > MAX_DESCRIPTOR_SIZE:
            raise LocalProtocolError("descriptor would exceed MAX_DESCRIPTOR_SIZE")
        return signed

    def __repr__(self) -> str:
        return f"Identity({short_id(self.node_id)})"
