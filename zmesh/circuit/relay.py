"""The relay table: circuits where this node is a relay or the final hop.

Every relay runs the same code whatever its position: it sees a CREATE of constant size, a
CREATED of constant size and cells of constant size, and removes (forward) or adds
(backward) one LIONESS layer.  Only the circuit's final hop opens cells.

Work per unauthenticated input is budgeted per peer: each link may make us decapsulate
:data:`CREATE_RATE` CREATEs per second (burst :data:`CREATE_BURST`), all links together
:data:`CREATE_RATE_TOTAL`; beyond that a CREATE is refused with DESTROY(RESOURCE) before
any public-key work (docs/decisions.md, D32).  One predecessor may route at most
:data:`MAX_PER_PREDECESSOR` circuits to one next hop, so it cannot take all our circuit ids
on that link.  The
replay tag of a setup packet is recorded only once the circuit is accepted, so refused
CREATEs cannot fill the replay cache.

Idle circuits (no cell either way for ``idle_timeout``) are destroyed by a periodic sweep,
so a client that walks away does not leave keys on every hop.

A CREATE for a next hop we have no link to waits while we dial that node (D12): it is
"parked" (its setup packet already unwrapped and its replay tag recorded) until the link
comes up, the dial fails, or :data:`PARK_TIMEOUT` passes (then DESTROY(CONNECTION_FAILED)).
Parked CREATEs are bounded in all (:data:`MAX_PARKED`) and per predecessor
(:data:`MAX_PARKED_PER_LINK`), and the dials they cause by the dialer's own bound.

Data behind the CREATE (D49).  A client holds every hop's keys once it has built the
setup packet, so it sends its first cells right behind the CREATE, without waiting for
CREATED; links deliver in order.  A relay that has passed the CREATE on relays the
circuit's forward cells at once (they follow the CREATE on the next link, in order); a
relay whose CREATE is parked keeps them, in order, with the parked CREATE (at most
:data:`MAX_EARLY_CELLS`; one more destroys the circuit, since a dropped cell would break
the ones after it) and sends them behind the CREATE once the link is up, or discards
them with the CREATE if it fails.  Backward cells before CREATED are a protocol error:
the next hop sends CREATED before any cell.
"""

import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..budget import TokenBucket
from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..identity import Descriptor
from ..link import frames as lf
from ..link.connection import LinkConnection
from ..link.table import LinkTable
from ..onion import sphinx
from ..onion.cell import relay_backward, relay_forward
from ..onion.geometry import Geometry
from ..onion.keyring import OnionKeyRing
from ..rng import Rng
from ..session.endpoint import ServerEnd
from ..session.frames import StreamFrame
from .common import (
    MAX_EARLY_CELLS,
    CircuitClosed,
    CircuitConfig,
    CircuitEvent,
    Deliver,
    HopOpened,
    Side,
    send_frames,
)

log = logging.getLogger("zmesh.relay")

CREATE_RATE = 100.0  # CREATEs per second a peer may make us decapsulate
CREATE_BURST = 200.0
CREATE_RATE_TOTAL = 1000.0  # ... and all peers together
MAX_PER_PREDECESSOR = 1024  # circuits one link may route to one next hop
SWEEP_INTERVAL = 60.0
PARK_TIMEOUT = 15.0  # how long a CREATE waits for a link we dial on its behalf
MAX_PARKED = 256  # CREATEs waiting for links, in all
MAX_PARKED_PER_LINK = 32  # ... and from one predecessor


@dataclass(slots=True)
class _Parked:
    """A CREATE waiting for a link to its next hop."""

    conn: LinkConnection  # the predecessor
    circ_id: int
    result: sphinx.Forward
    deadline: float
    cells: list[bytes] = field(default_factory=list)  # forward cells that followed it


@dataclass(slots=True)
class _Hop:
    """A circuit as seen by a relay (``next`` set) or by its final hop (``end`` set)."""

    prev: Side
    keys: sphinx.HopKeys
    confirm_tag: bytes
    prev_conn: LinkConnection
    next: Side | None = None
    next_conn: LinkConnection | None = None  # both links outlive the hop: closing one ends it
    end: ServerEnd | None = None
    circuit_id: int = 0
    open: bool = False
    fwd: int = 0  # cell counters; the final hop's live in its ServerEnd
    bwd: int = 0
    active: float = 0.0  # when the last cell passed


