"""The pure-Python edwards25519 arithmetic behind the Ed25519 rule (D30)."""

from hypothesis import given
from hypothesis import strategies as st

from zmesh.crypto import edwards25519 as ed

BASE = ed.encode(ed._base())
IDENTITY = b"\x01" + bytes(31)


def test_the_base_point_has_prime_order_and_the_identity_does_not() -> None:
    assert ed.has_prime_order(BASE)
    assert not ed.has_prime_order(IDENTITY)
    assert ed.is_identity(ed.mul(ed.L, ed._base()))


def test_small_order_and_mixed_order_points_are_refused() -> None:
    small = [p for p in (ed.decode(bytes([i]) + bytes(31)) for i in range(256)) if p]
    torsion = [p for p in small if ed.is_identity(ed.mul(8, p))]
    assert torsion  # the identity at least, and the order-2/4 points among the first bytes
    for t in torsion:
        assert not ed.has_prime_order(ed.encode(t))
        assert not ed.has_prime_order(ed.encode(ed.add(ed._base(), t))) or ed.is_identity(t)


def test_non_canonical_encodings_are_refused() -> None:
    y_plus_p = (1 + ed.P).to_bytes(32, "little")  # y = 1 + p: the identity, non-canonical
    assert ed.decode(y_plus_p) is None
    assert ed.decode(b"\xff" * 32) is None


@given(st.integers(1, ed.L - 1))
def test_multiples_of_the_base_point_round_trip_and_have_prime_order(k: int) -> None:
    point = ed.mul(k, ed._base())
    data = ed.encode(point)
    decoded = ed.decode(data)
    assert decoded is not None and ed.equal(decoded, point)
    assert ed.has_prime_order(data)


@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_decode_or_are_refused(data: bytes) -> None:
    point = ed.decode(data)
    assert point is None or ed.encode(point) == data
