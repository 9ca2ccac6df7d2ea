"""The bookkeeping of a :class:`~zmesh.dht.service.Dht`'s own requests: what each one is
for, the deadlines of those pending or waiting for a link, and the round trips that set
the deadlines (RFC 6298)."""

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from . import puzzle
from .config import MAX_REFERRERS, MAX_RTT_PEERS, LookupKind
from .lookup import Lookup
from .messages import FindNode, FindValue, Nodes, Ping, Pong, Store, Stored, Value
from .records import Record
from .routing import Contact


class Purpose(Enum):
    LOOKUP = 0
    FETCH = 1  # FIND_VALUE(NODE, subject) to learn how to dial ``subject``
    PING = 2
    STORE = 3
    RECORD = 4  # FIND_VALUE(NODE, peer) to a peer at link up: its own node record


EXPECT: dict[type, type] = {Ping: Pong, FindNode: Nodes, FindValue: Value, Store: Stored}


@dataclass(slots=True)
class Pending:
    purpose: Purpose
    expect: type
    deadline: float
    lookup_id: int = 0
    subject: bytes = b""
    data: bytes = b""  # the encoded request, while it waits for a link
    sent: float = 0.0  # when it went out on the link


@dataclass(slots=True)
class Search:
    """A lookup in flight and what it gathered."""

    lookup: Lookup
    kind: LookupKind
    started: float
    record: Record | None = None  # PUBLISH / REPLICATE: what to store when done
    referrers: dict[bytes, bytes] = field(default_factory=dict)  # contact -> who named it
    records: dict[bytes, Record] = field(default_factory=dict)  # publisher -> verified
    verified: int = 0

    def usable(
        self,
        responder: bytes,
        contacts: tuple[Contact, ...],
        k: int,
        own_id: bytes,
        difficulty: int,
    ) -> list[Contact]:
        """The contacts of an answer that may join the lookup (the first ``k``, not ours,
        ids that pass the puzzle); remembers who named each, for fetching its node record."""
        usable = []
        for contact in contacts[:k]:
            if contact.node_id == own_id or not puzzle.satisfies(contact.node_id, difficulty):
                continue
            usable.append(contact)
            if len(self.referrers) < MAX_REFERRERS:
                self.referrers.setdefault(contact.node_id, responder)
        return usable


Entry = tuple[float, int, bytes, int, Pending]  # deadline, order, peer, request id, request


class Deadlines:
    """The deadlines of requests pending or waiting, a heap with lazy deletion: an entry
    for which ``live`` is False (its request was answered, failed or sent anew) is dropped
    when it reaches the top.  Bounded: past ``limit`` entries the heap is rebuilt from the
    live ones."""

    def __init__(self, live: Callable[[Entry], bool], limit: int) -> None:
        self._heap: list[Entry] = []
        self._seq = 0
        self._live = live
        self._limit = limit

    def push(self, peer: bytes, rid: int, pending: Pending) -> None:
        """Enter a new request's deadline (``pending.deadline``)."""
        self._seq += 1
        heapq.heappush(self._heap, (pending.deadline, self._seq, peer, rid, pending))
        if len(self._heap) > self._limit:
            self._heap = [e for e in self._heap if self._live(e)]
            heapq.heapify(self._heap)

    def first(self) -> float:
        """The earliest deadline of a live entry (infinity if none)."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else float("inf")


@dataclass(slots=True)
class _Rtt:
    """A smoothed round-trip time and its variation (RFC 6298 section 2)."""

    srtt: float
    rttvar: float

    def sample(self, rtt: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
        self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def rto(self) -> float:
        return self.srtt + 4 * self.rttvar


class RoundTrips:
    """Round-trip estimates per peer (at most :data:`MAX_RTT_PEERS`, the least recent
    go) and over every answer, and the request timeouts they give."""

    def __init__(self, floor: float, cap: float) -> None:
        self._floor = floor
        self._cap = cap
        self._rtts: OrderedDict[bytes, _Rtt] = OrderedDict()
        self._all: _Rtt | None = None  # over every answer, for peers without samples

    def timeout(self, peer: bytes) -> float:
        """How long a request sent to ``peer`` now may wait for its answer: the RFC 6298
        retransmission timeout of the peer's round trips (SRTT + 4 RTTVAR), or of all our
        answers' for a peer not heard yet, between ``floor`` and ``cap`` (the latter before
        any answer).  So a node that drops requests holds a lookup slot about a second, not
        the full cap (libp2p and BitTorrent DHT clients likewise time requests out from
        measured round trips)."""
        rtt = self._rtts.get(peer) or self._all
        if rtt is None:
            return self._cap
        return min(self._cap, max(self._floor, rtt.rto))

    def sample(self, peer: bytes, rtt: float) -> None:
        """An answer came ``rtt`` seconds after its request: update the peer's estimate
        and the estimate over every peer."""
        est = self._rtts.get(peer)
        if est is None:
            self._rtts[peer] = _Rtt(rtt, rtt / 2)  # RFC 6298 (2.2)
        else:
            est.sample(rtt)  # (2.3)
            self._rtts.move_to_end(peer)
        if self._all is None:
            self._all = _Rtt(rtt, rtt / 2)
        else:
            self._all.sample(rtt)
        while len(self._rtts) > MAX_RTT_PEERS:
            self._rtts.popitem(last=False)


__all__ = ["EXPECT", "Deadlines", "Entry", "Pending", "Purpose", "RoundTrips", "Search"]
