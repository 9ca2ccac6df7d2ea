"""The fetcher's scheduler: which piece to ask of which provider, and when to ask again.

Theory of operation (sans-I/O: ``now`` is passed in, nothing is sent here).  The
scheduler knows the content's layout, the pieces held (after a restart, what the store
kept), and for each *source* (a provider reached over its own session) the pieces it
says it has (:meth:`Scheduler.have`) and the requests it was given.  A group is complete
once it holds as many pieces as it has data chunks: any of its pieces will do (erasure
coding), so the scheduler counts pieces per group, not which ones.

* **Rarest first** (BitTorrent): a source with room in its pipeline (``depth`` pieces in
  flight) is given the pieces it has that fewest sources have, among the groups still
  short of pieces that nobody was asked for yet; ties go to the earliest group, then to
  data chunks before parity (no decoding needed), then to the lowest index.  The scan
  covers the first ``window`` incomplete groups, which bounds its cost and keeps the
  groups finishing roughly in order.  A group's proof is asked of the first source asked
  for one of its pieces, once (again elsewhere if that source fails).
* **Endgame**: once every incomplete group has enough pieces asked for, a source with
  room is given more pieces of those groups: pieces nobody was asked for first (any
  piece completes a group, so an extra parity piece beats a duplicate), then duplicates
  of pieces in flight elsewhere (at most ``duplicates`` sources per piece).  When a piece
  arrives, :meth:`received` names the other sources to send a cancel to.
* **Failures**: a piece that fails its proof, or a reply that breaks the protocol, gives
  its source a strike (:meth:`failed` with ``bad``); a source that says it lacks a piece
  loses it from its have-set; a source with requests in flight that delivered nothing
  for ``stall`` seconds (:meth:`progress` feeds it) has its requests released for others
  and a strike, and gets no new requests until it delivers again.  A source with
  ``max_strikes`` strikes is dropped (:class:`SourceDropped`); its requests go back to
  the pool, as do a removed source's (:meth:`remove_source`, its session closed).

Bounds: ``max_sources`` sources; a source's in-flight set is at most ``depth`` (plus the
proofs it was asked for); everything else is per piece of the layout.
"""

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import LocalProtocolError
from .manifest import Layout
from .protocol import PieceRequest, ProofRequest

DEPTH = 8  # pieces in flight per source (2 MiB at 256 KiB)
STALL = 4.0  # seconds without a byte from a source with requests in flight
MAX_STRIKES = 3
DUPLICATES = 2  # sources a piece may be in flight at, in the endgame
WINDOW = 256  # incomplete groups the rarest-first scan looks at
MAX_SOURCES = 32


@dataclass(frozen=True, slots=True)
class SourceDropped:
    """A source failed too often (bad pieces, stalls): close its session."""

    source: bytes
    reason: str


@dataclass(slots=True)
class _Source:
    has: set[int] = field(default_factory=set)
    pieces: dict[int, float] = field(default_factory=dict)  # in flight: index -> asked at
    proofs: set[int] = field(default_factory=set)  # groups whose proof it was asked for
    last_progress: float = 0.0
    stalled: bool = False
    strikes: int = 0
    bytes: int = 0  # piece bytes it delivered that we kept


