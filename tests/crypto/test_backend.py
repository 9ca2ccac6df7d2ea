"""The crypto backend's contract, whichever runtime chose it.

On CPython this is pyca (``_pyca``); in Pyodide (tests/pyodide/run_core_tests.mjs) it is
noble through the FFI (``_noble``).  Both must give the RFC and FIPS answers and raise the
same exceptions: RemoteProtocolError for hostile input, ValueError for our own misuse.
"""

import ast
import os
import sys
from pathlib import Path

import pytest

from zmesh.crypto import backend
from zmesh.errors import RemoteProtocolError

h = bytes.fromhex
CRYPTO = Path(backend.__file__).parent


def _public_names(module: Path) -> set[str]:
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def test_both_backends_expose_the_same_api() -> None:
    assert _public_names(CRYPTO / "_pyca.py") == _public_names(CRYPTO / "_noble.py")


def test_the_runtime_picks_its_backend() -> None:
    expected = "noble" if sys.platform == "emscripten" else "pyca"
    assert expected == backend.NAME


def test_chacha20_rfc8439_keystream_from_block_one() -> None:
    # RFC 8439, appendix A.1, test vector 2: the zero key and nonce at block counter 1.
    keystream = backend.chacha20_xor(bytes(32), bytes(12), bytes(64))
    assert keystream == h(
        "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
        "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
    )
    data = os.urandom(8160)
    key, nonce = os.urandom(32), os.urandom(12)
    assert backend.chacha20_xor(key, nonce, backend.chacha20_xor(key, nonce, data)) == data
    assert backend.chacha20_xor(key, nonce, b"") == b""


def test_aead_rfc8439_section_2_8_2() -> None:
    key, nonce = bytes(range(0x80, 0xA0)), h("070000004041424344454647")
    ad = h("50515253c0c1c2c3c4c5c6c7")
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    sealed = backend.aead_seal(key, nonce, plaintext, ad)
    assert sealed[-16:] == h("1ae10b594f09e26a7e902ecbd0600691")
    assert sealed[:16] == h("d31a8d34648e60db7b86afbc53ef7ec2")
    assert backend.aead_open(key, nonce, sealed, ad) == plaintext
    assert backend.aead_open(key, nonce, backend.aead_seal(key, nonce, b"", b""), b"") == b""


@pytest.mark.parametrize("which", ["ciphertext", "tag", "ad", "short"])
def test_aead_rejects_tampering_as_a_remote_error(which: str) -> None:
    key, nonce, ad = os.urandom(32), os.urandom(12), b"header"
    sealed = bytearray(backend.aead_seal(key, nonce, b"payload", ad))
    if which == "ciphertext":
        sealed[0] ^= 1
    elif which == "tag":
        sealed[-1] ^= 0x80
    elif which == "ad":
        ad = b"Header"
    else:
        sealed = sealed[:15]
    with pytest.raises(RemoteProtocolError):
        backend.aead_open(key, nonce, bytes(sealed), ad)


def test_x25519_rfc7748_section_6_1() -> None:
    alice = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_pk = backend.x25519_public(alice)
    bob_pk = backend.x25519_public(bob)
    assert alice_pk == h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert bob_pk == h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert backend.x25519(alice, bob_pk) == backend.x25519(bob, alice_pk) == shared
    assert backend.X25519Key(alice).exchange(bob_pk) == shared


@pytest.mark.parametrize(
    "point",
    [
        "00" * 32,
        "01" + "00" * 31,
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",  # order 8
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",  # order 8
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p, i.e. 0
    ],
)
def test_x25519_low_order_points_are_remote_errors(point: str) -> None:
    with pytest.raises(RemoteProtocolError):
        backend.x25519(os.urandom(32), h(point))
    with pytest.raises(RemoteProtocolError):
        backend.X25519Key(os.urandom(32)).exchange(h(point))


def test_x25519_wrong_length_peer_key_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        backend.x25519(os.urandom(32), bytes(31))
    with pytest.raises(RemoteProtocolError):
        backend.X25519Key(os.urandom(32)).exchange(os.urandom(33))


def test_x25519_generate_draws_fresh_keys() -> None:
    a, b = backend.x25519_generate(), backend.x25519_generate()
    assert len(a) == len(b) == 32
    assert a != b


