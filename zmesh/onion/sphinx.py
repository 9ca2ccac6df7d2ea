"""One-round-trip circuit setup: a Sphinx-like header with one X-Wing ciphertext per hop.

This is KEM-Sphinx as in Outfox and Katzenpost: since a KEM ciphertext cannot be blinded,
each hop's ciphertext travels, encrypted, inside the previous hop's routing information.

Hop ``i`` receives ``ct_i || gamma_i || beta_i`` (:attr:`Geometry.header_size` bytes) and:

1. ``ss_i = Decaps(sk_epoch, ct_i)``;
2. derives ``rho, mu, tag, confirm, created`` and the cell keys from ``ss_i``
   (HKDF-Extract salted with the geometry digest, expanded by SHAKE256);
3. checks ``gamma_i = MAC(mu, ct_i || beta_i)``, dropping on mismatch;
4. computes ``B = (beta_i || 0^S) xor PRG(rho)`` and splits
   ``B = routing_i || ct_{i+1} || gamma_{i+1} || beta_{i+1}``;
5. forwards the (same-length) next header, or acts as the final hop.

The caller checks the replay tag after the MAC (so garbage cannot fill the cache).

The CREATED reply has ``max_hops * M`` bytes at every hop.  Hop ``i`` prepends its key
confirmation tag ``MAC(confirm_i, ct_i)``, drops the last ``M`` bytes and encrypts with
its ``created`` key; the final hop starts from random bytes.  The client peels every
layer and checks every tag: one round trip proves that every hop holds its keys.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..crypto import backend, constant_time_equal, hkdf_extract, keyed_hash, lioness, xwing
from ..errors import CloseCode, RemoteProtocolError
from ..identity import NODE_ID_SIZE
from ..rng import Rng
from .geometry import Geometry

CMD_RELAY = 1
CMD_END = 2
_ZERO_NONCE = bytes(12)
_HOP_KEY_INFO = b"zmesh-onion-v1 hop keys"


@dataclass(frozen=True, slots=True)
class HopKeys:
    """The per-hop keys, all derived from the hop's X-Wing shared secret."""

    prg: bytes
    mac: bytes
    replay_tag: bytes
    confirm: bytes
    created: bytes
    forward: lioness.LionessKey
    backward: lioness.LionessKey

    def __repr__(self) -> str:
        return "HopKeys(<secret>)"


_HOP_OKM_SIZE = 5 * 32 + 2 * lioness.KEY_SIZE


def derive_hop_keys(geometry: Geometry, shared_secret: bytes) -> HopKeys:
    """Domain-separated keys for one hop.

    HKDF-Extract (RFC 5869) salted with the geometry digest, then SHAKE256 as the expander:
    one XOF call instead of 13 HKDF-Expand blocks (see docs/decisions.md, D14).
    """
    prk = hkdf_extract(geometry.digest, shared_secret)
    okm = hashlib.shake_256(_HOP_KEY_INFO + prk).digest(_HOP_OKM_SIZE)
    return HopKeys(
        prg=okm[0:32],
        mac=okm[32:64],
        replay_tag=okm[64:96],
        confirm=okm[96:128],
        created=okm[128:160],
        forward=lioness.LionessKey.from_bytes(okm[160:288]),
        backward=lioness.LionessKey.from_bytes(okm[288:416]),
    )


@dataclass(frozen=True, slots=True)
class PathHop:
    """What a client needs to know about one hop: from the hop's verified descriptor."""

    node_id: bytes
    epoch: int
    onion_pk: bytes


@dataclass(frozen=True, slots=True)
class SetupState:
    """The client's side of a circuit being built."""

    header: bytes
    hop_keys: tuple[HopKeys, ...]
    confirm_tags: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Forward:
    """Unwrap result: pass ``header`` on to ``next_node_id`` (its key ``next_epoch``)."""

    next_node_id: bytes
    next_epoch: int
    header: bytes
    keys: HopKeys
    confirm_tag: bytes


@dataclass(frozen=True, slots=True)
class Final:
    """Unwrap result: this hop ends the circuit."""

    keys: HopKeys
    confirm_tag: bytes


def _mac(geometry: Geometry, key: bytes, ct: bytes, beta: bytes) -> bytes:
    return keyed_hash(key, ct + beta, geometry.mac_size)


def _prg(key: bytes, length: int) -> bytes:
    return backend.chacha20_xor(key, _ZERO_NONCE, bytes(length))


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b[: len(a)], "little")).to_bytes(
        len(a), "little"
    )


