"""The node's entry guards: a persistent guard set fed by the relays the node knows.

:class:`Guards` is the node-level component around :mod:`zmesh.onion.guards`: it owns a
:class:`~zmesh.onion.guards.GuardSet` and a :class:`~zmesh.onion.guards.Familiarity`,
and gives the sessions (:mod:`zmesh.circuit.sessions`) the guards of the next path.

Theory of operation:

- **Observing.**  At every update the relays the node knows (its directory, or with the
  DHT its peer sample) are shown to the familiarity table, which keeps each relay's first
  sighting; then the guard set drops expired or long-unlisted guards and samples new ones
  among the eligible relays (:func:`~zmesh.onion.guards.eligible_guards`: seen for
  :data:`~zmesh.onion.guards.MIN_GUARD_AGE`, at most two per subnet).  Updates run every
  :data:`UPDATE_INTERVAL`, when a guard's retry time, lifetime or unlisted grace ends,
  and, at most every :data:`UPDATE_MIN_GAP`, when a path finds fewer than
  :data:`~zmesh.onion.guards.IN_USE` usable guards (a new node learning its first relays).
- **A young node.**  A node that has not yet seen :data:`~zmesh.onion.guards.N_PRIMARY`
  relays for the guard age (its first 8 days) would have no guard at all; it samples among
  every relay it has seen instead, the two longest known per subnet.  Tor's clients are
  spared this by the directory authorities' Guard flag, which zMesh has no equivalent of;
  the subnet caps still bound what a flood can win, and the guards it picks keep their
  lifetime (30 to 60 days).  A private mesh waives the age and subnet rules altogether.
- **Paths.**  :meth:`Guards.first_hops` returns the usable guards in order (at most
  :data:`~zmesh.onion.guards.IN_USE`: a session's first leg takes the first, its second leg
  the next) and asks the node's dialer for a link to each that has none, so the node
  links to its guards on its own.
- **Failures** (guard-spec section 4.6).  A guard whose link fails, whose dial fails, or
  through which :data:`BUILD_FAILURES` builds in a row failed is noted
  (:meth:`~zmesh.onion.guards.GuardSet.note_failure`) and the next guard serves until its
  retry time; a link to it coming up, or a build through it, makes it usable again.  A
  single failed build does not count: one CREATE opens every hop at once (D8), so a
  failure cannot be pinned on the first hop, and the builder already scores the others.
- **State.**  :meth:`Guards.state` is a small JSON-able dict (both tables); the component
  asks for it to be stored with a :class:`GuardStateChanged` effect when the guard set
  changed, the familiarity table grew or shrank, or :data:`SAVE_INTERVAL` passed, and
  :meth:`Guards.restore` loads it back (GuardStateError on anything it did not write).
"""

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..identity import Descriptor, Flags
from ..link.table import LinkTable
from ..onion.guards import (
    IN_USE,
    MIN_GUARD_AGE,
    N_PRIMARY,
    REMOVE_UNLISTED_AFTER,
    Familiarity,
    GuardSet,
    GuardStateError,
    eligible_guards,
)
from ..rng import Rng

UPDATE_INTERVAL = 60.0  # relays observed and the set updated at least this often
UPDATE_MIN_GAP = 1.0  # a path short of guards updates the set at most this often
BUILD_FAILURES = 3  # failed builds in a row through a guard before it counts as failing
MAX_BUILDS = 512  # builds whose guard is remembered until they end (the builder's 256, x2)
SAVE_INTERVAL = 600.0  # the state is offered for storage at least this often when it changes
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class GuardStateChanged:
    """Effect: store ``state`` (JSON-able); give it back to :meth:`Guards.restore` at the
    next start."""

    state: dict[str, Any]


