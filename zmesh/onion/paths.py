"""Path selection for a client's 3-hop circuits: guard -> middle -> exit.

The guard is a relay we hold a link to (a circuit's first cell goes straight to it); the
exit carries the EXIT flag; the three are distinct and never ourselves.  Relays suspected
of a recent failure are avoided, in three steps so that a small mesh still gets a path:
first avoid every suspect; then keep avoiding suspected guards and middles (the likely
culprits) but accept a suspected exit, since a failed circuit makes its exit a suspect
too and a mesh may have a single exit; last, give up on avoidance.

Two rules serve anonymity on an open network (DESIGN 3b; Tor's path-spec 2.2):

- **Persistent guards.**  Given a guard set's guards (``guards``, in order of preference,
  from :meth:`zmesh.onion.guards.GuardSet.in_use`), the first hop is the first of them
  that is usable, never another relay: a client that fell back to any linked relay would
  hand a predecessor attack the first hop it denies (Johnson et al., CCS 2013).
- **Diversity.**  Given a ``subnet`` key (:func:`subnet_of` on an open network), no two
  relays of a path share a key: one relay per IPv4 /16 or IPv6 /32.  Declared families
  would join the same key, but descriptors carry none yet.  A private mesh (every relay on
  loopback or named by its operator, as ``zmesh up`` runs) passes no key and waives the
  rule, as Tor's TestingTorNetwork does; the simulator never waives it.

Sybil resistance in the draw (issue 9; DESIGN 3b).  Ids are free, so a relay drawn
uniformly from what a client knows hands an attacker who brings M ids from a few subnets a
share M / (M + honest) of every position.  So on an open network (a ``subnet`` key given)
a draw is **per subnet**: a subnet is drawn, weighted by its heaviest relay, then a relay
in it, weighted likewise; one subnet's many ids do not multiply its share, as one relay
per /16 per path already keeps them from sharing a path.  And given when each relay was
first seen (``first_seen``, as the guard age rule reads it), a relay seen for less than
``fresh_age`` (:data:`FRESH_AGE`, a day) weighs :data:`FRESH_WEIGHT` (a hundredth) of
an established one, after Tor's cap on relays its authorities have not measured yet: a
flood of new ids in K fresh subnets gets about K / (100 H + K) of the middle and exit
positions against H established subnets, whatever their number of ids.  Guards are not
drawn here (a guard set gives them, with its own age rule).

The cost to anonymity: draws are no longer uniform over relays.  A relay in a crowded
subnet (a hosting provider's /16) is drawn less often than one alone in its subnet, so an
adversary who spreads relays over many subnets gains, per relay, what crowded honest
subnets lose, and new honest relays carry a hundredth of the load for their first day; the
path's entropy over relays drops accordingly (Tor accepts the like for its family and
/16 rules and its unmeasured-relay cap).  Honest exits are few (a fraction of the
relays) and every Sybil may claim the flag, so the exit position is where a weaker
penalty would show first; a hundredth keeps K fresh exit subnets at about K / (100 E)
of exits against E established exits.  A private mesh passes no key and no ages, and
draws uniformly as before.

Draws are by rejection sampling over a :class:`RelayPool` built once per directory
change: a weighted random pick, the constraints checked, a few attempts, then the
filtered list with the same weights.  A pool of 10,000 relays thus costs a handful of
checks per path, not a pass over the directory (the anonymity simulator draws hundreds
of thousands of paths).

Inputs are plain data (descriptors, linked ids, our id) and the randomness comes from an
injected :class:`~zmesh.rng.Rng`, so a seeded run picks the same paths every time.
"""

import ipaddress
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from itertools import accumulate
from typing import Protocol

from ..errors import ZMeshError
from ..identity import Flags
from ..rng import Rng, randbelow

