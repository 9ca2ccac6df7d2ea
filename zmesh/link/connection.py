"""One link to a neighbour: handshake, frame decoder, credit, heartbeats and a send queue.

Theory of operation.  A :class:`LinkConnection` is created when a transport opens.  Until
the handshake (:mod:`zmesh.link.handshake`) completes it accepts only HELLO and CLOSE
frames; then it carries everything else.

Credit (docs/decisions.md, D15).  A peer may have at most :data:`LINK_WINDOW` *counted*
frames unanswered; we return CREDIT after processing half a window, and a peer that sends
beyond its window loses the link.  Frames we may not send yet wait in a backlog, bounded so
that no peer (this one or a third) can make it grow without bound or make us close a link
to an honest neighbour (D32):

* cells, counted per circuit: a circuit with more than :data:`MAX_QUEUED_CELLS` waiting is
  refused more (the caller destroys it), and the whole backlog holds at most
  :data:`MAX_BACKLOG_BYTES`;
* CREATE, CREATED and DESTROY: bounded by the circuit ids (one of each per circuit), so
  tearing down many circuits at once never fails the link;
* everything else (DESCRIPTOR, SIGNAL, PADDING) up to :data:`MAX_CONTROL_BACKLOG` frames;
  the directory and the signal router only send with room to spare, so only our own
  misbehaviour could reach it.

A peer that holds more than half our window for ``credit_timeout`` without returning half
a window loses the link (:meth:`handle_timer`): holding credit costs us memory, so it must
not be free.  An honest peer returns credit in steps of at least half a window (see
:meth:`processed_frames`), and each such step restarts the clock; trickling CREDIT(0) or
CREDIT(1) does not.  (Before D42 the clock was the age of the oldest frame waiting for
credit, and the counted PADDING keepalives made every starved link queue one; PINGs are
not counted.)  A closed circuit's queued cells are skipped as credit comes (no scan of
the backlog per closed circuit).

Circuit ids.  Each side allocates ids with its own top bit, so both never pick the same.
Live ids map to their owner (``"relay"`` or ``"client"``); ids of circuits that closed are
kept (bounded, oldest forgotten first) so that a frame racing a DESTROY is dropped quietly
while a frame for an id that never existed is a protocol error.

Heartbeats (D42).  Once up, each side sends a PING every ``keepalive`` seconds, busy or not,
and answers the peer's PINGs with PONGs (at most :data:`PONGS_PER_INTERVAL` per
``keepalive``, a token bucket; the rest are dropped quietly); both go out ahead of
the credit backlog and are not counted.  :class:`~zmesh.health.link.LinkHealth` turns the
PONGs into :attr:`LinkConnection.rtt`, :attr:`LinkConnection.loss` and
:meth:`LinkConnection.phi`, and decides when the peer is dead: phi over 8 and nothing
received for ``keepalive``, or nothing received for ``timeout`` (the hard cap).

Messages (D47).  Each received message must hold whole frames, one or several
(:meth:`~zmesh.link.frames.FrameDecoder.feed_message`).  With ``LinkLimits.batch`` set,
:meth:`LinkConnection.datagrams_to_send` packs the frames queued since the last pull into
as few messages of at most that many bytes as fit (a lone frame goes at once, alone);
by default :data:`~zmesh.link.frames.SEND_BATCH`, with 0 one frame per message (D56).

Outputs are pulled by the node: :meth:`datagrams_to_send` and :meth:`get_timer`.
"""

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..budget import TokenBucket
from ..errors import CloseCode, RemoteProtocolError
from ..health.link import LinkHealth
from ..onion.geometry import Geometry
from ..rng import Rng, randbelow
from . import frames as lf
from .handshake import LinkHandshake

LINK_WINDOW = 512  # counted frames in flight per link direction
MAX_QUEUED_CELLS = 2048  # per circuit, waiting for link credit
MAX_CONTROL_BACKLOG = 1024  # DESCRIPTOR, SIGNAL and PADDING frames waiting for credit
MAX_BACKLOG_BYTES = 32 << 20  # everything waiting for credit on one link
MAX_CIRCUITS_PER_DIRECTION = 4096  # live circuit ids allocated by each side of a link
MAX_CLOSED_IDS = 8192  # ids of closed circuits remembered per link
HANDSHAKE_TIMEOUT = 15.0
PONGS_PER_INTERVAL = 4  # PONGs a peer may make us send per keepalive (burst as many)
# frame types (each a final class, so ``type(frame) in ...`` is exact)
UNCOUNTED: frozenset[type] = frozenset(
    {lf.Hello1, lf.Hello2, lf.Hello3, lf.Credit, lf.Close, lf.Ping, lf.Pong}
)
_CIRCUIT_FRAMES: frozenset[type] = frozenset({lf.Create, lf.Created, lf.Destroy})  # bounded by ids
_TOP = 0x80000000