class Scheduler:
    """See the module doc.  Raises LocalProtocolError for misuse (an unknown source, a
    piece outside the layout, too many sources)."""

    def __init__(
        self,
        layout: Layout,
        held: Iterable[int] = (),
        *,
        proofs: Iterable[int] = (),
        depth: int = DEPTH,
        stall: float = STALL,
        max_strikes: int = MAX_STRIKES,
        duplicates: int = DUPLICATES,
        window: int = WINDOW,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.layout = layout
        self.depth, self.stall, self.max_strikes = depth, stall, max_strikes
        self.duplicates, self.window, self.max_sources = duplicates, window, max_sources
        self.held: set[int] = set()
        self.proofs: set[int] = set(proofs)  # groups whose proof we hold
        self._count = [0] * layout.groups  # pieces held per group
        self._incomplete = set(range(layout.groups))
        for index in held:
            self._hold(index)
        self._sources: dict[bytes, _Source] = {}
        self._flight: dict[int, set[bytes]] = {}  # piece -> sources asked for it
        self._proof_flight: dict[int, bytes] = {}  # group -> the source asked for its proof
        self._availability: dict[int, int] = {}  # piece -> sources that have it
        self.events: deque[SourceDropped] = deque()

    # -- queries ----------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Every group can be rebuilt (proofs aside: see :meth:`proof_wanted`)."""
        return not self._incomplete

    def complete(self, group: int) -> bool:
        return group not in self._incomplete

    def sources(self) -> list[bytes]:
        return list(self._sources)

    def delivered(self, source: bytes) -> int:
        """Piece bytes ``source`` delivered that were kept."""
        return self._source(source).bytes

    def in_flight(self, source: bytes) -> list[int]:
        return sorted(self._source(source).pieces)

    def usable(self) -> int:
        """Sources that are not stalled."""
        return sum(1 for s in self._sources.values() if not s.stalled)

    # -- the component shape ----------------------------------------------------------------
    def next_event(self) -> SourceDropped | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        deadlines = [
            s.last_progress + self.stall
            for s in self._sources.values()
            if s.pieces and not s.stalled
        ]
        return min(deadlines, default=math.inf)

    def handle_timer(self, now: float) -> None:
        """Sources silent for ``stall`` seconds with requests in flight: release them."""
        for source_id, source in list(self._sources.items()):
            if source.pieces and not source.stalled and now >= source.last_progress + self.stall:
                source.stalled = True
                self._release(source_id, source)
                self._strike(source_id, source, "stalled")

    # -- inputs -----------------------------------------------------------------------------
    def add_source(self, source: bytes, now: float) -> None:
        """A provider reached; raises LocalProtocolError beyond ``max_sources``."""
        if source in self._sources:
            return
        if len(self._sources) >= self.max_sources:
            raise LocalProtocolError(f"a fetch uses at most {self.max_sources} sources")
        self._sources[source] = _Source(last_progress=now)

    def have(self, source: bytes, indices: Iterable[int]) -> None:
        """``source`` holds these pieces (from its Have messages); indices outside the
        layout are ignored."""
        s = self._source(source)
        pieces = self.layout.pieces
        for index in indices:
            if 0 <= index < pieces and index not in s.has:
                s.has.add(index)
                self._availability[index] = self._availability.get(index, 0) + 1

    def remove_source(self, source: bytes) -> None:
        """The source is gone (its session closed): its requests go back to the pool."""
        s = self._sources.pop(source, None)
        if s is None:
            return
        self._release(source, s)
        for index in s.has:
            self._availability[index] -= 1

    def progress(self, source: bytes, now: float) -> None:
        """Bytes arrived from ``source``: it is not stalled."""
        s = self._source(source)
        s.last_progress = now
        s.stalled = False

    def proof_received(self, source: bytes, group: int) -> None:
        """A verified proof of ``group`` arrived."""
        self.proofs.add(group)
        if self._proof_flight.get(group) is not None:
            del self._proof_flight[group]
        self._source(source).proofs.discard(group)

    def received(self, source: bytes, index: int, size: int) -> list[bytes]:
        """A verified piece arrived from ``source`` (kept if :meth:`wanted`); returns the
        other sources it is still in flight at (send them a cancel)."""
        s = self._source(source)
        s.pieces.pop(index, None)
        others = sorted(self._flight.pop(index, set()) - {source})
        for other in others:
            self._sources[other].pieces.pop(index, None)
        if self.wanted(index):
            s.bytes += size
            self._hold(index)
        return others

    def wanted(self, index: int) -> bool:
        """Whether a piece that arrives would be kept (its group is not complete)."""
        group, _ = self.layout.locate(index)
        return index not in self.held and group in self._incomplete

    def failed(self, source: bytes, index: int, *, bad: bool) -> None:
        """``source`` did not deliver piece ``index``: it sent a bad one (``bad``, a
        strike) or said it lacks it (no longer asked for it)."""
        s = self._source(source)
        s.pieces.pop(index, None)
        flight = self._flight.get(index)
        if flight is not None:
            flight.discard(source)
            if not flight:
                del self._flight[index]
        if bad:
            self._strike(source, s, f"piece {index} failed its proof")
        elif index in s.has:
            s.has.discard(index)
            self._availability[index] -= 1

    def proof_failed(self, source: bytes, group: int, *, bad: bool) -> None:
        """``source`` sent a bad proof of ``group`` (``bad``) or said it lacks it."""
        s = self._source(source)
        s.proofs.discard(group)
        if self._proof_flight.get(group) == source:
            del self._proof_flight[group]
        if bad:
            self._strike(source, s, f"the proof of group {group} failed")

    def strike(self, source: bytes, reason: str) -> None:
        """Score ``source`` down (a protocol error on its stream)."""
        self._strike(source, self._source(source), reason)

    # -- output -----------------------------------------------------------------------------
    def requests(self, source: bytes, now: float) -> list[PieceRequest | ProofRequest]:
        """What to ask of ``source`` now (marked in flight), proofs first."""
        s = self._source(source)
        if s.stalled or source not in self._sources:
            return []
        chosen: list[int] = []
        room = self.depth - len(s.pieces)
        if room > 0:
            chosen = self._choose(s, room, endgame=False)
            if not chosen:
                chosen = self._choose(s, room, endgame=True)
        out: list[PieceRequest | ProofRequest] = []
        for index in sorted(s.pieces) + chosen:  # a proof lost with a failed source too
            group, _ = self.layout.locate(index)
            if group not in self.proofs and group not in self._proof_flight:
                self._proof_flight[group] = source
                s.proofs.add(group)
                out.append(ProofRequest(group))
        for index in chosen:
            if not s.pieces:
                s.last_progress = now  # the stall clock starts with the first request
            s.pieces[index] = now
            self._flight.setdefault(index, set()).add(source)
            out.append(PieceRequest(index))
        return out

    # -- internals --------------------------------------------------------------------------
    def _choose(self, s: _Source, room: int, *, endgame: bool) -> list[int]:
        layout = self.layout
        candidates: list[tuple[int, int, int, int, int]] = []
        for group in sorted(self._incomplete)[: self.window]:
            indices = layout.group_pieces(group)
            short = layout.group_data_count(group) - self._count[group]
            asked = sum(1 for i in indices if i in self._flight and i not in self.held)
            if not endgame and asked >= short:
                continue
            data_count = layout.group_data_count(group)
            for index in indices:
                if index in self.held or index not in s.has or index in s.pieces:
                    continue
                flying = len(self._flight.get(index, ()))
                if flying and (not endgame or flying >= self.duplicates):
                    continue
                parity = int(index - group * layout.n >= data_count)
                rarity = self._availability.get(index, 0)
                candidates.append((flying, rarity, group, parity, index))
        candidates.sort()
        chosen: list[int] = []
        taken: dict[int, int] = {}  # group -> pieces chosen now (outside the endgame)
        for _, _, group, _, index in candidates:
            if len(chosen) >= room:
                break
            if not endgame:
                short = layout.group_data_count(group) - self._count[group]
                asked = sum(1 for i in layout.group_pieces(group) if i in self._flight)
                if asked + taken.get(group, 0) >= short:
                    continue
                taken[group] = taken.get(group, 0) + 1
            chosen.append(index)
        return chosen

    def _hold(self, index: int) -> None:
        group, _ = self.layout.locate(index)
        if index in self.held:
            return
        self.held.add(index)
        self._count[group] += 1
        if self._count[group] >= self.layout.group_data_count(group):
            self._incomplete.discard(group)

    def _release(self, source_id: bytes, source: _Source) -> None:
        for index in source.pieces:
            flight = self._flight.get(index)
            if flight is not None:
                flight.discard(source_id)
                if not flight:
                    del self._flight[index]
        source.pieces.clear()
        for group in source.proofs:
            if self._proof_flight.get(group) == source_id:
                del self._proof_flight[group]
        source.proofs.clear()

    def _strike(self, source_id: bytes, source: _Source, reason: str) -> None:
        source.strikes += 1
        if source.strikes >= self.max_strikes and source_id in self._sources:
            self.remove_source(source_id)
            self.events.append(SourceDropped(source_id, reason))

    def _source(self, source: bytes) -> _Source:
        s = self._sources.get(source)
        if s is None:
            raise LocalProtocolError(f"no source {source.hex()[:16]}")
        return s