HOPS = 3
ATTEMPTS = 16  # random draws before a draw filters its whole list
NO_ADDRESS = "none"  # the subnet of every relay without a usable address: one bucket
SUBNET_CACHE = 16384  # address tuples whose subnet is remembered (bounded)
FRESH_AGE = 24 * 3600.0  # a relay first seen less than this long ago is fresh
FRESH_WEIGHT = 0.01  # what a fresh relay weighs against an established one
_ESTABLISHED = round(1 / FRESH_WEIGHT)  # integer weights: fresh 1, established 100
_RELAY, _EXIT = int(Flags.RELAY), int(Flags.EXIT)


class NoPathError(ZMeshError):
    """Not enough known relays (or no exit) to build a circuit yet."""


class Relay(Protocol):
    """What path selection reads of a relay's descriptor."""

    @property
    def node_id(self) -> bytes: ...

    @property
    def flags(self) -> Flags: ...


class Addressed(Protocol):
    """A descriptor's addresses (signaling URLs such as ``http://203.0.113.5:8080``)."""

    @property
    def addresses(self) -> tuple[str, ...]: ...


def subnet_of(desc: Addressed) -> str:
    """The diversity key of a relay: its first address's IPv4 /16 or IPv6 /32.

    The first address is the relay's signaling URL (``http://host:port``, as
    ``zmesh relay`` publishes it) or a bare ``host:port``.  An IPv4-mapped IPv6 address
    counts as IPv4.  A host that is a name, not an IP literal, is keyed by the name itself
    (``host:relay.example.org``), lowercased: without DNS in the core we cannot place it,
    so two names of one operator count as two subnets.  A relay with no address, or one
    that does not parse, falls in a single shared bucket (:data:`NO_ADDRESS`), so garbage
    cannot buy a fresh subnet.  The address is as declared by the relay, not checked.
    Never raises.
    """
    return _subnet(desc.addresses[:1])


@lru_cache(maxsize=SUBNET_CACHE)
def _subnet(addresses: tuple[str, ...]) -> str:
    if not addresses:
        return NO_ADDRESS
    host = _host_of(addresses[0])
    if not host:
        return NO_ADDRESS
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        name = host.lower().rstrip(".")
        if not name or any(c in name for c in "/@[]% "):
            return NO_ADDRESS
        return f"host:{name}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        a, b = ip.packed[:2]
        return f"{a}.{b}.0.0/16"
    return f"{ipaddress.IPv6Address(int(ip) >> 96 << 96)}/32"


def _host_of(address: str) -> str | None:
    """The host part of a URL, ``host:port``, ``[v6]:port`` or a bare host; None if bad."""
    scheme, sep, rest = address.partition("://")
    if sep:
        if not scheme.isalnum():
            return None
        address = rest.partition("/")[0].rpartition("@")[2]  # netloc without userinfo
    if address.startswith("["):
        host, sep, _ = address[1:].partition("]")
        return host if sep else None
    if address.count(":") > 1:  # a bare IPv6 address
        return address
    return address.partition(":")[0]


def choice[T](rng: Rng, items: Sequence[T]) -> T:
    """Return one of ``items``, uniformly; ValueError if there are none."""
    if not items:
        raise ValueError("choice from an empty sequence")
    return items[randbelow(rng, len(items))]


def draw[T](rng: Rng, items: Sequence[T], ok: Callable[[T], bool]) -> T | None:
    """Return one of the ``items`` that satisfy ``ok``, uniformly; None if none does.

    Rejection sampling: up to :data:`ATTEMPTS` random items, then the filtered list.  Both
    stages are uniform over the items that satisfy ``ok``, so the result is too.
    """
    if not items:
        return None
    for _ in range(ATTEMPTS):
        item = items[randbelow(rng, len(items))]
        if ok(item):
            return item
    good = [item for item in items if ok(item)]
    return choice(rng, good) if good else None


def shuffled[T](rng: Rng, items: Sequence[T]) -> Iterator[T]:
    """``items`` in a random order, drawn lazily (Fisher-Yates one step per item)."""
    out = list(items)
    for i in range(len(out)):
        j = i + randbelow(rng, len(out) - i)
        out[i], out[j] = out[j], out[i]
        yield out[i]


def _uniform(rng: Rng) -> float:
    """A float in [0, 1) from 53 random bits."""
    return randbelow(rng, 1 << 53) / (1 << 53)


