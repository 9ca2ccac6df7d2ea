"""The asyncio session pool (zmesh/runtime/pool.py) over the core policy: sessions
connected once per key, closed when the core gives them up, dropped when the node ended
them, and a dirty session closed by the one timer."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from zmesh.circuit.pool import SessionPool
from zmesh.circuit.sessions import DEFAULT_LEGS
from zmesh.errors import LocalProtocolError
from zmesh.runtime.pool import NoPathError, Pool


@dataclass
class FakeSessions:
    """The node's sessions as the pool sees them: connect, close, the ids alive."""

    path: bool = True  # whether connect finds a path
    alive: set[int] = field(default_factory=set)
    connects: list[tuple[float, int]] = field(default_factory=list)  # (now, legs)
    closed: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # closes of sessions not alive
    asked: list[float] = field(default_factory=list)  # the times can_connect was asked at
    on_close: asyncio.Event | None = None
    last_id: int = 0

    def can_connect(self, now: float) -> bool:
        self.asked.append(now)
        return self.path

    def connect(self, now: float, legs: int = DEFAULT_LEGS) -> int:
        if not self.path:
            raise NoPathError("not enough relays known yet")
        self.last_id += 1
        session_id = self.last_id
        self.alive.add(session_id)
        self.connects.append((now, legs))
        return session_id

    def ids(self) -> list[int]:
        return sorted(self.alive)

    def close(self, session_id: int, now: float) -> None:
        if session_id not in self.alive:
            self.refused.append(session_id)
            raise LocalProtocolError(f"no session {session_id}")
        self.alive.discard(session_id)
        self.closed.append(session_id)
        if self.on_close is not None:
            self.on_close.set()


@dataclass
class FakeNode:
    sessions: FakeSessions = field(default_factory=FakeSessions)


@dataclass
class FakeDriver:
    """Runs a node input at the pool's clock (all the pool needs of AsyncNode)."""

    node: FakeNode
    clock: Callable[[], float]
    calls: int = 0

    def call(self, action: Callable[[float], Any]) -> Any:
        self.calls += 1
        return action(self.clock())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def loop_time() -> float:
    """The running loop's clock, so that the pool's timer and its deadlines agree."""
    return asyncio.get_running_loop().time()


def _pool(**kw: Any) -> tuple[Pool, FakeSessions, Clock]:
    clock = Clock()
    node = FakeNode()
    driver: Any = FakeDriver(node, clock)
    return Pool(driver, clock=clock, **kw), node.sessions, clock


def test_a_key_connects_once_and_reuses_its_session() -> None:
    async def main() -> None:
        pool, sessions, clock = _pool(legs=3)
        a = pool.session_for(b"alice")
        assert a.streams == 1 and sessions.connects == [(clock.now, 3)]
        clock.now += 1
        assert pool.session_for(b"alice") is a and a.streams == 2
        b = pool.session_for(b"bob")
        assert b is not a and b.session_id != a.session_id
        assert sessions.connects == [(1000.0, 3), (1001.0, 3)]
        pool.stream_closed(a)
        pool.stream_closed(a)
        assert a.streams == 0 and sessions.closed == []  # fresh: kept for the next stream
        assert pool.session_for(b"alice") is a and len(sessions.connects) == 2

    asyncio.run(main())


def test_usable_asks_the_node_at_the_pools_clock() -> None:
    pool, sessions, clock = _pool()
    assert pool.usable()
    sessions.path = False
    clock.now = 1234.5
    assert not pool.usable()
    assert sessions.asked == [1000.0, 1234.5]


def test_no_path_propagates_and_nothing_is_held() -> None:
    async def main() -> None:
        pool, sessions, _ = _pool()
        sessions.path = False
        with pytest.raises(NoPathError):
            pool.session_for(b"k")
        assert pool.core.sessions() == [] and pool.core.keys() == []
        assert pool.core.get_timer() is None
        sessions.path = True
        assert pool.session_for(b"k").streams == 1

    asyncio.run(main())


def test_sessions_the_core_gives_up_are_closed_by_the_node() -> None:
    async def main() -> None:
        pool, sessions, clock = _pool(max_dirtiness=10)
        a = pool.session_for(b"k")
        pool.forget(a)  # failed: closed at once
        assert sessions.closed == [a.session_id]
        pool.forget(a)  # twice: nothing more
        assert sessions.closed == [a.session_id]
        b = pool.session_for(b"k")
        assert b is not a
        clock.now += 10  # b is dirty: a new stream gets a new session, b retires
        c = pool.session_for(b"k")
        assert c is not b and b.retired and sessions.closed == [a.session_id]
        pool.stream_closed(b)  # its last stream: closed
        assert sessions.closed == [a.session_id, b.session_id]
        assert pool.core.sessions() == [c]

    asyncio.run(main())


def test_an_evicted_key_s_session_is_closed() -> None:
    async def main() -> None:
        pool, sessions, _ = _pool()
        pool.core = SessionPool(max_dirtiness=pool.max_dirtiness, max_keys=1)
        a = pool.session_for(b"a")
        pool.stream_closed(a)
        b = pool.session_for(b"b")
        assert sessions.closed == [a.session_id] and pool.core.sessions() == [b]

    asyncio.run(main())


def test_a_close_the_node_refuses_is_ignored() -> None:
    """The node ended the session between two pool calls: the close fails quietly."""

    async def main() -> None:
        pool, sessions, _ = _pool()
        a = pool.session_for(b"k")
        sessions.alive.discard(a.session_id)
        pool.forget(a)
        assert sessions.refused == [a.session_id]
        assert sessions.closed == [] and pool.core.sessions() == []

    asyncio.run(main())


def test_a_session_the_node_closed_is_dropped_and_replaced_without_a_close() -> None:
    async def main() -> None:
        pool, sessions, _ = _pool()
        a = pool.session_for(b"k")
        sessions.alive.discard(a.session_id)  # it failed (no leg for its grace time)
        b = pool.session_for(b"k")
        assert b is not a and sessions.closed == sessions.refused == []
        assert pool.core.sessions() == [b]
        pool.stream_closed(a)  # the end of its stream, reported late: ignored
        assert sessions.closed == [] and pool.core.sessions() == [b]

    asyncio.run(main())


def test_a_dirty_session_is_closed_by_the_timer_and_a_busy_one_with_its_stream() -> None:
    async def main() -> None:
        sessions = FakeSessions(on_close=asyncio.Event())
        driver: Any = FakeDriver(FakeNode(sessions), loop_time)
        pool = Pool(driver, max_dirtiness=0.05, clock=loop_time)
        busy = pool.session_for(b"alice")
        idle = pool.session_for(b"bob")
        gone = pool.session_for(b"carol")
        pool.stream_closed(idle)
        pool.stream_closed(gone)
        sessions.alive.discard(gone.session_id)  # the node ended it meanwhile
        assert sessions.closed == []  # fresh: kept for the next stream
        assert sessions.on_close is not None
        await asyncio.wait_for(sessions.on_close.wait(), 5)
        assert sessions.closed == [idle.session_id]  # busy is past dirtiness too
        assert sessions.refused == []  # the one the node ended was dropped, not closed
        assert busy.retired and pool.core.sessions() == [busy]
        assert pool.core.get_timer() is None and pool._timer is None
        pool.stream_closed(busy)
        assert sessions.closed == [idle.session_id, busy.session_id]
        assert pool.core.sessions() == []

    asyncio.run(main())
