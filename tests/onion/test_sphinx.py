"""Circuit setup: the Sphinx-like header, CREATED confirmation, MACs, replay, obliviousness."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmesh.crypto import xwing
from zmesh.errors import CloseCode, RemoteProtocolError
from zmesh.onion import sphinx
from zmesh.onion.geometry import Geometry
from zmesh.onion.keyring import OnionKeyRing
from zmesh.rng import DeterministicRng

GEOMETRY = Geometry()


def make_relays(n: int, seed: int = 1) -> tuple[list[sphinx.PathHop], list[xwing.PrivateKey]]:
    rng = DeterministicRng(seed, b"relays")
    keys = [xwing.PrivateKey(rng.bytes(32)) for _ in range(n)]
    hops = [sphinx.PathHop(rng.bytes(32), 100 + i, k.public) for i, k in enumerate(keys)]
    return hops, keys


def walk(header: bytes, keys: list[xwing.PrivateKey]) -> list[sphinx.Forward | sphinx.Final]:
    results: list[sphinx.Forward | sphinx.Final] = []
    for key in keys:
        result = sphinx.unwrap_setup_header(GEOMETRY, key, header)
        results.append(result)
        if isinstance(result, sphinx.Forward):
            header = result.header
    return results


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_hop_unwraps_and_routes(n: int) -> None:
    path, keys = make_relays(n)
    state = sphinx.build_setup_header(GEOMETRY, path, DeterministicRng(n))
    assert len(state.header) == GEOMETRY.header_size
    results = walk(state.header, keys)
    for i, result in enumerate(results[:-1]):
        assert isinstance(result, sphinx.Forward)
        assert result.next_node_id == path[i + 1].node_id
        assert result.next_epoch == path[i + 1].epoch
        assert len(result.header) == GEOMETRY.header_size
        assert result.keys == state.hop_keys[i]
    assert isinstance(results[-1], sphinx.Final)
    assert results[-1].keys == state.hop_keys[-1]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_created_confirms_every_hop(n: int) -> None:
    path, keys = make_relays(n)
    rng = DeterministicRng(5)
    state = sphinx.build_setup_header(GEOMETRY, path, rng)
    results = walk(state.header, keys)
    reply = rng.bytes(GEOMETRY.created_size)
    for result in reversed(results):
        reply = sphinx.wrap_created(GEOMETRY, result.keys, result.confirm_tag, reply)
        assert len(reply) == GEOMETRY.created_size
    sphinx.verify_created(GEOMETRY, state, reply)


def test_created_from_a_hop_without_keys_fails() -> None:
    path, keys = make_relays(3)
    rng = DeterministicRng(6)
    state = sphinx.build_setup_header(GEOMETRY, path, rng)
    results = walk(state.header, keys)
    # the middle hop answers with a made-up tag instead of its real one
    reply = rng.bytes(GEOMETRY.created_size)
    reply = sphinx.wrap_created(GEOMETRY, results[2].keys, results[2].confirm_tag, reply)
    reply = sphinx.wrap_created(GEOMETRY, results[1].keys, bytes(32), reply)
    reply = sphinx.wrap_created(GEOMETRY, results[0].keys, results[0].confirm_tag, reply)
    with pytest.raises(RemoteProtocolError, match="hop 2"):
        sphinx.verify_created(GEOMETRY, state, reply)
    with pytest.raises(RemoteProtocolError):
        sphinx.verify_created(GEOMETRY, state, reply[:-1])


@pytest.mark.parametrize("hop", [0, 1, 2])
@pytest.mark.parametrize("region", ["ct", "gamma", "beta_start", "beta_end"])
def test_tampering_with_any_layer_breaks_its_mac(hop: int, region: str) -> None:
    path, keys = make_relays(3)
    state = sphinx.build_setup_header(GEOMETRY, path, DeterministicRng(7))
    header = state.header
    for key in keys[:hop]:
        result = sphinx.unwrap_setup_header(GEOMETRY, key, header)
        assert isinstance(result, sphinx.Forward)
        header = result.header
    C, M = GEOMETRY.kem_ct_size, GEOMETRY.mac_size
    pos = {"ct": 5, "gamma": C + 3, "beta_start": C + M, "beta_end": len(header) - 1}[region]
    bad = bytearray(header)
    bad[pos] ^= 0x01
    with pytest.raises(RemoteProtocolError):
        sphinx.unwrap_setup_header(GEOMETRY, keys[hop], bytes(bad))


def test_wrong_key_fails_mac() -> None:
    path, keys = make_relays(2)
    state = sphinx.build_setup_header(GEOMETRY, path, DeterministicRng(8))
    with pytest.raises(RemoteProtocolError) as err:
        sphinx.unwrap_setup_header(GEOMETRY, keys[1], state.header)
    assert err.value.code == CloseCode.AUTH


@pytest.mark.parametrize("delta", [-GEOMETRY.header_size, -1, 1, 1000])
def test_truncated_or_oversized_header_rejected(delta: int) -> None:
    path, keys = make_relays(1)
    header = sphinx.build_setup_header(GEOMETRY, path, DeterministicRng(9)).header
    data = header[:delta] if delta < 0 else header + bytes(delta)
    with pytest.raises(RemoteProtocolError):
        sphinx.unwrap_setup_header(GEOMETRY, keys[0], data)


def test_path_length_bounds() -> None:
    path, _ = make_relays(GEOMETRY.max_hops + 1)
    with pytest.raises(ValueError):
        sphinx.build_setup_header(GEOMETRY, path, DeterministicRng(1))
    with pytest.raises(ValueError):
        sphinx.build_setup_header(GEOMETRY, [], DeterministicRng(1))


def test_replayed_setup_packet_is_rejected() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0)
    epoch, pk = ring.current(0.0)
    hop = sphinx.PathHop(bytes(32), epoch, pk)
    state = sphinx.build_setup_header(GEOMETRY, [hop], DeterministicRng(4))
    first = sphinx.unwrap_setup_header(GEOMETRY, ring.epoch_key(epoch).key, state.header)
    assert not ring.epoch_key(epoch).replay.seen(first.keys.replay_tag)
    ring.epoch_key(epoch).replay.record(first.keys.replay_tag)
    again = sphinx.unwrap_setup_header(GEOMETRY, ring.epoch_key(epoch).key, state.header)
    assert ring.epoch_key(epoch).replay.seen(again.keys.replay_tag)


def test_epoch_keys_rotate_and_old_keys_are_deleted() -> None:
    ring = OnionKeyRing(DeterministicRng(3), now=0.0, epoch_length=100.0)
    e0, pk0 = ring.current(0.0)
    ring.epoch_key(e0).replay.record(b"t" * 32)
    ring.rotate(150.0)
    e1, pk1 = ring.current(150.0)
    assert (e0, e1) == (0, 1) and pk0 != pk1
    assert ring.epochs() == [0, 1]  # grace: the previous epoch still works
    ring.rotate(250.0)
    assert ring.epochs() == [1, 2]
    with pytest.raises(RemoteProtocolError):
        ring.epoch_key(e0)  # the key, and the epoch's tags with it


class _Recorder:
    """Records which primitive ran on how many bytes: a hop's observable work."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []


