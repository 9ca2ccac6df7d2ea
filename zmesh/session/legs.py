"""A session's legs: what each circuit of a session carried and has not confirmed, its
RTT estimate, and the cells being filled for it (see :mod:`zmesh.session.multipath`)."""

import math
from collections import deque
from dataclasses import dataclass

from ..errors import LocalProtocolError
from ..health.phi import PhiDetector
from .frames import DATA_OVERHEAD, CellBuilder, StreamFrame

INITIAL_RTO = 1.0  # RFC 6298 section 2.1
MIN_RTO = 0.2  # RFC 6298 says 1 s; a failover must stall for less than a second
MAX_RTO = 10.0
CLOCK_GRANULARITY = 0.001


@dataclass(frozen=True, slots=True)
class LegInfo:
    """One leg as the status shows it."""

    leg_id: int
    number: int
    srtt: float | None
    rto: float
    inflight: int
    phi: float  # suspicion that the leg is dead, from its PONGs (phi-accrual)


@dataclass(slots=True)
class Record:
    """Something a leg carried that must be resent if the leg dies before confirming it:
    a DATA range ``[start, end)`` of a stream, or a control frame."""

    seq: int
    stream_id: int
    start: int
    end: int
    control: StreamFrame | None = None


class Leg:
    __slots__ = (
        "ack_here",
        "building",
        "inflight",
        "last_ping_sent",
        "last_recv",
        "leg_id",
        "link_pending",
        "next_seq",
        "number",
        "phi",
        "ping_mark",
        "pings",
        "pongs",
        "proven",
        "records",
        "rto",
        "rttvar",
        "since_ping",
        "srtt",
        "stalled",
    )

    def __init__(self, leg_id: int, number: int, now: float, phi: PhiDetector) -> None:
        self.leg_id = leg_id
        self.phi = phi  # fed by every PONG
        self.number = number
        self.link_pending = False
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = INITIAL_RTO
        self.records: deque[Record] = deque()
        self.next_seq = 0
        self.inflight = 0  # DATA bytes in ``records``
        self.pings: dict[int, tuple[float, int]] = {}  # nonce -> (sent at, mark), in order
        self.ping_mark = 0  # next_seq when the last PING was sent
        self.since_ping = 0  # DATA bytes sent since the last PING
        self.last_ping_sent = -math.inf
        self.last_recv = now
        self.pongs: list[int] = []
        self.ack_here = False
        self.stalled = False  # the last leg, silent: kept, reported once
        self.proven = False  # something arrived on it: the peer's session knows it
        self.building = False  # its CREATED has not come back: no PING, so not watched

    def rtt_sample(self, r: float) -> None:
        """RFC 6298 section 2.2-2.4, with our floor and ceiling on the RTO."""
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = min(MAX_RTO, max(MIN_RTO, self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)))

    def record(self, stream_id: int, start: int, end: int, control: StreamFrame | None) -> None:
        self.records.append(Record(self.next_seq, stream_id, start, end, control))
        self.next_seq += 1
        self.inflight += end - start
        self.since_ping += end - start

    def confirm(self, mark: int) -> None:
        """Everything sent before ``mark`` reached the peer."""
        while self.records and self.records[0].seq < mark:
            rec = self.records.popleft()
            self.inflight -= rec.end - rec.start

    def prune(self, stream_id: int, acked: int) -> None:
        """Drop the parts of ``stream_id``'s ranges the peer acknowledged."""
        kept: deque[Record] = deque()
        for rec in self.records:
            if rec.control is None and rec.stream_id == stream_id and rec.start < acked:
                cut = min(acked, rec.end) - rec.start
                self.inflight -= cut
                rec.start += cut
                if rec.start >= rec.end:
                    continue
            kept.append(rec)
        self.records = kept

    @property
    def oldest_ping(self) -> float | None:
        return next(iter(self.pings.values()))[0] if self.pings else None

    def sort_key(self) -> tuple[float, int]:
        return (math.inf if self.srtt is None else self.srtt, self.number)


class Cells:
    """The cells being filled in one :meth:`Session.cells_to_send`, one builder per leg."""

    def __init__(self, payload_size: int) -> None:
        self.payload_size = payload_size
        self.builders: dict[int, CellBuilder] = {}
        self.cells: list[tuple[int, list[StreamFrame]]] = []

    def put(self, leg: Leg, frame: StreamFrame) -> None:
        builder = self.builders.get(leg.leg_id)
        if builder is not None and builder.add(frame):
            return
        if builder is not None:
            self._flush(leg.leg_id, builder)
        builder = self.builders[leg.leg_id] = CellBuilder(self.payload_size)
        if not builder.add(frame):
            raise LocalProtocolError("a frame larger than a cell")

    def add_to_lone_cell(self, leg: Leg, frame: StreamFrame) -> bool:
        """Add ``frame`` to the leg's cell if it is the leg's only cell of this pull and has
        room for it (a PING behind a lone cell's frames; behind a burst it would time it)."""
        builder = self.builders.get(leg.leg_id)
        if builder is None or builder.empty or any(i == leg.leg_id for i, _ in self.cells):
            return False
        return builder.add(frame)

    def room_for_data(self, leg: Leg) -> int:
        """The DATA bytes that fit in the leg's cell (a fresh cell if this one is full)."""
        builder = self.builders.get(leg.leg_id)
        if builder is None or builder.room <= DATA_OVERHEAD:
            if builder is not None:
                self._flush(leg.leg_id, builder)
            builder = self.builders[leg.leg_id] = CellBuilder(self.payload_size)
        return builder.room - DATA_OVERHEAD

    def _flush(self, leg_id: int, builder: CellBuilder) -> None:
        if not builder.empty:
            self.cells.append((leg_id, builder.frames))

    def finish(self) -> list[tuple[int, list[StreamFrame]]]:
        for leg_id, builder in self.builders.items():
            self._flush(leg_id, builder)
        self.builders.clear()
        return self.cells
