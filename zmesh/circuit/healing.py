"""Where managed sessions get their legs: paths, builds and standby circuits.

:class:`Healer` is the part of :class:`~zmesh.circuit.sessions.Sessions` that knows the
mesh: the relays, our links, the guards and the builder's avoidance table.  It finds a
path for a session's first leg (:meth:`Healer.first_path`) and for each further leg to
the same exit through other middles (:meth:`Healer.leg_path`), starts builds, and keeps
:data:`STANDBY_PER_EXIT` built spare circuits to every exit in use, so that a lost leg is
replaced at once (:meth:`Healer.take_standby`) and the spare refilled in the background.

:class:`Plan` is what one managed session keeps up: its wanted legs, its builds under way,
the retry backoff (:data:`RETRY_DELAY`, doubling up to :data:`MAX_RETRY_DELAY`) and the
hedge (:data:`HEDGE_AFTER`).  The tables are bounded by the builder's (every entry is a
circuit it holds).

A session may end at a final hop the application names by its verified descriptor (a
content provider or a lookup relay found in a signed DHT record), which need not be in
our relay view (the peer sample holds 64): the healer keeps such descriptors while a
session uses them (:meth:`Healer.name_final`, dropped with the exit's standby), so every
later leg can end there too.
"""

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from ..errors import CloseCode, LocalProtocolError
from ..identity import Descriptor
from ..link.table import LinkTable
from ..onion.paths import NoPathError, choose_leg, choose_path
from ..rng import Rng
from .builder import CircuitBuilder
from .guarding import Guards

STANDBY_PER_EXIT = 1
RETRY_DELAY = 0.25
MAX_RETRY_DELAY = 4.0
HEDGE_AFTER = 1.0  # a leg's build still under way this long gets a parallel one


@dataclass(slots=True)
class Plan:
    """What a managed session keeps up: ``want`` legs to ``exit_id``."""

    exit_id: bytes
    want: int
    building: dict[int, float] = field(default_factory=dict)  # its builds: id -> started
    retry_at: float | None = None
    delay: float = RETRY_DELAY
    spare: bool = False  # a build beside a stalled only leg: it joins whatever the count
    hedged: float = -math.inf  # the last hedge tried (one per HEDGE_AFTER, found a path or not)

    def hedge_at(self, legs: int) -> float | None:
        """When to start one more build because those under way are slow (a relay on
        their path may be dead: waiting for the build timeout would outlast the grace)."""
        if legs >= self.want or not self.building or len(self.building) >= 2 * self.want:
            return None
        return max(*self.building.values(), self.hedged) + HEDGE_AFTER

    def deadline(self, legs: int) -> float | None:
        times = [t for t in (self.retry_at, self.hedge_at(legs)) if t is not None]
        return min(times) if times else None

    def retry_later(self, now: float) -> None:
        """Try again after the backoff, which doubles (once per wait)."""
        if self.retry_at is None:
            self.retry_at = now + self.delay
            self.delay = min(MAX_RETRY_DELAY, 2 * self.delay)


