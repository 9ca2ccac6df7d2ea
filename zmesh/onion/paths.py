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

Draws are by rejection sampling over a :class:`RelayPool` built once per directory
change: a random index, the constraints checked, a few attempts, then the filtered list.
A pool of 10,000 relays thus costs a handful of checks per path, not a pass over the
directory (the anonymity simulator draws hundreds of thousands of paths).

Inputs are plain data (descriptors, linked ids, our id) and the randomness comes from an
injected :class:`~zmesh.rng.Rng`, so a seeded run picks the same paths every time.
"""

import ipaddress
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Protocol

from ..errors import ZMeshError
from ..identity import Flags
from ..rng import Rng, randbelow

HOPS = 3
ATTEMPTS = 16  # random draws before a draw filters its whole list
NO_ADDRESS = "none"  # the subnet of every relay without a usable address: one bucket
SUBNET_CACHE = 16384  # address tuples whose subnet is remembered (bounded)
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


class RelayPool[D: Relay]:
    """The relays a client may build paths through, indexed once for many draws.

    Keeps the RELAY-flagged descriptors other than ``own_id`` (the last descriptor of a
    repeated id counts), ordered by node id so that a draw depends on the rng and the set
    of relays, not on the order they were learned in.  ``subnet`` gives each relay's
    diversity key (:func:`subnet_of`); None waives the rule (a private mesh).
    """

    def __init__(
        self, relays: Iterable[D], own_id: bytes, subnet: Callable[[D], str] | None = None
    ) -> None:
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
            g = self.ids[randbelow(rng, len(self.ids))]
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
        return draw(
            rng, self.ids, lambda m: key[m] != key_guard and key[m] != key_exit and m not in avoid
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

        exit_ = draw(rng, self.exits, exit_ok)
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
        viable = [e for e in self.exits if exit_ok(e) and len(middles) > per_key[key[e]]]
        if not viable:
            return None
        exit_ = choice(rng, viable)
        key_exit = key[exit_]
        return choice(rng, [m for m in middles if key[m] != key_exit]), exit_


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