def build_setup_header(geometry: Geometry, path: Sequence[PathHop], rng: Rng) -> SetupState:
    """Build the setup header for ``path`` (1..max_hops hops).

    Raises ValueError if the path is empty or too long.
    """
    n = len(path)
    if not 1 <= n <= geometry.max_hops:
        raise ValueError(f"paths have 1 to {geometry.max_hops} hops, not {n}")
    S, beta_len, M = geometry.slot_size, geometry.beta_size, geometry.mac_size
    cts: list[bytes] = []
    keys: list[HopKeys] = []
    streams: list[bytes] = []
    for hop in path:
        ct, ss = xwing.encaps_with(hop.onion_pk, rng)
        k = derive_hop_keys(geometry, ss)
        cts.append(ct)
        keys.append(k)
        streams.append(_prg(k.prg, beta_len + S))

    # Sphinx filler: what hops 1..n-1 shift into the tail of beta (length (n-1)*S).
    filler = b""
    for i in range(n - 1):
        start = beta_len - i * S
        filler = _xor(filler + bytes(S), streams[i][start : beta_len + S])

    # The final hop's routing block, then random bytes: a zero pad would reveal, after
    # decryption, how much of beta is filler and so the path length.
    end_routing = bytes([CMD_END]) + rng.bytes(geometry.routing_size - 1)
    plain = end_routing + rng.bytes(beta_len - (n - 1) * S - geometry.routing_size)
    beta = _xor(plain, streams[n - 1]) + filler
    gamma = _mac(geometry, keys[n - 1].mac, cts[n - 1], beta)
    for i in range(n - 2, -1, -1):
        nxt = path[i + 1]
        routing = bytes([CMD_RELAY]) + nxt.node_id + nxt.epoch.to_bytes(4, "big")
        plain = routing + cts[i + 1] + gamma + beta[: beta_len - S]
        beta = _xor(plain, streams[i])
        gamma = _mac(geometry, keys[i].mac, cts[i], beta)
    header = cts[0] + gamma + beta
    assert len(header) == geometry.header_size
    tags = tuple(keyed_hash(k.confirm, ct, M) for k, ct in zip(keys, cts, strict=True))
    return SetupState(header, tuple(keys), tags)


def unwrap_setup_header(
    geometry: Geometry, key: xwing.PrivateKey, header: bytes
) -> Forward | Final:
    """Process one hop of a setup header.

    Raises RemoteProtocolError on a wrong length, a bad MAC or an unknown command.
    """
    if len(header) != geometry.header_size:
        raise RemoteProtocolError("setup header has the wrong length")
    C, M, S = geometry.kem_ct_size, geometry.mac_size, geometry.slot_size
    ct, gamma, beta = header[:C], header[C : C + M], header[C + M :]
    keys = derive_hop_keys(geometry, key.decaps(ct))
    if not constant_time_equal(gamma, _mac(geometry, keys.mac, ct, beta)):
        raise RemoteProtocolError("setup header MAC does not verify", CloseCode.AUTH)
    # (beta || 0^S) xor PRG(rho): ChaCha20 XORs its keystream into the data directly
    block = backend.chacha20_xor(keys.prg, _ZERO_NONCE, beta + bytes(S))
    tag = keyed_hash(keys.confirm, ct, M)
    command = block[0]
    if command == CMD_RELAY:
        next_node_id = block[1 : 1 + NODE_ID_SIZE]
        next_epoch = int.from_bytes(block[1 + NODE_ID_SIZE : geometry.routing_size], "big")
        return Forward(next_node_id, next_epoch, block[geometry.routing_size :], keys, tag)
    if command == CMD_END:
        return Final(keys, tag)
    raise RemoteProtocolError(f"unknown routing command {command}")


def wrap_created(geometry: Geometry, keys: HopKeys, confirm_tag: bytes, inner: bytes) -> bytes:
    """Add this hop's confirmation to a CREATED reply (the final hop passes random bytes)."""
    if len(inner) != geometry.created_size:
        raise RemoteProtocolError("CREATED has the wrong length")
    return backend.chacha20_xor(
        keys.created, _ZERO_NONCE, confirm_tag + inner[: -geometry.mac_size]
    )


def verify_created(geometry: Geometry, state: SetupState, created: bytes) -> None:
    """Peel every hop's layer and check its tag; raise RemoteProtocolError on a mismatch."""
    if len(created) != geometry.created_size:
        raise RemoteProtocolError("CREATED has the wrong length")
    M = geometry.mac_size
    rest = created
    for i, (keys, expected) in enumerate(zip(state.hop_keys, state.confirm_tags, strict=True)):
        plain = backend.chacha20_xor(keys.created, _ZERO_NONCE, rest)
        if not constant_time_equal(plain[:M], expected):
            raise RemoteProtocolError(f"hop {i + 1} failed key confirmation", CloseCode.AUTH)
        rest = plain[M:]