def _trace_unwrap(
    monkeypatch: pytest.MonkeyPatch, key: xwing.PrivateKey, header: bytes
) -> list[tuple[str, int]]:
    rec = _Recorder()
    real_hash, real_extract = sphinx.keyed_hash, sphinx.hkdf_extract
    real_xor = sphinx.backend.chacha20_xor

    def keyed_hash(k: bytes, data: bytes, size: int = 32) -> bytes:
        rec.calls.append(("blake2b", len(data)))
        return real_hash(k, data, size)

    def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
        rec.calls.append(("hkdf_extract", len(ikm)))
        return real_extract(salt, ikm)

    def xor(k: bytes, nonce: bytes, data: bytes) -> bytes:
        rec.calls.append(("chacha20", len(data)))
        return real_xor(k, nonce, data)

    with monkeypatch.context() as m:
        m.setattr(sphinx, "keyed_hash", keyed_hash)
        m.setattr(sphinx, "hkdf_extract", hkdf_extract)
        m.setattr(sphinx.backend, "chacha20_xor", xor)
        sphinx.unwrap_setup_header(GEOMETRY, key, header)
    return rec.calls


def test_a_hop_cannot_tell_its_position_or_the_path_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Header sizes and the sequence of work are identical at every position, 2 or 3 hops."""
    traces = set()
    sizes = set()
    for n in (2, 3):
        path, keys = make_relays(n, seed=n)
        header = sphinx.build_setup_header(GEOMETRY, path, DeterministicRng(n)).header
        for key in keys:
            sizes.add(len(header))
            traces.add(tuple(_trace_unwrap(monkeypatch, key, header)))
            result = sphinx.unwrap_setup_header(GEOMETRY, key, header)
            if isinstance(result, sphinx.Forward):
                sizes.add(len(result.header))
                header = result.header
    assert sizes == {GEOMETRY.header_size}
    assert len(traces) == 1, traces


def test_final_hop_sees_no_path_length_in_its_padding() -> None:
    """After decryption the final hop's beta is uniformly random-looking for 1..4 hops."""
    for n in range(1, 5):
        path, keys = make_relays(n, seed=10 + n)
        header = sphinx.build_setup_header(GEOMETRY, path, DeterministicRng(n)).header
        for key in keys[:-1]:
            result = sphinx.unwrap_setup_header(GEOMETRY, key, header)
            assert isinstance(result, sphinx.Forward)
            header = result.header
        C, M = GEOMETRY.kem_ct_size, GEOMETRY.mac_size
        keys_n = sphinx.derive_hop_keys(GEOMETRY, keys[-1].decaps(header[:C]))
        plain = sphinx._xor(header[C + M :], sphinx._prg(keys_n.prg, GEOMETRY.beta_size))
        body = plain[GEOMETRY.routing_size :]
        # no run of zero bytes reveals where the filler starts
        assert body.count(0) < len(body) // 64, n


