"""The sans-I/O session pool (zmesh/circuit/pool.py): reuse per isolation key, dirtiness,
retired sessions closed with their last stream, LRU eviction of keys, bounds."""

import itertools
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zmesh.circuit.pool import MAX_DIRTINESS, MAX_KEYS, PooledSession, SessionPool
from zmesh.errors import LocalProtocolError


class Harness:
    """Plays the driver: a None from ``request`` connects the next session id at once."""

    def __init__(self, pool: SessionPool) -> None:
        self.pool = pool
        self.ids = itertools.count(1)
        self.closed: list[int] = []

    def open(self, key: bytes, now: float) -> PooledSession:
        session = self.pool.request(key, now)
        if session is None:
            session = self.pool.connected(key, next(self.ids), now)
        return session

    def drain(self) -> list[int]:
        got = self.pool.sessions_to_close()
        self.closed += got
        return got


def pool(**kw: Any) -> Harness:
    return Harness(SessionPool(**kw))


def test_defaults() -> None:
    p = SessionPool()
    assert (p.max_dirtiness, p.max_keys) == (MAX_DIRTINESS, MAX_KEYS)
    assert p.get_timer() is None and p.sessions() == [] and p.keys() == []


def test_a_key_reuses_its_session_and_counts_streams() -> None:
    h = pool()
    assert h.pool.request(b"k", 0) is None  # nothing yet: the driver connects
    a = h.pool.connected(b"k", 7, 0)
    assert (a.session_id, a.key, a.first_used, a.streams, a.retired) == (7, b"k", 0, 1, False)
    assert h.pool.request(b"k", 1) is a and h.pool.request(b"k", 2) is a
    assert a.streams == 3
    for t in (3, 4, 5):
        h.pool.stream_closed(a, t)
    assert a.streams == 0 and not h.drain()  # fresh: kept for the next stream
    assert h.pool.request(b"k", 6) is a and h.pool.sessions() == [a]


def test_different_keys_never_share_a_session() -> None:
    h = pool()
    a, b = h.open(b"alice", 0), h.open(b"bob", 0)
    assert a is not b and a.session_id != b.session_id
    assert h.open(b"alice", 1) is a and h.open(b"bob", 1) is b
    assert (a.streams, b.streams) == (2, 2)
    h.pool.forget(a)
    assert h.drain() == [a.session_id]
    assert h.open(b"bob", 2) is b  # bob is not touched by alice's failure
    assert h.open(b"alice", 2) is not a


def test_a_dirty_session_takes_no_new_streams_and_closes_with_its_last() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    assert h.pool.get_timer() == 10
    assert h.open(b"k", 9.9) is a  # still fresh: two streams now
    b = h.open(b"k", 10)  # dirty: a new one; a retires but keeps its streams
    assert b is not a and a.retired and not b.retired
    assert h.pool.get_timer() == 20 and not h.drain()
    assert {s.session_id for s in h.pool.sessions()} == {a.session_id, b.session_id}
    h.pool.stream_closed(a, 11)
    assert not h.drain()
    h.pool.stream_closed(a, 12)
    assert h.drain() == [a.session_id]
    assert h.pool.sessions() == [b] and h.pool.keys() == [b"k"]


def test_the_timer_closes_a_dirty_session_without_streams_at_once() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    busy = h.open(b"busy", 5)
    h.pool.stream_closed(a, 1)
    assert not h.drain() and h.pool.get_timer() == 10
    h.pool.handle_timer(9.99)
    assert not h.drain() and not a.retired
    h.pool.handle_timer(10)
    assert h.drain() == [a.session_id] and a.retired
    assert h.pool.get_timer() == 15 and h.pool.keys() == [b"busy"]
    h.pool.handle_timer(15)
    assert not h.drain() and busy.retired  # it carries a stream: retired, still open
    assert h.pool.get_timer() is None and h.pool.keys() == []
    h.pool.handle_timer(100)
    assert not h.drain()
    h.pool.stream_closed(busy, 101)
    assert h.drain() == [busy.session_id] and h.pool.sessions() == []


def test_a_stream_ending_after_dirtiness_closes_the_session_before_the_timer() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    h.pool.stream_closed(a, 15)
    assert h.drain() == [a.session_id] and h.pool.sessions() == []
    b = h.open(b"k", 15)
    h.open(b"k", 16)
    h.pool.stream_closed(b, 30)  # dirty, one stream left: retired, not closed
    assert b.retired and not h.drain() and h.pool.keys() == []