class _Groups:
    """Relays grouped by diversity key, for draws per key: a key weighted by its heaviest
    relay, then a relay of it by weight (integer weights)."""

    __slots__ = ("_key_cum", "_keys", "_members", "uniform")

    def __init__(
        self, ids: Sequence[bytes], key: Mapping[bytes, object], weight: Mapping[bytes, int]
    ):
        groups: dict[object, list[bytes]] = {}
        for i in ids:  # ids are sorted: so are the members of each key
            groups.setdefault(key[i], []).append(i)
        self._keys = list(groups)
        self._members = [
            (members, list(accumulate(weight[m] for m in members))) for members in groups.values()
        ]
        self._key_cum = list(accumulate(max(weight[m] for m in g) for g in groups.values()))
        self.uniform = (
            all(len(g) == 1 for g in groups.values()) and len({weight[i] for i in ids}) <= 1
        )  # one relay per key, all alike: a plain uniform draw over ``ids``

    def __bool__(self) -> bool:
        return bool(self._keys)

    def pick(self, rng: Rng) -> bytes:
        """One relay: a key by weight, then a member by weight (one draw if it has one)."""
        k = bisect_right(self._key_cum, randbelow(rng, self._key_cum[-1]))
        members, cum = self._members[k]
        if len(members) == 1:
            return members[0]
        return members[bisect_right(cum, randbelow(rng, cum[-1]))]

    def draw(self, rng: Rng, ok: Callable[[bytes], bool]) -> bytes | None:
        """A relay satisfying ``ok``, with the probability :meth:`pick` gives it, renormed
        over those that do; None if none does.  Rejection sampling first (as
        :func:`draw`), then the filtered relays with the same weights."""
        if not self._keys:
            return None
        for _ in range(ATTEMPTS):
            item = self.pick(rng)
            if ok(item):
                return item
        return self.choose(rng, ok)

    def choose(self, rng: Rng, ok: Callable[[bytes], bool]) -> bytes | None:
        """Like :meth:`draw` without the rejection stage: one pass over the relays."""
        if self.uniform:
            good = [m for members, _ in self._members for m in members if ok(m)]
            return choice(rng, good) if good else None
        items: list[bytes] = []
        masses: list[float] = []
        previous = 0
        for (members, cum), key_cum in zip(self._members, self._key_cum, strict=True):
            key_weight, previous = key_cum - previous, key_cum
            low = 0
            for member, high in zip(members, cum, strict=True):
                if ok(member):
                    items.append(member)
                    masses.append(key_weight * (high - low) / cum[-1])
                low = high
        if not items:
            return None
        total = list(accumulate(masses))
        return items[min(bisect_right(total, _uniform(rng) * total[-1]), len(items) - 1)]