class RelayTable:
    def __init__(
        self,
        links: LinkTable,
        keyring: OnionKeyRing,
        geometry: Geometry,
        rng: Rng,
        *,
        config: CircuitConfig,
        ids: "itertools.count[int]",
        now: float,
    ) -> None:
        self._links = links
        self._directory: Mapping[bytes, Descriptor] = {}  # (dial_through)
        self._dial: Callable[[Descriptor, float], bool] | None = None
        self._find: Callable[[bytes, float], bool] | None = None  # (dial_through)
        self._parked: dict[bytes, list[_Parked]] = {}  # next hop's id -> CREATEs for it
        self._parked_sides: dict[Side, _Parked] = {}  # the same, by predecessor's side
        self.keyring = keyring
        self._geometry = geometry
        self._rng = rng
        self._config = config
        self._ids = ids
        self._hops: dict[Side, _Hop] = {}
        self._endpoints: dict[int, _Hop] = {}
        self._budgets: dict[int, TokenBucket] = {}  # link id -> CREATE budget
        self.events: deque[CircuitEvent] = deque()
        self._next_sweep = now + SWEEP_INTERVAL
        self._all_creates = TokenBucket(CREATE_RATE_TOTAL, CREATE_RATE_TOTAL * 2)
        self._pairs: dict[tuple[int, int], int] = {}  # (in link, out link) -> circuits
        self.cells_relayed = 0
        self._deliver: Deliver | None = None

    def deliver_to(self, deliver: Deliver) -> None:
        """Hand the frames of every cell that reaches us as a final hop to ``deliver``
        (without it, such a cell closes the circuit)."""
        self._deliver = deliver

    def dial_through(
        self,
        directory: Mapping[bytes, Descriptor],
        dial: Callable[[Descriptor, float], bool],
        find: Callable[[bytes, float], bool] | None = None,
    ) -> None:
        """Dial next hops we have no link to, found in ``directory``, with ``dial`` (the
        dialer's ``want``: False if it cannot dial now); ``find`` looks up one missing
        there and dials it (False if it cannot; :meth:`dial_failed` if it fails).  Without
        this, such a CREATE is refused with CONNECTION_FAILED."""
        self._directory, self._dial, self._find = directory, dial, find

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> CircuitEvent | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        if not self._parked_sides:
            return self._next_sweep
        return min(self._next_sweep, *(p.deadline for ps in self._parked.values() for p in ps))

    def handle_timer(self, now: float) -> None:
        if self._parked_sides:
            for node_id in list(self._parked):
                self._unpark(lambda p: p.deadline <= now, node_id, "no link in time", now)
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        cutoff = now - self._config.idle_timeout
        idle = [h for s, h in self._hops.items() if s == h.prev and h.active < cutoff]
        for hop in idle:
            log.info("circuit event=destroy reason='idle'")
            self._teardown(hop.prev, CloseCode.TIMEOUT, now)

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Circuits that pass through this node (as a relay or as their final hop)."""
        return sum(1 for s, h in self._hops.items() if s == h.prev)

    def __contains__(self, circuit_id: object) -> bool:
        """Whether ``circuit_id`` is a circuit we are the final hop of."""
        return circuit_id in self._endpoints

    def send_frames(self, circuit_id: int, frames: list[StreamFrame], now: float) -> None:
        """Send one cell of ``frames`` back to the client; a full queue closes the circuit.
        A circuit closed in this same input (its CircuitClosed still queued) is skipped."""
        hop = self._endpoints.get(circuit_id)
        if hop is None:
            return
        assert hop.end is not None
        if not send_frames(hop.end, hop.prev_conn, hop.prev[1], frames, now):
            self._teardown(hop.prev, CloseCode.RESOURCE, now)

    # -- frames ----------------------------------------------------------------------------
    def on_create(self, conn: LinkConnection, frame: lf.Create, now: float) -> None:
        circ_id = frame.circ_id
        budget = self._budgets.get(conn.link_id)
        if budget is None:
            budget = self._budgets[conn.link_id] = TokenBucket(CREATE_RATE, CREATE_BURST)
        if not conn.add_inbound(circ_id, "relay"):
            conn.reject(circ_id)
            conn.send(lf.Destroy(circ_id, CloseCode.RESOURCE), now)
            return
        if not budget.take(now) or not self._all_creates.take(now):
            self._refuse(conn, circ_id, CloseCode.RESOURCE, "over the CREATE budget", now)
            return
        try:
            entry = self.keyring.epoch_key(frame.epoch)
            result = sphinx.unwrap_setup_header(self._geometry, entry.key, frame.header)
            if entry.replay.seen(result.keys.replay_tag):
                raise RemoteProtocolError("replayed setup packet", CloseCode.REPLAY)
        except RemoteProtocolError as exc:
            self._refuse(conn, circ_id, exc.code, str(exc), now)
            return
        assert conn.peer_id is not None
        side = (conn.link_id, circ_id)
        if isinstance(result, sphinx.Final):
            entry.replay.record(result.keys.replay_tag)
            hop = _Hop(side, result.keys, result.confirm_tag, conn, open=True, active=now)
            hop.end = ServerEnd(self._geometry, result.keys)
            hop.circuit_id = next(self._ids)
            self._endpoints[hop.circuit_id] = hop
            self._hops[side] = hop
            if self._config.hop_events:
                self.events.append(HopOpened(conn.peer_id, None))
            inner = self._rng.bytes(self._geometry.created_size)
            reply = sphinx.wrap_created(self._geometry, result.keys, result.confirm_tag, inner)
            conn.send(lf.Created(circ_id, reply), now)
            return
        next_conn = self._links.to_peer(result.next_node_id)
        if next_conn is None:
            accepted = self._park(conn, circ_id, result, now)
        else:
            accepted = self._extend(conn, circ_id, result, next_conn, now)
        if accepted:
            entry.replay.record(result.keys.replay_tag)

    def _extend(
        self,
        conn: LinkConnection,
        circ_id: int,
        result: sphinx.Forward,
        next_conn: LinkConnection,
        now: float,
    ) -> bool:
        """Pass the CREATE on to ``next_conn``; False (refused) if we route too many of
        ``conn``'s circuits there or have no circuit id left on it."""
        pair = (conn.link_id, next_conn.link_id)
        out_id = None
        if self._pairs.get(pair, 0) < MAX_PER_PREDECESSOR:
            out_id = next_conn.allocate(self._rng, "relay")
        if out_id is None:
            self._refuse(conn, circ_id, CloseCode.RESOURCE, "no way to the next hop", now)
            return False
        assert conn.peer_id is not None
        side = (conn.link_id, circ_id)
        self._pairs[pair] = self._pairs.get(pair, 0) + 1
        out = (next_conn.link_id, out_id)
        hop = _Hop(side, result.keys, result.confirm_tag, conn, out, next_conn, active=now)
        self._hops[side] = hop
        self._hops[out] = hop
        if self._config.hop_events:
            self.events.append(HopOpened(conn.peer_id, result.next_node_id))
        next_conn.send(lf.Create(out_id, result.next_epoch, result.header), now)
        return True

    # -- CREATEs waiting for a link we dial (D12) ---------------------------------------------
    def _park(self, conn: LinkConnection, circ_id: int, result: sphinx.Forward, now: float) -> bool:
        """Dial the next hop and keep the CREATE until the link is up; False (refused at
        once) if the next hop is unknown or a bound is reached."""
        desc = self._directory.get(result.next_node_id)
        mine = sum(1 for p in self._parked_sides.values() if p.conn is conn)
        find = self._find
        if desc is None and (find is None or not find(result.next_node_id, now)):
            self._refuse(conn, circ_id, CloseCode.CONNECTION_FAILED, "unknown next hop", now)
        elif len(self._parked_sides) >= MAX_PARKED or mine >= MAX_PARKED_PER_LINK:
            self._refuse(conn, circ_id, CloseCode.RESOURCE, "too many CREATEs wait", now)
        elif desc is not None and (self._dial is None or not self._dial(desc, now)):
            self._refuse(conn, circ_id, CloseCode.RESOURCE, "cannot dial the next hop", now)
        else:
            parked = _Parked(conn, circ_id, result, now + PARK_TIMEOUT)
            self._parked.setdefault(result.next_node_id, []).append(parked)
            self._parked_sides[(conn.link_id, circ_id)] = parked
            return True
        return False

    def link_up(self, conn: LinkConnection, now: float) -> None:
        """A link came up: extend the CREATEs that waited for it, each followed by the
        cells that arrived behind it."""
        assert conn.peer_id is not None
        for p in self._parked.pop(conn.peer_id, []):
            side = (p.conn.link_id, p.circ_id)
            del self._parked_sides[side]
            if p.conn.closed or p.conn.circuits.get(p.circ_id) != "relay":
                continue
            if self._extend(p.conn, p.circ_id, p.result, conn, now):
                for cell in p.cells:
                    hop = self._hops.get(side)
                    if hop is None:  # a cell over the queue limit closed it
                        break
                    self._forward(hop, side, cell, now)

    def dial_failed(self, node_id: bytes, now: float) -> None:
        """The dial to ``node_id`` failed: refuse the CREATEs that waited for it (their
        early cells are discarded with them)."""
        self._unpark(lambda p: True, node_id, "dial failed", now)

    def _unpark(
        self, which: Callable[[_Parked], bool], node_id: bytes, why: str, now: float
    ) -> None:
        """Refuse the CREATEs waiting for ``node_id`` that ``which`` selects."""
        waiting = self._parked.get(node_id, [])
        keep = [p for p in waiting if not which(p)]
        for p in waiting:
            if not which(p):
                continue
            del self._parked_sides[(p.conn.link_id, p.circ_id)]
            if not p.conn.closed and p.conn.circuits.get(p.circ_id) == "relay":
                self._refuse(p.conn, p.circ_id, CloseCode.CONNECTION_FAILED, why, now)
        if keep:
            self._parked[node_id] = keep
        else:
            self._parked.pop(node_id, None)

    def _forget_parked(self, conn: LinkConnection, circ_id: int | None) -> None:
        """Drop parked CREATEs of ``conn`` (all, or the one on ``circ_id``) and their early
        cells, with no reply: the predecessor destroyed it, or its link is gone."""
        for node_id in list(self._parked):
            waiting = self._parked[node_id]
            keep = [p for p in waiting if p.conn is not conn or circ_id not in (None, p.circ_id)]
            for p in waiting:
                if p.conn is conn and circ_id in (None, p.circ_id):
                    del self._parked_sides[(p.conn.link_id, p.circ_id)]
            if keep:
                self._parked[node_id] = keep
            else:
                del self._parked[node_id]

    def _early_cell(self, parked: _Parked, cell: bytes, now: float) -> None:
        """A forward cell behind a parked CREATE: kept, in order, within
        :data:`MAX_EARLY_CELLS`; one more refuses the circuit and discards the rest."""
        if len(parked.cells) < MAX_EARLY_CELLS:
            parked.cells.append(cell)
            return
        self._forget_parked(parked.conn, parked.circ_id)
        self._refuse(parked.conn, parked.circ_id, CloseCode.RESOURCE, "too many early cells", now)

    def _refuse(
        self, conn: LinkConnection, circ_id: int, code: CloseCode, why: str, now: float
    ) -> None:
        log.info("circ event=reject reason=%r", why)
        conn.release(circ_id)
        conn.send(lf.Destroy(circ_id, code), now)

    def on_created(self, conn: LinkConnection, frame: lf.Created, now: float) -> None:
        hop = self._hops.get((conn.link_id, frame.circ_id))
        if hop is None or hop.next != (conn.link_id, frame.circ_id) or hop.open:
            raise RemoteProtocolError("unexpected CREATED")
        hop.open = True
        reply = sphinx.wrap_created(self._geometry, hop.keys, hop.confirm_tag, frame.reply)
        hop.prev_conn.send(lf.Created(hop.prev[1], reply), now)

    def on_cell(self, conn: LinkConnection, frame: lf.Cell, now: float) -> None:
        """One cell of a circuit through us: its layer removed (forward) or added
        (backward) and passed on, or opened at the final hop.  A forward cell may follow
        its CREATE before CREATED came back (D49).  Raises RemoteProtocolError for a
        backward cell before CREATED."""
        side = (conn.link_id, frame.circ_id)
        hop = self._hops.get(side)
        if hop is None:  # its CREATE waits for a link to the next hop
            parked = self._parked_sides.get(side)
            if parked is None:
                raise RemoteProtocolError("cell on a circuit still being built")
            self._early_cell(parked, frame.cell, now)
            return
        if hop.end is not None:
            hop.active = now
            # the final hop: remove its layer (the same LIONESS pass) and authenticate
            try:
                frames = hop.end.open_frames(frame.cell)
            except RemoteProtocolError:
                log.info("circuit=%d event=teardown reason='garbled cell'", hop.circuit_id)
                self._teardown(side, CloseCode.AUTH, now)
                return
            if self._deliver is None:
                self._teardown(side, CloseCode.PROTOCOL, now)
                return
            self._deliver(hop.circuit_id, frames, now)
            return
        if side != hop.prev and not hop.open:
            raise RemoteProtocolError("cell before CREATED")
        self._forward(hop, side, frame.cell, now)

    def _forward(self, hop: _Hop, side: Side, cell: bytes, now: float) -> None:
        """Relay one cell that arrived at ``side`` of ``hop`` to its other side; a full
        queue there destroys the circuit."""
        hop.active = now
        if side == hop.prev:
            assert hop.next is not None and hop.next_conn is not None
            data = relay_forward(self._geometry, hop.keys, hop.fwd, cell)
            hop.fwd += 1
            out, out_conn = hop.next, hop.next_conn
        else:
            data = relay_backward(self._geometry, hop.keys, hop.bwd, cell)
            hop.bwd += 1
            out, out_conn = hop.prev, hop.prev_conn
        self.cells_relayed += 1
        if not out_conn.send_cell(out[1], data, now):
            log.info("circuit event=destroy reason='queue limit'")
            self._teardown(side, CloseCode.RESOURCE, now)

    def on_destroy(self, conn: LinkConnection, frame: lf.Destroy, now: float) -> None:
        side = (conn.link_id, frame.circ_id)
        if side not in self._hops:  # a CREATE still waiting for a link
            self._forget_parked(conn, frame.circ_id)
            conn.release(frame.circ_id)
            return
        self._teardown(side, frame.code, now, from_peer=True)

    def link_closed(self, conn: LinkConnection, now: float) -> None:
        if self._parked_sides:
            self._forget_parked(conn, None)
        for circ_id, owner in list(conn.circuits.items()):
            if owner == "relay":
                self._teardown((conn.link_id, circ_id), CloseCode.CONNECTION_FAILED, now)
        self._budgets.pop(conn.link_id, None)

    def close(self, circuit_id: int, now: float, code: CloseCode = CloseCode.REQUESTED) -> None:
        hop = self._endpoints.get(circuit_id)
        if hop is None:
            raise LocalProtocolError(f"no circuit {circuit_id}")
        self._teardown(hop.prev, code, now)

    def _teardown(
        self, side: Side, code: CloseCode, now: float, *, from_peer: bool = False
    ) -> None:
        """Destroy the circuit at ``side`` and tell the neighbours that remain."""
        hop = self._hops.get(side)
        if hop is None:
            return
        for s, conn in ((hop.prev, hop.prev_conn), (hop.next, hop.next_conn)):
            if s is None or conn is None:
                continue
            self._hops.pop(s, None)
            if not conn.closed:
                conn.release(s[1])
                if s != side or not from_peer:
                    conn.send(lf.Destroy(s[1], code), now)
        if hop.next is not None:
            pair = (hop.prev[0], hop.next[0])
            left = self._pairs[pair] - 1
            if left:
                self._pairs[pair] = left
            else:
                del self._pairs[pair]
        if hop.end is not None:
            del self._endpoints[hop.circuit_id]
            self.events.append(CircuitClosed(hop.circuit_id, code))
