#!/usr/bin/env python3
"""Regenerate tests/vectors/*.json from fixed seeds.

Every value comes from zmesh.rng.DeterministicRng, so running this twice (or on another
runtime) writes identical files; tests/test_vectors.py checks exactly that.

    python scripts/gen_vectors.py [--out tests/vectors] [--check]
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from zmesh.crypto import backend, hkdf, keyed_hash, lioness, signing, xwing
from zmesh.crypto import edwards25519 as ed
from zmesh.onion import cell, sphinx
from zmesh.onion.geometry import Geometry
from zmesh.rng import DeterministicRng
from zmesh.sim.demo import run_demo

SEED = b"zmesh test vectors v1"
GEOMETRY = Geometry()


def primitives() -> dict[str, Any]:
    rng = DeterministicRng(SEED, b"primitives")
    ikm, salt, info = rng.bytes(32), rng.bytes(32), b"zmesh vector"
    key, nonce, data = rng.bytes(32), rng.bytes(12), rng.bytes(200)
    lkey, tweak, block = rng.bytes(lioness.KEY_SIZE), rng.bytes(16), rng.bytes(300)
    return {
        "hkdf_sha256": {
            "ikm": ikm.hex(),
            "salt": salt.hex(),
            "info": info.hex(),
            "okm": hkdf(ikm, salt, info, 80).hex(),
        },
        "blake2b_keyed": {"key": key.hex(), "data": data.hex(), "mac": keyed_hash(key, data).hex()},
        "chacha20": {
            "key": key.hex(),
            "nonce": nonce.hex(),
            "plaintext": data.hex(),
            "ciphertext": backend.chacha20_xor(key, nonce, data).hex(),
        },
        "lioness": {
            "key": lkey.hex(),
            "tweak": tweak.hex(),
            "plaintext": block.hex(),
            "ciphertext": lioness.encrypt(lioness.LionessKey.from_bytes(lkey), tweak, block).hex(),
        },
    }


def xwing_vectors() -> list[dict[str, str]]:
    rng = DeterministicRng(SEED, b"xwing")
    out = []
    for _ in range(3):
        seed, eseed = rng.bytes(32), rng.bytes(64)
        _, pk = xwing.keygen(seed)
        ct, ss = xwing.encaps(pk, eseed)
        out.append(
            {
                "seed": seed.hex(),
                "public_key": pk.hex(),
                "randomness": eseed.hex(),
                "ciphertext": ct.hex(),
                "shared_secret": ss.hex(),
            }
        )
    return out


def _path(n: int) -> tuple[list[bytes], list[sphinx.PathHop]]:
    rng = DeterministicRng(SEED, b"path-%d" % n)
    seeds = [rng.bytes(32) for _ in range(n)]
    hops = [
        sphinx.PathHop(rng.bytes(32), 1000 + i, xwing.keygen(s)[1]) for i, s in enumerate(seeds)
    ]
    return seeds, hops


def setup_packets() -> dict[str, Any]:
    """Every intermediate header, per hop, for 2- and 3-hop paths, and the CREATED reply."""
    out: dict[str, Any] = {"geometry": GEOMETRY.digest.hex()}
    for n in (2, 3):
        seeds, path = _path(n)
        rng = DeterministicRng(SEED, b"setup-%d" % n)
        state = sphinx.build_setup_header(GEOMETRY, path, rng)
        header = state.header
        hops = []
        results = []
        for seed in seeds:
            result = sphinx.unwrap_setup_header(GEOMETRY, xwing.PrivateKey(seed), header)
            results.append(result)
            entry = {
                "relay_seed": seed.hex(),
                "header_in": header.hex(),
                "replay_tag": result.keys.replay_tag.hex(),
                "confirm_tag": result.confirm_tag.hex(),
            }
            if isinstance(result, sphinx.Forward):
                entry |= {
                    "next_node_id": result.next_node_id.hex(),
                    "next_epoch": str(result.next_epoch),
                    "header_out": result.header.hex(),
                }
                header = result.header
            else:
                entry["final"] = "true"
            hops.append(entry)
        reply = rng.bytes(GEOMETRY.created_size)
        for entry, result in zip(reversed(hops), reversed(results), strict=True):
            reply = sphinx.wrap_created(GEOMETRY, result.keys, result.confirm_tag, reply)
            entry["created_out"] = reply.hex()
        sphinx.verify_created(GEOMETRY, state, reply)
        out[f"{n}_hops"] = {
            "path": [
                {"node_id": h.node_id.hex(), "epoch": h.epoch, "onion_pk": h.onion_pk.hex()}
                for h in path
            ],
            "client_rng": f"DeterministicRng({SEED!r}, b'setup-{n}')",
            "header": state.header.hex(),
            "hops": hops,
        }
    return out


def cells() -> dict[str, Any]:
    """A 3-hop circuit's cells at every hop, forward and backward, for two counters."""
    _, path = _path(3)
    rng = DeterministicRng(SEED, b"cells")
    state = sphinx.build_setup_header(GEOMETRY, path, rng)
    keys = state.hop_keys
    out: dict[str, Any] = {"setup_header": state.header.hex(), "cells": []}
    for counter in (0, 1):
        payload = rng.bytes(GEOMETRY.cell_payload_size)
        fwd = [cell.client_seal(GEOMETRY, keys, counter, payload)]
        for k in keys[:-1]:
            fwd.append(cell.relay_forward(GEOMETRY, k, counter, fwd[-1]))
        assert cell.endpoint_open(GEOMETRY, keys[-1], counter, fwd[-1]) == payload
        bwd = [cell.endpoint_seal(GEOMETRY, keys[-1], counter, payload)]
        for k in reversed(keys[:-1]):
            bwd.append(cell.relay_backward(GEOMETRY, k, counter, bwd[-1]))
        assert cell.client_open(GEOMETRY, keys, counter, bwd[-1]) == payload
        out["cells"].append(
            {
                "counter": counter,
                "payload": payload.hex(),
                "forward_at_hop": [c.hex() for c in fwd],
                "backward_from_hop": [c.hex() for c in bwd],
            }
        )
    return out


