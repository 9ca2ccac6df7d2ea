"""Sessions on this node's circuits: the client's, and the final hop's.

Every stream rides a :class:`~zmesh.session.multipath.Session`, which runs over one or
more circuits (its legs) that end at the same final hop.  The client creates a session
(:meth:`Sessions.create`) and adds built circuits to it as legs (:meth:`Sessions.add_leg`);
the final hop finds the session of a new circuit from the LINK frame that begins its
first cell, and creates it if the token is new.

Healing.  :meth:`Sessions.connect` creates a *managed* session: the node picks an exit
and builds :data:`DEFAULT_LEGS` circuits to it through disjoint middles (and disjoint
guards where the linked relays allow; :func:`~zmesh.onion.paths.choose_leg`), adding each
as a leg once built.  When a leg is lost, its middle is scored in the builder's avoidance
table (a guard whose link fails is scored by the node), and the leg is replaced at once
by a *standby* circuit to the same exit that avoids the avoided relays and the other
legs' middles, if one is ready, else by a new build; the standby is refilled in the
background.  A build that fails is retried after a backoff.  While a session lacks legs
and its newest build has been slow, another starts beside it through other relays (at
most twice the legs it wants): a build through a dead relay would wait for the build
timeout.  A new session's first build is an *early leg*: the session sends on it from its
CREATE on (LINK and the first OPENs follow the CREATE: D49, D64), so a stream's OPEN does
not wait a round trip for CREATED; it stays a build in the plan (hedged, and retried after
a backoff if it fails) until CREATED makes it a leg like any other.  Until then it carries
no DATA and no PING (nothing watches it for stalls: the build timeout and the hedge do);
if another leg is built first, the OPENs go again on that one; if its build fails, what it
carried goes to the other legs.  The paths, spares, backoff and hedge are
:mod:`zmesh.circuit.healing`'s.  A session whose exit is gone fails after its grace time,
as every session without legs does.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..identity import Descriptor
from ..link.table import LinkTable
from ..onion.paths import NoPathError
from ..rng import Rng
from ..session.endpoint import StreamData, StreamEvent
from ..session.frames import TOKEN_SIZE, ResetFrame, StreamFrame, first_link
from ..session.legs import LegInfo
from ..session.multipath import (
    MAX_LEGS,
    SERVER_GRACE,
    SESSION_GRACE,
    LastLegStalled,
    LegLost,
    Session,
    SessionFailed,
)
from ..session.stream import Stream
from .builder import CircuitBuilder
from .common import CircuitConfig
from .guarding import Guards
from .healing import RETRY_DELAY, Healer, Plan
from .relay import RelayTable

MAX_SESSIONS = 4096
DEFAULT_LEGS = 2


@dataclass(frozen=True, slots=True)
class SessionStreamEvent:
    """A stream event of one of this node's sessions (client or final hop)."""

    session_id: int
    event: StreamEvent


@dataclass(frozen=True, slots=True)
class SessionLegLost:
    """A leg of a session closed or stalled; its unconfirmed data went to the others.
    ``path`` is the node ids of a client leg's path, first hop first (empty at the final
    hop)."""

    session_id: int
    circuit_id: int
    reason: str
    path: tuple[bytes, ...] = ()


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
    longest_gap: float  # the longest gap in received data (seconds)