class RelayPool[D: Relay]:
    """The relays a client may build paths through, indexed once for many draws.

    Keeps the RELAY-flagged descriptors other than ``own_id`` (the last descriptor of a
    repeated id counts), ordered by node id so that a draw depends on the rng and the set
    of relays, not on the order they were learned in.  ``subnet`` gives each relay's
    diversity key (:func:`subnet_of`); None waives the rule (a private mesh).
    """

    def __init__(
        self,
        relays: Iterable[D],
        own_id: bytes,
        subnet: Callable[[D], str] | None = None,
        *,
        first_seen: Mapping[bytes, float] | None = None,
        now: float = 0.0,
        fresh_age: float = FRESH_AGE,
    ) -> None:
        """``first_seen`` (when each relay was first seen) and ``now`` weigh relays seen
        for less than ``fresh_age`` down (the module doc); a relay it lacks is fresh."""
        by_id: dict[bytes, D] = {}
        for desc in relays:
            node_id = desc.node_id
            if int(desc.flags) & _RELAY and node_id != own_id:  # int(): IntFlag's & is slow
                by_id[node_id] = desc
        self.by_id = by_id
        self.ids = sorted(by_id)
        self.exits = [i for i in self.ids if int(by_id[i].flags) & _EXIT]
        self.key: dict[bytes, str | bytes] = (
            {i: subnet(by_id[i]) for i in self.ids} if subnet else {i: i for i in self.ids}
        )
        if first_seen is None:
            self.weight = dict.fromkeys(self.ids, 1)
        else:
            fresh = now - fresh_age
            self.weight = {
                i: _ESTABLISHED if first_seen.get(i, now) <= fresh else 1 for i in self.ids
            }
        self._all = _Groups(self.ids, self.key, self.weight)
        self._exits = _Groups(self.exits, self.key, self.weight)

    def __len__(self) -> int:
        return len(self.ids)

    def path(
        self,
        rng: Rng,
        linked: Collection[bytes] | None,
        suspects: Collection[bytes] = (),
        guards: Sequence[bytes] | None = None,
    ) -> list[D]:
        """Return ``[guard, middle, exit]``; NoPathError if none exists.

        The guard is the first usable of ``guards`` if given, else a linked relay drawn
        uniformly (``linked`` None: any relay, as in the simulator); then the exit and
        the middle uniformly among those that keep the path valid.  Suspects are avoided
        in the three steps of the module docstring.
        """
        avoided = set(suspects)
        if self.exits:
            for avoid, avoid_exits in ((avoided, avoided), (avoided, set()), (set(), set())):
                for guard in self._guards(rng, linked, guards, avoid):
                    found = self._exit_and_middle(rng, guard, avoid, avoid_exits)
                    if found is not None:
                        middle, exit_ = found
                        return [self.by_id[guard], self.by_id[middle], self.by_id[exit_]]
        if guards is not None:
            raise NoPathError("no guard of the guard set is linked with an exit and a middle")
        raise NoPathError(f"not enough relays known yet (need {HOPS}, one of them an exit)")

    def leg(
        self,
        rng: Rng,
        linked: Collection[bytes] | None,
        *,
        exit_id: bytes,
        used: Collection[bytes] = (),
        suspects: Collection[bytes] = (),
        guards: Sequence[bytes] | None = None,
    ) -> list[D]:
        """Return ``[guard, middle, exit]`` for one more leg of a session that ends at
        ``exit_id``; NoPathError if the exit or a guard and a middle are missing.

        The session's other legs run through ``used``: the middle avoids them and the
        suspects if it can, then only the suspects, then neither; the guard likewise,
        after the middle (so two legs share a guard before they share a middle).  With a
        guard set, the guards are tried in its order, so a second leg takes the second
        guard.  Suspects are kept out longer than shared relays: a leg through a dead
        relay is no leg, one that shares a relay with another is a leg with less
        redundancy.
        """
        if exit_id not in self.by_id:
            raise NoPathError("the session's exit is no longer known")
        suspected = set(suspects)
        steps = (suspected | set(used), suspected, set[bytes]())
        for avoid_middle in steps:
            for avoid_guard in steps:
                for guard in self._guards(rng, linked, guards, avoid_guard):
                    middle = self._middle(rng, guard, exit_id, avoid_middle)
                    if middle is not None:
                        return [self.by_id[guard], self.by_id[middle], self.by_id[exit_id]]
        raise NoPathError("no guard and middle left for another leg")

    def _guards(
        self,
        rng: Rng,
        linked: Collection[bytes] | None,
        guards: Sequence[bytes] | None,
        avoid: Collection[bytes],
    ) -> Iterator[bytes]:
        """The first hops to try, in order: the guard set's usable guards, else linked
        relays (``None``: any relay) in a random order."""
        by_id = self.by_id
        if guards is not None:
            for g in guards:
                if g in by_id and g not in avoid and (linked is None or g in linked):
                    yield g
            return
        if linked is not None:
            yield from shuffled(rng, sorted(g for g in linked if g in by_id and g not in avoid))
            return
        if not self.ids:
            return
        for _ in range(ATTEMPTS):
            g = self._all.pick(rng)
            if g not in avoid:
                yield g
        yield from shuffled(rng, [g for g in self.ids if g not in avoid])

    def _middle(
        self, rng: Rng, guard: bytes, exit_id: bytes, avoid: Collection[bytes]
    ) -> bytes | None:
        """A middle between ``guard`` and ``exit_id``, uniform among the relays outside
        both subnets and ``avoid``; None if the two share a subnet or none is left.  (A
        relay's subnet holds the relay itself, so distinct subnets mean distinct relays.)"""
        key = self.key
        key_guard, key_exit = key[guard], key[exit_id]
        if key_guard == key_exit:
            return None
        return self._all.draw(
            rng, lambda m: key[m] != key_guard and key[m] != key_exit and m not in avoid
        )

    def _exit_and_middle(
        self, rng: Rng, guard: bytes, avoid: Collection[bytes], avoid_exits: Collection[bytes]
    ) -> tuple[bytes, bytes] | None:
        """An exit and a middle for ``guard``, the exit uniform among the exits that leave
        a middle, the middle uniform among those left; None if there is none."""
        key = self.key
        key_guard = key[guard]

        def exit_ok(e: bytes) -> bool:
            return e not in avoid_exits and e != guard and key[e] != key_guard

        exit_ = self._exits.draw(rng, exit_ok)
        if exit_ is None:
            return None
        middle = self._middle(rng, guard, exit_, avoid)
        if middle is not None:
            return middle, exit_
        # Rare (a small mesh): this exit leaves no middle.  Draw again among the exits that
        # do: an exit e leaves one iff some middle candidate lies outside e's subnet (which
        # holds e itself), so a count per subnet decides each exit at once.
        middles = [m for m in self.ids if m not in avoid and key[m] != key_guard]
        per_key = Counter(key[m] for m in middles)
        viable = {e for e in self.exits if exit_ok(e) and len(middles) > per_key[key[e]]}
        exit_ = self._exits.choose(rng, viable.__contains__)
        if exit_ is None:
            return None
        key_exit = key[exit_]
        candidates = {m for m in middles if key[m] != key_exit}
        middle = self._all.choose(rng, candidates.__contains__)
        return (middle, exit_) if middle is not None else None


