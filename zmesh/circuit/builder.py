"""The circuit builder: circuits this node owns as their client.

:meth:`CircuitBuilder.build` sends one CREATE through a path of verified descriptors; the
CREATED that comes back one round trip later confirms every hop (docs/decisions.md, D8).
A build that takes longer than the adaptive close timeout is destroyed:
:attr:`CircuitBuilder.build_times` learns it from the builds seen so far (Tor's method,
:mod:`zmesh.health.cbt`: the 99% point; the sessions build another beside a build still
under way after ``HEDGE_AFTER``), with ``build_timeout`` as the default and the ceiling.  The
relays past the first hop of a build that timed out or was refused are scored in
:attr:`CircuitBuilder.avoidance` for path choice.  The circuit's
:class:`~zmesh.session.endpoint.ClientEnd` seals and opens its cells, whose frames go to
the session the circuit is a leg of (:mod:`zmesh.circuit.sessions`).  It exists from the
CREATE on (the setup packet gives every hop's keys), so cells may follow the CREATE before
CREATED comes back (:meth:`CircuitBuilder.send_frames`; links deliver in order, and the
relays keep them behind it: docs/decisions.md D49); cells can arrive only after CREATED.
At most :data:`~.common.MAX_EARLY_CELLS` cells go before CREATED (a relay whose CREATE is
parked keeps no more); later ones wait in the circuit, in order, and follow CREATED.
"""

import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..health import Avoidance, BuildTimes
from ..identity import Descriptor
from ..link import frames as lf
from ..link.connection import LinkConnection
from ..link.table import LinkTable
from ..onion import sphinx
from ..onion.geometry import Geometry
from ..rng import Rng
from ..session.endpoint import ClientEnd
from ..session.frames import StreamFrame
from .common import (
    MAX_EARLY_CELLS,
    CircuitBuilt,
    CircuitClosed,
    CircuitConfig,
    CircuitEvent,
    Deliver,
    Side,
    send_frames,
)

log = logging.getLogger("zmesh.builder")

MAX_BUILDING = 256  # circuits waiting for their CREATED
MAX_HELD = 256  # cells one circuit holds until its CREATED (beyond: closed, RESOURCE)
MIN_BUILD_TIMEOUT = 1.0  # the adaptive timeout never goes under this (nor over build_timeout)


@dataclass(slots=True)
class _ClientCircuit:
    circuit_id: int
    out: Side
    setup: sphinx.SetupState
    started: float
    timeout: float
    deadline: float
    path: tuple[bytes, ...]  # node ids, first hop first; past the first, blamed if it fails
    end: ClientEnd
    built: bool = False  # CREATED came back
    early: int = 0  # cells sent behind the CREATE before CREATED
    held: list[list[StreamFrame]] | None = None  # cells beyond MAX_EARLY_CELLS, until CREATED


