"""Sessions for a client: the asyncio driver of the core pool (:mod:`zmesh.circuit.pool`).

The policy (which session a stream rides, when a session retires or closes) lives in the
sans-I/O :class:`zmesh.circuit.pool.SessionPool`, and keeping a session's legs up (paths,
standby circuits, replacing lost legs) in the node
(:meth:`zmesh.circuit.sessions.Sessions.connect`).  This wrapper feeds the pool the wall
clock, connects the sessions it asks for, closes the sessions it gives up (their legs'
relays drop their keys) and keeps one timer armed for its next deadline.  Callers tell it
when a stream ends (:meth:`Pool.stream_closed`) and when a session failed
(:meth:`Pool.forget`).  Runs on every runtime (CPython and Pyodide): it needs only a
driver.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..circuit.pool import MAX_DIRTINESS, PooledSession, SessionPool
from ..circuit.sessions import DEFAULT_LEGS
from ..errors import ZMeshError
from ..onion.paths import HOPS, NoPathError
from .aio import AsyncNode, wall_clock

log = logging.getLogger("zmesh.pool")


@dataclass(eq=False)
class Pool:
    """Sessions shared by isolation key (see :mod:`zmesh.circuit.pool`), on asyncio."""

    driver: AsyncNode
    max_dirtiness: float = MAX_DIRTINESS
    legs: int = DEFAULT_LEGS
    clock: Callable[[], float] = wall_clock
    core: SessionPool = field(init=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False)
    _timer_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.core = SessionPool(max_dirtiness=self.max_dirtiness)

    def usable(self) -> bool:
        """Whether a session can be connected now (enough relays known, an exit, a link)."""
        return self.driver.node.sessions.can_connect(self.clock())

    def session_for(self, key: bytes) -> PooledSession:
        """The session for one new stream with isolation key ``key``, connected if need
        be.  The caller owes :meth:`stream_closed` when the stream ends.  Raises
        NoPathError when no path exists."""
        self._drop_closed()
        session = self.core.request(key, self.clock())
        if session is None:
            sessions = self.driver.node.sessions
            session_id = self.driver.call(lambda now: sessions.connect(now, self.legs))
            log.info("session=%d event=connected legs=%d", session_id, self.legs)
            session = self.core.connected(key, session_id, self.clock())
        self._apply()
        return session

    def stream_closed(self, session: PooledSession) -> None:
        """A stream that :meth:`session_for` placed on ``session`` ended."""
        self.core.stream_closed(session, self.clock())
        self._apply()

    def forget(self, session: PooledSession) -> None:
        """Stop using ``session`` (it failed) and close it."""
        self.core.forget(session)
        self._apply()

    def _drop_closed(self) -> None:
        alive = set(self.driver.node.sessions.ids())
        for session in self.core.sessions():
            if session.session_id not in alive:
                self.core.session_closed(session.session_id)

    def _apply(self) -> None:
        """Close what the core gave up, then re-arm the one timer for its next deadline."""
        sessions = self.driver.node.sessions
        for session_id in self.core.sessions_to_close():
            log.info("session=%d event=closed_by_pool", session_id)
            with contextlib.suppress(ZMeshError):
                self.driver.call(functools.partial(sessions.close, session_id))
        deadline = self.core.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self._drop_closed()
        self.core.handle_timer(self.clock())
        self._apply()


__all__ = ["HOPS", "MAX_DIRTINESS", "NoPathError", "Pool", "PooledSession"]
