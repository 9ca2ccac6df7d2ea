"""The simulator's fault model: what can go wrong with nodes and links, and when.

A fault is a frozen value naming nodes by index (:attr:`SimNode.index`).  The simulator
applies it now (:meth:`~zmesh.sim.network.Simulator.apply`) or at a virtual time
(:meth:`~zmesh.sim.network.Simulator.at`), as an event on its heap; every applied fault
enters the trace digest, so a seed and a fault plan fix a run.  With no faults the
simulator behaves, and hashes, exactly as before they existed.

How each fault looks to the peers (see :mod:`zmesh.sim.transport` for the links):

========== =========================================================================
Crash      the process dies: its links abort, each peer sees a close one latency
           later and what was in flight is lost.
Blackhole  the process hangs, or its network vanishes: nothing goes in or out and no
           link closes; the peers notice only when their keepalives time out.
Leave      the node departs in order: each link closes after what was sent arrives.
Join       a new node starts and links to ``links`` live nodes chosen from the seed.
Partition  links between group ``a`` and group ``b`` stop delivering (what is sent is
           held, as SCTP retransmits) until :class:`Heal` of the same partition.
LinkChange the links between two nodes use another :class:`LinkModel` from now on.
Tamper     what one node sends to another passes through a hook (rewrite or withhold).
========== =========================================================================
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import LocalProtocolError
from ..node import NodeConfig
from ..rng import Rng, randbelow
from .transport import LinkModel, Tamper

__all__ = [
    "Blackhole",
    "Crash",
    "Fault",
    "Heal",
    "Join",
    "Leave",
    "LinkChange",
    "Partition",
    "TamperLink",
    "churn",
]


@dataclass(frozen=True)
class Crash:
    """Node ``node`` dies: its links abort (each peer sees a close)."""

    node: int

    def describe(self) -> str:
        return f"crash {self.node}"


@dataclass(frozen=True)
class Blackhole:
    """Node ``node`` goes silent without closing anything (peers time out)."""

    node: int

    def describe(self) -> str:
        return f"blackhole {self.node}"


@dataclass(frozen=True)
class Leave:
    """Node ``node`` departs in order (its links close after what was sent arrives).

    ``node=None``: a live node chosen from the seed when the fault applies, never one in
    ``spare``.
    """

    node: int | None = None
    spare: frozenset[int] = frozenset()

    def describe(self) -> str:
        return f"leave {self.node}"


@dataclass(frozen=True)
class Join:
    """A new node starts and dials ``links`` live nodes chosen from the seed (all of them
    if fewer are alive)."""

    links: int = 3
    config: NodeConfig | None = None

    def __post_init__(self) -> None:
        """Raises :class:`~zmesh.errors.LocalProtocolError` for a negative ``links``."""
        if self.links < 0:
            raise LocalProtocolError("links must be >= 0")

    def describe(self) -> str:
        return f"join links={self.links}"


@dataclass(frozen=True)
class Partition:
    """Links between a node of ``a`` and a node of ``b`` stop delivering until healed."""

    a: frozenset[int]
    b: frozenset[int]

    def __post_init__(self) -> None:
        """Raises :class:`~zmesh.errors.LocalProtocolError` unless the groups are disjoint
        and not empty."""
        if not self.a or not self.b or self.a & self.b:
            raise LocalProtocolError("a partition needs two disjoint, non-empty groups")

    @classmethod
    def between(cls, a: Iterable[int], b: Iterable[int]) -> "Partition":
        return cls(frozenset(a), frozenset(b))

    def separates(self, x: int, y: int) -> bool:
        return (x in self.a and y in self.b) or (x in self.b and y in self.a)

    def describe(self) -> str:
        return f"partition {sorted(self.a)}|{sorted(self.b)}"


@dataclass(frozen=True)
class Heal:
    """``partition`` ends: what its links held is delivered, in order."""

    partition: Partition

    def describe(self) -> str:
        return f"heal {sorted(self.partition.a)}|{sorted(self.partition.b)}"


@dataclass(frozen=True)
class LinkChange:
    """Both directions of every link between nodes ``a`` and ``b`` use ``model``."""

    a: int
    b: int
    model: LinkModel

    def describe(self) -> str:
        m = self.model
        return f"link {self.a}-{self.b} {m.latency!r} {m.bandwidth!r} {m.loss!r} {m.rto!r}"


@dataclass(frozen=True)
class TamperLink:
    """What node ``src`` sends to node ``dst`` passes through ``hook`` (None: no hook)."""

    src: int
    dst: int
    hook: Tamper | None = field(compare=False)

    def describe(self) -> str:
        return f"tamper {self.src}>{self.dst} {'on' if self.hook else 'off'}"


Fault = Crash | Blackhole | Leave | Join | Partition | Heal | LinkChange | TamperLink


def churn(
    rng: Rng,
    *,
    start: float,
    end: float,
    joins: int,
    leaves: int,
    links: int = 3,
    spare: Iterable[int] = (),
    config: NodeConfig | None = None,
) -> list[tuple[float, Fault]]:
    """A churn plan: ``joins`` :class:`Join` and ``leaves`` :class:`Leave` faults at times
    drawn from ``rng`` in ``[start, end)``, in time order; leavers are chosen when they
    leave, never from ``spare``.  Raises :class:`~zmesh.errors.LocalProtocolError` for an
    empty or reversed interval or negative counts."""
    if not start < end or joins < 0 or leaves < 0:
        raise LocalProtocolError("churn needs start < end and counts >= 0")
    kept = frozenset(spare)
    faults: list[Fault] = [Join(links, config) for _ in range(joins)]
    faults += [Leave(None, kept) for _ in range(leaves)]
    plan = [(start + (end - start) * randbelow(rng, 1 << 32) / (1 << 32), f) for f in faults]
    plan.sort(key=lambda entry: entry[0])  # stable: equal times keep the order above
    return plan
