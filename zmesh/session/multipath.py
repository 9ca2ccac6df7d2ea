"""Sessions: streams that outlive their circuits (zMesh issue 8).

Theory of operation.  A :class:`Session` owns its streams and sends them over up to
:data:`MAX_LEGS` circuits ("legs") that end at the same final hop.  It is sans-I/O, with
aioquic's shape: inputs ``add_leg``, ``leg_closed``, ``receive`` and ``handle_timer``,
each taking ``now``; outputs ``cells_to_send``, ``get_timer`` and ``next_event``.  The
driver seals each frame list from ``cells_to_send`` into one cell of that leg's circuit.

Binding.  The client starts every leg with ``LINK(token, leg number)``; the final hop
routes a circuit whose first cell begins with LINK (see :func:`~.frames.first_link`) to the
session with that token, whose ``receive`` then adopts the leg.  A server holds at most
:data:`MAX_LEGS` legs: the client never has more at once, so a LINK beyond them means one
of the server's legs is gone on the client's side, not yet here; the stalest (the one
heard from longest ago) is given up for the new one.  Once a client's session has had a
working leg, its LINKs say RESUME: a final hop that does not know the token (it
restarted, or forgot the session) answers ``RESET`` on stream 0, and the client fails at
once with a clear reason (the bytes the server acknowledged are gone with it) instead of
building legs to a server that starts a new session and waits for bytes that will never
come again.

Byte accounting.  Streams keep end-to-end offsets (:class:`~.stream.Stream`): the sender
keeps every byte until the peer's cumulative ACK covers it, the receiver reassembles by
offset and ignores duplicates.  Each leg also records what it carried and may have to
resend (DATA ranges and the control frames OPEN, CONNECTED, RESET and final ACKs), in
send order.  A circuit delivers its cells in order or not at all, so a PONG proves that
everything sent on the leg before its PING arrived: the record is cut at the PING's
mark, and also pruned when a stream's cumulative ACK passes a range.

Failover.  When a leg is closed, or stalls, its unconfirmed records are queued for
resending on the other legs at once (a stalled leg is reported with :class:`LegLost` and
no longer used).  The last leg is not given up when it stalls, since no other could take
its data over: it is reported once with :class:`LastLegStalled` (the driver may add a
leg), and given up when another leg exists and it is still silent, or after the grace
time.  Only a leg with something at stake is watched: one that carries something
unconfirmed, or any leg while a stream waits for the peer's data (a late PONG on an idle
session is more likely a busy relay than a dead one; a leg that died meanwhile is found
as soon as something is at stake, its oldest PING being old by then).  A leg with nothing
at stake is watched by a phi-accrual detector over its PONGs instead (Hayashibara et al.;
:mod:`zmesh.health.phi`, with :data:`ONE_WAY_STALL` as its acceptable pause): the cheap
PINGs of an idle leg find it dead, about 3 s after its last PONG, before the session
needs it, and the node replaces it.  An urgent leg stalls when its oldest unanswered
PING is older than the leg's RTO and nothing has arrived on it for an RTO either (RFC 6298
section 5.3 restarts the timer on every ACK; here anything that arrives restarts it: a
leg that is slow or queued, still delivering, is kept; D56), or, whatever arrives, when
the PING is older than both ``3 * RTO`` and :data:`ONE_WAY_STALL` (a leg dead in one
direction only; the floor, because a PONG waits behind the data the peer queued on the leg
before it, up to the leg's cap: a leg carrying a resent burst answered late and was
dropped though healthy).  Before its first RTT sample a leg's RTO
is twice the largest RTO of the measured legs, at most :data:`~.legs.INITIAL_RTO` (which
it is if none is measured): a new path's first round trip often took over twice the
others' SRTT (D56).  Every leg that carried data since its last PING gets a new PING
(one per ``RTO / 4``, and one after every :data:`PING_BYTES` sent), an idle leg one every
:data:`IDLE_PING_INTERVAL`, so a silent leg is found within about one RTO, and PONGs keep
arriving while a long queue on a healthy leg drains.  A PING that is due goes ahead of
the data of the same pull, so that its round trip does not count the burst sent with it;
one that a pull's data made due rides at the end of that data's cell if the pull gave the
leg only that cell (a request's OPEN and its PING are one cell through every hop, not two).
RTT comes only from PING/PONG (RFC 6298 section 2, with a 200 ms floor): ACKs are delayed
and may return on another leg, so they give no unambiguous sample.

Scheduling (LowRTT with a BLEST-style rule).  New data goes on the lowest-SRTT leg whose
unconfirmed bytes are below the per-leg cap.  If that is not the fastest leg (the
fastest is full), data goes on it only if it would arrive sooner than by waiting for the
fastest: ``SRTT_slow / 2 < wait_fast + SRTT_fast / 2``, where ``wait_fast`` is the time
until the PONG of the fastest leg's oldest PING (which frees its room) is due.  Resent
data ignores that rule and may use up to twice the cap, since it fills a hole the
receiver is waiting on.

ACKs.  A stream's ACK is due when its own rule says so (a quarter window), after every
:data:`ACK_EVERY` bytes, and for every stream with unreported bytes when a PING arrives
(then on the PING's leg, with the PONG); other ACKs go on the lowest-RTT leg.  When a
leg is lost, every stream reports again, since its last ACK may have been lost too.

Stream ids.  The client opens streams with increasing ids and sends no DATA on a stream
before the server has answered it (CONNECTED, or DATA that implies it), so DATA never
arrives for a stream the server has not seen; frames for ids never opened are protocol
errors, late frames for closed streams are dropped.

Grace.  A session without a working leg fails with :class:`SessionFailed` after ``grace``
seconds.  A leg works once something arrived on it: a client's new leg does not stop the
clock until the server answers on it, since a leg that is built but lost before its LINK
arrives never reached the server's session, whose own clock runs on.  The server waits
longer (:data:`SERVER_GRACE`): its clock starts when its last leg is lost, the client's
when its last working leg is, and the two differ by how long each takes to find a dead
leg.  A server that forgot a session the client still heals would take the client's next
leg for a new session, refuse its data as a protocol error, and the client would build
legs in a loop until its grace ran out, its bytes lost.
"""

