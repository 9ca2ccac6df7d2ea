"""The core circuit pool: isolation, least-loaded reuse, dirtiness, stale closing, bounds."""

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError
from zmesh.health.avoid import Avoidance
from zmesh.identity import Flags
from zmesh.onion.paths import NoPathError
from zmesh.onion.pool import BuildPath, CircuitPool, PooledCircuit, UseCircuit
from zmesh.rng import DeterministicRng

ME = b"me"


@dataclass(frozen=True)
class Relay:
    node_id: bytes
    flags: Flags


RELAYS = [Relay(b"exit%d" % i, Flags.RELAY | Flags.EXIT) for i in range(2)] + [
    Relay(b"relay%d" % i, Flags.RELAY) for i in range(4)
]
LINKED = {b"relay0", b"relay1"}


class Harness:
    """Plays the driver: every BuildPath is 'built' at once with the next circuit id."""

    def __init__(self, pool: CircuitPool) -> None:
        self.pool = pool
        self.next_cid = 1
        self.closed: list[int] = []

    def open(self, key: bytes, now: float) -> PooledCircuit:
        decision = self.pool.request(key, now, RELAYS, LINKED, ME)
        if isinstance(decision, UseCircuit):
            return decision.circuit
        assert isinstance(decision, BuildPath) and decision.key == key
        circuit = self.pool.built(key, self.next_cid, [d.node_id for d in decision.path], now)
        self.next_cid += 1
        self.drain()
        return circuit

    def drain(self) -> list[int]:
        got = self.pool.circuits_to_close()
        self.closed += got
        return got


def pool(**kw: Any) -> Harness:
    return Harness(CircuitPool(DeterministicRng(1, b"pool"), **kw))


def test_a_key_spreads_streams_least_loaded_over_its_circuits() -> None:
    h = pool(circuits_per_key=2)
    a, b = h.open(b"k", 0), h.open(b"k", 1)
    assert a is not b and a.streams == b.streams == 1
    assert h.open(b"k", 2) is a  # ties go to the oldest
    assert h.open(b"k", 3) is b
    h.pool.stream_closed(a, 4)
    assert h.open(b"k", 5) is a and (a.streams, b.streams) == (2, 2)
    assert not h.drain()


def test_keys_never_share_a_circuit() -> None:
    h = pool(circuits_per_key=1)
    a, b = h.open(b"alice", 0), h.open(b"bob", 0)
    assert a is not b
    assert h.open(b"alice", 1) is a and h.open(b"bob", 1) is b


def test_a_dirty_circuit_takes_no_new_streams_and_closes_when_idle() -> None:
    h = pool(circuits_per_key=1, max_dirtiness=10)
    a = h.open(b"k", 0)
    assert h.pool.get_timer() == 10
    h.pool.handle_timer(9.9)
    assert not h.drain() and h.open(b"k", 9.9) is a  # still fresh: two streams now
    b = h.open(b"k", 10)  # dirty: a new one, a retires but keeps its streams
    assert b is not a and a.retired and h.pool.get_timer() == 20
    assert not h.drain()
    h.pool.stream_closed(a, 11)
    assert not h.drain()
    h.pool.stream_closed(a, 12)
    assert h.drain() == [a.cid]
    h.pool.stream_closed(a, 13)  # a stale report for a closed circuit: ignored
    assert not h.drain() and h.pool.circuit_ids() == [b.cid]


def test_the_timer_closes_a_dirty_circuit_without_streams_once() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    h.pool.stream_closed(a, 1)
    assert not h.drain()  # fresh circuits stay open for the next stream
    h.pool.handle_timer(10)
    assert h.drain() == [a.cid]
    assert h.pool.get_timer() is None and h.pool.keys() == []
    h.pool.handle_timer(20)
    assert not h.drain()


def test_a_stream_ending_after_dirtiness_closes_the_circuit_before_the_timer() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    h.pool.stream_closed(a, 15)
    assert h.drain() == [a.cid]


def test_forget_closes_at_once_and_suspects_the_path_after_the_guard_if_failed() -> None:
    h = pool(circuits_per_key=1)
    a = h.open(b"k", 0)
    h.pool.forget(a, 1, failed=False)
    assert h.drain() == [a.cid] and h.pool.suspects(1) == []
    b = h.open(b"k", 2)
    assert b is not a
    h.pool.forget(b, 3, failed=True)
    assert h.drain() == [b.cid]
    assert h.pool.suspects(3) == b.path[1:]
    assert h.pool.suspects(3 + 2 * h.pool.avoidance.half_life) == []  # suspicion decays
    h.pool.forget(b, 4, failed=False)  # twice: nothing more to close
    assert not h.drain()


def test_suspects_steer_the_next_path() -> None:
    h = pool(circuits_per_key=1)
    a = h.open(b"k", 0)
    h.pool.forget(a, 0, failed=True)
    for t in range(20):
        b = h.open(b"k%d" % t, 1)
        assert not set(a.path[1:]) & set(b.path)


def test_a_circuit_the_node_closed_is_dropped_without_a_close() -> None:
    h = pool(circuits_per_key=1)
    a = h.open(b"k", 0)
    h.pool.circuit_closed(a.cid)
    h.pool.circuit_closed(a.cid)
    assert not h.drain() and h.pool.keys() == [] and h.pool.get_timer() is None
    assert h.open(b"k", 1) is not a


