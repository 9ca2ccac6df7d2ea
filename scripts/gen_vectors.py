#!/usr/bin/env python3
"""Regenerate tests/vectors/*.json from fixed seeds.

Every value comes from zmesh.rng.DeterministicRng, so running this twice (or on another
runtime) writes identical files; tests/test_vectors.py checks exactly that.

    python scripts/gen_vectors.py [--out tests/vectors] [--check]
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from zmesh.crypto import backend, hkdf, keyed_hash, lioness, xwing
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
            "ciphertext": lioness.encrypt(
                lioness.LionessKey.from_bytes(lkey), tweak, block
            ).hex(),
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


GENERATORS = {
    "primitives.json": primitives,
    "xwing.json": xwing_vectors,
    "setup.json": setup_packets,
    "cells.json": cells,
    "determinism.json": determinism,
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
