"""Hybrid signatures (zmesh/crypto/signing.py) and the Ed25519 rule that makes every
runtime give the same verdict (docs/decisions.md, D3 and D30).

The vector files are regenerated from their seed by tests/test_vectors.py on both runtimes,
so ``signatures.json`` passing there and here means dilithium-py (CPython) and noble
(Pyodide) sign ML-DSA-44 deterministically to the same bytes.
"""

import itertools
import json
import os
from pathlib import Path
from typing import Any

import gen_vectors
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.crypto import backend, signing
from zmesh.crypto import edwards25519 as ed

VECTORS = Path(__file__).parent.parent / "vectors"
CONTEXT = b"zmesh-test-v1"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def h(value: str) -> bytes:
    return bytes.fromhex(value)


RULE_CASES = load("ed25519_rule.json")


# -- deterministic signing ----------------------------------------------------------------


@pytest.mark.parametrize("index", range(3))
def test_deterministic_signatures_match_the_vector(index: int) -> None:
    v = load("signatures.json")[index]
    key = signing.SigningKey.from_seed(h(v["seed"]), deterministic=True)
    assert key.public.hex() == v["public_key"]
    signature = key.sign(h(v["message"]), h(v["context"]))
    assert signature.hex() == v["signature"]
    assert signing.verify(key.public, signature, h(v["message"]), h(v["context"]))


def test_deterministic_key_signs_identically_and_both_kinds_verify() -> None:
    seed = os.urandom(signing.SEED_SIZE)
    det = signing.SigningKey.from_seed(seed, deterministic=True)
    hedged = signing.SigningKey.from_seed(seed)
    assert det.public == hedged.public
    first = det.sign(b"message", CONTEXT)
    assert first == det.sign(b"message", CONTEXT)
    for sig in (first, hedged.sign(b"message", CONTEXT)):
        assert len(sig) == signing.SIGNATURE_SIZE
        assert signing.verify(det.public, sig, b"message", CONTEXT)
    # Ed25519 is deterministic either way; only the ML-DSA half may differ
    assert hedged.sign(b"message", CONTEXT)[: signing.ED25519_SIG] == first[: signing.ED25519_SIG]


@pytest.mark.skipif(backend.NAME != "pyca", reason="noble signs ML-DSA deterministically")
def test_pyca_hedges_unless_asked_to_be_deterministic() -> None:
    hedged = signing.SigningKey.from_seed(bytes(signing.SEED_SIZE))
    assert hedged.sign(b"m", CONTEXT) != hedged.sign(b"m", CONTEXT)


def test_signing_key_rejects_bad_seeds_and_contexts_and_hides_its_seed() -> None:
    for size in (0, 32, 63, 65):
        with pytest.raises(ValueError):
            signing.SigningKey.from_seed(bytes(size))
    key = signing.SigningKey.from_seed(bytes(range(64)), deterministic=True)
    with pytest.raises(ValueError):
        key.sign(b"m", bytes(256))
    assert bytes(range(64)).hex()[:16] not in repr(key)


def test_hybrid_verify_needs_both_halves_and_the_exact_inputs() -> None:
    key = signing.SigningKey.from_seed(bytes(range(64)), deterministic=True)
    other = signing.SigningKey.from_seed(bytes(range(1, 65)), deterministic=True)
    sig = key.sign(b"message", CONTEXT)
    other_sig = other.sign(b"message", CONTEXT)
    assert signing.verify(key.public, sig, b"message", CONTEXT)
    assert not signing.verify(key.public, sig, b"messagf", CONTEXT)
    assert not signing.verify(key.public, sig, b"message", b"zmesh-other-v1")
    assert not signing.verify(other.public, sig, b"message", CONTEXT)
    ed_half, pq_half = signing.ED25519_SIG, signing.ED25519_PK
    assert not signing.verify(key.public, sig[:ed_half] + other_sig[ed_half:], b"message", CONTEXT)
    assert not signing.verify(key.public, other_sig[:ed_half] + sig[ed_half:], b"message", CONTEXT)
    mixed_key = key.public[:pq_half] + other.public[pq_half:]
    assert not signing.verify(mixed_key, sig, b"message", CONTEXT)
    for bad_sig in (sig[:-1], sig + b"\x00", b""):
        assert not signing.verify(key.public, bad_sig, b"message", CONTEXT)
    for bad_key in (key.public[:-1], key.public + b"\x00", b""):
        assert not signing.verify(bad_key, sig, b"message", CONTEXT)