def test_keys_beyond_max_keys_evict_the_least_recently_used() -> None:
    h = pool(max_keys=2)
    a = h.open(b"a", 0)
    b = h.open(b"b", 1)
    h.pool.stream_closed(b, 2)  # b idle, a busy
    assert h.open(b"a", 3) is a  # a is now the most recently used
    c = h.open(b"c", 4)
    assert h.pool.keys() == [b"a", b"c"]
    assert b.retired and h.drain() == [b.session_id]  # evicted without streams: at once
    d = h.open(b"d", 5)
    assert a.retired and not h.drain()  # evicted with streams: closes with its last
    assert h.pool.keys() == [b"c", b"d"] and not c.retired and not d.retired
    assert h.open(b"a", 6) is not a  # an evicted key gets a new session
    h.pool.stream_closed(a, 7)
    assert not h.drain()
    h.pool.stream_closed(a, 8)
    assert h.drain() == [a.session_id]


def test_many_isolation_keys_keep_the_pool_bounded() -> None:
    """An attacker opening streams under 5,000 keys: the pool holds at most max_keys
    fresh sessions, closes each evicted one once, and never evicts a key in use."""
    h = pool(max_keys=8)
    keep = h.open(b"keep", 0)
    for i in range(5000):
        s = h.open(b"attacker%d" % i, 0)
        h.pool.stream_closed(s, 0)
        if i % 4 == 0:
            assert h.open(b"keep", 0) is keep
        h.drain()
    keys = h.pool.keys()
    assert len(keys) == 8 and b"keep" in keys
    assert len(h.pool.sessions()) == 8
    assert len(h.closed) == len(set(h.closed)) == 5000 - 7


def test_a_race_to_connect_one_key_retires_the_older_session() -> None:
    h = pool()
    assert h.pool.request(b"k", 0) is None and h.pool.request(b"k", 0) is None
    first = h.pool.connected(b"k", 1, 0)
    second = h.pool.connected(b"k", 2, 0)
    assert first.retired and not second.retired
    assert not h.drain()  # each carries the stream that asked for it
    assert h.open(b"k", 1) is second
    h.pool.stream_closed(first, 2)
    assert h.drain() == [1]
    idle = h.pool.connected(b"j", 3, 3)
    h.pool.stream_closed(idle, 3)
    h.pool.connected(b"j", 4, 4)  # the older one carries no stream: closed at once
    assert idle.retired and h.drain() == [3]


def test_forget_closes_at_once_even_with_streams_and_only_once() -> None:
    h = pool()
    a = h.open(b"k", 0)
    h.open(b"k", 0)
    h.pool.forget(a)
    assert h.drain() == [a.session_id] and h.pool.sessions() == [] and h.pool.keys() == []
    h.pool.forget(a)
    h.pool.stream_closed(a, 1)
    assert not h.drain()
    assert h.open(b"k", 1) is not a


def test_forget_a_retired_session() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    b = h.open(b"k", 10)
    assert a.retired
    h.pool.forget(a)
    assert h.drain() == [a.session_id] and h.pool.sessions() == [b]


def test_stale_and_duplicate_stream_reports_are_ignored() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    h.pool.stream_closed(a, 1)
    h.pool.stream_closed(a, 2)  # one more than it carried
    assert a.streams == 0 and not h.drain()
    b = h.open(b"k", 10)  # a retires and closes: it carries nothing
    assert h.drain() == [a.session_id]
    h.pool.stream_closed(a, 11)  # a report for a closed session
    assert not h.drain() and b.streams == 1
    # a different object with the same id is no session of the pool's
    h.pool.stream_closed(PooledSession(b.session_id, b"k", 10, streams=1), 12)
    assert b.streams == 1
    h.pool.forget(PooledSession(b.session_id, b"k", 10))
    assert not h.drain() and h.pool.sessions() == [b]


def test_a_session_the_node_closed_is_dropped_without_a_close() -> None:
    h = pool()
    a = h.open(b"k", 0)
    h.pool.session_closed(a.session_id)
    h.pool.session_closed(a.session_id)
    h.pool.session_closed(999)
    assert not h.drain() and h.pool.keys() == [] and h.pool.sessions() == []
    assert h.pool.get_timer() is None
    b = h.open(b"k", 1)
    assert b is not a
    h.pool.stream_closed(a, 2)  # its stream's end, reported late
    assert not h.drain() and h.pool.sessions() == [b]


def test_a_retired_session_the_node_closed_is_dropped() -> None:
    h = pool(max_dirtiness=10)
    a = h.open(b"k", 0)
    b = h.open(b"k", 10)
    h.pool.session_closed(a.session_id)
    assert not h.drain() and h.pool.sessions() == [b] and h.pool.keys() == [b"k"]