class Healer:
    def __init__(self, builder: CircuitBuilder, rng: Rng) -> None:
        self._builder = builder
        self._rng = rng
        self._relays: Mapping[bytes, Descriptor] = {}
        self._links = LinkTable()  # none until route_with
        self._own_id = b""
        self.guards: Guards | None = None
        self._subnet: Callable[[Descriptor], str] | None = None
        self._standby: dict[bytes, set[int]] = {}  # exit id -> built spare circuits to it
        self._standby_building: dict[int, bytes] = {}  # circuit id -> its exit
        self._finals: dict[bytes, Descriptor] = {}  # named final hops outside the relay view

    def route_with(
        self,
        relays: Mapping[bytes, Descriptor],
        links: LinkTable,
        own_id: bytes,
        *,
        guards: Guards | None = None,
        subnet: Callable[[Descriptor], str] | None = None,
    ) -> None:
        """Where paths come from: the relays known, our links, our own id; with
        ``guards``, first hops come from them only; ``subnet``
        (:func:`~zmesh.onion.paths.subnet_of`) keeps a path to one relay per subnet."""
        self._relays, self._links, self._own_id = relays, links, own_id
        self.guards, self._subnet = guards, subnet

    # -- paths ------------------------------------------------------------------------------
    def first_path(self, now: float) -> list[Descriptor]:
        """A path for a new session's first leg; raises NoPathError if none exists."""
        linked, suspects = self._path_inputs(now)
        guards = None if self.guards is None else self.guards.first_hops(now)
        return choose_path(
            self._rng,
            self._relays.values(),
            linked,
            self._own_id,
            suspects,
            guards=guards,
            subnet=self._subnet,
        )

    def leg_path(
        self, exit_id: bytes, used: set[bytes], now: float, slow: Collection[bytes] = ()
    ) -> list[Descriptor] | None:
        """A path for one more leg to ``exit_id``, around ``used`` if it can; the relays
        of ``slow`` builds (a hedge's) are avoided like suspects, since one may be dead."""
        linked, avoided = self._path_inputs(now)
        guards = None if self.guards is None else self.guards.first_hops(now, exit_id)
        relays: Collection[Descriptor] = self._relays.values()
        final = self._finals.get(exit_id)
        if final is not None and exit_id not in self._relays:
            relays = [*relays, final]
        try:
            return choose_leg(
                self._rng,
                relays,
                linked,
                self._own_id,
                exit_id=exit_id,
                used=used,
                suspects=[*avoided, *slow],
                guards=guards,
                subnet=self._subnet,
            )
        except NoPathError:
            return None

    def _path_inputs(self, now: float) -> tuple[set[bytes], list[bytes]]:
        """The relays we are linked to (possible guards) and those avoided now (failed
        recently, or a link whose phi says they may be gone)."""
        avoided = self._builder.avoidance.avoided_ids(now) + self._links.suspects(now)
        return set(self._links.peers()), avoided

    def build(self, path: list[Descriptor], now: float) -> int | None:
        """Start building ``path``; its id, or None if the builder refused."""
        try:
            cid = self._builder.build(path, now)
        except LocalProtocolError:
            return None
        if self.guards is not None:
            self.guards.build_started(cid, path[0].node_id)
        return cid

    # -- standby ----------------------------------------------------------------------------
    def standby(self) -> list[int]:
        """The built spare circuits, kept to replace lost legs."""
        return [cid for spare in self._standby.values() for cid in spare]

    def keep(self, exit_id: bytes, circuit_id: int) -> bool:
        """Keep the built ``circuit_id`` (a leg's build no longer needed) as a spare to
        ``exit_id`` if the standby has room; whether it was kept."""
        spares = self._standby.setdefault(exit_id, set())
        if len(spares) >= STANDBY_PER_EXIT:
            return False
        spares.add(circuit_id)
        return True

    def standby_built(self, circuit_id: int) -> None:
        """A client circuit is up: if it was a spare's build, the spare is ready."""
        exit_id = self._standby_building.pop(circuit_id, None)
        if exit_id is not None:
            self._standby.setdefault(exit_id, set()).add(circuit_id)

    def standby_closed(self, circuit_id: int) -> None:
        """A client circuit closed: forget it if it was a spare or a spare's build."""
        if self._standby_building.pop(circuit_id, None) is None:
            for spare in self._standby.values():
                spare.discard(circuit_id)

    def take_standby(
        self, exit_id: bytes, used: set[bytes], now: float, *, any_guard: bool
    ) -> int | None:
        """A built spare circuit to ``exit_id`` whose middle is not in ``used``, nor its
        guard unless ``any_guard`` (a session with a live leg builds a leg through another
        guard rather than put both on one), and whose guard and middle are not avoided,
        taken out of the standby."""
        avoided = set(self._builder.avoidance.avoided_ids(now))
        spares = self._standby.get(exit_id, set())
        for cid in sorted(spares):
            path = self._builder.path(cid)
            if not path:  # closed, and its CircuitClosed not yet handled (same input)
                spares.discard(cid)
                continue
            guard, middle = path[:2]
            if (
                middle not in used
                and (any_guard or guard not in used)
                and not {guard, middle} & avoided
            ):
                spares.discard(cid)
                return cid
        return None

    def refill_standby(self, exit_id: bytes, now: float) -> None:
        """Start building spares to ``exit_id`` up to :data:`STANDBY_PER_EXIT`."""
        building = sum(1 for e in self._standby_building.values() if e == exit_id)
        if len(self._standby.get(exit_id, ())) + building >= STANDBY_PER_EXIT:
            return
        path = self.leg_path(exit_id, set(), now)
        cid = None if path is None else self.build(path, now)
        if cid is not None:
            self._standby_building[cid] = exit_id

    def name_final(self, final: Descriptor) -> None:
        """Keep ``final`` (verified by the caller) as a possible final hop until
        :meth:`drop_standby` of its id; a relay in our view needs no naming."""
        if final.node_id not in self._relays:
            self._finals[final.node_id] = final

    def drop_standby(self, exit_id: bytes, now: float) -> None:
        """No session uses ``exit_id`` any more: close its spares and forget it if it
        was a named final hop."""
        self._finals.pop(exit_id, None)
        spares = self._standby.pop(exit_id, set())
        spares |= {c for c, e in self._standby_building.items() if e == exit_id}
        for cid in spares:
            self._standby_building.pop(cid, None)
            self.close(cid, now)

    def close(self, circuit_id: int, now: float, code: CloseCode = CloseCode.REQUESTED) -> None:
        """Close one of our client circuits."""
        if self.guards is not None:
            self.guards.forget(circuit_id)
        if circuit_id in self._builder:
            self._builder.close(circuit_id, now, code)
