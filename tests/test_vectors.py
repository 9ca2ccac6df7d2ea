"""The vector files: regenerable from their seed, and checked against independent code.

Every test but the independent-implementation one also runs in Pyodide on the noble
backend (tests/pyodide/run_core_tests.mjs), so the files, and the determinism digest, are
the same on both runtimes.
"""

import json
from pathlib import Path
from typing import Any

import gen_vectors
import pytest

from zmesh.crypto import backend, hkdf, keyed_hash, lioness, xwing
from zmesh.onion import cell, sphinx
from zmesh.onion.geometry import Geometry

VECTORS = Path(__file__).parent / "vectors"
GEOMETRY = Geometry()


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("name", sorted(gen_vectors.GENERATORS))
def test_vector_file_regenerates_identically(name: str) -> None:
    assert (VECTORS / name).read_text() == gen_vectors.render(gen_vectors.GENERATORS[name]())


def test_primitive_vectors_hold_on_this_backend() -> None:
    v = load("primitives.json")
    k = v["hkdf_sha256"]
    assert hkdf(h(k["ikm"]), h(k["salt"]), h(k["info"]), 80).hex() == k["okm"]
    b = v["blake2b_keyed"]
    assert keyed_hash(h(b["key"]), h(b["data"])).hex() == b["mac"]
    c = v["chacha20"]
    ciphertext = backend.chacha20_xor(h(c["key"]), h(c["nonce"]), h(c["plaintext"]))
    assert ciphertext.hex() == c["ciphertext"]
    lv = v["lioness"]
    key = lioness.LionessKey.from_bytes(h(lv["key"]))
    assert lioness.encrypt(key, h(lv["tweak"]), h(lv["plaintext"])).hex() == lv["ciphertext"]
    assert lioness.decrypt(key, h(lv["tweak"]), h(lv["ciphertext"])).hex() == lv["plaintext"]


def test_primitives_match_independent_implementations() -> None:
    no_pycryptodome = "pycryptodome is not available (Pyodide)"
    no_pyca = "pyca cryptography is not available (Pyodide)"
    ChaCha20 = pytest.importorskip("Crypto.Cipher.ChaCha20", reason=no_pycryptodome)
    BLAKE2b = pytest.importorskip("Crypto.Hash.BLAKE2b", reason=no_pycryptodome)
    hashes = pytest.importorskip("cryptography.hazmat.primitives.hashes", reason=no_pyca)
    HKDF = pytest.importorskip("cryptography.hazmat.primitives.kdf.hkdf", reason=no_pyca).HKDF
    v = load("primitives.json")
    k = v["hkdf_sha256"]
    okm = HKDF(hashes.SHA256(), 80, h(k["salt"]), h(k["info"])).derive(h(k["ikm"]))
    assert okm.hex() == k["okm"]
    b = v["blake2b_keyed"]
    assert BLAKE2b.new(digest_bits=256, key=h(b["key"]), data=h(b["data"])).hexdigest() == b["mac"]
    c = v["chacha20"]
    cipher = ChaCha20.new(key=h(c["key"]), nonce=h(c["nonce"]))
    cipher.seek(64)  # the keystream from block 1 (D40)
    ref = cipher.encrypt(h(c["plaintext"]))
    assert ref.hex() == c["ciphertext"]
    lv = v["lioness"]
    key = lioness.LionessKey.from_bytes(h(lv["key"]))
    assert lioness.decrypt(key, h(lv["tweak"]), h(lv["ciphertext"])).hex() == lv["plaintext"]


def test_xwing_vectors_decapsulate() -> None:
    for v in load("xwing.json"):
        assert xwing.keygen(h(v["seed"]))[1].hex() == v["public_key"]
        assert xwing.decaps(h(v["seed"]), h(v["ciphertext"])).hex() == v["shared_secret"]


@pytest.mark.parametrize("n", [2, 3])
def test_setup_vectors_unwrap_hop_by_hop(n: int) -> None:
    v = load("setup.json")
    assert v["geometry"] == GEOMETRY.digest.hex()
    for hop in v[f"{n}_hops"]["hops"]:
        key = xwing.PrivateKey(h(hop["relay_seed"]))
        result = sphinx.unwrap_setup_header(GEOMETRY, key, h(hop["header_in"]))
        assert result.keys.replay_tag.hex() == hop["replay_tag"]
        assert result.confirm_tag.hex() == hop["confirm_tag"]
        if "final" in hop:
            assert isinstance(result, sphinx.Final)
        else:
            assert isinstance(result, sphinx.Forward)
            assert result.header.hex() == hop["header_out"]
            assert result.next_node_id.hex() == hop["next_node_id"]


def test_cell_vectors_peel_hop_by_hop() -> None:
    v = load("cells.json")
    seeds, _ = gen_vectors._path(3)
    keys = []
    header = h(v["setup_header"])
    for seed in seeds:
        result = sphinx.unwrap_setup_header(GEOMETRY, xwing.PrivateKey(seed), header)
        keys.append(result.keys)
        if isinstance(result, sphinx.Forward):
            header = result.header
    for c in v["cells"]:
        fwd = [h(x) for x in c["forward_at_hop"]]
        for i, k in enumerate(keys[:-1]):
            assert cell.relay_forward(GEOMETRY, k, c["counter"], fwd[i]) == fwd[i + 1]
        assert cell.endpoint_open(GEOMETRY, keys[-1], c["counter"], fwd[-1]).hex() == c["payload"]
        bwd = [h(x) for x in c["backward_from_hop"]]
        assert cell.client_open(GEOMETRY, keys, c["counter"], bwd[-1]).hex() == c["payload"]


def test_determinism_digest_is_stable() -> None:
    """The same seed gives the same trace; the digest is what Pyodide must reproduce."""
    v = load("determinism.json")
    first = gen_vectors.run_demo(**v["run"])
    second = gen_vectors.run_demo(**v["run"])
    assert first.trace_digest == second.trace_digest == v["trace_digest"]
    other = gen_vectors.run_demo(**(v["run"] | {"seed": v["run"]["seed"] + 1}))
    assert other.trace_digest != v["trace_digest"]
