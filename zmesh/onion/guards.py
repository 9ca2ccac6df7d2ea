"""Persistent entry guards, after Tor's guard-spec (proposal 271), sans-I/O.

Why.  A client that picks its first hop afresh for every circuit puts a colluding
fraction f of relays first and last on some circuit sooner or later: over C circuits it
is seen with probability 1 - (1 - f^2)^C, which tends to 1 (a predecessor attack;
Wright et al. 2004, Johnson et al., "Users Get Routed", CCS 2013).  A client that keeps
a few guards for months is exposed only if one of them is hostile: 1 - (1 - f)^g for g
guards.

Theory of operation (guard-spec section 4, simplified):

- **Eligible relays.**  A relay may be sampled as a guard once it has been seen for
  :data:`MIN_GUARD_AGE` (Tor's directory authorities call a relay *familiar* after 8 days,
  TIME_KNOWN_TO_GUARANTEE_FAMILIAR): identities are free, so a flood of new ids buys no
  guard slot until it has stayed up as long as an honest relay would.  Of each IPv4 /16
  or IPv6 /32 (:func:`~zmesh.onion.paths.subnet_of`) only the :data:`GUARD_SUBNET_CAP`
  longest-known relays are eligible, so a flood from one subnet, however old, holds at
  most that many of the eligible set.  :func:`eligible_guards` applies both rules; a
  :class:`Familiarity` table records when this node first saw each relay.
- **The sampled set** (:class:`GuardSet`), in sample order, is persistent and bounded by
  :data:`SAMPLE_MAX` (Tor: guard-max-sample-size).  It holds at most one guard per
  subnet.  New guards are sampled uniformly from the eligible relays until
  :data:`N_PRIMARY` of the sample are usable.  Each guard gets a lifetime drawn
  uniformly in :data:`GUARD_LIFETIME` (30 to 60 days); at its end the guard is removed and
  another sampled (rotation).
- **Primary guards** are the first :data:`N_PRIMARY` listed guards of the sample.  A
  circuit uses the first usable guard in sample order; a session's second leg the next
  one (:meth:`GuardSet.in_use`, at most :data:`IN_USE` = 2 guards at a time).
- **Unreachable.**  A guard whose link or circuit fails (:meth:`GuardSet.note_failure`)
  is not used until its retry time, drawn from guard-spec appendix A.1's schedule
  (primary: every 10 minutes for the first 6 hours, every 90 minutes for 4 days, every
  4 hours for 3 days, then every 9 hours); the next guard serves meanwhile, and the first
  is used again once it answers (:meth:`GuardSet.note_success`).
- **Gone.**  A guard no longer listed (not among the relays the node knows) is not used;
  after :data:`REMOVE_UNLISTED_AFTER` (guard-spec: 20 days) it is removed.
- **Private mesh.**  ``private=True`` (every relay on loopback or named by its operator,
  as ``zmesh up`` runs, like Tor's TestingTorNetwork) waives the age and subnet rules.
  The simulator and any public configuration never set it.

State: :meth:`GuardSet.to_state` and :meth:`Familiarity.to_state` give small JSON-able
dicts; ``from_state`` validates strictly and raises :class:`GuardStateError` on anything
else, so a corrupt or hostile state file is a clear error, never a crash.
"""

import itertools
import math
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ZMeshError
from ..identity import NODE_ID_SIZE, Flags
from ..rng import Rng, randbelow
from .paths import Addressed, Relay, draw, subnet_of

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

MIN_GUARD_AGE = 8 * DAY  # seen this long before eligible (Tor: "familiar" after 8 days)
GUARD_SUBNET_CAP = 2  # eligible guards per /16 or /32: the longest known
GUARD_LIFETIME = (30 * DAY, 60 * DAY)  # a guard's lifetime, drawn uniformly at sampling
SAMPLE_MAX = 20  # sampled guards kept at most (Tor: guard-max-sample-size, min 20)
N_PRIMARY = 3  # primary guards (Tor: guard-n-primary-guards)
IN_USE = 2  # guards used at a time: one primary, one for a session's second leg
REMOVE_UNLISTED_AFTER = 20 * DAY  # a guard gone this long leaves the sample (guard-spec)

