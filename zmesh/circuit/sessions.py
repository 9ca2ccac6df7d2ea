"""Sessions on this node's circuits: the client's, and the final hop's.

Every stream rides a :class:`~zmesh.session.multipath.Session`, which runs over one or
more circuits (its legs) that end at the same final hop.  The client creates a session
(:meth:`Sessions.create`) and adds built circuits to it as legs (:meth:`Sessions.add_leg`);
the final hop finds the session of a new circuit from the LINK frame that begins its
first cell, and creates it if the token is new.

The tables are bounded: at most :data:`MAX_SESSIONS` sessions in all, one per circuit at
the most (a session needs a circuit to be created, and CREATEs are budgeted per peer by
the relay table), and a session without legs fails after its grace time.  A protocol
error from the peer of a session (the only one who can seal its cells) fails the whole
session and closes its legs.

Every call takes ``now``, applies the operation, sends the cells it allows, and lets the
node settle (close failed links, collect events).
"""

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..rng import Rng
from ..session.endpoint import StreamData, StreamEvent
from ..session.frames import TOKEN_SIZE, StreamFrame
from ..session.legs import LegInfo
from ..session.multipath import LegLost, Session, SessionFailed, link_token
from ..session.stream import Stream
from .builder import CircuitBuilder
from .common import CircuitConfig
from .relay import RelayTable

MAX_SESSIONS = 4096


@dataclass(frozen=True, slots=True)
class SessionStreamEvent:
    """A stream event of one of this node's sessions (client or final hop)."""

    session_id: int
    event: StreamEvent


@dataclass(frozen=True, slots=True)
class SessionLegLost:
    """A leg of a session closed or stalled; its unconfirmed data went to the others."""

    session_id: int
    circuit_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session is over: closed here, failed (no leg for its grace time), or refused."""

    session_id: int
    reason: str


SessionEvent = SessionStreamEvent | SessionLegLost | SessionClosed


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session as the status shows it."""

    session_id: int
    client: bool
    streams: int
    bytes_sent: int
    bytes_received: int
    legs: list[LegInfo]
    failovers: int
    longest_stall: float  # the longest gap in received data around a failover (seconds)


@dataclass(slots=True)
class _Entry:
    session_id: int
    session: Session
    bytes_sent: int = 0
    bytes_received: int = 0
    last_data: float | None = None  # when data last reached the application
    failover_at: float | None = None  # a leg was lost since then, with data to resend
    longest_stall: float = 0.0
    legs: set[int] = field(default_factory=set)