_FUZZ_PATH, _FUZZ_KEYS = make_relays(2, seed=99)
_FUZZ_HEADER = sphinx.build_setup_header(GEOMETRY, _FUZZ_PATH, DeterministicRng(99)).header


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, GEOMETRY.header_size - 1), st.integers(0, 255)), max_size=8)
)
def test_fuzz_mutated_header_only_raises_remote_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_FUZZ_HEADER)
    for pos, value in edits:
        data[pos] = value
    try:
        result = sphinx.unwrap_setup_header(GEOMETRY, _FUZZ_KEYS[0], bytes(data))
    except RemoteProtocolError:
        assert bytes(data) != _FUZZ_HEADER
    else:
        assert bytes(data) == _FUZZ_HEADER
        assert isinstance(result, sphinx.Forward)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.large_base_example, HealthCheck.too_slow],
)
@given(st.binary(min_size=GEOMETRY.header_size, max_size=GEOMETRY.header_size))
def test_fuzz_random_header_only_raises_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        sphinx.unwrap_setup_header(GEOMETRY, _FUZZ_KEYS[0], data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=GEOMETRY.header_size + 2))
def test_fuzz_unwrap_any_length(data: bytes) -> None:
    if len(data) == GEOMETRY.header_size:
        return  # covered above; every other length must be refused outright
    with pytest.raises(RemoteProtocolError):
        sphinx.unwrap_setup_header(GEOMETRY, _FUZZ_KEYS[0], data)