# guard-spec appendix A.1: (for how long failing, retry every)
PRIMARY_RETRY = ((6 * HOUR, 10 * MINUTE), (4 * DAY, 90 * MINUTE), (3 * DAY, 4 * HOUR))
PRIMARY_RETRY_AFTER = 9 * HOUR
OTHER_RETRY = ((6 * HOUR, HOUR), (4 * DAY, 4 * HOUR), (3 * DAY, 18 * HOUR))
OTHER_RETRY_AFTER = 36 * HOUR

FAMILIAR_MAX = 2048  # relays whose first sighting a node remembers
FAMILIAR_PER_SUBNET = 8  # of them at most this many per subnet (a flood fills no more)
STATE_VERSION = 1
MAX_SUBNET_LEN = 300  # "host:" and a 255-byte name, or a network


class GuardStateError(ZMeshError, ValueError):
    """A guard or familiarity state that is not one this module wrote."""


class GuardRelay(Relay, Addressed, Protocol):
    """What guard selection reads of a relay's descriptor: id, flags and addresses."""


def retry_delay(failing_for: float, *, primary: bool) -> float:
    """How long to wait before retrying a guard that has been failing for ``failing_for``
    seconds (guard-spec appendix A.1)."""
    schedule, after = (
        (PRIMARY_RETRY, PRIMARY_RETRY_AFTER) if primary else (OTHER_RETRY, OTHER_RETRY_AFTER)
    )
    elapsed = 0.0
    for span, every in schedule:
        elapsed += span
        if failing_for < elapsed:
            return every
    return after


def guard_key(relay: Addressed, *, private: bool, node_id: bytes) -> str:
    """The subnet a guard counts against: :func:`subnet_of`, or the id itself (hex) in a
    private mesh, where subnets are waived."""
    return "id:" + node_id.hex() if private else subnet_of(relay)


def eligible_guards[D: GuardRelay](
    relays: Iterable[D],
    first_seen: Mapping[bytes, float],
    now: float,
    *,
    own_id: bytes,
    private: bool = False,
) -> list[D]:
    """The relays that may be sampled as guards now, ordered by node id.

    A relay qualifies if it carries the RELAY flag, is not ourselves, and was first seen
    (``first_seen``, e.g. a :class:`Familiarity`) at least :data:`MIN_GUARD_AGE` ago; of
    each subnet only the :data:`GUARD_SUBNET_CAP` seen first (ties by node id) remain.
    ``private`` waives the age and subnet rules.
    """
    by_id: dict[bytes, D] = {}
    relay = int(Flags.RELAY)
    for desc in relays:
        node_id = desc.node_id
        if int(desc.flags) & relay and node_id != own_id:  # int(): IntFlag's & is slow
            by_id[node_id] = desc
    if private:
        return [by_id[i] for i in sorted(by_id)]
    cutoff = now - MIN_GUARD_AGE
    old = []
    for node_id, desc in by_id.items():
        seen = first_seen.get(node_id)
        if seen is not None and seen <= cutoff:
            old.append((seen, node_id, desc))
    old.sort(key=lambda t: (t[0], t[1]))
    per_subnet: Counter[str] = Counter()
    out: list[D] = []
    for _, _, desc in old:
        key = subnet_of(desc)
        if per_subnet[key] < GUARD_SUBNET_CAP:
            per_subnet[key] += 1
            out.append(desc)
    out.sort(key=lambda d: d.node_id)
    return out


# -- Familiarity: when this node first saw each relay ------------------------------------


@dataclass(slots=True)
class _Seen:
    subnet: str
    first: float
    last: float


