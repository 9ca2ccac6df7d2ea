"""Which relays to link to, and which side dials: a policy the driver carries out.

When the directory learns a relay, the node asks the :class:`Dialer` whether to link to it.
The lower node id dials, so two nodes never dial each other at the same time (D17); we stay
below ``max_links`` links (counting dials under way); and a dial the driver never reports
on is forgotten after :data:`DIAL_TIMEOUT`.  The answer is an effect, :class:`DialWanted`:
the driver signals an offer and reports failure through ``Node.dial_failed``
(:meth:`Dialer.done`).

A relay asked to extend a circuit to a node it has no link to dials it on demand
(:meth:`Dialer.want`, D12), whatever the policy above; at most :data:`MAX_DIALS` dials are
under way at once, so CREATEs cannot make a relay dial without bound.

A node whose dial failed, or whose link failed (timed out or broke), is not dialled again
for :data:`FAILURE_LIFETIME` unless it links to us first (Tor's
``OR_CONNECT_FAILURE_LIFETIME`` in ``connection_or.c``): it is likely dead, and a CREATE
parked for a dial to it would hold its circuit until the dial times out (10 s and more),
where a refusal lets the client build elsewhere at once.  At most
:data:`MAX_FAILURES` such nodes are remembered, the oldest forgotten first.
"""

from collections import deque
from dataclasses import dataclass

from .identity import Descriptor, Flags

DIAL_TIMEOUT = 45.0  # a dial we asked for and heard nothing of is forgotten after this
MAX_DIALS = 32  # dials under way at once
FAILURE_LIFETIME = 60.0  # a node whose dial or link failed is not dialled for this long
MAX_FAILURES = 1024


@dataclass(frozen=True, slots=True)
class DialWanted:
    """Effect: link to this relay (signal it an offer); answer with ``Node.dial_failed``
    if that fails."""

    descriptor: Descriptor


class Dialer:
    def __init__(self, node_id: bytes, max_links: int) -> None:
        self._node_id = node_id
        self._max_links = max_links
        self._dialing: dict[bytes, float] = {}  # node id -> when we stop waiting
        self._failed: dict[bytes, float] = {}  # node id -> when we may dial it again
        self.events: deque[DialWanted] = deque()

    def next_event(self) -> DialWanted | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        return min(self._dialing.values(), default=float("inf"))

    def handle_timer(self, now: float) -> None:
        for node_id in [k for k, t in self._dialing.items() if now >= t]:
            del self._dialing[node_id]

    def _recently_failed(self, node_id: bytes, now: float) -> bool:
        until = self._failed.get(node_id)
        if until is not None and now >= until:
            del self._failed[node_id]
            return False
        return until is not None

    def consider(self, desc: Descriptor, linked: bool, links: int, now: float) -> None:
        """A relay was learned: ask the driver to dial it if the policy says so."""
        node_id = desc.node_id
        if (
            desc.flags & Flags.RELAY
            and not linked
            and node_id not in self._dialing
            and links + len(self._dialing) < self._max_links
            and self._node_id < node_id
            and len(self._dialing) < MAX_DIALS
            and not self._recently_failed(node_id, now)
        ):
            self._dialing[node_id] = now + DIAL_TIMEOUT
            self.events.append(DialWanted(desc))

    def want(self, desc: Descriptor, now: float) -> bool:
        """A circuit needs a link to ``desc`` (we relay to it): dial it, or wait for the dial
        under way.  False for ourselves, a node whose dial or link failed recently, or if
        :data:`MAX_DIALS` dials are under way."""
        if desc.node_id == self._node_id or self._recently_failed(desc.node_id, now):
            return False
        if desc.node_id in self._dialing:
            return True
        if len(self._dialing) >= MAX_DIALS:
            return False
        self._dialing[desc.node_id] = now + DIAL_TIMEOUT
        self.events.append(DialWanted(desc))
        return True

    def dialing(self, node_id: bytes, now: float) -> None:
        """The driver dials ``node_id`` on its own (a bootstrap): no second dial to it
        until that one ends (:meth:`done` or :meth:`failed`)."""
        self._dialing.setdefault(node_id, now + DIAL_TIMEOUT)

    def done(self, node_id: bytes) -> None:
        """A link to ``node_id`` came up: dial it again whenever it is wanted."""
        self._dialing.pop(node_id, None)
        self._failed.pop(node_id, None)

    def failed(self, node_id: bytes, now: float) -> None:
        """A dial to ``node_id`` failed, or our link to it did: not again for a while."""
        self._dialing.pop(node_id, None)
        self._failed.pop(node_id, None)  # re-inserted last: the oldest is evicted first
        self._failed[node_id] = now + FAILURE_LIFETIME
        if len(self._failed) > MAX_FAILURES:
            del self._failed[next(iter(self._failed))]