def test_ed25519_rfc8032_test_1() -> None:
    seed = h("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    pk = backend.ed25519_public(seed)
    assert pk == h("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = backend.ed25519_sign(seed, b"")
    assert sig == h(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert backend.ed25519_verify(pk, sig, b"")
    assert not backend.ed25519_verify(pk, sig, b"x")
    assert not backend.ed25519_verify(pk, sig[:63] + bytes([sig[63] ^ 1]), b"")
    assert not backend.ed25519_verify(pk[:31], sig, b"")
    assert not backend.ed25519_verify(pk, sig[:63], b"")


def test_mldsa44_sign_verify_with_context() -> None:
    seed = bytes(range(32))
    pk = backend.mldsa44_public(seed)
    assert len(pk) == 1312
    sig = backend.mldsa44_sign(seed, b"message", b"zmesh ctx")
    assert len(sig) == 2420
    assert backend.mldsa44_verify(pk, sig, b"message", b"zmesh ctx")
    assert not backend.mldsa44_verify(pk, sig, b"message", b"other ctx")
    assert not backend.mldsa44_verify(pk, sig, b"Message", b"zmesh ctx")
    assert not backend.mldsa44_verify(pk, sig[:-1], b"message", b"zmesh ctx")
    assert not backend.mldsa44_verify(pk[:-1], sig, b"message", b"zmesh ctx")
    assert not backend.mldsa44_verify(pk, sig, b"message", bytes(256))
    with pytest.raises(ValueError):
        backend.mldsa44_sign(seed, b"message", bytes(256))


@pytest.mark.skipif(backend.NAME != "noble", reason="pyca signs ML-DSA in hedged mode")
def test_noble_signs_mldsa_deterministically() -> None:
    seed = os.urandom(32)
    assert backend.mldsa44_sign(seed, b"m", b"c") == backend.mldsa44_sign(seed, b"m", b"c")


def test_mldsa44_deterministic_signing_is_a_function_of_key_and_message() -> None:
    seed = os.urandom(32)
    pk = backend.mldsa44_public(seed)
    sig = backend.mldsa44_sign_deterministic(seed, b"message", b"zmesh ctx")
    assert sig == backend.mldsa44_sign_deterministic(seed, b"message", b"zmesh ctx")
    assert sig != backend.mldsa44_sign_deterministic(seed, b"message", b"other ctx")
    assert backend.mldsa44_verify(pk, sig, b"message", b"zmesh ctx")
    assert not backend.mldsa44_verify(pk, sig, b"message", b"other ctx")
    with pytest.raises(ValueError):
        backend.mldsa44_sign_deterministic(seed, b"message", bytes(256))


def test_mlkem768_round_trip_and_malformed_input() -> None:
    key = backend.MLKEM768Key(bytes(range(64)))
    assert len(key.public) == 1184
    assert backend.MLKEM768Key(bytes(range(64))).public == key.public
    ss, ct = backend.mlkem768_encaps_random(key.public)
    assert len(ss) == 32 and len(ct) == 1088
    assert key.decaps(ct) == ss
    forged = key.decaps(bytes(1088))  # implicit rejection: a key, not an error
    assert len(forged) == 32 and forged != ss
    for bad_ct in (bytes(1087), bytes(1089), b""):
        with pytest.raises(RemoteProtocolError):
            key.decaps(bad_ct)
    for bad_ek in (key.public[:-1], key.public + b"\x00", b"\xff\xff" + key.public[2:]):
        with pytest.raises(RemoteProtocolError):
            backend.mlkem768_encaps_random(bad_ek)


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("x25519_public", (bytes(31),)),
        ("X25519Key", (bytes(33),)),
        ("MLKEM768Key", (bytes(63),)),
        ("chacha20_xor", (bytes(31), bytes(12), b"data")),
        ("chacha20_xor", (bytes(32), bytes(11), b"data")),
        ("aead_seal", (bytes(31), bytes(12), b"", b"")),
        ("aead_seal", (bytes(32), bytes(13), b"", b"")),
        ("ed25519_public", (bytes(31),)),
        ("ed25519_sign", (bytes(33), b"m")),
        ("mldsa44_public", (bytes(31),)),
        ("mldsa44_sign", (bytes(31), b"m", b"")),
        ("mldsa44_sign_deterministic", (bytes(31), b"m", b"")),
    ],
)
def test_our_own_misuse_is_a_value_error(call: str, args: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError):
        getattr(backend, call)(*args)
