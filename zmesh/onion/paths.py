"""Path selection for a client's 3-hop circuits: guard -> middle -> exit.

The guard is a relay we hold a link to (a circuit's first cell goes straight to it); the
exit carries the EXIT flag; the three are distinct and never ourselves.  Relays suspected
of a recent failure are avoided, in three steps so that a small mesh still gets a path:
first avoid every suspect; then keep avoiding suspected guards and middles (the likely
culprits) but accept a suspected exit, since a failed circuit makes its exit a suspect
too and a mesh may have a single exit; last, give up on avoidance.

Inputs are plain data (descriptors, linked ids, our id) and the randomness comes from an
injected :class:`~zmesh.rng.Rng`, so a seeded run picks the same paths every time.
"""

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from ..errors import ZMeshError
from ..identity import Flags
from ..rng import Rng, randbelow

HOPS = 3


class NoPathError(ZMeshError):
    """Not enough known relays (or no exit) to build a circuit yet."""


class Relay(Protocol):
    """What path selection reads of a relay's descriptor."""

    @property
    def node_id(self) -> bytes: ...

    @property
    def flags(self) -> Flags: ...


def choice[T](rng: Rng, items: Sequence[T]) -> T:
    """Return one of ``items``, uniformly; ValueError if there are none."""
    if not items:
        raise ValueError("choice from an empty sequence")
    return items[randbelow(rng, len(items))]


def choose_path[D: Relay](
    rng: Rng,
    relays: Iterable[D],
    linked: Collection[bytes],
    own_id: bytes,
    suspects: Collection[bytes] = (),
) -> list[D]:
    """Return ``[guard, middle, exit]`` drawn from ``relays``; NoPathError if none exists.

    ``linked`` holds the ids of the nodes we have a link to (the possible guards) and
    ``suspects`` the ids to avoid when we can.  The exit is drawn uniformly among the exits
    that leave room for a guard and a middle, then the guard among the linked relays, then
    the middle among the rest.  The candidates are ordered by node id, so the choice
    depends on the rng and the set of relays, not on the order they were learned in.
    """
    by_id: dict[bytes, D] = {}
    for desc in relays:
        node_id = desc.node_id
        if desc.flags & Flags.RELAY and node_id != own_id:
            by_id[node_id] = desc
    ids = sorted(by_id)
    exits_all = [i for i in ids if by_id[i].flags & Flags.EXIT]
    avoided = set(suspects)
    for avoid, avoid_exits in ((avoided, avoided), (avoided, set()), (set(), set())):
        ok = [i for i in ids if i not in avoid]
        guards = [i for i in ok if i in linked]
        # For a given exit a path exists iff some guard is not that exit and at least one
        # more unavoided relay (the middle) is left besides the two.
        exits = [
            e
            for e in exits_all
            if e not in avoid_exits
            and any(g != e for g in guards)
            and len(ok) - (e in ok) >= 2  # the guard and the middle
        ]
        if not exits:
            continue
        exit_ = choice(rng, exits)
        guard = choice(rng, [g for g in guards if g != exit_])
        middle = choice(rng, [m for m in ok if m not in (guard, exit_)])
        return [by_id[guard], by_id[middle], by_id[exit_]]
    raise NoPathError(f"not enough relays known yet (need {HOPS}, one of them an exit)")


def choose_leg[D: Relay](
    rng: Rng,
    relays: Iterable[D],
    linked: Collection[bytes],
    own_id: bytes,
    *,
    exit_id: bytes,
    used: Collection[bytes] = (),
    suspects: Collection[bytes] = (),
) -> list[D]:
    """Return ``[guard, middle, exit]`` for one more leg of a session that ends at
    ``exit_id``; NoPathError if the exit or a guard and a middle are missing.

    The session's other legs run through ``used``: the middle avoids them and the
    suspects if it can, then only the suspects, then neither; the guard likewise, after
    the middle (so two legs share a guard before they share a middle).  Suspects are
    kept out longer than shared relays: a leg through a dead relay is no leg, one that
    shares a relay with another is a leg with less redundancy.
    """
    by_id: dict[bytes, D] = {}
    for desc in relays:
        if desc.flags & Flags.RELAY and desc.node_id != own_id:
            by_id[desc.node_id] = desc
    if exit_id not in by_id:
        raise NoPathError("the session's exit is no longer known")
    ids = [i for i in sorted(by_id) if i != exit_id]
    suspected = set(suspects)
    steps = (suspected | set(used), suspected, set[bytes]())
    for avoid_middle in steps:
        for avoid_guard in steps:
            guards = [g for g in ids if g in linked and g not in avoid_guard]
            for guard in _shuffled(rng, guards):
                middles = [m for m in ids if m != guard and m not in avoid_middle]
                if middles:
                    return [by_id[guard], by_id[choice(rng, middles)], by_id[exit_id]]
    raise NoPathError("no guard and middle left for another leg")


def _shuffled[T](rng: Rng, items: list[T]) -> list[T]:
    """``items`` in a random order (Fisher-Yates)."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = randbelow(rng, i + 1)
        out[i], out[j] = out[j], out[i]
    return out


__all__ = ["HOPS", "NoPathError", "Relay", "choice", "choose_leg", "choose_path"]
