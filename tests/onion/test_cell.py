"""Data cells: layering, end-to-end authentication, tamper detection without tagging."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import RemoteProtocolError
from zmesh.onion import cell, sphinx
from zmesh.onion.geometry import AUTH_SIZE, Geometry
from zmesh.rng import DeterministicRng

GEOMETRY = Geometry()


def hop_keys(n: int, seed: int = 1) -> list[sphinx.HopKeys]:
    rng = DeterministicRng(seed, b"cells")
    return [sphinx.derive_hop_keys(GEOMETRY, rng.bytes(32)) for _ in range(n)]


def forward_through(hops: list[sphinx.HopKeys], counter: int, c: bytes) -> bytes:
    for keys in hops[:-1]:
        c = cell.relay_forward(GEOMETRY, keys, counter, c)
        assert len(c) == GEOMETRY.cell_size
    return cell.endpoint_open(GEOMETRY, hops[-1], counter, c)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_forward_and_backward_round_trip(n: int) -> None:
    hops = hop_keys(n)
    rng = DeterministicRng(n)
    for counter in range(3):
        payload = rng.bytes(GEOMETRY.cell_payload_size)
        sealed = cell.client_seal(GEOMETRY, hops, counter, payload)
        assert len(sealed) == GEOMETRY.cell_size
        assert forward_through(hops, counter, sealed) == payload
        back = cell.endpoint_seal(GEOMETRY, hops[-1], counter, payload)
        for keys in reversed(hops[:-1]):
            back = cell.relay_backward(GEOMETRY, keys, counter, back)
            assert len(back) == GEOMETRY.cell_size
        assert cell.client_open(GEOMETRY, hops, counter, back) == payload


def test_counter_changes_every_cell() -> None:
    hops = hop_keys(3)
    payload = bytes(GEOMETRY.cell_payload_size)
    cells = {cell.client_seal(GEOMETRY, hops, i, payload) for i in range(16)}
    assert len(cells) == 16
    sealed = cell.client_seal(GEOMETRY, hops, 5, payload)
    with pytest.raises(RemoteProtocolError):
        forward_through(hops, 6, sealed)  # a desynchronised counter never authenticates


def _bits_differ(a: bytes, b: bytes) -> int:
    return bin(int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).count("1")


POSITIONS = [0, 1, 31, 32, 33, 100, GEOMETRY.cell_size // 2, GEOMETRY.cell_size - 1]


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("at_hop", [0, 1, 2])
def test_flipped_bit_is_detected_and_leaves_no_trace(pos: int, at_hop: int) -> None:
    """A bit flipped before hop ``at_hop`` garbles the whole plaintext the endpoint sees."""
    hops = hop_keys(3)
    payload = DeterministicRng(pos).bytes(GEOMETRY.cell_payload_size)
    c = cell.client_seal(GEOMETRY, hops, 0, payload)
    for keys in hops[:at_hop]:
        c = cell.relay_forward(GEOMETRY, keys, 0, c)
    tampered = bytearray(c)
    tampered[pos] ^= 0x04
    c = bytes(tampered)
    for keys in hops[at_hop:]:
        c = cell.relay_forward(GEOMETRY, keys, 0, c)
    # what the endpoint would read: detected, and unrelated to the original plaintext
    with pytest.raises(RemoteProtocolError):
        cell._authenticate(c)
    original = bytes(AUTH_SIZE) + payload
    total = GEOMETRY.cell_size * 8
    assert 0.45 * total < _bits_differ(original, c) < 0.55 * total
    same_bytes = sum(x == y for x, y in zip(original, c, strict=True))
    assert same_bytes < GEOMETRY.cell_size // 64  # ~1/256 by chance, nothing more


@pytest.mark.parametrize("pos", POSITIONS)
def test_flipped_bit_backward_is_detected_by_the_client(pos: int) -> None:
    hops = hop_keys(3)
    payload = bytes(GEOMETRY.cell_payload_size)
    back = cell.endpoint_seal(GEOMETRY, hops[-1], 0, payload)
    back = cell.relay_backward(GEOMETRY, hops[1], 0, back)
    tampered = bytearray(back)
    tampered[pos] ^= 0x80
    back = cell.relay_backward(GEOMETRY, hops[0], 0, bytes(tampered))
    with pytest.raises(RemoteProtocolError):
        cell.client_open(GEOMETRY, hops, 0, back)


def test_colluding_hops_cannot_tag_then_restore() -> None:
    """Hop 1 flips a bit; hop 3 cannot undo it: hop 2's layer diffused it over the cell."""
    hops = hop_keys(3)
    payload = DeterministicRng(3).bytes(GEOMETRY.cell_payload_size)
    c = cell.relay_forward(GEOMETRY, hops[0], 0, cell.client_seal(GEOMETRY, hops, 0, payload))
    honest = cell.relay_forward(GEOMETRY, hops[1], 0, c)
    tagged = bytearray(c)
    tagged[200] ^= 1
    seen_by_hop3 = cell.relay_forward(GEOMETRY, hops[1], 0, bytes(tagged))
    # hop 3 sees a cell unrelated to the honest one: no flipped bit to find and undo
    assert 0.45 < _bits_differ(honest, seen_by_hop3) / (GEOMETRY.cell_size * 8) < 0.55


@pytest.mark.parametrize("size", [0, GEOMETRY.cell_size - 1, GEOMETRY.cell_size + 1])
def test_wrong_length_cells_are_rejected(size: int) -> None:
    hops = hop_keys(2)
    data = bytes(size)
    for fn in (cell.relay_forward, cell.relay_backward, cell.endpoint_open):
        with pytest.raises(RemoteProtocolError):
            fn(GEOMETRY, hops[0], 0, data)
    with pytest.raises(RemoteProtocolError):
        cell.client_open(GEOMETRY, hops, 0, data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.integers(0, 2**32))
def test_fuzz_cells_only_raise_remote_errors(prefix: bytes, counter: int) -> None:
    hops = hop_keys(2)
    data = (prefix * (GEOMETRY.cell_size // max(1, len(prefix)) + 1))[: GEOMETRY.cell_size]
    if len(data) != GEOMETRY.cell_size:
        data = bytes(GEOMETRY.cell_size)
    with pytest.raises(RemoteProtocolError):
        cell.endpoint_open(GEOMETRY, hops[1], counter, data)
    with pytest.raises(RemoteProtocolError):
        cell.client_open(GEOMETRY, hops, counter, data)