def test_concurrent_builds_for_one_key_retire_the_oldest() -> None:
    h = pool(circuits_per_key=2)
    decisions = [h.pool.request(b"k", 0, RELAYS, LINKED, ME) for _ in range(4)]
    circuits = []
    for cid, d in enumerate(decisions, 1):
        assert isinstance(d, BuildPath)
        circuits.append(h.pool.built(b"k", cid, [r.node_id for r in d.path], 0))
    assert [c.retired for c in circuits] == [True, True, False, False]
    assert not h.drain()  # each carries its stream
    for c in circuits:
        h.pool.stream_closed(c, 1)
    assert h.drain() == [1, 2]


def test_a_circuit_id_is_held_once() -> None:
    h = pool()
    h.open(b"k", 0)
    with pytest.raises(LocalProtocolError):
        h.pool.built(b"other", 1, [b"relay0", b"relay2", b"exit0"], 0)


def test_no_path_is_an_error_only_when_a_build_is_needed() -> None:
    p = CircuitPool(DeterministicRng(1), circuits_per_key=1)
    with pytest.raises(NoPathError):
        p.request(b"k", 0, [], set(), ME)
    c = p.built(b"k", 7, [b"a", b"b", b"c"], 0)
    assert p.request(b"k", 1, [], set(), ME) == UseCircuit(c)


@pytest.mark.parametrize(
    "kw",
    [{"max_dirtiness": 0}, {"circuits_per_key": 0}, {"max_keys": 0}],
)
def test_bad_limits_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        CircuitPool(DeterministicRng(1), **kw)


def test_many_isolation_keys_evict_the_least_recently_used() -> None:
    h = pool(max_keys=8, circuits_per_key=2)
    first = h.open(b"keep", 0)
    for i in range(5000):
        circuit = h.open(b"attacker%d" % i, 0)
        h.pool.stream_closed(circuit, 0)
        if i % 4 == 0:
            assert h.open(b"keep", 0) is not None  # used now and then: never evicted
    keys = h.pool.keys()
    assert len(keys) == 8 and b"keep" in keys
    assert len(h.pool.circuit_ids()) <= 8 * 2 + 1
    assert first.cid in h.pool.circuit_ids()
    # Every evicted circuit without streams was closed, each once.
    assert len(h.closed) == len(set(h.closed)) >= 5000 - 16


def test_an_evicted_key_s_busy_circuit_closes_when_its_stream_ends() -> None:
    h = pool(max_keys=1)
    a = h.open(b"a", 0)
    h.open(b"b", 0)
    assert a.retired and not h.drain()
    h.pool.stream_closed(a, 1)
    assert h.drain() == [a.cid]


def test_suspects_are_bounded() -> None:
    p = CircuitPool(DeterministicRng(1), avoidance=Avoidance(max_entries=100))
    for i in range(10_000):
        p.suspect([b"guard", b"m%d" % i, b"x%d" % i], i * 1e-3)
    suspects = p.suspects(10.0)
    assert len(suspects) == 100
    assert suspects[-1] == b"x9999"  # the newest suspicions are kept


def test_same_seed_same_decisions() -> None:
    def run(seed: int) -> list[list[bytes]]:
        p = CircuitPool(DeterministicRng(seed, b"pool"), circuits_per_key=1)
        paths = []
        for i in range(30):
            d = p.request(b"k%d" % i, i, RELAYS, LINKED, ME)
            assert isinstance(d, BuildPath)
            paths.append([r.node_id for r in d.path])
            if i % 3 == 0:
                p.suspect(paths[-1], i)
            else:
                p.built(b"k%d" % i, i, paths[-1], i)
        return paths

    assert run(1) == run(1)
    assert run(1) != run(2)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "end", "forget", "fail", "node_closed", "timer"]),
        st.integers(0, 5),  # key, or which circuit
        st.integers(0, 30),  # time step
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_random_use_keeps_the_pool_consistent_and_bounded(ops: list[tuple[str, int, int]]) -> None:
    h = pool(max_keys=3, circuits_per_key=2, max_dirtiness=40, avoidance=Avoidance(max_entries=4))
    now = 0.0
    live: dict[int, PooledCircuit] = {}  # circuits with our streams, by cid
    streams: dict[int, int] = {}
    gone: set[int] = set()
    forgotten: set[int] = set()
    for op, n, step in ops:
        now += step
        if op == "open":
            c = h.open(b"k%d" % n, now)
            assert c.cid not in gone and not c.retired
            live[c.cid] = c
            streams[c.cid] = streams.get(c.cid, 0) + 1
        elif live:
            c = list(live.values())[n % len(live)]
            if op == "end" and streams[c.cid]:
                streams[c.cid] -= 1
                h.pool.stream_closed(c, now)
            elif op in ("forget", "fail"):
                h.pool.forget(c, now, failed=op == "fail")
                if c.cid not in gone:
                    forgotten.add(c.cid)
                gone.add(c.cid)
            elif op == "node_closed":
                h.pool.circuit_closed(c.cid)
                gone.add(c.cid)
            elif op == "timer":
                h.pool.handle_timer(now)
        closed = h.drain()
        gone.update(closed)
        for cid in closed:  # a circuit is closed only without streams, or when forgotten
            assert streams[cid] == 0 or cid in forgotten
        held = h.pool.circuit_ids()
        assert not gone & set(held)
        for cid in held:
            if live[cid].retired:
                assert live[cid].streams > 0
            assert live[cid].streams == streams[cid]
        assert len(h.pool.keys()) <= 3 and len(h.pool.suspects(now)) <= 4
        assert len(h.closed) == len(set(h.closed))