def choose_path[D: Relay](
    rng: Rng,
    relays: Iterable[D],
    linked: Collection[bytes],
    own_id: bytes,
    suspects: Collection[bytes] = (),
    *,
    guards: Sequence[bytes] | None = None,
    subnet: Callable[[D], str] | None = None,
) -> list[D]:
    """Return ``[guard, middle, exit]`` drawn from ``relays``; NoPathError if none exists.

    ``linked`` holds the ids of the nodes we have a link to (the possible guards) and
    ``suspects`` the ids to avoid when we can.  ``guards`` (a guard set's, in order)
    restricts the first hop to them; ``subnet`` (:func:`subnet_of`) enforces one relay
    per subnet.  See :meth:`RelayPool.path`; a caller drawing many paths from one
    directory should build the pool once.
    """
    return RelayPool(relays, own_id, subnet).path(rng, linked, suspects, guards)


def choose_leg[D: Relay](
    rng: Rng,
    relays: Iterable[D],
    linked: Collection[bytes],
    own_id: bytes,
    *,
    exit_id: bytes,
    used: Collection[bytes] = (),
    suspects: Collection[bytes] = (),
    guards: Sequence[bytes] | None = None,
    subnet: Callable[[D], str] | None = None,
) -> list[D]:
    """Return ``[guard, middle, exit]`` for one more leg of a session that ends at
    ``exit_id``; NoPathError if the exit or a guard and a middle are missing.

    See :meth:`RelayPool.leg`; ``guards`` and ``subnet`` as in :func:`choose_path`.
    """
    return RelayPool(relays, own_id, subnet).leg(
        rng, linked, exit_id=exit_id, used=used, suspects=suspects, guards=guards
    )


__all__ = [
    "HOPS",
    "NO_ADDRESS",
    "NoPathError",
    "Relay",
    "RelayPool",
    "choice",
    "choose_leg",
    "choose_path",
    "draw",
    "subnet_of",
]