class CircuitBuilder:
    def __init__(
        self,
        links: LinkTable,
        geometry: Geometry,
        rng: Rng,
        *,
        config: CircuitConfig,
        ids: "itertools.count[int]",
    ) -> None:
        self._links = links
        self.geometry = geometry
        self._rng = rng
        self._config = config
        self._ids = ids
        self._circuits: dict[int, _ClientCircuit] = {}
        self._by_side: dict[Side, _ClientCircuit] = {}
        self._building: dict[int, _ClientCircuit] = {}
        self.events: deque[CircuitEvent] = deque()
        #: client build times and timeouts, and the timeout they imply (shown on status pages)
        self.build_times = BuildTimes(
            default=config.build_timeout,
            min_timeout=min(MIN_BUILD_TIMEOUT, config.build_timeout),
        )
        #: relays of builds that timed out or failed; path choice may skip the avoided ones
        self.avoidance = Avoidance()
        self._deliver: Deliver | None = None

    def deliver_to(self, deliver: Deliver) -> None:
        """Hand the frames of every cell that arrives on a built circuit to ``deliver``
        (without it, such a cell closes the circuit)."""
        self._deliver = deliver

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> CircuitEvent | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        return min((c.deadline for c in self._building.values()), default=float("inf"))

    def handle_timer(self, now: float) -> None:
        for circ in [c for c in self._building.values() if now >= c.deadline]:
            self.build_times.add_timeout(circ.timeout)
            self._blame(circ, now)
            self._teardown(circ, CloseCode.TIMEOUT, now)

    # -- the client API --------------------------------------------------------------------
    def build(self, path: list[Descriptor], now: float) -> int:
        """Start building a circuit through ``path`` (verified descriptors, first hop linked).

        Returns the local circuit id; :class:`CircuitBuilt` follows one round trip later.
        Raises LocalProtocolError for a bad path or when too many builds are pending."""
        if not 1 <= len(path) <= self.geometry.max_hops:
            raise LocalProtocolError(f"a path has 1 to {self.geometry.max_hops} hops")
        conn = self._links.to_peer(path[0].node_id)
        if conn is None:
            raise LocalProtocolError("no open link to the first hop")
        if len(self._building) >= MAX_BUILDING:
            raise LocalProtocolError(f"{MAX_BUILDING} circuits are being built already")
        hops = [sphinx.PathHop(d.node_id, d.onion_epoch, d.onion_pk) for d in path]
        setup = sphinx.build_setup_header(self.geometry, hops, self._rng)
        circ_id = conn.allocate(self._rng, "client")
        if circ_id is None:
            raise LocalProtocolError("no circuit id left on the link to the first hop")
        out = (conn.link_id, circ_id)
        ids = tuple(d.node_id for d in path)
        timeout = self.build_times.close_timeout()
        end = ClientEnd(self.geometry, setup.hop_keys)
        circ = _ClientCircuit(next(self._ids), out, setup, now, timeout, now + timeout, ids, end)
        self._circuits[circ.circuit_id] = circ
        self._by_side[out] = circ
        self._building[circ.circuit_id] = circ
        conn.send(lf.Create(circ_id, path[0].onion_epoch, setup.header), now)
        return circ.circuit_id

    def __contains__(self, circuit_id: object) -> bool:
        return circuit_id in self._circuits

    def path(self, circuit_id: int) -> tuple[bytes, ...]:
        """The node ids of a client circuit's path, first hop first (empty if unknown)."""
        circ = self._circuits.get(circuit_id)
        return () if circ is None else circ.path

    def built(self) -> set[int]:
        """Ids of the built (open) circuits."""
        return {cid for cid, c in self._circuits.items() if c.built}

    def end(self, circuit_id: int) -> ClientEnd | None:
        """The circuit's end (built or being built), None for an unknown circuit."""
        circ = self._circuits.get(circuit_id)
        return None if circ is None else circ.end

    def send_frames(self, circuit_id: int, frames: list[StreamFrame], now: float) -> None:
        """Send one cell of ``frames`` on the circuit, built or still being built (the
        cell follows the CREATE; D49, at most :data:`MAX_EARLY_CELLS` of them: later ones
        wait for CREATED); a full queue closes it.  A circuit closed in this same input
        (its CircuitClosed still queued) is skipped."""
        circ = self._circuits.get(circuit_id)
        if circ is None:
            return
        if not circ.built:
            if circ.early >= MAX_EARLY_CELLS:
                if circ.held is None:
                    circ.held = []
                if len(circ.held) >= MAX_HELD:
                    self._teardown(circ, CloseCode.RESOURCE, now)
                    return
                circ.held.append(frames)
                return
            circ.early += 1
        self._send(circ, frames, now)

    def _send(self, circ: _ClientCircuit, frames: list[StreamFrame], now: float) -> None:
        if not send_frames(circ.end, self._links.get(circ.out[0]), circ.out[1], frames, now):
            self._teardown(circ, CloseCode.RESOURCE, now)

    def close(self, circuit_id: int, now: float, code: CloseCode = CloseCode.REQUESTED) -> None:
        circ = self._circuits.get(circuit_id)
        if circ is None:
            raise LocalProtocolError(f"no circuit {circuit_id}")
        self._teardown(circ, code, now)

    # -- frames ----------------------------------------------------------------------------
    def on_created(self, conn: LinkConnection, frame: lf.Created, now: float) -> None:
        circ = self._by_side[(conn.link_id, frame.circ_id)]
        if circ.built:
            raise RemoteProtocolError("unexpected CREATED")
        try:
            sphinx.verify_created(self.geometry, circ.setup, frame.reply)
        except RemoteProtocolError as exc:
            self._blame(circ, now)
            self._teardown(circ, exc.code, now)
            return
        del self._building[circ.circuit_id]
        elapsed = now - circ.started
        if 0.0 <= elapsed < math.inf:  # a clock that went back gives no sample
            self.build_times.add(elapsed)
        circ.built = True
        self.events.append(CircuitBuilt(circ.circuit_id, elapsed))
        held, circ.held = circ.held or [], None
        for frames in held:
            if circ.circuit_id not in self._circuits:  # a full queue closed it
                break
            self._send(circ, frames, now)

    def on_cell(self, conn: LinkConnection, frame: lf.Cell, now: float) -> None:
        circ = self._by_side[(conn.link_id, frame.circ_id)]
        if not circ.built:
            raise RemoteProtocolError("cell before CREATED")
        try:
            frames = circ.end.open_frames(frame.cell)
        except RemoteProtocolError:
            log.info("circuit=%d event=teardown reason='garbled cell'", circ.circuit_id)
            self._teardown(circ, CloseCode.AUTH, now)
            return
        if self._deliver is None:
            self._teardown(circ, CloseCode.PROTOCOL, now)
            return
        self._deliver(circ.circuit_id, frames, now)

    def on_destroy(self, conn: LinkConnection, frame: lf.Destroy, now: float) -> None:
        circ = self._by_side[(conn.link_id, frame.circ_id)]
        if not circ.built:  # a hop refused the build
            self._blame(circ, now)
        self._teardown(circ, frame.code, now, from_peer=True)

    def link_closed(self, conn: LinkConnection, now: float) -> None:
        for circ_id, owner in list(conn.circuits.items()):
            if owner == "client":
                circ = self._by_side[(conn.link_id, circ_id)]
                self._teardown(circ, CloseCode.CONNECTION_FAILED, now, from_peer=True)

    def _blame(self, circ: _ClientCircuit, now: float) -> None:
        """Score the relays past the first hop of a build that timed out or failed."""
        if math.isfinite(now):
            for node_id in circ.path[1:]:
                self.avoidance.failed(node_id, now)

    def _teardown(
        self, circ: _ClientCircuit, code: CloseCode, now: float, *, from_peer: bool = False
    ) -> None:
        conn = self._links.get(circ.out[0])
        if conn is not None:
            conn.release(circ.out[1])
            if not from_peer:
                conn.send(lf.Destroy(circ.out[1], code), now)
        del self._by_side[circ.out]
        del self._circuits[circ.circuit_id]
        self._building.pop(circ.circuit_id, None)
        self.events.append(CircuitClosed(circ.circuit_id, code))