import hmac
import math
from collections import deque
from dataclasses import dataclass

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..health.phi import PhiDetector
from .endpoint import (
    MAX_STREAMS,
    StreamConnected,
    StreamData,
    StreamEvent,
    StreamFinished,
    StreamOpened,
    StreamReset,
)
from .frames import (
    MAX_LEG_NUMBER,
    TOKEN_SIZE,
    AckFrame,
    ConnectedFrame,
    DataFrame,
    LinkFrame,
    OpenFrame,
    PaddingFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    StreamFrame,
)
from .legs import INITIAL_RTO, Cells, Leg, LegInfo, Record
from .stream import DEFAULT_WINDOW, Stream, StreamState

MAX_LEGS = 4
LEG_INFLIGHT_CAP = 128 * 1024  # unconfirmed DATA bytes per leg
MAX_LEG_RECORDS = 4096  # unconfirmed records (DATA ranges, control frames) per leg
MAX_PINGS = 16  # unanswered PINGs per leg (4 RTOs of them, at one per RTO / 4)
MAX_PONGS = 8  # PONGs owed per leg; PINGs beyond are dropped
MAX_CONTROL = 1024  # control frames waiting for a leg
MAX_OPEN_GAPS = 4096  # stream ids seen above the lowest id not seen yet (server)
ACK_EVERY = 64 * 1024
PING_BYTES = 32 * 1024  # a busy leg gets a PING after this many DATA bytes
IDLE_PING_INTERVAL = 0.5
SESSION_GRACE = 30.0  # a session without a working leg fails after this (D43)
SERVER_GRACE = 2 * SESSION_GRACE  # the server's, longer: it must outlive the client's
ONE_WAY_STALL = 2.0  # a leg that delivers but answers no PING for this long (and 3 RTOs)
PHI_MIN_STD = 0.1  # an idle leg's PONG intervals: the phi detector's floor on their spread
MIN_PAYLOAD = 512  # the largest control frame (OPEN) is 261 bytes


@dataclass(frozen=True, slots=True)
class LegLost:
    """A leg was closed or stalled; its unconfirmed data is being resent elsewhere.

    ``reason`` is ``"closed"``, ``"stalled"`` or ``"replaced"`` (a server's stalest leg,
    for a new one beyond :data:`MAX_LEGS`); the driver closes the circuit of a leg lost
    for any reason but ``"closed"``.
    """

    leg_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class LastLegStalled:
    """The session's only leg stalled.  It is kept (nothing could take its data over);
    the driver may add a leg, after which the stalled one is given up if still silent."""

    leg_id: int


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """No leg worked for the grace time: the session and its streams are over."""

    reason: str