@settings(max_examples=25, deadline=None)
@given(position=st.integers(0, signing.SIGNATURE_SIZE * 8 - 1))
@example(position=0)  # R's first bit
@example(position=signing.ED25519_SIG * 8 - 1)  # S's top bit
@example(position=signing.ED25519_SIG * 8)  # the first ML-DSA bit
def test_any_flipped_signature_bit_fails(position: int) -> None:
    key = signing.SigningKey.from_seed(bytes(range(64)), deterministic=True)
    sig = bytearray(key.sign(b"message", CONTEXT))
    sig[position // 8] ^= 1 << (position % 8)
    assert not signing.verify(key.public, bytes(sig), b"message", CONTEXT)


# -- the Ed25519 rule: small-order components, canonical encodings, S < L -----------------


@pytest.mark.parametrize("case", RULE_CASES, ids=[c["name"] for c in RULE_CASES])
def test_ed25519_rule_gives_the_vector_verdict(case: dict[str, Any]) -> None:
    pk, sig, message = h(case["public_key"]), h(case["signature"]), h(case["message"])
    assert signing.ed25519_verify(pk, sig, message) is case["valid"]


def test_ed25519_rule_cases_cover_every_disagreement() -> None:
    """The file holds cases the two RFC 8032 checks disagree on, and both-accept forgeries."""
    names = {c["name"] for c in RULE_CASES}
    assert {"valid", "S plus L", "mixed-order R", "non-canonical R (identity, y = p + 1)"} <= names
    assert sum(c["name"].startswith("small-order A") for c in RULE_CASES) == 8
    split = [c for c in RULE_CASES if c["cofactorless"] != c["cofactored"]]
    assert len(split) >= 10
    both = [c for c in RULE_CASES if c["cofactorless"] and c["cofactored"] and not c["valid"]]
    assert {c["name"] for c in both} >= {"mixed-order A, k = 0 mod 8"}


def test_the_raw_backend_alone_accepts_what_the_rule_rejects() -> None:
    """Without the rule, this runtime's backend accepts crafted signatures the other one
    rejects: the attack of issue 7 (relays that only one runtime accepts)."""
    raw = {
        c["name"]: backend.ed25519_verify(h(c["public_key"]), h(c["signature"]), h(c["message"]))
        for c in RULE_CASES
    }
    assert raw["valid"]
    assert any(raw[c["name"]] for c in RULE_CASES if not c["valid"])
    if backend.NAME == "pyca":  # OpenSSL: cofactorless, lenient decoding of A
        for c in RULE_CASES:
            if not c["name"].startswith("non-canonical A"):
                assert raw[c["name"]] is c["cofactorless"], c["name"]
    else:  # noble, zip215=false: cofactored, strict decoding, small-order A refused
        for c in RULE_CASES:
            expected = c["cofactored"] and not c["name"].startswith("small-order A")
            assert raw[c["name"]] is expected, c["name"]


def test_rule_rejects_bad_sizes_without_raising() -> None:
    case = RULE_CASES[0]
    pk, sig, message = h(case["public_key"]), h(case["signature"]), h(case["message"])
    for bad_pk, bad_sig in ((pk[:31], sig), (pk + b"\x00", sig), (pk, sig[:63]), (pk, sig + b"\0")):
        assert not signing.ed25519_verify(bad_pk, bad_sig, message)


def test_key_check_cache_is_bounded() -> None:
    """A flood of distinct keys cannot grow the cache past KEY_CHECK_CACHE."""
    signing._key_has_prime_order.cache_clear()
    sig = h(RULE_CASES[0]["signature"])
    candidates = (y.to_bytes(32, "little") for y in itertools.count(2))
    off_curve = (k for k in candidates if ed.decode(k) is None)  # rejected at decoding
    keys = list(itertools.islice(off_curve, signing.KEY_CHECK_CACHE + 50))
    for key in keys:
        assert not signing.ed25519_verify(key, sig, b"m")
    info = signing._key_has_prime_order.cache_info()
    assert info.maxsize == signing.KEY_CHECK_CACHE
    assert info.currsize == signing.KEY_CHECK_CACHE


# -- Edwards25519 arithmetic -------------------------------------------------------------


def test_base_point_has_order_l_and_small_order_points_do_not() -> None:
    assert ed.is_identity(ed.mul(ed.L, ed.BASE))
    assert not ed.is_identity(ed.BASE)
    assert ed.has_prime_order(ed.encode(ed.BASE))
    torsion = gen_vectors.small_order_points()
    encodings = {ed.encode(t) for t in torsion}
    assert len(encodings) == 8
    for t in torsion:
        assert ed.is_identity(ed.mul(8, t))
        assert not ed.has_prime_order(ed.encode(t))
        assert not ed.has_prime_order(ed.encode(ed.add(ed.BASE, t))) or ed.is_identity(t)


@settings(max_examples=10, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_backend_public_keys_have_prime_order_and_round_trip(seed: bytes) -> None:
    pk = backend.ed25519_public(seed)
    point = ed.decode(pk)
    assert point is not None
    assert ed.encode(point) == pk
    assert ed.has_prime_order(pk)
    assert signing._key_has_prime_order(pk)


def test_decode_rejects_non_canonical_encodings() -> None:
    assert ed.decode((1 + ed.P).to_bytes(32, "little")) is None  # y = p + 1
    assert ed.decode(ed.P.to_bytes(32, "little")) is None  # y = p
    assert ed.decode((1 | 1 << 255).to_bytes(32, "little")) is None  # x = -0
    assert ed.decode((1).to_bytes(32, "little")) == ed.IDENTITY
    with pytest.raises(ValueError):
        ed.decode(bytes(31))


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=32, max_size=32))
@example(data=bytes(32))
@example(data=b"\xff" * 32)
@example(data=(2**255 - 20).to_bytes(32, "little"))
def test_has_prime_order_never_raises_and_agrees_with_plain_scalar_multiplication(
    data: bytes,
) -> None:
    point = ed.decode(data)
    expected = (
        point is not None and not ed.is_identity(point) and ed.is_identity(ed.mul(ed.L, point))
    )
    assert ed.has_prime_order(data) is expected
    if point is not None:
        assert ed.decode(ed.encode(point)) is not None
        assert ed.equal(ed.add(point, ed.negate(point)), ed.IDENTITY)