@dataclass(slots=True)
class _Entry:
    session_id: int
    session: Session
    plan: Plan | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    last_data: float | None = None  # when data last reached the application
    failover_at: float | None = None  # a leg was lost since then, with data to resend
    longest_stall: float = 0.0
    longest_gap: float = 0.0
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
        # healing (managed sessions): paths and spares, and the legs being built
        self._healer = Healer(builder, rng)
        self._building: dict[int, _Entry] = {}  # circuit id -> the session it will join

    def route_with(
        self,
        relays: Mapping[bytes, Descriptor],
        links: LinkTable,
        own_id: bytes,
        *,
        guards: Guards | None = None,
        subnet: Callable[[Descriptor], str] | None = None,
    ) -> None:
        """Where :meth:`connect` finds paths (:meth:`Healer.route_with`)."""
        self._healer.route_with(relays, links, own_id, guards=guards, subnet=subnet)

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> SessionEvent | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        heap = self._heap
        while heap and self._deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def handle_timer(self, now: float) -> None:
        due: list[int] = []  # each once: a deadline still due after it runs waits for the next call
        while self.get_timer() <= now:
            _, session_id = heapq.heappop(self._heap)
            del self._deadlines[session_id]
            due.append(session_id)
        for session_id in due:
            entry = self._sessions.get(session_id)
            if entry is None:  # ended by another's timer in this call
                continue
            entry.session.handle_timer(now)
            plan = entry.plan
            if plan is not None and plan.retry_at is not None and plan.retry_at <= now:
                plan.retry_at = None
                self._top_up(entry, now)
            hedge = None if plan is None else plan.hedge_at(len(entry.legs))
            if plan is not None and hedge is not None and hedge <= now:
                plan.hedged = now
                slow = {n for cid in plan.building for n in self._builder.path(cid)[:-1]}
                path = self._healer.leg_path(plan.exit_id, self._used(entry), now, slow)
                if path is not None:
                    self._build_leg(entry, plan, path, now)
            self._flush(entry, now)

    # -- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sessions)

    def session_of(self, circuit_id: int) -> int | None:
        """The session ``circuit_id`` is a leg of, if any."""
        entry = self._by_leg.get(circuit_id)
        return None if entry is None else entry.session_id

    def info(self, session_id: int, now: float) -> SessionInfo:
        entry = self._entry(session_id)
        s = entry.session
        return SessionInfo(
            session_id,
            s.client,
            len(s.streams),
            entry.bytes_sent,
            entry.bytes_received,
            s.legs(now),
            s.failovers,
            entry.longest_stall,
            entry.longest_gap,
        )

    def legs_of(self, session_id: int) -> list[int]:
        """The circuit ids of a session's legs (empty for an unknown session)."""
        entry = self._sessions.get(session_id)
        return [] if entry is None else sorted(entry.legs)

    def ids(self) -> list[int]:
        return list(self._sessions)

    def standby(self) -> list[int]:
        """The built spare circuits, kept to replace lost legs."""
        return self._healer.standby()

    # -- the client API ---------------------------------------------------------------------
    def create(self, now: float) -> int:
        """A new client session without legs (add them with :meth:`add_leg` within its
        grace time).  Raises LocalProtocolError at :data:`MAX_SESSIONS`."""
        if len(self._sessions) >= MAX_SESSIONS:
            raise LocalProtocolError(f"{MAX_SESSIONS} sessions exist already")
        entry = self._new(True, self._rng.bytes(TOKEN_SIZE), now)
        self._flush(entry, now)
        return entry.session_id

    def can_connect(self, now: float) -> bool:
        """Whether :meth:`connect` finds a path now (relays known, an exit, a link)."""
        try:
            self._healer.first_path(now)
        except NoPathError:
            return False
        return True

    def connect(self, now: float, legs: int = DEFAULT_LEGS, final: Descriptor | None = None) -> int:
        """A managed session of ``legs`` legs to an exit the node picks, or to the final
        hop ``final``: a verified descriptor (of a content provider, or of a node that runs
        a lookup for us), in our relay view or not (see Healing).

        Streams may be opened at once; they go out when its first leg is up.  Raises
        NoPathError if no path exists now, LocalProtocolError for a bad number of legs
        or at :data:`MAX_SESSIONS`."""
        if not 1 <= legs <= MAX_LEGS:
            raise LocalProtocolError(f"a session has 1 to {MAX_LEGS} legs")
        if final is None:
            return self._start(self._healer.first_path(now), legs, now)
        self._healer.name_final(final)
        try:
            path = self._healer.leg_path(final.node_id, set(), now)
            if path is None:
                raise NoPathError("no path to that final hop now")
            return self._start(path, legs, now)
        except (NoPathError, LocalProtocolError):
            if not self._exit_in_use(final.node_id):
                self._healer.drop_standby(final.node_id, now)
            raise

    def _start(self, path: list[Descriptor], legs: int, now: float) -> int:
        entry = self._sessions[self.create(now)]
        plan = entry.plan = Plan(path[-1].node_id, legs)
        first = self._build_leg(entry, plan, path, now)
        if first is not None:  # an early leg: its cells follow the CREATE (see Healing)
            entry.session.add_leg(first, now, building=True)
            self._by_leg[first] = entry  # a cell may come right behind CREATED
        self._top_up(entry, now)
        self._healer.refill_standby(plan.exit_id, now)
        self._flush(entry, now)
        self._settle(now)
        return entry.session_id

    def add_leg(self, session_id: int, circuit_id: int, now: float) -> None:
        """Make the built client circuit ``circuit_id`` a leg of the session.

        Raises LocalProtocolError for an unknown session, a circuit that is not a built
        client circuit or is a leg already, or beyond the session's leg limit."""
        entry = self._entry(session_id)
        if circuit_id not in self._builder.built():
            raise LocalProtocolError(f"circuit {circuit_id} is not a built client circuit")
        if circuit_id in self._by_leg or circuit_id in self._building:
            raise LocalProtocolError(f"circuit {circuit_id} is a leg already")
        self._attach(entry, circuit_id, now)
        self._apply(entry, now)

    def _attach(self, entry: _Entry, circuit_id: int, now: float) -> None:
        entry.session.add_leg(circuit_id, now)
        self._by_leg[circuit_id] = entry
        entry.legs.add(circuit_id)

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
    def circuit_built(self, circuit_id: int, now: float) -> None:
        """A client circuit is up: a leg a managed session waited for, or a standby."""
        if self._healer.guards is not None:
            self._healer.guards.build_ended(circuit_id, True, now)
        entry = self._building.pop(circuit_id, None)
        if entry is not None:
            assert entry.plan is not None
            plan = entry.plan
            del plan.building[circuit_id]
            plan.delay = RETRY_DELAY
            if circuit_id in entry.session.leg_ids:  # an early leg, in use since its CREATE
                entry.session.built(circuit_id)
                entry.legs.add(circuit_id)
                self._flush(entry, now)
            elif len(entry.legs) < plan.want or plan.spare:
                plan.spare = False
                self._attach(entry, circuit_id, now)
                self._flush(entry, now)
            elif not self._healer.keep(plan.exit_id, circuit_id):  # a hedge that came in late
                self._healer.close(circuit_id, now)
            return
        self._healer.standby_built(circuit_id)

    def circuit_closed(self, circuit_id: int, now: float) -> None:
        """A circuit closed: if it was a leg, its session resends what it carried; if it
        was being built for one, the build is retried after a backoff."""
        if self._healer.guards is not None:
            self._healer.guards.build_ended(circuit_id, False, now)
        entry = self._building.get(circuit_id)
        if entry is not None and circuit_id in entry.session.leg_ids:  # an early leg
            entry.session.leg_closed(circuit_id, now)  # its LegLost ends the build (_lost)
            self._flush(entry, now)
            return
        entry = self._building.pop(circuit_id, None)
        if entry is not None:
            assert entry.plan is not None
            del entry.plan.building[circuit_id]
            entry.plan.retry_later(now)
            self._flush(entry, now)
            return
        self._healer.standby_closed(circuit_id)
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
        if not entry.session.client and circuit_id not in entry.legs:  # adopted here
            entry.legs.add(circuit_id)
            self._by_leg[circuit_id] = entry
        self._flush(entry, now)

    def _adopt(self, circuit_id: int, frames: list[StreamFrame], now: float) -> _Entry | None:
        """The session a final hop's new circuit names in its LINK, created if new; None
        (and the circuit closed) if it names none, resumes one we do not know (answered
        with RESET on stream 0 first), or no session can be created."""
        link = first_link(frames) if circuit_id not in self._builder else None
        if link is None:
            self._close_circuit(circuit_id, CloseCode.PROTOCOL, now)
            return None
        entry = self._by_token.get(link.token)
        if entry is not None:
            return entry
        if link.resume:
            self._relay.send_frames(circuit_id, [ResetFrame(0, CloseCode.NONE)], now)
            self._close_circuit(circuit_id, CloseCode.REQUESTED, now)
            return None
        if len(self._sessions) >= MAX_SESSIONS:
            self._close_circuit(circuit_id, CloseCode.RESOURCE, now)
            return None
        return self._new(False, link.token, now)

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
            grace=SESSION_GRACE if client else SERVER_GRACE,
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
        event: object = True
        while event is not None:  # a lost leg's replacement has cells to send too
            for leg_id, frames in session.cells_to_send(now):
                table = self._builder if leg_id in self._builder else self._relay
                table.send_frames(leg_id, frames, now)  # a full queue closes the circuit
            while (event := session.next_event()) is not None:
                match event:
                    case LegLost(leg_id, reason):
                        self._lost(entry, leg_id, reason, now)
                        break
                    case SessionFailed(reason):
                        self._end(entry, reason, now)
                        return
                    case LastLegStalled():
                        self._spare_leg(entry, now)
                    case _:
                        if type(event) is StreamData:
                            self._received(entry, len(event.data), now)
                        self.events.append(SessionStreamEvent(entry.session_id, event))
        deadline = session.get_timer()
        plan_deadline = None if entry.plan is None else entry.plan.deadline(len(entry.legs))
        if plan_deadline is not None:
            deadline = min(deadline or math.inf, plan_deadline)
        if deadline is None:
            self._deadlines.pop(entry.session_id, None)
        elif self._deadlines.get(entry.session_id) != deadline:
            self._deadlines[entry.session_id] = deadline
            heapq.heappush(self._heap, (deadline, entry.session_id))

    def _received(self, entry: _Entry, n: int, now: float) -> None:
        entry.bytes_received += n
        if entry.last_data is not None:
            gap = now - entry.last_data
            entry.longest_gap = max(entry.longest_gap, gap)
            if entry.failover_at is not None:
                entry.longest_stall = max(entry.longest_stall, gap)
        entry.failover_at = None
        entry.last_data = now

    def _lost(self, entry: _Entry, leg_id: int, reason: str, now: float) -> None:
        if entry.failover_at is None:
            entry.failover_at = now
        self._by_leg.pop(leg_id, None)
        entry.legs.discard(leg_id)
        path = self._builder.path(leg_id)
        if reason != "closed":  # stalled, or replaced by a newer leg
            self._close_circuit(leg_id, CloseCode.TIMEOUT, now)
        self.events.append(SessionLegLost(entry.session_id, leg_id, reason, path))
        plan = entry.plan
        if plan is not None and self._building.pop(leg_id, None) is not None:
            del plan.building[leg_id]  # an early leg's build failed, or is slower than a hedge
            plan.retry_later(now)
        elif plan is not None:
            if len(path) > 2:  # the middle: a dead guard is scored when its link closes
                self._builder.avoidance.failed(path[1], now)
            self._top_up(entry, now)
            self._healer.refill_standby(plan.exit_id, now)

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
        plan = entry.plan
        if plan is not None:
            for cid in plan.building:
                del self._building[cid]
                self._by_leg.pop(cid, None)  # an early leg
                self._close_circuit(cid, CloseCode.REQUESTED, now)
            plan.building.clear()
            if not self._exit_in_use(plan.exit_id):
                self._healer.drop_standby(plan.exit_id, now)
        self.events.append(SessionClosed(entry.session_id, reason))

    def _exit_in_use(self, exit_id: bytes) -> bool:
        return any(e.plan and e.plan.exit_id == exit_id for e in self._sessions.values())

    # -- healing ----------------------------------------------------------------------------
    def _top_up(self, entry: _Entry, now: float) -> None:
        """Give a managed session its wanted legs: standby circuits first, then builds."""
        plan = entry.plan
        assert plan is not None
        while len(entry.legs) + len(plan.building) < plan.want:
            used = self._used(entry)
            spare = self._healer.take_standby(plan.exit_id, used, now, any_guard=not entry.legs)
            if spare is not None:
                self._attach(entry, spare, now)
                continue
            path = self._healer.leg_path(plan.exit_id, used, now)
            if path is None or self._build_leg(entry, plan, path, now) is None:
                plan.retry_later(now)
                return

    def _spare_leg(self, entry: _Entry, now: float) -> None:
        """A managed session's only leg stalled: add one more (a standby, or a build)
        beside it; the session gives the stalled one up once the new one is a leg."""
        plan = entry.plan
        if plan is None or plan.building:
            return
        used = self._used(entry)
        spare = self._healer.take_standby(plan.exit_id, used, now, any_guard=True)
        if spare is not None:
            self._attach(entry, spare, now)
            self._healer.refill_standby(plan.exit_id, now)
            return
        path = self._healer.leg_path(plan.exit_id, used, now)
        if path is not None:
            plan.spare = self._build_leg(entry, plan, path, now) is not None

    def _used(self, entry: _Entry) -> set[bytes]:
        """The guards and middles of a session's legs and of the legs being built."""
        assert entry.plan is not None
        return {
            node_id
            for cid in entry.legs | set(entry.plan.building)
            for node_id in self._builder.path(cid)[:-1]
        }

    def _build_leg(
        self, entry: _Entry, plan: Plan, path: list[Descriptor], now: float
    ) -> int | None:
        cid = self._healer.build(path, now)
        if cid is not None:
            plan.building[cid] = now
            self._building[cid] = entry
        return cid

    def _close_circuit(self, circuit_id: int, code: CloseCode, now: float) -> None:
        if circuit_id in self._builder:
            self._healer.close(circuit_id, now, code)
        elif circuit_id in self._relay:
            self._relay.close(circuit_id, now, code)


def _stream(entry: _Entry, stream_id: int) -> Stream:
    stream = entry.session.streams.get(stream_id)
    if stream is None:
        raise LocalProtocolError(f"no stream {stream_id}")
    return stream
