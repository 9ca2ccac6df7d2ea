"""A client's session pool: which session a new stream rides, and when a session closes.

Theory of operation.  Streams carry an isolation key (the SOCKS username, as Tor's
IsolateSOCKSAuth; the origin for the browser's ``zmesh.fetch``).  Streams with the same
key share one session (whose legs are several circuits to one exit, kept up by the node:
:meth:`zmesh.circuit.sessions.Sessions.connect`); streams with different keys never
share one.  A session is *fresh* for ``max_dirtiness`` seconds after it was made (Tor's
MaxCircuitDirtiness): only a fresh session takes new streams.  After that it is
*retired*, and it is closed as soon as its last stream ends, so that the relays on its
legs drop their keys.

The pool is sans-I/O.  :meth:`SessionPool.request` returns the key's fresh session (its
stream count already taken) or None; on None the driver connects a new session and
reports it with :meth:`~SessionPool.connected`.  The driver tells the pool when a stream
ends (:meth:`~SessionPool.stream_closed`) and when the node closed a session on its own
(:meth:`~SessionPool.session_closed`), calls :meth:`~SessionPool.handle_timer` at
:meth:`~SessionPool.get_timer`, and after every call closes the sessions in
:meth:`~SessionPool.sessions_to_close`.

Bounds.  At most ``max_keys`` isolation keys are held; a new key beyond that evicts the
least recently used one, whose session retires.  A key holds one fresh session, so fresh
sessions number at most ``max_keys``; a retired session is held only while it carries a
stream.
"""

from dataclasses import dataclass

from ..errors import LocalProtocolError

MAX_DIRTINESS = 600.0
MAX_KEYS = 256


@dataclass(eq=False, slots=True)
class PooledSession:
    """One of the pool's sessions; ``streams`` counts the streams it carries now."""

    session_id: int
    key: bytes
    first_used: float
    streams: int = 0
    retired: bool = False


class SessionPool:
    """Sessions shared by isolation key; see the module's theory of operation."""

    def __init__(self, *, max_dirtiness: float = MAX_DIRTINESS, max_keys: int = MAX_KEYS) -> None:
        """Raises ValueError for a non-positive limit."""
        if max_dirtiness <= 0 or max_keys < 1:
            raise ValueError("pool limits must be positive")
        self.max_dirtiness = max_dirtiness
        self.max_keys = max_keys
        self._fresh: dict[bytes, PooledSession] = {}  # key -> its fresh session, LRU first
        self._sessions: dict[int, PooledSession] = {}  # every session held
        self._to_close: list[int] = []

    def request(self, key: bytes, now: float) -> PooledSession | None:
        """The fresh session for a new stream with isolation key ``key`` (its stream
        counted), or None: connect one and report it with :meth:`connected`."""
        session = self._fresh.pop(key, None)
        if session is None:
            return None
        if self._dirty(session, now):
            self._retire(session)
            return None
        self._fresh[key] = session  # most recently used now
        session.streams += 1
        return session

    def connected(self, key: bytes, session_id: int, now: float) -> PooledSession:
        """A session connected for :meth:`request`'s None carries the requesting stream.
        Returns it.  Raises LocalProtocolError if ``session_id`` is already held."""
        if session_id in self._sessions:
            raise LocalProtocolError(f"session {session_id} is already in the pool")
        session = PooledSession(session_id, key, now, streams=1)
        self._sessions[session_id] = session
        old = self._fresh.pop(key, None)
        if old is not None:  # two requests raced to connect one
            self._retire(old)
        self._fresh[key] = session
        while len(self._fresh) > self.max_keys:
            self._retire(next(iter(self._fresh.values())))
        return session

    def forget(self, session: PooledSession) -> None:
        """Stop using ``session`` (it failed) and close it."""
        if self._sessions.get(session.session_id) is session:
            self._close(session)

    def stream_closed(self, session: PooledSession, now: float) -> None:
        """One of ``session``'s streams ended; a retired session closes with its last."""
        if self._sessions.get(session.session_id) is not session or session.streams == 0:
            return
        session.streams -= 1
        if not session.retired and self._dirty(session, now):
            self._retire(session)
        elif session.retired and session.streams == 0:
            self._close(session)

    def session_closed(self, session_id: int) -> None:
        """The node closed the session itself (it failed): drop it."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._unlist(session)

    def handle_timer(self, now: float) -> None:
        """Retire the sessions past ``max_dirtiness``; close those without streams."""
        for session in [s for s in self._fresh.values() if self._dirty(s, now)]:
            self._retire(session)

    def get_timer(self) -> float | None:
        """When the next fresh session turns dirty, or None if none is held."""
        if not self._fresh:
            return None
        return min(s.first_used for s in self._fresh.values()) + self.max_dirtiness

    def sessions_to_close(self) -> list[int]:
        """The ids of the sessions the driver must close now (each is given once)."""
        out, self._to_close = self._to_close, []
        return out

    def sessions(self) -> list[PooledSession]:
        """Every session the pool holds, fresh or retired."""
        return list(self._sessions.values())

    def keys(self) -> list[bytes]:
        """The isolation keys held, least recently used first."""
        return list(self._fresh)

    def _dirty(self, session: PooledSession, now: float) -> bool:
        return now - session.first_used >= self.max_dirtiness

    def _retire(self, session: PooledSession) -> None:
        self._unlist(session)
        session.retired = True
        if session.streams == 0:
            self._close(session)

    def _close(self, session: PooledSession) -> None:
        self._unlist(session)
        del self._sessions[session.session_id]
        self._to_close.append(session.session_id)

    def _unlist(self, session: PooledSession) -> None:
        if self._fresh.get(session.key) is session:
            del self._fresh[session.key]


__all__ = ["MAX_DIRTINESS", "MAX_KEYS", "PooledSession", "SessionPool"]