class Familiarity(Mapping[bytes, float]):
    """When this node first saw each relay: a bounded, persistent table, read as a
    mapping from node id to first sighting (for :func:`eligible_guards`).

    At most :data:`FAMILIAR_MAX` relays and :data:`FAMILIAR_PER_SUBNET` per subnet are
    remembered; a full table refuses newcomers (the newest are shed, never the relays
    that have aged), and a relay not seen for :data:`REMOVE_UNLISTED_AFTER` is forgotten.
    """

    def __init__(self) -> None:
        self._seen: dict[bytes, _Seen] = {}
        self._per_subnet: Counter[str] = Counter()

    def __getitem__(self, node_id: bytes) -> float:
        return self._seen[node_id].first

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)

    def observe(self, relays: Iterable[GuardRelay], now: float) -> None:
        """Record that ``relays`` (the RELAY-flagged ones) are in the network at ``now``:
        refresh the known, forget those unseen for :data:`REMOVE_UNLISTED_AFTER`, then
        add the new while there is room."""
        fresh = []
        for desc in relays:
            if not int(desc.flags) & int(Flags.RELAY):
                continue
            known = self._seen.get(desc.node_id)
            if known is None:
                fresh.append(desc)
            else:
                known.last = max(known.last, now)
        for node_id, seen in list(self._seen.items()):
            if seen.last < now - REMOVE_UNLISTED_AFTER:
                self._forget(node_id)
        for desc in fresh:
            subnet = subnet_of(desc)
            if (
                desc.node_id not in self._seen  # an id repeated in ``relays``
                and len(self._seen) < FAMILIAR_MAX
                and self._per_subnet[subnet] < FAMILIAR_PER_SUBNET
            ):
                self._seen[desc.node_id] = _Seen(subnet, now, now)
                self._per_subnet[subnet] += 1

    def _forget(self, node_id: bytes) -> None:
        seen = self._seen.pop(node_id)
        self._per_subnet[seen.subnet] -= 1
        if not self._per_subnet[seen.subnet]:
            del self._per_subnet[seen.subnet]

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict of the table (see :meth:`from_state`)."""
        return {
            "version": STATE_VERSION,
            "relays": [
                [node_id.hex(), s.subnet, s.first, s.last] for node_id, s in self._seen.items()
            ],
        }

    @classmethod
    def from_state(cls, state: object) -> "Familiarity":
        """The table :meth:`to_state` described; GuardStateError if ``state`` is not one."""
        fields = _fields(state, {"version", "relays"})
        relays = fields["relays"]
        if not isinstance(relays, list) or len(relays) > FAMILIAR_MAX:
            raise GuardStateError(f"familiarity 'relays' must be a list of <= {FAMILIAR_MAX}")
        out = cls()
        for entry in relays:
            if not isinstance(entry, list) or len(entry) != 4:
                raise GuardStateError("a familiarity entry is [id, subnet, first, last]")
            node_id = _node_id(entry[0])
            subnet = _subnet(entry[1])
            first, last = _time(entry[2], "first"), _time(entry[3], "last")
            if last < first:
                raise GuardStateError("a relay last seen before it was first seen")
            if node_id in out._seen:
                raise GuardStateError("a relay listed twice in the familiarity table")
            if out._per_subnet[subnet] >= FAMILIAR_PER_SUBNET:
                raise GuardStateError(f"more than {FAMILIAR_PER_SUBNET} relays of one subnet")
            out._seen[node_id] = _Seen(subnet, first, last)
            out._per_subnet[subnet] += 1
        return out


# -- The guard set ---------------------------------------------------------------------


@dataclass(slots=True)
class Guard:
    """One sampled guard and what we know of it."""

    node_id: bytes
    subnet: str
    added_at: float
    expires_at: float
    unlisted_since: float | None = None  # not among the known relays since then
    failing_since: float | None = None  # unreachable since then (until a success)
    retry_at: float | None = None  # not used before this time

    def usable(self, now: float) -> bool:
        """Listed, not expired, and not waiting for a retry."""
        return (
            self.unlisted_since is None
            and now < self.expires_at
            and (self.retry_at is None or self.retry_at <= now)
        )


class GuardSet:
    """A client's persistent guards (see the module docstring).

    Drive it with :meth:`update` whenever the known relays change (and at
    :meth:`get_timer`), ask :meth:`in_use` for the guards of the next circuit (pass them
    as ``guards`` to :func:`~zmesh.onion.paths.choose_path` and
    :func:`~zmesh.onion.paths.choose_leg`), and report each guard's link or circuit
    outcome with :meth:`note_success` and :meth:`note_failure`.
    """

    def __init__(self, *, private: bool = False) -> None:
        self.private = private
        self.guards: list[Guard] = []

    def __len__(self) -> int:
        return len(self.guards)

    def update(
        self, now: float, rng: Rng, eligible: Sequence[GuardRelay], listed: Collection[bytes]
    ) -> None:
        """Bring the sample up to date at ``now``.

        ``listed`` holds the ids of the relays the node knows to be in the network;
        ``eligible`` the relays that may be sampled (:func:`eligible_guards`).  Guards
        that expired or have been unlisted for :data:`REMOVE_UNLISTED_AFTER` are removed;
        then new guards are sampled, uniformly among the eligible relays outside the
        sample's subnets, until :data:`N_PRIMARY` guards are usable or the sample holds
        :data:`SAMPLE_MAX`.
        """
        kept = []
        for g in self.guards:
            if g.node_id in listed:
                g.unlisted_since = None
            elif g.unlisted_since is None:
                g.unlisted_since = now
            gone = g.unlisted_since is not None and now - g.unlisted_since >= REMOVE_UNLISTED_AFTER
            if now < g.expires_at and not gone:
                kept.append(g)
        self.guards = kept
        usable = sum(g.usable(now) for g in kept)
        while usable < N_PRIMARY and len(self.guards) < SAMPLE_MAX:
            added = self._sample(now, rng, eligible, listed)
            if added is None:
                break
            usable += 1

    def _sample(
        self, now: float, rng: Rng, eligible: Sequence[GuardRelay], listed: Collection[bytes]
    ) -> Guard | None:
        ids = {g.node_id for g in self.guards}
        subnets = {g.subnet for g in self.guards}

        def key(d: GuardRelay) -> str:
            return guard_key(d, private=self.private, node_id=d.node_id)

        pick = draw(
            rng,
            eligible,
            lambda d: d.node_id not in ids and d.node_id in listed and key(d) not in subnets,
        )
        if pick is None:
            return None
        low, high = GUARD_LIFETIME
        lifetime = low + randbelow(rng, int(high - low) + 1)
        guard = Guard(pick.node_id, key(pick), now, now + lifetime)
        self.guards.append(guard)
        return guard

    def primary(self) -> list[bytes]:
        """The primary guards: the first :data:`N_PRIMARY` listed guards of the sample."""
        return [g.node_id for g in self.guards if g.unlisted_since is None][:N_PRIMARY]

    def in_use(self, now: float, exclude: bytes | None = None) -> list[bytes]:
        """The guards for circuits now, at most :data:`IN_USE`: the first usable guards
        in sample order other than ``exclude`` (a path's exit), a primary first; the
        next serves a session's second leg, or stands in while a primary is unreachable."""
        usable = (g.node_id for g in self.guards if g.usable(now) and g.node_id != exclude)
        return list(itertools.islice(usable, IN_USE))

    def note_failure(self, node_id: bytes, now: float) -> None:
        """A link or circuit through guard ``node_id`` failed: do not use it until its
        retry time (guard-spec appendix A.1).  Unknown ids are ignored."""
        for g in self.guards:
            if g.node_id == node_id:
                if g.failing_since is None:
                    g.failing_since = now
                primary = node_id in self.primary()
                g.retry_at = now + retry_delay(now - g.failing_since, primary=primary)
                return

    def note_success(self, node_id: bytes, now: float) -> None:
        """A link or circuit through guard ``node_id`` worked: it is reachable again."""
        del now  # the outcome is what matters; the signature matches note_failure
        for g in self.guards:
            if g.node_id == node_id:
                g.failing_since = g.retry_at = None
                return

    def get_timer(self) -> float:
        """When the sample next changes on its own (a retry, an expiry, a removal);
        ``math.inf`` if never."""
        times = [math.inf]
        for g in self.guards:
            times.append(g.expires_at)
            if g.retry_at is not None:
                times.append(g.retry_at)
            if g.unlisted_since is not None:
                times.append(g.unlisted_since + REMOVE_UNLISTED_AFTER)
        return min(times)

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict of the sample (see :meth:`from_state`)."""
        return {
            "version": STATE_VERSION,
            "guards": [
                {
                    "id": g.node_id.hex(),
                    "subnet": g.subnet,
                    "added_at": g.added_at,
                    "expires_at": g.expires_at,
                    "unlisted_since": g.unlisted_since,
                    "failing_since": g.failing_since,
                    "retry_at": g.retry_at,
                }
                for g in self.guards
            ],
        }

    @classmethod
    def from_state(cls, state: object, *, private: bool = False) -> "GuardSet":
        """The sample :meth:`to_state` described; GuardStateError if ``state`` is not one:
        wrong shape or types, more than :data:`SAMPLE_MAX` guards, a repeated id, two
        guards of one subnet, or a lifetime outside :data:`GUARD_LIFETIME`."""
        fields = _fields(state, {"version", "guards"})
        guards = fields["guards"]
        if not isinstance(guards, list) or len(guards) > SAMPLE_MAX:
            raise GuardStateError(f"'guards' must be a list of at most {SAMPLE_MAX}")
        out = cls(private=private)
        ids: set[bytes] = set()
        subnets: set[str] = set()
        for entry in guards:
            g = _guard(entry)
            if g.node_id in ids:
                raise GuardStateError("a guard listed twice")
            if g.subnet in subnets:
                raise GuardStateError("two guards of one subnet")
            ids.add(g.node_id)
            subnets.add(g.subnet)
            out.guards.append(g)
        return out


# -- strict state validation -----------------------------------------------------------

_GUARD_KEYS = {
    "id",
    "subnet",
    "added_at",
    "expires_at",
    "unlisted_since",
    "failing_since",
    "retry_at",
}


def _fields(state: object, keys: set[str]) -> dict[str, object]:
    if not isinstance(state, dict) or set(state) != keys:
        raise GuardStateError(f"state must be a dict with exactly the keys {sorted(keys)}")
    if type(state["version"]) is not int or state["version"] != STATE_VERSION:
        raise GuardStateError(f"unknown state version {state['version']!r}")
    return state


def _guard(entry: object) -> Guard:
    if not isinstance(entry, dict) or set(entry) != _GUARD_KEYS:
        raise GuardStateError(f"a guard must be a dict with exactly {sorted(_GUARD_KEYS)}")
    added = _time(entry["added_at"], "added_at")
    expires = _time(entry["expires_at"], "expires_at")
    if not GUARD_LIFETIME[0] <= expires - added <= GUARD_LIFETIME[1]:
        raise GuardStateError("a guard's lifetime is outside GUARD_LIFETIME")
    return Guard(
        _node_id(entry["id"]),
        _subnet(entry["subnet"]),
        added,
        expires,
        _optional_time(entry["unlisted_since"], "unlisted_since"),
        _optional_time(entry["failing_since"], "failing_since"),
        _optional_time(entry["retry_at"], "retry_at"),
    )


def _node_id(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * NODE_ID_SIZE:
        raise GuardStateError(f"a node id is {2 * NODE_ID_SIZE} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise GuardStateError("a node id is hex digits") from None


def _subnet(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_SUBNET_LEN or not value.isascii():
        raise GuardStateError(f"a subnet is 1 to {MAX_SUBNET_LEN} ASCII characters")
    return value


def _time(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GuardStateError(f"{name!r} must be a number")
    if not math.isfinite(value) or not 0 <= value < 2**53:
        raise GuardStateError(f"{name!r} must be a finite, non-negative number")
    return float(value)


def _optional_time(value: object, name: str) -> float | None:
    return None if value is None else _time(value, name)


__all__ = [
    "GUARD_LIFETIME",
    "GUARD_SUBNET_CAP",
    "IN_USE",
    "MIN_GUARD_AGE",
    "N_PRIMARY",
    "REMOVE_UNLISTED_AFTER",
    "SAMPLE_MAX",
    "Familiarity",
    "Guard",
    "GuardRelay",
    "GuardSet",
    "GuardStateError",
    "eligible_guards",
    "guard_key",
    "retry_delay",
]