class Guards:
    """A node's persistent entry guards (see the module doc).

    ``relays`` is the node's view of the network (read at every update), ``links`` its
    links, ``dial`` its dialer's ``want``; ``private`` waives the age and subnet rules."""

    def __init__(
        self,
        own_id: bytes,
        relays: Mapping[bytes, Descriptor],
        links: LinkTable,
        rng: Rng,
        now: float,
        *,
        dial: Callable[[Descriptor, float], bool],
        private: bool,
    ) -> None:
        self._own_id = own_id
        self._relays = relays
        self._links = links
        self._rng = rng
        self._dial = dial
        self.private = private
        self.set = GuardSet(private=private)
        self.familiarity = Familiarity()
        self.events: deque[GuardStateChanged] = deque()
        self._next_update = now
        self._last_update = -math.inf
        self._builds: OrderedDict[int, bytes] = OrderedDict()  # circuit id -> its guard
        self._failures: dict[bytes, int] = {}  # guard -> failed builds in a row
        self._saved: tuple[dict[str, Any], int] | None = None  # what was last offered
        self._next_save = now + SAVE_INTERVAL

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> GuardStateChanged | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        return self._next_update

    def handle_timer(self, now: float) -> None:
        if now >= self._next_update:
            self.update(now)

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Both tables as a JSON-able dict (see :meth:`restore`)."""
        return {
            "version": STATE_VERSION,
            "guards": self.set.to_state(),
            "familiarity": self.familiarity.to_state(),
        }

    def restore(self, state: object, now: float) -> None:
        """Load what :meth:`state` gave (at start, before any path).  Raises
        GuardStateError, and changes nothing, if ``state`` is not such a dict."""
        if not isinstance(state, dict) or set(state) != {"version", "guards", "familiarity"}:
            raise GuardStateError("guard state must be a dict of version, guards, familiarity")
        if type(state["version"]) is not int or state["version"] != STATE_VERSION:
            raise GuardStateError(f"unknown guard state version {state['version']!r}")
        guards = GuardSet.from_state(state["guards"], private=self.private)
        familiarity = Familiarity.from_state(state["familiarity"])
        self.set, self.familiarity = guards, familiarity
        self._saved = (self.set.to_state(), len(self.familiarity))
        self._next_update = now

    # -- paths ----------------------------------------------------------------------------
    def first_hops(self, now: float, exit_id: bytes | None = None) -> list[bytes]:
        """The guards for the next path, in order (at most IN_USE), other than the path's
        exit if it is known (a session whose exit is a guard takes the next usable guard
        for its second leg, as Tor takes its next primary); dials those we have no link
        to.  Updates the set first if it is short of usable guards."""
        in_use = self.set.in_use(now, exit_id)
        if len(in_use) < IN_USE and now >= self._last_update + UPDATE_MIN_GAP:
            self.update(now)
            in_use = self.set.in_use(now, exit_id)
        for guard in in_use:
            desc = self._relays.get(guard)
            if desc is not None and self._links.to_peer(guard) is None:
                self._dial(desc, now)
        return in_use

    def update(self, now: float) -> None:
        """Observe the relays known now and bring the guard set up to date."""
        relays = list(self._relays.values())
        self.familiarity.observe(relays, now)
        own, private = self._own_id, self.private
        eligible = eligible_guards(relays, self.familiarity, now, own_id=own, private=private)
        if len(eligible) < N_PRIMARY and not private:  # a young node: see the module doc
            later = now + MIN_GUARD_AGE
            eligible = eligible_guards(relays, self.familiarity, later, own_id=own)
        listed = {d.node_id for d in relays if int(d.flags) & int(Flags.RELAY)}
        self.set.update(now, self._rng, eligible, listed)
        self._last_update = now
        self._next_update = min(now + UPDATE_INTERVAL, self._next_change(now))
        self._offer_state(now)

    def _next_change(self, now: float) -> float:
        """The next time a guard becomes usable again, expires or is removed."""
        times = [math.inf]
        for g in self.set.guards:
            times.append(g.expires_at)
            if g.retry_at is not None:
                times.append(g.retry_at)
            if g.unlisted_since is not None:
                times.append(g.unlisted_since + REMOVE_UNLISTED_AFTER)
        return min((t for t in times if t > now), default=math.inf)

    # -- outcomes -------------------------------------------------------------------------
    def link_up(self, peer_id: bytes, now: float) -> None:
        """A link to ``peer_id`` came up: a guard of ours is reachable again."""
        self._failures.pop(peer_id, None)
        self._note(peer_id, now, ok=True)

    def link_failed(self, peer_id: bytes, now: float) -> None:
        """The link to ``peer_id`` failed (timed out or broke), or dialling it failed."""
        self._note(peer_id, now, ok=False)

    def build_started(self, circuit_id: int, guard: bytes) -> None:
        """A client circuit through ``guard`` is being built."""
        self._builds[circuit_id] = guard
        while len(self._builds) > MAX_BUILDS:
            self._builds.popitem(last=False)

    def build_ended(self, circuit_id: int, built: bool, now: float) -> None:
        """A build ended (``built``, or failed); unknown or forgotten circuits are ignored."""
        guard = self._builds.pop(circuit_id, None)
        if guard is None:
            return
        if built:
            self._failures.pop(guard, None)
            self._note(guard, now, ok=True)
            return
        failures = self._failures[guard] = self._failures.get(guard, 0) + 1
        if failures >= BUILD_FAILURES:
            del self._failures[guard]
            self._note(guard, now, ok=False)
        elif len(self._failures) > MAX_BUILDS:
            self._failures.clear()

    def forget(self, circuit_id: int) -> None:
        """We closed a circuit we were building ourselves: its end says nothing of its guard."""
        self._builds.pop(circuit_id, None)

    def _note(self, node_id: bytes, now: float, *, ok: bool) -> None:
        guard = next((g for g in self.set.guards if g.node_id == node_id), None)
        if guard is None:
            return
        if ok:
            if guard.failing_since is None:
                return
            self.set.note_success(node_id, now)
        else:
            self.set.note_failure(node_id, now)
        self._next_update = min(self._next_update, now)  # resample, re-arm the retry
        self._offer_state(now)

    def _offer_state(self, now: float) -> None:
        guards = self.set.to_state()
        mark = (guards, len(self.familiarity))
        if mark != self._saved or now >= self._next_save:
            self._saved = mark
            self._next_save = now + SAVE_INTERVAL
            self.events.append(GuardStateChanged(self.state()))

    # -- queries --------------------------------------------------------------------------
    def primary(self) -> list[bytes]:
        """The primary guards (see :meth:`~zmesh.onion.guards.GuardSet.primary`)."""
        return self.set.primary()

    def holds(self, node_id: bytes) -> bool:
        """Whether ``node_id`` is in the guard sample."""
        return any(g.node_id == node_id for g in self.set.guards)


__all__ = [
    "BUILD_FAILURES",
    "SAVE_INTERVAL",
    "UPDATE_INTERVAL",
    "GuardStateChanged",
    "Guards",
]
