"""An iterative Kademlia lookup as a sans-I/O state machine, with S/Kademlia's disjoint paths.

Theory of operation (Kademlia section 2.3; S/Kademlia section 4.4; libp2p Kademlia spec,
"Peer routing"):

* The seeds (the closest contacts our routing table knows) are dealt round-robin, closest
  first, to ``d`` paths.  Each path keeps its own shortlist sorted by XOR distance to the
  target and has at most ``alpha`` requests in flight.
* A path queries the closest contact of its shortlist it has not queried yet, among the
  ``k`` closest it has not seen fail.  A contact is claimed by the first path that queries
  it and is never queried by another (the paths stay disjoint, so an adversary must sit
  on every path to steer the result); contacts another path claimed are not added to a
  path's shortlist.
* Each answer's contacts (at most ``k`` are read) join the path's shortlist.  A request
  that times out (``rpc_timeout``, per request: :meth:`get_timer`/:meth:`handle_timer`) or
  that the driver reports failed (:meth:`timeout`) drops the contact from the shortlists.
* A path is finished when its ``k`` closest live contacts have all answered and nothing
  is in flight, or when it has nothing left to ask.  The lookup finishes when every path
  has; its result is the ``k`` closest contacts that answered, over all paths.

Answers full of fake or unreachable contacts: once ``REFERRAL_FAILURES`` (3) contacts that
only one responder named have failed, the other contacts only it named are dropped unasked,
so a liar costs about one timeout round, not ``k`` requests.  Bounds: a shortlist holds at most
``max_shortlist`` contacts (the farthest not in flight is dropped), the lookup sends at most
``max_rpcs`` requests in all (then it waits for what is in flight and finishes with
``exhausted`` set), and each request expires after ``rpc_timeout``.  So a lookup ends after
at most ``max_rpcs / (alpha * d)`` timeouts in a row, whatever it is told.

``rounds`` (the sequential hops of the issue's ``lookup_hops_median``) is the deepest
answer: a seed is at hop 1, a contact first named by an answer from hop ``h`` is at
``h + 1``.
"""

import bisect
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from ..errors import LocalProtocolError
from .routing import ID_SIZE, Contact, K

ALPHA = 3
RPC_TIMEOUT = 5.0
MAX_RPCS_PER_PATH = 4 * K  # a lookup sends at most this many requests per disjoint path
REFERRAL_FAILURES = 3  # failed contacts a responder alone named before we drop the rest
SHORTLIST_FACTOR = 5  # a path's shortlist holds at most this many times k contacts


class _State(Enum):
    NEW = 0
    IN_FLIGHT = 1
    ANSWERED = 2
    FAILED = 3


@dataclass(slots=True)
class _Candidate:
    contact: Contact
    distance: int
    hop: int
    state: _State = _State.NEW
    path: int = -1  # the path that claimed (queried) it
    referrer: bytes = b""  # the first responder that named it (b"" for a seed)
    vouched: int = 1  # responders (or seeding) that named it


@dataclass(slots=True)
class _Path:
    shortlist: list[tuple[int, bytes]] = field(default_factory=list)  # (distance, id), sorted
    in_flight: int = 0
    finished: bool = False


@dataclass(frozen=True, slots=True)
class FindRequest:
    """Effect: send FIND(target) to ``contact`` (on behalf of disjoint path ``path``), then
    report :meth:`Lookup.response` or :meth:`Lookup.timeout`."""

    contact: Contact
    path: int


@dataclass(frozen=True, slots=True)
class LookupResult:
    """The outcome: the ``k`` closest contacts that answered (closest first), the
    sequential rounds, the requests sent and those that failed, and whether the RPC bound
    cut the lookup short."""

    target: bytes
    closest: tuple[Contact, ...]
    rounds: int
    rpcs: int
    failures: int
    exhausted: bool