def test_sessions_to_close_gives_each_id_once() -> None:
    h = pool(max_keys=1)
    a = h.open(b"a", 0)
    h.pool.stream_closed(a, 0)
    h.open(b"b", 0)
    assert h.pool.sessions_to_close() == [a.session_id]
    assert h.pool.sessions_to_close() == []


@pytest.mark.parametrize(
    "kw",
    [
        {"max_dirtiness": 0},
        {"max_dirtiness": -1.0},
        {"max_keys": 0},
        {"max_keys": -5},
    ],
)
def test_bad_limits_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="positive"):
        SessionPool(**kw)


def test_a_session_id_is_held_once() -> None:
    h = pool()
    h.pool.connected(b"k", 1, 0)
    with pytest.raises(LocalProtocolError, match="already"):
        h.pool.connected(b"k", 1, 0)
    with pytest.raises(LocalProtocolError, match="already"):
        h.pool.connected(b"other", 1, 0)
    assert len(h.pool.sessions()) == 1 and h.pool.keys() == [b"k"]


# -- the bounds under any sequence of operations ----------------------------------------------
MAX_KEYS_UNDER_TEST = 3
DIRTINESS = 20.0


class PoolMachine(RuleBasedStateMachine):
    """A driver using the pool at random; a model of the streams it placed checks it."""

    def __init__(self) -> None:
        super().__init__()
        self.h = pool(max_keys=MAX_KEYS_UNDER_TEST, max_dirtiness=DIRTINESS)
        self.now = 0.0
        self.streams: dict[int, int] = {}  # session id -> streams we placed and not ended
        self.objects: dict[int, PooledSession] = {}
        self.gone: set[int] = set()  # closed by the pool or by the node
        self.forgotten: set[int] = set()

    @rule(key=st.integers(0, 5))
    def open(self, key: int) -> None:
        s = self.h.open(b"k%d" % key, self.now)
        assert s.session_id not in self.gone and not s.retired
        assert s.key == b"k%d" % key
        self.objects[s.session_id] = s
        self.streams[s.session_id] = self.streams.get(s.session_id, 0) + 1

    @precondition(lambda self: any(self.streams.values()))
    @rule(pick=st.integers(0, 100))
    def end_stream(self, pick: int) -> None:
        busy = sorted(i for i, n in self.streams.items() if n)
        sid = busy[pick % len(busy)]
        self.streams[sid] -= 1
        self.h.pool.stream_closed(self.objects[sid], self.now)

    @precondition(lambda self: bool(self.objects))
    @rule(pick=st.integers(0, 100))
    def forget(self, pick: int) -> None:
        sid = sorted(self.objects)[pick % len(self.objects)]
        if sid not in self.gone:
            self.forgotten.add(sid)
        self.h.pool.forget(self.objects[sid])

    @precondition(lambda self: bool(self.objects))
    @rule(pick=st.integers(0, 100))
    def node_closes(self, pick: int) -> None:
        sid = sorted(self.objects)[pick % len(self.objects)]
        self.h.pool.session_closed(sid)
        self.gone.add(sid)

    @rule(step=st.sampled_from([0.0, 1.0, 5.0, DIRTINESS - 0.5, DIRTINESS, 2 * DIRTINESS]))
    def advance(self, step: float) -> None:
        self.now += step

    @rule()
    def timer(self) -> None:
        deadline = self.h.pool.get_timer()
        if deadline is not None and deadline <= self.now:
            self.h.pool.handle_timer(self.now)

    @invariant()
    def bounded_and_consistent(self) -> None:
        closed = self.h.drain()
        for sid in closed:
            # once, never after the node closed it, with streams only if forgotten
            assert sid not in self.gone
            assert self.streams[sid] == 0 or sid in self.forgotten
        self.gone.update(closed)
        assert len(self.h.closed) == len(set(self.h.closed))
        held = self.h.pool.sessions()
        fresh = [s for s in held if not s.retired]
        retired = [s for s in held if s.retired]
        assert len(fresh) <= MAX_KEYS_UNDER_TEST
        assert len(self.h.pool.keys()) == len(fresh)
        assert all(s.streams > 0 for s in retired)
        assert len(held) == len(fresh) + len([s for s in retired if s.streams])
        assert not self.gone & {s.session_id for s in held}
        for s in held:
            assert s.streams == self.streams[s.session_id]
        deadline = self.h.pool.get_timer()
        if fresh:
            assert deadline == min(s.first_used for s in fresh) + DIRTINESS
        else:
            assert deadline is None


PoolMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_the_pool_stays_bounded_under_any_operations = PoolMachine.TestCase