DETERMINISM_RUN = {"nodes": 5, "hops": 2, "size": 65536, "seed": 1}


def determinism() -> dict[str, Any]:
    result = run_demo(**DETERMINISM_RUN)
    return {
        "run": DETERMINISM_RUN,
        "trace_digest": result.trace_digest,
        "sha256": result.received_sha256,
    }


def signatures() -> list[dict[str, str]]:
    """Deterministic hybrid signatures: dilithium-py on CPython must equal noble in Pyodide."""
    rng = DeterministicRng(SEED, b"signatures")
    out = []
    for context in (b"", b"zmesh-descriptor-v1", bytes(range(255))):
        seed, message = rng.bytes(signing.SEED_SIZE), rng.bytes(100)
        key = signing.SigningKey.from_seed(seed, deterministic=True)
        out.append(
            {
                "seed": seed.hex(),
                "context": context.hex(),
                "message": message.hex(),
                "public_key": key.public.hex(),
                "signature": key.sign(message, context).hex(),
            }
        )
    return out


# -- Ed25519 cases where the cofactored and cofactorless checks disagree (D30) -----------


def _challenge(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % ed.L


def _cofactorless(a: bytes, sig: bytes, message: bytes) -> bool:
    """RFC 8032's check ``[S]B = R + [k]A`` (OpenSSL's), with strict decoding."""
    point, s = ed.decode(a), int.from_bytes(sig[32:], "little")
    if point is None or ed.decode(sig[:32]) is None or s >= ed.L:
        return False
    k = _challenge(sig[:32], a, message)
    return ed.encode(ed.add(ed.mul(s, ed.BASE), ed.negate(ed.mul(k, point)))) == sig[:32]


def _cofactored(a: bytes, sig: bytes, message: bytes) -> bool:
    """RFC 8032's check ``[8][S]B = [8]R + [8][k]A`` (noble's), with strict decoding."""
    point, r, s = ed.decode(a), ed.decode(sig[:32]), int.from_bytes(sig[32:], "little")
    if point is None or r is None or s >= ed.L:
        return False
    k = _challenge(sig[:32], a, message)
    lhs = ed.mul(8, ed.mul(s, ed.BASE))
    return ed.equal(lhs, ed.mul(8, ed.add(r, ed.mul(k, point))))


def _sign_raw(a: int, a_bytes: bytes, r_point: ed.Point, r: int, message: bytes) -> bytes:
    """An Ed25519 signature with a chosen key scalar, nonce point and nonce scalar."""
    r_bytes = ed.encode(r_point)
    s = (r + _challenge(r_bytes, a_bytes, message) * a) % ed.L
    return r_bytes + s.to_bytes(32, "little")


def small_order_points() -> list[ed.Point]:
    """The eight points of order dividing 8: multiples of [L]P for a point P of order 8L."""
    y = 2
    while True:
        point = ed.decode(y.to_bytes(32, "little"))
        if point is not None:
            t = ed.mul(ed.L, point)
            if not ed.is_identity(ed.mul(4, t)):
                return [ed.mul(i, t) for i in range(8)]
        y += 1


def ed25519_rule() -> list[dict[str, Any]]:
    """Crafted Ed25519 signatures and zMesh's verdict on each (true only for "valid")."""
    rng = DeterministicRng(SEED, b"ed25519-rule")
    torsion = small_order_points()
    t8 = torsion[1]  # of order 8
    a = int.from_bytes(rng.bytes(64), "little") % ed.L
    a_point = ed.mul(a, ed.BASE)
    a_bytes = ed.encode(a_point)
    cases: list[tuple[str, bytes, bytes, bytes]] = []

    def nonce() -> tuple[int, ed.Point]:
        r = int.from_bytes(rng.bytes(64), "little") % ed.L
        return r, ed.mul(r, ed.BASE)

    def add(name: str, pk: bytes, sig: bytes, message: bytes) -> None:
        cases.append((name, pk, sig, message))

    message = rng.bytes(32)
    r, r_point = nonce()
    valid = _sign_raw(a, a_bytes, r_point, r, message)
    add("valid", a_bytes, valid, message)
    s_plus_l = int.from_bytes(valid[32:], "little") + ed.L
    add("S plus L", a_bytes, valid[:32] + s_plus_l.to_bytes(32, "little"), message)
    for i, t in enumerate(torsion):  # A of small order: any S = r "verifies" cofactored
        pk = ed.encode(t)
        r, r_point = nonce()
        add(
            f"small-order A, order-8 multiple {i}",
            pk,
            _sign_raw(0, pk, r_point, r, message),
            message,
        )
    mixed = ed.encode(ed.add(a_point, t8))
    for want_zero in (True, False):  # k = 0 mod 8 hides the torsion from the cofactorless check
        r, r_point = nonce()
        counter = 0
        while True:
            m = message + counter.to_bytes(4, "big")
            if (_challenge(ed.encode(r_point), mixed, m) % 8 == 0) == want_zero:
                break
            counter += 1
        label = "k = 0 mod 8" if want_zero else "k != 0 mod 8"
        add(f"mixed-order A, {label}", mixed, _sign_raw(a, mixed, r_point, r, m), m)
    r, r_point = nonce()
    add("mixed-order R", a_bytes, _sign_raw(a, a_bytes, ed.add(r_point, t8), r, message), message)
    for i in (1, 4):
        sig = _sign_raw(a, a_bytes, torsion[i], 0, message)
        add(f"small-order R, order-8 multiple {i}", a_bytes, sig, message)
    r, r_point = nonce()  # A = the identity, encoded two non-canonical ways; S = r
    identity_p = (1 + ed.P).to_bytes(32, "little")
    minus_zero = (1 | 1 << 255).to_bytes(32, "little")
    for label, pk in (("y = p + 1", identity_p), ("x = -0", minus_zero)):
        sig = _sign_raw(0, pk, r_point, r, message)
        add(f"non-canonical A (identity, {label})", pk, sig, message)
    s = _challenge(identity_p, a_bytes, message) * a % ed.L  # R = the identity, non-canonical
    add(
        "non-canonical R (identity, y = p + 1)",
        a_bytes,
        identity_p + s.to_bytes(32, "little"),
        message,
    )
    return [
        {
            "name": name,
            "public_key": pk.hex(),
            "signature": sig.hex(),
            "message": m.hex(),
            "valid": name == "valid",
            "cofactorless": _cofactorless(pk, sig, m),
            "cofactored": _cofactored(pk, sig, m),
        }
        for name, pk, sig, m in cases
    ]


GENERATORS = {
    "primitives.json": primitives,
    "xwing.json": xwing_vectors,
    "setup.json": setup_packets,
    "cells.json": cells,
    "determinism.json": determinism,
    "signatures.json": signatures,
    "ed25519_rule.json": ed25519_rule,
}


def render(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "tests/vectors")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, generate in GENERATORS.items():
        text = render(generate())
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path} ({len(text)} bytes)")
    if stale:
        print("stale vectors: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