class Sessions:
    def __init__(
        self,
        builder: CircuitBuilder,
        relay: RelayTable,
        rng: Rng,
        *,
        config: CircuitConfig,
        settle: Callable[[float], None],
    ) -> None:
        self._builder = builder
        self._relay = relay
        self._rng = rng
        self._payload_size = builder.geometry.cell_payload_size
        self._config = config
        self._settle = settle
        self._ids = itertools.count(1)
        self._sessions: dict[int, _Entry] = {}
        self._by_leg: dict[int, _Entry] = {}  # circuit id -> its session
        self._by_token: dict[bytes, _Entry] = {}  # the final hop's sessions
        self._deadlines: dict[int, float] = {}  # session id -> its timer
        self._heap: list[tuple[float, int]] = []  # (deadline, session id), stale ones skipped
        self.events: deque[SessionEvent] = deque()
        builder.deliver_to(self._on_frames)
        relay.deliver_to(self._on_frames)

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> SessionEvent | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        heap = self._heap
        while heap and self._deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def handle_timer(self, now: float) -> None:
        while self.get_timer() <= now:
            _, session_id = heapq.heappop(self._heap)
            del self._deadlines[session_id]
            entry = self._sessions[session_id]
            entry.session.handle_timer(now)
            self._flush(entry, now)

    # -- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sessions)

    def session_of(self, circuit_id: int) -> int | None:
        """The session ``circuit_id`` is a leg of, if any."""
        entry = self._by_leg.get(circuit_id)
        return None if entry is None else entry.session_id

    def info(self, session_id: int) -> SessionInfo:
        entry = self._entry(session_id)
        s = entry.session
        return SessionInfo(
            session_id,
            s.client,
            len(s.streams),
            entry.bytes_sent,
            entry.bytes_received,
            s.legs(),
            s.failovers,
            entry.longest_stall,
        )

    def ids(self) -> list[int]:
        return list(self._sessions)

    # -- the client API ---------------------------------------------------------------------
    def create(self, now: float) -> int:
        """A new client session without legs (add them with :meth:`add_leg` within its
        grace time).  Raises LocalProtocolError at :data:`MAX_SESSIONS`."""
        if len(self._sessions) >= MAX_SESSIONS:
            raise LocalProtocolError(f"{MAX_SESSIONS} sessions exist already")
        entry = self._new(True, self._rng.bytes(TOKEN_SIZE), now)
        self._flush(entry, now)
        return entry.session_id

    def add_leg(self, session_id: int, circuit_id: int, now: float) -> None:
        """Make the built client circuit ``circuit_id`` a leg of the session.

        Raises LocalProtocolError for an unknown session, a circuit that is not a built
        client circuit or is a leg already, or beyond the session's leg limit."""
        entry = self._entry(session_id)
        if circuit_id not in self._builder.built():
            raise LocalProtocolError(f"circuit {circuit_id} is not a built client circuit")
        if circuit_id in self._by_leg:
            raise LocalProtocolError(f"circuit {circuit_id} is a leg already")
        entry.session.add_leg(circuit_id, now)
        self._by_leg[circuit_id] = entry
        entry.legs.add(circuit_id)
        self._apply(entry, now)

    def close(self, session_id: int, now: float) -> None:
        """Reset the session's streams, close its legs and forget it."""
        entry = self._entry(session_id)
        for stream_id in list(entry.session.streams):
            entry.session.reset_stream(stream_id, CloseCode.REQUESTED)
        self._flush(entry, now)
        self._end(entry, "closed", now)
        self._settle(now)

    def open(self, session_id: int, target: str, now: float) -> int:
        """Open a stream to ``target``; returns its id (StreamConnected follows)."""
        entry = self._entry(session_id)
        stream_id = entry.session.open_stream(target).stream_id
        self._apply(entry, now)
        return stream_id

    # -- streams (both ends) ------------------------------------------------------------
    def send(self, session_id: int, stream_id: int, data: bytes, now: float) -> None:
        entry = self._entry(session_id)
        _stream(entry, stream_id).write(data)
        entry.bytes_sent += len(data)
        self._apply(entry, now)

    def finish(self, session_id: int, stream_id: int, now: float) -> None:
        """Send FIN after what was written."""
        entry = self._entry(session_id)
        _stream(entry, stream_id).finish()
        self._apply(entry, now)

    def consume(self, session_id: int, stream_id: int, n: int, now: float) -> None:
        """With ``auto_consume`` off: the application took ``n`` bytes (slides the window).
        A stream or session that ended meanwhile is ignored."""
        entry = self._sessions.get(session_id)
        if entry is None:
            return
        stream = entry.session.streams.get(stream_id)
        if stream is not None:
            stream.consume(n)
        self._apply(entry, now)

    def accept(self, session_id: int, stream_id: int, now: float) -> None:
        """At the final hop: the stream's target is reached (sends CONNECTED)."""
        entry = self._entry(session_id)
        entry.session.accept_stream(stream_id)
        self._apply(entry, now)

    def reset(self, session_id: int, stream_id: int, code: int, now: float) -> None:
        entry = self._entry(session_id)
        entry.session.reset_stream(stream_id, code)
        self._apply(entry, now)

    def buffered(self, session_id: int, stream_id: int) -> int:
        """Bytes written to a stream and not yet sent (the sender's backpressure signal)."""
        entry = self._sessions.get(session_id)
        stream = None if entry is None else entry.session.streams.get(stream_id)
        return 0 if stream is None else stream.pending

    # -- circuits ---------------------------------------------------------------------------
    def circuit_closed(self, circuit_id: int, now: float) -> None:
        """A circuit closed: if it was a leg, its session resends what it carried."""
        entry = self._by_leg.pop(circuit_id, None)
        if entry is not None:
            entry.legs.discard(circuit_id)
            entry.session.leg_closed(circuit_id, now)
            self._flush(entry, now)

    def _on_frames(self, circuit_id: int, frames: list[StreamFrame], now: float) -> None:
        """The frames of one cell that arrived on ``circuit_id`` (from the builder, or
        from the relay table at a final hop)."""
        entry = self._by_leg.get(circuit_id)
        if entry is None:
            entry = self._adopt(circuit_id, frames, now)
            if entry is None:
                return
        try:
            entry.session.receive(circuit_id, frames, now)
        except RemoteProtocolError as exc:
            self._end(entry, f"protocol error: {exc}", now, code=exc.code)
            return
        if circuit_id not in entry.legs:  # the final hop adopted it
            entry.legs.add(circuit_id)
            self._by_leg[circuit_id] = entry
        self._flush(entry, now)

    def _adopt(self, circuit_id: int, frames: list[StreamFrame], now: float) -> _Entry | None:
        """The session a final hop's new circuit names in its LINK, created if new; None
        (and the circuit closed) if it names none or no session can be created."""
        token = link_token(frames) if circuit_id not in self._builder else None
        if token is None:
            self._close_circuit(circuit_id, CloseCode.PROTOCOL, now)
            return None
        entry = self._by_token.get(token)
        if entry is not None:
            return entry
        if len(self._sessions) >= MAX_SESSIONS:
            self._close_circuit(circuit_id, CloseCode.RESOURCE, now)
            return None
        return self._new(False, token, now)

    # -- internals ----------------------------------------------------------------------
    def _new(self, client: bool, token: bytes, now: float) -> _Entry:
        session = Session(
            client=client,
            token=token,
            payload_size=self._payload_size,
            now=now,
            window=self._config.stream_window,
            auto_consume=self._config.auto_consume,
            leg_cap=self._config.stream_window,
        )
        entry = _Entry(next(self._ids), session)
        self._sessions[entry.session_id] = entry
        if not client:
            self._by_token[token] = entry
        return entry

    def _entry(self, session_id: int) -> _Entry:
        entry = self._sessions.get(session_id)
        if entry is None:
            raise LocalProtocolError(f"no session {session_id}")
        return entry

    def _apply(self, entry: _Entry, now: float) -> None:
        self._flush(entry, now)
        self._settle(now)

    def _flush(self, entry: _Entry, now: float) -> None:
        """Send the session's cells, turn its events into ours, re-arm its timer."""
        session = entry.session
        for leg_id, frames in session.cells_to_send(now):
            table = self._builder if leg_id in self._builder else self._relay
            table.send_frames(leg_id, frames, now)  # a full queue closes the circuit
        while (event := session.next_event()) is not None:
            match event:
                case LegLost(leg_id, reason):
                    self._lost(entry, leg_id, reason, now)
                case SessionFailed(reason):
                    self._end(entry, reason, now)
                    return
                case _:
                    if type(event) is StreamData:
                        self._received(entry, len(event.data), now)
                    self.events.append(SessionStreamEvent(entry.session_id, event))
        deadline = session.get_timer()
        if deadline is None:
            self._deadlines.pop(entry.session_id, None)
        elif self._deadlines.get(entry.session_id) != deadline:
            self._deadlines[entry.session_id] = deadline
            heapq.heappush(self._heap, (deadline, entry.session_id))

    def _received(self, entry: _Entry, n: int, now: float) -> None:
        entry.bytes_received += n
        if entry.failover_at is not None and entry.last_data is not None:
            entry.longest_stall = max(entry.longest_stall, now - entry.last_data)
        entry.failover_at = None
        entry.last_data = now

    def _lost(self, entry: _Entry, leg_id: int, reason: str, now: float) -> None:
        if entry.failover_at is None:
            entry.failover_at = now
        self._by_leg.pop(leg_id, None)
        entry.legs.discard(leg_id)
        if reason == "stalled":
            self._close_circuit(leg_id, CloseCode.TIMEOUT, now)
        self.events.append(SessionLegLost(entry.session_id, leg_id, reason))

    def _end(
        self, entry: _Entry, reason: str, now: float, code: CloseCode = CloseCode.REQUESTED
    ) -> None:
        """Forget the session and close the legs it still has."""
        del self._sessions[entry.session_id]
        self._deadlines.pop(entry.session_id, None)
        if not entry.session.client:
            del self._by_token[entry.session.token]
        for leg_id in entry.legs:
            del self._by_leg[leg_id]
            self._close_circuit(leg_id, code, now)
        entry.legs.clear()
        self.events.append(SessionClosed(entry.session_id, reason))

    def _close_circuit(self, circuit_id: int, code: CloseCode, now: float) -> None:
        if circuit_id in self._builder:
            self._builder.close(circuit_id, now, code)
        elif circuit_id in self._relay:
            self._relay.close(circuit_id, now, code)


def _stream(entry: _Entry, stream_id: int) -> Stream:
    stream = entry.session.streams.get(stream_id)
    if stream is None:
        raise LocalProtocolError(f"no stream {stream_id}")
    return stream