@dataclass
class LinkWatch:
    """Shared by a node's links: which have output to pull, and which must close."""

    ready: dict["LinkConnection", None] = field(default_factory=dict)
    failed: dict["LinkConnection", None] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkLimits:
    keepalive: float = 1.0  # send a PING on every link this often
    timeout: float = 10.0  # close a link silent this long, whatever phi says (D42)
    credit_timeout: float = 30.0  # close a link whose peer holds our credit this long
    batch: int = lf.SEND_BATCH  # bytes of frames per message sent (D56); 0: one frame each


class LinkConnection:
    def __init__(
        self,
        link_id: int,
        handshake: LinkHandshake,
        geometry: Geometry,
        now: float,
        *,
        limits: LinkLimits,
        watch: LinkWatch,
    ) -> None:
        self.link_id = link_id
        self._watch = watch
        self.handshake = handshake
        self.initiator = handshake.initiator  # fixed for the link's life
        self.limits = limits
        self.decoder = lf.FrameDecoder(geometry)
        self.up = False
        self.closed = False  # removed from the node's links
        self.peer_id: bytes | None = None
        self.deadline = now + HANDSHAKE_TIMEOUT
        self.last_rx = now
        self.up_since = now  # set again when the handshake completes (start)
        self.health = LinkHealth(limits.keepalive, limits.timeout, now)
        self._pongs = TokenBucket(PONGS_PER_INTERVAL / limits.keepalive, PONGS_PER_INTERVAL)
        self.pongs_refused = 0  # the peer's PINGs left unanswered (over the budget)
        self.credit = LINK_WINDOW  # counted frames we may still send
        self.allowance = LINK_WINDOW  # counted frames the peer may still send
        self.processed = 0  # counted frames processed since we last returned credit
        self._ready: list[bytes] = []
        # (bytes, circ_id of a cell or None, control or not)
        self._backlog: deque[tuple[bytes, int | None, bool]] = deque()
        self._owed_since: float | None = None  # the peer holds over half our window since
        self._backlog_bytes = 0
        self._control_queued = 0
        self._queued: dict[int, int] = {}  # circ_id -> live cells in the backlog
        self._dead: dict[int, int] = {}  # circ_id -> cells of a closed circuit still queued
        self.circuits: dict[int, str] = {}  # live circ_id -> owner
        self._counts = [0, 0]  # live ids allocated by the peer, by us
        self._closed: OrderedDict[int, None] = OrderedDict()
        #: why this link must close, set by a send or a timer; the node closes it
        self.failure: tuple[str, CloseCode] | None = None

    def fail(self, reason: str, code: CloseCode) -> None:
        """Mark the link for closing (the node closes it once the current input is done)."""
        if self.failure is None:
            self.failure = (reason, code)
            self._watch.failed[self] = None

    def start(self, now: float) -> None:
        """The handshake completed at ``now``: heartbeats begin (the first PING a
        keepalive later)."""
        self.last_rx = self.up_since = now
        self.health = LinkHealth(self.limits.keepalive, self.limits.timeout, now)

    def _push(self, data: bytes) -> None:
        if not self._ready:
            self._watch.ready[self] = None
        self._ready.append(data)

    # -- input --------------------------------------------------------------------------
    def feed(self, data: bytes, now: float) -> list[lf.Frame]:
        """Decode one link message (whole frames, see :mod:`zmesh.link.frames`); raises
        RemoteProtocolError on a malformed frame or a message that ends inside one."""
        self.last_rx = now
        return self.decoder.feed_message(data)

    def admit(self, frame: lf.Frame) -> bool:
        """Account for one received frame; True if it counts against the window.

        Raises RemoteProtocolError if the peer overran its window."""
        if not self.up or type(frame) in UNCOUNTED:
            return False
        if self.allowance <= 0:
            raise RemoteProtocolError("peer overran the link window", CloseCode.RESOURCE)
        self.allowance -= 1
        return True

    def on_ping(self, frame: lf.Ping, now: float) -> None:
        """The peer's heartbeat: answered with a PONG within the budget (at most
        :data:`PONGS_PER_INTERVAL` per keepalive), else dropped quietly and counted."""
        if self._pongs.take(now):
            self._push(lf.encode_frame(lf.Pong(frame.seq)))
        else:
            self.pongs_refused += 1

    def on_pong(self, frame: lf.Pong, now: float) -> None:
        """The answer to one of our PINGs (a stale or unknown one is dropped quietly)."""
        self.health.pong(frame.seq, now)

    @property
    def rtt(self) -> float | None:
        """The link's smoothed round-trip time in seconds, None before the first PONG."""
        return self.health.rtt

    @property
    def loss(self) -> float:
        """The fraction (0..1) of the last PINGs left unanswered within their deadline."""
        return self.health.loss

    def phi(self, now: float) -> float:
        """The phi-accrual suspicion level of the peer at ``now`` (0 while fine)."""
        return self.health.phi(now)

    def status(self, now: float) -> "LinkStatus":
        """The link's health figures at ``now`` (for status pages)."""
        assert self.peer_id is not None, "status of a link that is not up"
        return LinkStatus(self.peer_id, self.rtt, self.loss, self.phi(now), now - self.up_since)

    def processed_frames(self, n: int) -> None:
        """``n`` counted frames were handled: return credit once half a window is due."""
        self.processed += n
        if self.processed >= LINK_WINDOW // 2:
            self.allowance += self.processed
            self._push(lf.encode_frame(lf.Credit(self.processed)))
            self.processed = 0

    def receive_credit(self, frames: int, now: float) -> None:
        """The peer returned credit: send what waited for it."""
        if frames > LINK_WINDOW or self.credit + frames > LINK_WINDOW:
            raise RemoteProtocolError("credit beyond the link window", CloseCode.RESOURCE)
        self.credit += frames
        backlog = self._backlog
        while self.credit > 0 and backlog:
            data, circ_id, control = backlog.popleft()
            self._backlog_bytes -= len(data)
            if circ_id is not None:
                dead = self._dead.get(circ_id)
                if dead:  # a cell of a circuit that closed meanwhile: never sent
                    if dead == 1:
                        del self._dead[circ_id]
                    else:
                        self._dead[circ_id] = dead - 1
                    continue
                left = self._queued[circ_id] - 1
                if left:
                    self._queued[circ_id] = left
                else:
                    del self._queued[circ_id]
            elif control:
                self._control_queued -= 1
            self.credit -= 1
            self._push(data)
        half = LINK_WINDOW // 2
        if frames >= half or self.credit >= half:  # a real return restarts the clock
            self._owed_since = now if self.credit < half else None

    # -- output -------------------------------------------------------------------------
    def send(self, frame: lf.Frame, now: float) -> None:
        """Queue one frame: uncounted ones at once, counted ones within credit.

        If the control backlog is full (see the module doc) :attr:`failure` is set: the
        link must close."""
        data = lf.encode_frame(frame)
        kind = type(frame)
        if kind in UNCOUNTED:
            self._push(data)
            return
        control = kind not in _CIRCUIT_FRAMES
        if not self._counted(data, None, control, now):
            self.fail("peer holds our link credit", CloseCode.RESOURCE)

    def send_cell(self, circ_id: int, cell: bytes, now: float) -> bool:
        """Queue one cell of circuit ``circ_id``; False if that circuit has too many queued
        or the link's backlog is full (the caller destroys the circuit)."""
        return self._counted(lf.encode_cell(circ_id, cell), circ_id, False, now)

    def _counted(self, data: bytes, circ_id: int | None, control: bool, now: float) -> bool:
        if self._owed_since is None and self.credit <= LINK_WINDOW // 2:
            self._owed_since = now  # the peer will hold over half our window
        if self.credit > 0 and not self._backlog:
            self.credit -= 1
            self._push(data)
            return True
        if circ_id is not None:
            queued = self._queued.get(circ_id, 0)
            if queued >= MAX_QUEUED_CELLS or self._backlog_bytes >= MAX_BACKLOG_BYTES:
                return False
            self._queued[circ_id] = queued + 1
        elif control:
            if self._control_queued >= MAX_CONTROL_BACKLOG:
                return False
            self._control_queued += 1
        self._backlog.append((data, circ_id, control))
        self._backlog_bytes += len(data)
        return True

    def has_room(self, reserve: int) -> bool:
        """True if a counted frame would go out now leaving ``reserve`` credit unused."""
        return self.up and not self._backlog and self.credit > reserve

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def datagrams_to_send(self) -> list[bytes]:
        """The messages to send, in order (see Messages)."""
        out, self._ready = self._ready, []
        batch = self.limits.batch
        return lf.pack_frames(out, batch) if batch else out

    # -- timers -------------------------------------------------------------------------
    def get_timer(self) -> float:
        if not self.up:
            return self.deadline
        health = self.health
        deadline = min(health.next_ping, health.dead_at(self.last_rx))
        if self._owed_since is not None:
            deadline = min(deadline, self._owed_since + self.limits.credit_timeout)
        return deadline

    def handle_timer(self, now: float) -> None:
        """Send a PING if one is due; set :attr:`failure` if the link must close."""
        health = self.health
        if not self.up:
            if now >= self.deadline:
                self.fail("handshake timed out", CloseCode.TIMEOUT)
        elif now >= health.dead_at(self.last_rx):
            self.fail("peer silent", CloseCode.TIMEOUT)
        elif self._owed_since is not None and now >= self._owed_since + self.limits.credit_timeout:
            self.fail("peer held our credit too long", CloseCode.RESOURCE)
        elif now >= health.next_ping:
            self._push(lf.encode_frame(lf.Ping(health.ping(now))))

    # -- circuit ids --------------------------------------------------------------------
    def circuit_state(self, circ_id: int) -> str | None:
        """The owner of a live id, ``"closed"`` for a recently closed one, else None."""
        owner = self.circuits.get(circ_id)
        if owner is not None:
            return owner
        return "closed" if circ_id in self._closed else None

    def _mine(self, circ_id: int) -> int:
        return int(bool(circ_id & _TOP) == self.initiator)

    def add_inbound(self, circ_id: int, owner: str) -> bool:
        """Register an id the peer allocated; False if the peer has too many live."""
        if bool(circ_id & _TOP) == self.initiator:  # our half (_mine)
            raise RemoteProtocolError("peer used a circuit id from our half")
        if circ_id in self.circuits:
            raise RemoteProtocolError("CREATE for a circuit id in use")
        if self._counts[0] >= MAX_CIRCUITS_PER_DIRECTION:
            return False
        self._closed.pop(circ_id, None)
        self.circuits[circ_id] = owner
        self._counts[0] += 1
        return True

    def allocate(self, rng: Rng, owner: str) -> int | None:
        """A fresh id from our half for a circuit we start; None if we have too many live."""
        if self._counts[1] >= MAX_CIRCUITS_PER_DIRECTION:
            return None
        top = _TOP if self.initiator else 0
        while True:
            circ_id = top | randbelow(rng, _TOP)
            if circ_id not in self.circuits and circ_id not in self._closed:
                self.circuits[circ_id] = owner
                self._counts[1] += 1
                return circ_id

    def release(self, circ_id: int) -> None:
        """The circuit closed: remember its id for late frames; its queued cells will be
        skipped (not sent) as credit comes."""
        if self.circuits.pop(circ_id, None) is None:
            return
        self._counts[self._mine(circ_id)] -= 1
        self.reject(circ_id)
        queued = self._queued.pop(circ_id, 0)
        if queued:
            self._dead[circ_id] = self._dead.get(circ_id, 0) + queued

    def reject(self, circ_id: int) -> None:
        """Remember ``circ_id`` as closed (an inbound CREATE we refused, or a circuit that
        ended): late frames for it are dropped quietly."""
        self._closed[circ_id] = None
        if len(self._closed) > MAX_CLOSED_IDS:
            self._closed.popitem(last=False)


# -- events -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LinkStatus:
    """One link's health at a moment: its peer, RTT (seconds, None until measured), loss
    (0..1), phi and how long it has been up (seconds)."""

    peer_id: bytes
    rtt: float | None
    loss: float
    phi: float
    age: float


@dataclass(frozen=True, slots=True)
class LinkUp:
    link_id: int
    peer_id: bytes


@dataclass(frozen=True, slots=True)
class LinkClosed:
    link_id: int
    peer_id: bytes | None
    code: CloseCode
