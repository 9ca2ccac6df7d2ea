"""The signal router: SIGNAL frames carry signaling to nodes we have no link to.

A signal to ``target`` goes on our link to it, else on the link its descriptor came by
(the directory's route, with gossip), else on the link to the DHT peer that last named it
to us (a referral: :meth:`SignalRouter.refer`), else on the link a signal *from* it last
came by (a return route).  Origins are not authenticated at this layer (the payload is
signed), so return routes live in their own bounded table, least recently used first out:
forged origins evict each other, never a descriptor's route, and cannot take over a route
whose link is up.  Referrals come from DHT answers to our own requests: the peer that
named a contact to a lookup is linked to it (it held the contact in its routing table
and its node record), so it can forward our offer on its own link, and only the contact
itself can answer it, end to end.  A hostile referrer can misroute (drop) signals to the
ids it names, no others; the latest referral wins, so an honest one replaces it.  Both
tables are bounded, least recently used first out, and forget a link when it closes.
Every SIGNAL is budgeted per link, and relayed only when the next link has room.
"""

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from ..budget import TokenBucket
from ..errors import LocalProtocolError
from ..link import frames as lf
from ..link.connection import LinkConnection
from ..link.table import LinkTable

SIGNAL_TTL = 3
MAX_RETURN_ROUTES = 4096
MAX_REFERRALS = 4096  # DHT contacts' routes through the peer that named them
RELAY_RATE = 50.0  # signals per second a link may make us relay
RELAY_BURST = 100.0


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """A signaling payload addressed to us, from ``origin``."""

    origin: bytes
    payload: bytes


class SignalRouter:
    def __init__(
        self,
        node_id: bytes,
        links: LinkTable,
        directory_route: Callable[[bytes], int | None],
        *,
        max_routes: int = MAX_RETURN_ROUTES,
        max_referrals: int = MAX_REFERRALS,
    ) -> None:
        self._node_id = node_id
        self._links = links
        self._directory_route = directory_route
        self._max_routes = max_routes
        self._max_referrals = max_referrals
        self._returns: OrderedDict[bytes, int] = OrderedDict()
        self._referrals: OrderedDict[bytes, int] = OrderedDict()  # contact -> referrer's link
        self._budgets: dict[int, TokenBucket] = {}
        self.events: deque[SignalReceived] = deque()

    def next_event(self) -> SignalReceived | None:
        return self.events.popleft() if self.events else None

    def __len__(self) -> int:
        """Return routes held."""
        return len(self._returns)

    @property
    def referrals(self) -> int:
        """Routes through a DHT referrer held."""
        return len(self._referrals)

    def refer(self, target: bytes, via: bytes) -> None:
        """The DHT peer ``via`` named ``target`` to us (and vouched for it with its node
        record): signal ``target`` over our link to ``via`` until a better route exists.
        Ignored if we have no link to ``via``, or ``target`` is ourselves or ``via``."""
        conn = self._links.to_peer(via)
        if conn is None or target in (self._node_id, via):
            return
        self._referrals[target] = conn.link_id
        self._referrals.move_to_end(target)
        while len(self._referrals) > self._max_referrals:
            self._referrals.popitem(last=False)

    def _route(self, target: bytes) -> LinkConnection | None:
        conn = self._links.to_peer(target)
        if conn is not None:
            return conn
        routes = (self._directory_route(target), self._referrals.get(target))
        for link_id in (*routes, self._returns.get(target)):
            if link_id is not None and (conn := self._links.get(link_id)) is not None:
                return conn
        return None

    def send(self, target: bytes, payload: bytes, now: float) -> bool:
        """Send a signaling payload to ``target`` through the mesh; False if no route."""
        if len(payload) > lf.MAX_SIGNAL_PAYLOAD:
            raise LocalProtocolError("signal payload too large")
        conn = self._route(target)
        if conn is None:
            return False
        conn.send(lf.Signal(self._node_id, target, SIGNAL_TTL, payload), now)
        return True

    def on_signal(self, conn: LinkConnection, frame: lf.Signal, now: float) -> None:
        budget = self._budgets.get(conn.link_id)
        if budget is None:
            budget = self._budgets[conn.link_id] = TokenBucket(RELAY_RATE, RELAY_BURST)
        if not budget.take(now):
            return  # over this link's budget: dropped, remembering nothing
        if frame.origin != conn.peer_id:
            self._remember(frame.origin, conn.link_id)
        if frame.target == self._node_id:
            self.events.append(SignalReceived(frame.origin, frame.payload))
            return
        out = self._route(frame.target)
        if frame.ttl == 0 or out is None or out is conn or not out.has_room(0):
            return  # undeliverable, or the next link is backed up: drop, as a router would
        out.send(lf.Signal(frame.origin, frame.target, frame.ttl - 1, frame.payload), now)

    def _remember(self, origin: bytes, link_id: int) -> None:
        """A return route to ``origin``; the first one stays while its link is up, so a
        forged origin cannot take over a route in use."""
        if self._directory_route(origin) is not None:
            return  # the descriptor's route is better
        known = self._returns.get(origin)
        if known is not None and self._links.get(known) is not None:
            self._returns.move_to_end(origin)
            return
        self._returns[origin] = link_id
        self._returns.move_to_end(origin)
        while len(self._returns) > self._max_routes:
            self._returns.popitem(last=False)

    def link_closed(self, link_id: int) -> None:
        self._budgets.pop(link_id, None)
        for table in (self._returns, self._referrals):
            for target in [t for t, lid in table.items() if lid == link_id]:
                del table[target]
