"""Reed–Solomon erasure coding (zmesh/chunks/erasure.py and its two backends).

tests/vectors/erasure.json comes from a fixed seed; ``python tests/chunks/test_erasure.py``
regenerates it.  The backend of the running runtime (zfec on CPython, pure Python in
Pyodide) and the pure-Python one must both reproduce it byte for byte.
"""

import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.chunks import _gf256, erasure
from zmesh.chunks.content import encode_content
from zmesh.chunks.errors import NotEnoughPiecesError
from zmesh.errors import LocalProtocolError
from zmesh.rng import DeterministicRng, randbelow

VECTOR_FILE = Path(__file__).parent.parent / "vectors" / "erasure.json"
SEED = b"zmesh erasure vectors v1"
CASES = [
    (1, 1, 5),
    (1, 3, 5),
    (2, 3, 1),
    (3, 10, 17),
    (8, 10, 64),
    (8, 12, 33),
    (16, 20, 8),
    (5, 32, 9),
]


def generate() -> dict[str, Any]:
    """The vector file's content, from SEED alone."""
    rng = DeterministicRng(SEED)
    codes = []
    for k, n, length in CASES:
        blocks = [rng.bytes(length) for _ in range(k)]
        parity = _gf256.encode(blocks, k, n) if n > k else []
        shares = sorted(_sample(rng, n, k))
        codes.append(
            {
                "k": k,
                "n": n,
                "data": [b.hex() for b in blocks],
                "parity": [p.hex() for p in parity],
                "decode_from": shares,
            }
        )
    data = rng.bytes(7 * 4096 + 100)
    content = _gf256_content(data)
    return {
        "field": "GF(2^8), x^8+x^4+x^3+x^2+1 (0x11d), zfec's systematic Vandermonde code",
        "seed": SEED.decode(),
        "codes": codes,
        "content": {
            "chunk_size": 4096,
            "k": 3,
            "n": 5,
            "data_sha256": hashlib.sha256(data).hexdigest(),
            "manifest": content["manifest"],
            "content_id": content["content_id"],
            "piece_sha256": content["piece_sha256"],
        },
    }


def _sample(rng: DeterministicRng, n: int, k: int) -> list[int]:
    pool = list(range(n))
    return [pool.pop(randbelow(rng, len(pool))) for _ in range(k)]


def _content_digest(data: bytes) -> dict[str, Any]:
    enc = encode_content(data, 4096, 3, 5)
    return {
        "manifest": enc.manifest.encode().hex(),
        "content_id": str(enc.manifest.content_id),
        "piece_sha256": [hashlib.sha256(p).hexdigest() for p in enc.pieces],
    }


def _gf256_content(data: bytes) -> dict[str, Any]:
    with UsingBackend(_gf256):
        return _content_digest(data)


class UsingBackend:
    """Run zmesh.chunks.erasure on the given backend module for a while."""

    def __init__(self, module: Any) -> None:
        self.module, self.saved = module, erasure.backend

    def __enter__(self) -> None:
        erasure.backend = self.module

    def __exit__(self, *exc: object) -> None:
        erasure.backend = self.saved


