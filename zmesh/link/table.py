"""The node's links, by link id and by peer, shared by the components that send on them."""

from collections.abc import Iterator

from ..errors import CloseCode, LocalProtocolError
from ..health.link import SUSPECT_PHI
from .connection import LinkConnection, LinkWatch

MAX_HANDSHAKING = 64  # inbound links still in their handshake (the oldest is evicted)


class LinkTable:
    def __init__(self) -> None:
        self._links: dict[int, LinkConnection] = {}
        self._by_peer: dict[bytes, LinkConnection] = {}
        self.watch = LinkWatch()

    def __iter__(self) -> Iterator[LinkConnection]:
        return iter(list(self._links.values()))

    def __len__(self) -> int:
        return len(self._links)

    def get(self, link_id: int) -> LinkConnection | None:
        return self._links.get(link_id)

    def to_peer(self, node_id: bytes) -> LinkConnection | None:
        """An open link to ``node_id`` (the first one, if both sides dialled)."""
        return self._by_peer.get(node_id)

    def peers(self) -> list[bytes]:
        return [c.peer_id for c in self._links.values() if c.up and c.peer_id]

    def suspects(self, now: float, level: float = SUSPECT_PHI) -> list[bytes]:
        """Peers whose link's phi is over ``level`` at ``now`` (path choice avoids them)."""
        return [
            c.peer_id for c in self._links.values() if c.up and c.peer_id and c.phi(now) > level
        ]

    def inbound(self) -> int:
        """Links the peer opened that are up."""
        return sum(1 for c in self._links.values() if c.up and not c.initiator)

    def add(self, conn: LinkConnection, max_inbound: int) -> None:
        """Add a new link.  One the peer opened fails at once (RESOURCE) if
        ``max_inbound`` such links are up; past :data:`MAX_HANDSHAKING` half-open ones the
        oldest fails, so links that never finish their handshake crowd out nobody."""
        if conn.link_id in self._links:
            raise LocalProtocolError(f"link {conn.link_id} already open")
        if not conn.initiator:
            waiting = [c for c in self._links.values() if not c.up and not c.initiator]
            if len(waiting) >= MAX_HANDSHAKING:
                waiting[0].fail("too many handshakes under way", CloseCode.RESOURCE)
            if self.inbound() >= max_inbound:
                conn.fail("too many inbound links", CloseCode.RESOURCE)
        self._links[conn.link_id] = conn

    def mark_up(self, conn: LinkConnection) -> None:
        assert conn.peer_id is not None
        conn.up = True
        self._by_peer.setdefault(conn.peer_id, conn)

    def remove(self, conn: LinkConnection) -> None:
        del self._links[conn.link_id]
        conn.closed = True
        self.watch.ready.pop(conn, None)
        self.watch.failed.pop(conn, None)
        peer = conn.peer_id
        if peer is not None and self._by_peer.get(peer) is conn:
            del self._by_peer[peer]
            for other in self._links.values():  # fall back to another link to that peer
                if other.up and other.peer_id == peer:
                    self._by_peer[peer] = other
                    break
