"""The signal router: SIGNAL frames carry signaling to nodes we have no link to.

A signal to ``target`` goes on our link to it, else on the link its descriptor came by
(the directory's route), else on the link a signal *from* it last came by (a return
route).  Origins are not authenticated at this layer (the payload is signed), so return
routes live in their own bounded table, least recently used first out: forged origins
evict each other, never a descriptor's route, and cannot take over a route whose link is
up.  Every SIGNAL is budgeted per link, and relayed only when the next link has room.
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
    ) -> None:
        self._node_id = node_id
        self._links = links
        self._directory_route = directory_route
        self._max_routes = max_routes
        self._returns: OrderedDict[bytes, int] = OrderedDict()
        self._budgets: dict[int, TokenBucket] = {}
        self.events: deque[SignalReceived] = deque()

    def next_event(self) -> SignalReceived | None:
        return self.events.popleft() if self.events else None

    def __len__(self) -> int:
        """Return routes held."""
        return len(self._returns)

    def _route(self, target: bytes) -> LinkConnection | None:
        conn = self._links.to_peer(target)
        if conn is not None:
            return conn
        for link_id in (self._directory_route(target), self._returns.get(target)):
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
        for origin in [o for o, lid in self._returns.items() if lid == link_id]:
            del self._returns[origin]