class Lookup:
    """One iterative lookup for ``target``.  Drive it with ``next_event`` (requests to
    send), ``response``/``timeout`` and ``get_timer``/``handle_timer``; read ``result``
    once ``done``."""

    def __init__(
        self,
        target: bytes,
        seeds: list[Contact],
        now: float,
        *,
        alpha: int = ALPHA,
        k: int = K,
        disjoint_paths: int = 1,
        rpc_timeout: float = RPC_TIMEOUT,
        max_rpcs: int | None = None,
        max_shortlist: int | None = None,
        own_id: bytes | None = None,
    ) -> None:
        """Raises LocalProtocolError for a malformed target or parameters out of range."""
        if len(target) != ID_SIZE:
            raise LocalProtocolError(f"lookup targets are {ID_SIZE}-byte ids")
        if alpha < 1 or k < 1 or disjoint_paths < 1 or rpc_timeout <= 0:
            raise LocalProtocolError("alpha, k and disjoint_paths must be positive")
        self.target = target
        self._t = int.from_bytes(target, "big")
        self._alpha = alpha
        self._k = k
        self._timeout = rpc_timeout
        self._max_rpcs = max_rpcs if max_rpcs is not None else MAX_RPCS_PER_PATH * disjoint_paths
        self._max_shortlist = max(
            k, max_shortlist if max_shortlist is not None else SHORTLIST_FACTOR * k
        )
        self._own_id = own_id
        self._candidates: dict[bytes, _Candidate] = {}
        self._deadlines: dict[bytes, float] = {}  # requests in flight
        self._paths = [_Path() for _ in range(disjoint_paths)]
        self._events: deque[FindRequest] = deque()
        self._rpcs = 0
        self._failures = 0
        self._blame: dict[bytes, int] = {}  # responder -> failed contacts only it named
        self._cancelled = False
        self.result: LookupResult | None = None
        ordered = sorted(
            {c.node_id: c for c in reversed(seeds) if self._usable(c.node_id)}.values(),
            key=lambda c: int.from_bytes(c.node_id, "big") ^ self._t,
        )
        for i, contact in enumerate(ordered[: self._max_shortlist * disjoint_paths]):
            self._add(self._paths[i % disjoint_paths], contact, hop=1)
        self._step(now)

    # -- the component shape --------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.result is not None

    def next_event(self) -> FindRequest | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float:
        """The earliest deadline of a request in flight (infinity if none)."""
        if self.done:
            return float("inf")
        return min(self._deadlines.values(), default=float("inf"))

    def handle_timer(self, now: float) -> None:
        """Fail every request whose deadline has passed, then send what that allows."""
        if self.done:
            return
        for node_id, deadline in list(self._deadlines.items()):
            if deadline <= now:
                self._fail(node_id, self._candidates[node_id])
        self._step(now)

    # -- inputs ----------------------------------------------------------------------------
    def response(self, node_id: bytes, contacts: list[Contact], now: float) -> bool:
        """``node_id`` answered with ``contacts`` (only the first ``k`` are read; malformed
        ids, our own id and contacts another path claimed are skipped).  Returns False,
        ignoring the answer, if no request to ``node_id`` is in flight (unsolicited, late
        after its timeout, or a duplicate)."""
        cand = self._candidates.get(node_id)
        if self.done or cand is None or cand.state is not _State.IN_FLIGHT:
            return False
        cand.state = _State.ANSWERED
        del self._deadlines[node_id]
        cand.contact = Contact(node_id, cand.contact.address, now)
        path = self._paths[cand.path]
        path.in_flight -= 1
        for contact in contacts[: self._k]:
            if self._usable(contact.node_id):
                self._add(path, contact, hop=cand.hop + 1, referrer=node_id)
        self._step(now)
        return True

    def timeout(self, node_id: bytes, now: float) -> None:
        """The request to ``node_id`` failed before its deadline (the driver could not
        reach it); ignored if none is in flight."""
        cand = self._candidates.get(node_id)
        if not self.done and cand is not None and cand.state is _State.IN_FLIGHT:
            self._fail(node_id, cand)
            self._step(now)

    def cancel(self, now: float) -> None:
        """Stop now (e.g. a FIND_VALUE found its record); the result holds what answered."""
        if not self.done:
            self._cancelled = True
            self._finish()

    # -- internals -------------------------------------------------------------------------
    def _usable(self, node_id: bytes) -> bool:
        return len(node_id) == ID_SIZE and node_id != self._own_id

    def _add(self, path: _Path, contact: Contact, hop: int, referrer: bytes = b"") -> None:
        node_id = contact.node_id
        cand = self._candidates.get(node_id)
        if cand is None:
            dist = int.from_bytes(node_id, "big") ^ self._t
            cand = self._candidates[node_id] = _Candidate(contact, dist, hop, referrer=referrer)
        elif cand.state is not _State.NEW:
            return  # queried (or failed) already, by this path or another
        else:
            cand.hop = min(cand.hop, hop)
            if referrer != cand.referrer:
                cand.vouched += 1
        entry = (cand.distance, node_id)
        i = bisect.bisect_left(path.shortlist, entry)
        if i < len(path.shortlist) and path.shortlist[i] == entry:
            return
        path.shortlist.insert(i, entry)
        if len(path.shortlist) > self._max_shortlist:
            for j in range(len(path.shortlist) - 1, -1, -1):
                if self._candidates[path.shortlist[j][1]].state is not _State.IN_FLIGHT:
                    del path.shortlist[j]
                    break
        if len(self._candidates) > 4 * self._max_shortlist * len(self._paths):
            self._forget_strays()

    def _forget_strays(self) -> None:
        """Bound the candidate table: keep only what some shortlist still holds."""
        kept = {node_id for p in self._paths for _, node_id in p.shortlist}
        for node_id in [
            n for n, c in self._candidates.items() if c.state is _State.NEW and n not in kept
        ]:
            del self._candidates[node_id]

    def _fail(self, node_id: bytes, cand: _Candidate) -> None:
        cand.state = _State.FAILED
        del self._deadlines[node_id]
        self._failures += 1
        path = self._paths[cand.path]
        path.in_flight -= 1
        entry = (cand.distance, node_id)
        i = bisect.bisect_left(path.shortlist, entry)
        if i < len(path.shortlist) and path.shortlist[i] == entry:
            del path.shortlist[i]
        if cand.referrer and cand.vouched == 1:
            blame = self._blame[cand.referrer] = self._blame.get(cand.referrer, 0) + 1
            if blame == REFERRAL_FAILURES:
                self._discredit(cand.referrer)

    def _discredit(self, referrer: bytes) -> None:
        """``referrer`` named ``REFERRAL_FAILURES`` contacts no one else named, and they all
        failed: drop the others only it named, unasked (they are likely fake)."""
        for cand in self._candidates.values():
            if cand.state is _State.NEW and cand.referrer == referrer and cand.vouched == 1:
                cand.state = _State.FAILED  # _next_for drops it from the shortlists

    def _step(self, now: float) -> None:
        """Send what each path may, and finish paths (and the lookup) that are done."""
        for index, path in enumerate(self._paths):
            if path.finished:
                continue
            while path.in_flight < self._alpha and self._rpcs < self._max_rpcs:
                cand = self._next_for(index, path)
                if cand is None:
                    break
                cand.state, cand.path = _State.IN_FLIGHT, index
                self._deadlines[cand.contact.node_id] = now + self._timeout
                path.in_flight += 1
                self._rpcs += 1
                self._events.append(FindRequest(cand.contact, index))
            if path.in_flight == 0 and (
                self._rpcs >= self._max_rpcs or self._next_for(index, path) is None
            ):
                path.finished = True
        if all(p.finished for p in self._paths):
            self._finish()

    def _next_for(self, index: int, path: _Path) -> _Candidate | None:
        """The closest unqueried contact among the path's ``k`` closest live ones; drops
        from the shortlist those another path claimed in the meantime."""
        live = 0
        i = 0
        while i < len(path.shortlist) and live < self._k:
            cand = self._candidates[path.shortlist[i][1]]
            if cand.state is _State.NEW:
                return cand
            if cand.path != index or cand.state is _State.FAILED:
                del path.shortlist[i]
                continue
            live += 1
            i += 1
        return None

    def _finish(self) -> None:
        answered = sorted(
            (c for c in self._candidates.values() if c.state is _State.ANSWERED),
            key=lambda c: c.distance,
        )
        self.result = LookupResult(
            self.target,
            tuple(c.contact for c in answered[: self._k]),
            max((c.hop for c in answered), default=0),
            self._rpcs,
            self._failures,
            self._rpcs >= self._max_rpcs and not self._cancelled,
        )