def render(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def _vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(VECTOR_FILE.read_text())
    return loaded


def test_vector_file_regenerates_identically() -> None:
    assert VECTOR_FILE.read_text() == render(generate())


@pytest.mark.parametrize("module", [erasure.backend, _gf256], ids=["runtime", "gf256"])
def test_vectors_hold_on_every_backend(module: Any) -> None:
    v = _vectors()
    for code in v["codes"]:
        k, n = code["k"], code["n"]
        blocks = [bytes.fromhex(b) for b in code["data"]]
        parity = [bytes.fromhex(p) for p in code["parity"]]
        with UsingBackend(module):
            assert erasure.encode(blocks, n) == parity
            everything = blocks + parity
            shares = {s: everything[s] for s in code["decode_from"]}
            assert erasure.decode(shares, k, n) == blocks
    c = v["content"]
    vector_data = DeterministicRng(SEED)
    for k, n, length in CASES:  # replay the draws that precede the content's data
        for _ in range(k):
            vector_data.bytes(length)
        _sample(vector_data, n, k)
    data = vector_data.bytes(7 * 4096 + 100)
    assert hashlib.sha256(data).hexdigest() == c["data_sha256"]
    with UsingBackend(module):
        digest = _content_digest(data)
    assert digest == {key: c[key] for key in ("manifest", "content_id", "piece_sha256")}


def test_zfec_and_pure_python_agree() -> None:
    zfec_backend = pytest.importorskip("zmesh.chunks._zfec", reason="zfec is CPython only")
    rng = DeterministicRng(b"cross check")
    for k, n in itertools.product(range(1, 9), (1, 2, 5, 12, 32)):
        if k > n:
            continue
        blocks = [rng.bytes(40) for _ in range(k)]
        parity = _gf256.encode(blocks, k, n) if n > k else []
        assert zfec_backend.encode(blocks, k, n) == parity
        shares = sorted(_sample(rng, n, k))
        pairs = [(s, (blocks + parity)[s]) for s in shares]
        assert zfec_backend.decode(pairs, k, n) == _gf256.decode(pairs, k, n) == blocks


@pytest.mark.parametrize(("k", "n"), [(1, 1), (1, 4), (2, 4), (3, 6), (4, 6), (8, 10)])
def test_any_k_of_n_rebuild(k: int, n: int) -> None:
    rng = DeterministicRng(b"any k")
    blocks = [rng.bytes(100) for _ in range(k)]
    everything = blocks + erasure.encode(blocks, n)
    assert len(everything) == n
    for subset in itertools.combinations(range(n), k):
        assert erasure.decode({s: everything[s] for s in subset}, k, n) == blocks
    # more than k is fine too
    assert erasure.decode(dict(enumerate(everything)), k, n) == blocks


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10), st.integers(0, 6), st.integers(1, 300), st.data())
def test_fuzz_any_k_shares_rebuild(k: int, extra: int, length: int, data: st.DataObject) -> None:
    n = k + extra
    blocks = [data.draw(st.binary(min_size=length, max_size=length)) for _ in range(k)]
    everything = blocks + erasure.encode(blocks, n)
    chosen = data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=n, unique=True))
    assert erasure.decode({s: everything[s] for s in chosen}, k, n) == blocks


def test_fewer_than_k_shares_fail_clearly() -> None:
    blocks = [b"aa", b"bb", b"cc"]
    everything = blocks + erasure.encode(blocks, 5)
    for subset in itertools.combinations(range(5), 2):
        with pytest.raises(
            NotEnoughPiecesError, match="2 shares cannot rebuild a group that needs 3"
        ):
            erasure.decode({s: everything[s] for s in subset}, 3, 5)
    assert issubclass(NotEnoughPiecesError, LocalProtocolError)


def test_misuse_is_a_clear_local_error() -> None:
    with pytest.raises(NotEnoughPiecesError, match="one length"):
        erasure.encode([b"a", b"bb"], 3)
    with pytest.raises(NotEnoughPiecesError, match="k <= n"):
        erasure.encode([b"a", b"b"], 1)
    with pytest.raises(NotEnoughPiecesError, match="k <= n"):
        erasure.encode([b"a"] * 33, 40)
    with pytest.raises(NotEnoughPiecesError, match="share numbers"):
        erasure.decode({0: b"a", 7: b"b"}, 2, 3)
    with pytest.raises(NotEnoughPiecesError, match="one length"):
        erasure.decode({0: b"a", 2: b"bb"}, 2, 3)


def test_field_arithmetic() -> None:
    for a in range(1, 256):
        assert _gf256.mul(a, _gf256.inverse(a)) == 1
        assert _gf256.mul(a, 0) == _gf256.mul(0, a) == 0
    assert _gf256.mul(2, 0x80) == 0x1D  # reduction by 0x11d
    with pytest.raises(ZeroDivisionError):
        _gf256.invert(((1, 1), (1, 1)))


if __name__ == "__main__":
    VECTOR_FILE.write_text(render(generate()))
    sys.stdout.write(f"wrote {VECTOR_FILE}\n")