SessionEvent = StreamEvent | LegLost | LastLegStalled | SessionFailed


class Session:
    """One end of a multi-circuit session (``client`` opens streams and legs)."""

    def __init__(
        self,
        *,
        client: bool,
        token: bytes,
        payload_size: int,
        now: float,
        window: int = DEFAULT_WINDOW,
        auto_consume: bool = True,
        leg_cap: int = LEG_INFLIGHT_CAP,
        grace: float = SESSION_GRACE,
    ) -> None:
        if len(token) != TOKEN_SIZE:
            raise LocalProtocolError("a session token is 16 bytes")
        if payload_size < MIN_PAYLOAD:
            raise LocalProtocolError(f"cell payloads must hold at least {MIN_PAYLOAD} bytes")
        self.client = client
        self.token = token
        self.payload_size = payload_size
        self.window = window
        self.auto_consume = auto_consume
        self.leg_cap = leg_cap
        self.grace = grace
        self.streams: dict[int, Stream] = {}
        self._legs: dict[int, Leg] = {}
        self._gone_legs: deque[int] = deque(maxlen=2 * MAX_LEGS)
        self._legs_added = 0
        self._events: deque[SessionEvent] = deque()
        self._control: deque[OpenFrame | ConnectedFrame | ResetFrame] = deque()
        self._resend: deque[Record] = deque()
        self._unconfirmed: set[int] = set()  # client streams the server has not answered
        self._next_stream = 1  # client: the next id to open
        self._open_floor = 1  # server: every id below was opened (or refused)
        self._open_above: set[int] = set()  # server: ids opened at or above the floor
        self._nonce = 0
        self._no_legs_since: float | None = now
        self._worked = False  # a leg has worked (the server knows the session)
        self.failed = False
        self.failovers = 0  # legs lost with records to resend

    # -- legs ---------------------------------------------------------------------------
    def add_leg(self, leg_id: int, now: float, *, building: bool = False) -> None:
        """Client: start using the circuit ``leg_id`` (it sends LINK first).  One still
        ``building`` (D64) carries LINK and control frames while no leg is built, and no
        DATA or PING until :meth:`built`; a leg built first takes what it carried.

        Raises LocalProtocolError on the server, after failure, for a known id or beyond
        :data:`MAX_LEGS` legs.
        """
        if not self.client:
            raise LocalProtocolError("the server adopts legs by their LINK")
        if self.failed:
            raise LocalProtocolError("the session failed")
        if leg_id in self._legs:
            raise LocalProtocolError(f"leg {leg_id} exists")
        if len(self._legs) >= MAX_LEGS:
            raise LocalProtocolError(f"a session has at most {MAX_LEGS} legs")
        for other in self._legs.values() if not building else ():
            if other.building:  # its OPENs go on a leg that is up (duplicates are dropped)
                self._resend.extend(other.records)
                other.records.clear()
        leg = self._new_leg(leg_id, self._legs_added % MAX_LEG_NUMBER, now)
        leg.link_pending, leg.building = True, building

    def built(self, leg_id: int) -> None:
        """Client: the circuit of a leg added ``building`` is up (its CREATED came back)."""
        if leg_id in self._legs:
            self._legs[leg_id].building = False

    def _new_leg(self, leg_id: int, number: int, now: float) -> Leg:
        phi = PhiDetector(
            first_interval=IDLE_PING_INTERVAL, acceptable_pause=ONE_WAY_STALL, min_std=PHI_MIN_STD
        )
        phi.heartbeat(now)  # a leg that never answers is found too
        leg = self._legs[leg_id] = Leg(leg_id, number, now, phi)
        self._legs_added += 1
        return leg

    def leg_closed(self, leg_id: int, now: float) -> None:
        """The circuit of ``leg_id`` is gone: resend what it carried on the others."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            self._lose(leg, "closed", now)

    def _lose(self, leg: Leg, reason: str, now: float) -> None:
        del self._legs[leg.leg_id]
        self._gone_legs.append(leg.leg_id)
        if leg.records:
            self.failovers += 1
            self._resend.extend(leg.records)
        for sid, stream in self.streams.items():
            if sid not in self._unconfirmed:  # the peer may not know it yet
                stream.request_ack()
        self._events.append(LegLost(leg.leg_id, reason))
        if self._no_legs_since is None and not any(g.proven for g in self._legs.values()):
            self._no_legs_since = now

    @property
    def leg_ids(self) -> list[int]:
        return list(self._legs)

    def legs(self, now: float) -> list[LegInfo]:
        """The live legs, fastest first."""
        return [
            LegInfo(
                leg.leg_id, leg.number, leg.srtt, self._rto(leg), leg.inflight, leg.phi.phi(now)
            )
            for leg in sorted(self._legs.values(), key=Leg.sort_key)
        ]

    # -- streams ------------------------------------------------------------------------
    def open_stream(self, target: str) -> Stream:
        """Client: open a stream to ``target``; write to it once StreamConnected arrives
        (earlier writes wait).  Raises LocalProtocolError on the server or at the limit."""
        if not self.client:
            raise LocalProtocolError("only the client opens streams")
        if len(self.streams) >= MAX_STREAMS or self._next_stream > 0xFFFFFFFF:
            raise LocalProtocolError("too many streams")
        if len(target.encode()) > 255:
            raise LocalProtocolError("stream target too long")
        sid = self._next_stream
        self._next_stream += 1
        stream = self.streams[sid] = self._stream(sid)
        self._unconfirmed.add(sid)
        self._control.append(OpenFrame(sid, target))
        return stream

    def accept_stream(self, stream_id: int) -> None:
        """Server: tell the client its stream reached the target."""
        if self.client or stream_id not in self.streams:
            raise LocalProtocolError(f"no stream {stream_id} to accept")
        self._control.append(ConnectedFrame(stream_id))

    def reset_stream(self, stream_id: int, code: int) -> None:
        """Abandon a stream and tell the peer."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.state = StreamState.RESET
            self._unconfirmed.discard(stream_id)
            self._control.append(ResetFrame(stream_id, code))

    def _stream(self, sid: int) -> Stream:
        return Stream(sid, window=self.window, auto_consume=self.auto_consume)

    # -- receiving ----------------------------------------------------------------------
    def receive(self, leg_id: int, frames: list[StreamFrame], now: float) -> None:
        """Apply the frames of one cell that arrived on ``leg_id``.

        The server adopts an unknown leg whose cell begins with LINK for this session.
        Raises RemoteProtocolError for a protocol violation (the driver closes the leg
        and calls :meth:`leg_closed`); cells of legs already gone are dropped.
        """
        if self.failed:
            return
        leg = self._legs.get(leg_id)
        if leg is None:
            if self.client or leg_id in self._gone_legs:
                return
            leg = self._adopt(leg_id, frames, now)
            frames = frames[1:]
        if not leg.proven:
            leg.proven = self._worked = True
            self._no_legs_since = None
        leg.last_recv = now
        for frame in frames:
            self._apply(leg, frame, now)

    def _adopt(self, leg_id: int, frames: list[StreamFrame], now: float) -> Leg:
        first = frames[0] if frames else None
        if not isinstance(first, LinkFrame):
            raise RemoteProtocolError("a new leg must begin with LINK")
        if not hmac.compare_digest(first.token, self.token):
            raise RemoteProtocolError("LINK names another session")
        if len(self._legs) >= MAX_LEGS:  # gone at the client: give the stalest up
            self._lose(min(self._legs.values(), key=lambda g: g.last_recv), "replaced", now)
        return self._new_leg(leg_id, first.leg, now)

    def _apply(self, leg: Leg, frame: StreamFrame, now: float) -> None:
        match frame:
            case PingFrame(nonce):
                if len(leg.pongs) < MAX_PONGS:
                    leg.pongs.append(nonce)
                leg.ack_here = True
            case PongFrame(nonce):
                self._pong(leg, nonce, now)
            case ResetFrame(0, _) if self.client:
                self._fail("the final hop does not know the session (restarted, or forgot it)")
            case DataFrame() | AckFrame() | ResetFrame() | ConnectedFrame():
                stream = self._known_stream(frame.stream_id)
                if stream is not None:
                    self._stream_frame(stream, frame)
            case OpenFrame():
                self._peer_open(frame)
            case LinkFrame():
                raise RemoteProtocolError("LINK on a leg already linked")
            case PaddingFrame():
                pass

    def _pong(self, leg: Leg, nonce: int, now: float) -> None:
        entry = leg.pings.get(nonce)
        if entry is None:
            return  # not ours, or answered already: nothing to learn
        sent_at, mark = entry
        leg.stalled = False
        # a circuit is in order: PINGs sent before this one were answered or lost with it
        for older in list(leg.pings):
            del leg.pings[older]
            if older == nonce:
                break
        leg.rtt_sample(max(0.0, now - sent_at))
        leg.phi.heartbeat(now)
        leg.confirm(mark)

    def _known_stream(self, sid: int) -> Stream | None:
        """The stream ``sid``, None for a closed one; raises for an id never opened."""
        stream = self.streams.get(sid)
        if stream is not None:
            return stream
        if self.client:
            if sid >= self._next_stream or sid == 0:
                raise RemoteProtocolError(f"frame for stream {sid}, never opened")
        elif sid >= self._open_floor and sid not in self._open_above:
            raise RemoteProtocolError(f"frame for stream {sid}, never opened")
        return None

    def _stream_frame(self, stream: Stream, frame: StreamFrame) -> None:
        sid = stream.stream_id
        if isinstance(frame, ConnectedFrame):
            if not self.client:
                raise RemoteProtocolError("CONNECTED from the client")
            self._confirm(sid)
            return
        if isinstance(frame, ResetFrame):
            stream.receive(frame)
            del self.streams[sid]
            self._unconfirmed.discard(sid)
            self._events.append(StreamReset(sid, frame.code))
            return
        if isinstance(frame, DataFrame):
            if self.client:
                self._confirm(sid)  # data implies the target was reached
            was_finished = stream.peer_finished
            data = stream.receive(frame)
            if data:
                self._events.append(StreamData(sid, data))
                if stream.unreported >= ACK_EVERY:
                    stream.request_ack()
            if stream.peer_finished and not was_finished:
                self._events.append(StreamFinished(sid))
        else:
            acked = stream.acked
            stream.receive(frame)
            if stream.acked > acked:
                for leg in self._legs.values():
                    leg.prune(sid, stream.acked)
        self._drop_if_finished(stream)

    def _confirm(self, sid: int) -> None:
        if sid in self._unconfirmed:
            self._unconfirmed.discard(sid)
            self._events.append(StreamConnected(sid))

    def _peer_open(self, frame: OpenFrame) -> None:
        sid = frame.stream_id
        if self.client:
            raise RemoteProtocolError("the server opened a stream")
        if sid == 0:
            raise RemoteProtocolError("stream id 0")
        if sid < self._open_floor or sid in self._open_above:
            return  # resent after a leg was lost: the first copy won
        if len(self._open_above) >= MAX_OPEN_GAPS:
            raise RemoteProtocolError("stream ids too sparse", CloseCode.RESOURCE)
        self._open_above.add(sid)
        while self._open_floor in self._open_above:
            self._open_above.discard(self._open_floor)
            self._open_floor += 1
        if len(self.streams) >= MAX_STREAMS:
            self._queue_control(ResetFrame(sid, CloseCode.RESOURCE))
            return
        self.streams[sid] = self._stream(sid)
        self._events.append(StreamOpened(sid, frame.target))

    def _queue_control(self, frame: ResetFrame) -> None:
        if len(self._control) >= MAX_CONTROL:
            raise RemoteProtocolError("too many control frames pending", CloseCode.RESOURCE)
        self._control.append(frame)

    def _drop_if_finished(self, stream: Stream) -> None:
        if stream.finished and not stream.ack_due:
            del self.streams[stream.stream_id]

    # -- timers -------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` (and then :meth:`cells_to_send`) should run next."""
        if self.failed:
            return None
        times: list[float] = []
        if self._no_legs_since is not None:
            times.append(self._no_legs_since + self.grace)
        for leg in self._legs.values():
            stall = self._stall_at(leg)
            if stall is not None:
                times.append(stall)
            due = self._ping_due(leg)
            if due is not None:
                times.append(due)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Declare stalled legs lost and fail a session left without legs too long."""
        if self.failed:
            return
        for leg in list(self._legs.values()):
            stall = self._stall_at(leg)
            if stall is None or now < stall:
                continue
            if len(self._legs) > 1 or leg.stalled:
                self._lose(leg, "stalled", now)
            else:
                leg.stalled = True
                self._events.append(LastLegStalled(leg.leg_id))
        if self._no_legs_since is not None and now >= self._no_legs_since + self.grace:
            self._fail(f"no leg for {self.grace:g} s")

    def _fail(self, reason: str) -> None:
        self.failed = True
        self._events.append(SessionFailed(reason))

    def _stall_at(self, leg: Leg) -> float | None:
        """When ``leg`` counts as stalled (see Failover), None while it is not watched.
        A last leg already reported stalled is given up after the grace time."""
        oldest = leg.oldest_ping
        if oldest is None:
            return None
        if leg.stalled and len(self._legs) == 1:
            return oldest + self.grace
        if not self._urgent(leg):
            return leg.phi.reaches()
        rto = self._rto(leg)
        late = oldest + max(3 * rto, ONE_WAY_STALL)
        return min(max(oldest, leg.last_recv) + rto, late)

    def _urgent(self, leg: Leg) -> bool:
        """Whether ``leg`` is watched for stalls: it carries something unconfirmed, or a
        stream waits for the peer's data (which the peer may be sending on it).  A late
        PONG on an idle session is more likely a busy relay than a dead one, and dropping
        the leg would gain nothing; a leg that died meanwhile is found as soon as the
        session has something at stake (its oldest PING is old by then)."""
        return bool(leg.records) or any(not s.peer_finished for s in self.streams.values())

    def _rto(self, leg: Leg) -> float:
        """The leg's RTO; before its first sample, twice the slowest measured leg's SRTT
        (legs end at the same hop), or :data:`INITIAL_RTO` if none is measured."""
        if leg.srtt is not None:
            return leg.rto
        rtos = [other.rto for other in self._legs.values() if other.srtt is not None]
        return min(INITIAL_RTO, 2 * max(rtos)) if rtos else INITIAL_RTO

    def _ping_due(self, leg: Leg) -> float | None:
        """When ``leg`` should get its next PING (None: not while PINGs are unanswered)."""
        if len(leg.pings) >= MAX_PINGS or leg.building:
            return None
        if leg.srtt is None:
            return None if leg.pings else -math.inf  # measure a new leg at once
        if leg.next_seq > leg.ping_mark:  # carried something since its last PING
            return leg.last_ping_sent + leg.rto / 4
        if leg.pings:
            return None
        return leg.last_ping_sent + IDLE_PING_INTERVAL

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    # -- sending ------------------------------------------------------------------------
    def cells_to_send(self, now: float) -> list[tuple[int, list[StreamFrame]]]:
        """Every cell to send now: ``(leg_id, frames)``, each list fitting one cell."""
        if self.failed or not self._legs:
            return []
        out = Cells(self.payload_size)
        for leg in self._legs.values():
            if leg.link_pending:
                leg.link_pending = False
                out.put(leg, LinkFrame(self.token, leg.number, self._worked))
            for nonce in leg.pongs:
                out.put(leg, PongFrame(nonce))
            leg.pongs.clear()
            if leg.ack_here:
                leg.ack_here = False
                for stream in list(self.streams.values()):
                    if stream.state is StreamState.OPEN and (stream.ack_due or stream.unreported):
                        self._put_ack(out, leg, stream)
        for leg in self._legs.values():  # ahead of this pull's data (see Failover)
            due = self._ping_due(leg)
            if due is not None and due <= now:
                self._ping(out, leg, now)
        self._send_control(out)
        self._send_resends(out, now)
        self._send_new_data(out, now)
        for leg in self._legs.values():  # a PING that this pull made due rides in its cell
            due = self._ping_due(leg)
            if due is not None and due <= now:
                self._ping(out, leg, now, trailing=True)
        return out.finish()

    def _ping(self, out: Cells, leg: Leg, now: float, *, trailing: bool = False) -> None:
        frame = PingFrame(self._nonce + 1)
        if trailing and not out.add_to_lone_cell(leg, frame):
            return  # not in a cell of its own: the timer sends it, ahead of the next data
        if not trailing:
            out.put(leg, frame)
        self._nonce += 1
        leg.pings[self._nonce] = (now, leg.next_seq)
        leg.ping_mark = leg.next_seq
        leg.last_ping_sent = now
        leg.since_ping = 0

    def _put_data(self, out: Cells, leg: Leg, frame: DataFrame, now: float) -> None:
        """Send ``frame`` on ``leg``, with a PING after every :data:`PING_BYTES` so that
        PONGs keep coming back while a burst drains."""
        out.put(leg, frame)
        leg.record(frame.stream_id, frame.offset, frame.offset + len(frame.data), None)
        if leg.since_ping >= PING_BYTES and len(leg.pings) < MAX_PINGS:
            self._ping(out, leg, now)

    def _fastest(self) -> Leg | None:
        """The lowest-RTT leg under :data:`MAX_LEG_RECORDS` records, a built one if any."""
        legs = [leg for leg in self._legs.values() if len(leg.records) < MAX_LEG_RECORDS]
        up = [leg for leg in legs if not leg.building]
        return min(up or legs, key=Leg.sort_key) if legs else None

    def _put_ack(self, out: Cells, leg: Leg, stream: Stream) -> None:
        ack = stream.ack_frame()
        out.put(leg, ack)
        if ack.fin:  # the stream may be dropped now: keep the final ACK resendable
            leg.record(stream.stream_id, 0, 0, ack)
        self._drop_if_finished(stream)

    def _send_control(self, out: Cells) -> None:
        while self._control:
            leg = self._fastest()
            if leg is None:
                return
            frame = self._control.popleft()
            out.put(leg, frame)
            leg.record(frame.stream_id, 0, 0, frame)
        for stream in list(self.streams.values()):
            if stream.ack_due and stream.state is StreamState.OPEN:
                leg = self._fastest()
                if leg is None:
                    return
                self._put_ack(out, leg, stream)

    def _send_resends(self, out: Cells, now: float) -> None:
        while self._resend:
            rec = self._resend[0]
            if rec.control is not None:
                leg = self._fastest()
                if leg is None:
                    return
                out.put(leg, rec.control)
                leg.record(rec.stream_id, 0, 0, rec.control)
                self._resend.popleft()
                continue
            stream = self.streams.get(rec.stream_id)
            if stream is None or (rec.start >= rec.end and not stream.fin_sent):
                self._resend.popleft()
                continue
            legs = [
                leg
                for leg in self._legs.values()
                if leg.inflight < 2 * self.leg_cap
                and len(leg.records) < MAX_LEG_RECORDS
                and not leg.building
            ]
            if not legs:
                return
            leg = min(legs, key=Leg.sort_key)
            frame = stream.resend_frame(rec.start, rec.end, out.room_for_data(leg))
            if frame is None:
                self._resend.popleft()
                continue
            self._put_data(out, leg, frame, now)
            end = frame.offset + len(frame.data)
            if end >= rec.end:
                self._resend.popleft()
            else:
                rec.start = end

    def _send_new_data(self, out: Cells, now: float) -> None:
        progress = True
        while progress:
            progress = False
            for stream in list(self.streams.values()):
                if stream.stream_id in self._unconfirmed or not stream.has_data_to_send:
                    continue
                leg = self._pick_leg(now)
                if leg is None:
                    return
                frame = stream.data_frame(out.room_for_data(leg))
                if frame is None:
                    continue
                self._put_data(out, leg, frame, now)
                progress = True

    def _pick_leg(self, now: float) -> Leg | None:
        """LowRTT with the BLEST-style rule of the module docstring (built legs only)."""
        legs = [leg for leg in self._legs.values() if not leg.building]
        if not legs:
            return None
        measured = [leg for leg in legs if leg.srtt is not None]
        if not measured:  # nothing measured yet: the first leg, while it has room
            first = min(legs, key=Leg.sort_key)
            return first if self._has_room(first) else None
        fastest = min(measured, key=Leg.sort_key)
        with_room = [leg for leg in measured if self._has_room(leg)]
        if not with_room:
            return None
        best = min(with_room, key=Leg.sort_key)
        if best is fastest:
            return best
        assert best.srtt is not None and fastest.srtt is not None
        oldest = fastest.oldest_ping
        wait = fastest.srtt if oldest is None else max(0.0, oldest + fastest.srtt - now)
        return best if best.srtt / 2 < wait + fastest.srtt / 2 else None

    def _has_room(self, leg: Leg) -> bool:
        return leg.inflight < self.leg_cap and len(leg.records) < MAX_LEG_RECORDS
