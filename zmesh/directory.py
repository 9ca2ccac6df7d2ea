"""The directory: node descriptors spread by gossip, bounded and paced.

On link-up each side sends its own descriptor and then what it knows; a newly learned
descriptor is flooded to the other links.  What a hostile peer can make us do is bounded
(docs/decisions.md, D32):

* **Pacing.**  Descriptors wait in a per-link queue (of node ids, at most one entry per
  node) and go out only while the link has spare credit, at most ``rate`` per second.  A
  link-up no longer dumps the whole directory into the link's backlog.
* **A verification budget per peer.**  Signature checks cost about 240 µs each; each link
  may make us verify ``rate`` descriptors per second (the same rate an honest sender paces
  to, plus slack), and all links together :data:`VERIFY_RATE_TOTAL`; beyond that they are
  dropped unverified.
* **De-duplication before verification.**  A descriptor no newer than the one we hold, or
  an update of a node that published less than ``min_update_interval`` ago, is dropped
  before its signature is checked, so a re-signed copy with ``published + 1`` neither
  costs a verification nor floods the mesh more than once per interval.
* **Bounds.**  At most ``max_entries`` descriptors; expired ones are removed.
"""

import logging
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .budget import TokenBucket
from .errors import RemoteProtocolError
from .identity import Descriptor, decode_descriptor
from .link import frames as lf
from .link.connection import LINK_WINDOW, LinkConnection
from .link.table import LinkTable

log = logging.getLogger("zmesh.directory")

MAX_DIRECTORY = 10_000
GOSSIP_RATE = 100.0  # descriptors per second a link carries (each way)
GOSSIP_BURST = 200.0
VERIFY_SLACK = 1.25  # the receiver's budget over the sender's pace: clock skew, floods
VERIFY_RATE_TOTAL = 500.0  # descriptors per second all links together may make us verify
MIN_UPDATE_INTERVAL = 60.0
EXPIRY_SWEEP = 60.0
_RESERVE = LINK_WINDOW // 4  # credit gossip leaves to circuits


@dataclass(frozen=True, slots=True)
class DescriptorLearned:
    """A verified descriptor of a node we did not know (or a newer one)."""

    descriptor: Descriptor


@dataclass(slots=True)
class _Feed:
    """What one link still has to be sent, and how fast."""

    queue: deque[bytes]
    queued: set[bytes]
    pace: TokenBucket
    verify: TokenBucket


class Directory(Mapping[bytes, Descriptor]):
    """The descriptors we know, by node id (a read-only mapping), and their gossip."""

    def __init__(
        self, node_id: bytes, links: LinkTable, now: float, *, max_entries: int = MAX_DIRECTORY
    ) -> None:
        self._node_id = node_id
        self._links = links
        self._max = max_entries
        self._entries: dict[bytes, Descriptor] = {}
        self._updated: dict[bytes, float] = {}  # node id -> when we accepted its descriptor
        self._learned_from: dict[bytes, int] = {}  # node id -> link its descriptor came on
        self._feeds: dict[int, _Feed] = {}
        self._own: Descriptor | None = None
        self.events: deque[DescriptorLearned] = deque()
        self._next_sweep = now + EXPIRY_SWEEP
        self._next_pace = float("inf")  # when a paced link may send its next descriptor
        self._verify_all = TokenBucket(VERIFY_RATE_TOTAL, VERIFY_RATE_TOTAL * 2)

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> DescriptorLearned | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        return min(self._next_sweep, self._next_pace)

    def handle_timer(self, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + EXPIRY_SWEEP
            for node_id in [k for k, d in self._entries.items() if d.expires <= now]:
                del self._entries[node_id]
                self._updated.pop(node_id, None)
                self._learned_from.pop(node_id, None)
        self.pump(now)

    # -- queries ---------------------------------------------------------------------------
    def __getitem__(self, node_id: bytes) -> Descriptor:
        return self._entries[node_id]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def route(self, node_id: bytes) -> int | None:
        """The link ``node_id``'s descriptor came on, if it is still open."""
        link_id = self._learned_from.get(node_id)
        return link_id if link_id is not None and self._links.get(link_id) else None

    # -- inputs ----------------------------------------------------------------------------
    def link_up(self, conn: LinkConnection, own: Descriptor | None, now: float) -> None:
        """A new neighbour: its verification budget, and (unless ``own`` is None, when
        gossip is off) the exchange: our descriptor, then what we know."""
        feed = _Feed(
            deque(),
            set(),
            TokenBucket(GOSSIP_RATE, GOSSIP_BURST),
            TokenBucket(GOSSIP_RATE * VERIFY_SLACK, GOSSIP_BURST * VERIFY_SLACK),
        )
        self._feeds[conn.link_id] = feed
        if own is None:
            return
        self._own = own
        for node_id in (self._node_id, *self._entries):
            if node_id != conn.peer_id:
                feed.queue.append(node_id)
                feed.queued.add(node_id)
        self.pump(now)

    def link_closed(self, link_id: int) -> None:
        self._feeds.pop(link_id, None)

    def announce(self, own: Descriptor, now: float) -> None:
        """Our descriptor changed (a new onion key): send it to every neighbour."""
        self._own = own
        self._flood(self._node_id, None, now)

    def add(self, desc: Descriptor, now: float) -> None:
        """Learn a descriptor obtained out of band (bootstrap); raises RemoteProtocolError
        if it does not verify."""
        desc.verify(now)
        self._store(desc, None, now)

    def on_descriptor(self, conn: LinkConnection, frame: lf.DescriptorFrame, now: float) -> None:
        try:
            desc = decode_descriptor(frame.data)
        except RemoteProtocolError as exc:
            log.info("link=%d event=drop_descriptor reason=%r", conn.link_id, str(exc))
            return
        node_id = desc.node_id
        known = self._entries.get(node_id)
        if node_id == self._node_id or (
            known is not None
            and (
                known.published >= desc.published
                or now < self._updated[node_id] + MIN_UPDATE_INTERVAL
            )
        ):
            return  # de-duplicated before the signature check
        if known is None and len(self._entries) >= self._max:
            return
        feed = self._feeds.get(conn.link_id)
        if feed is None or not feed.verify.take(now) or not self._verify_all.take(now):
            log.debug("link=%d event=drop_descriptor reason='over budget'", conn.link_id)
            return
        try:
            desc.verify(now)
        except RemoteProtocolError as exc:
            # an honest peer may forward one that expired on the way: drop, keep the link
            log.info("link=%d event=drop_descriptor reason=%r", conn.link_id, str(exc))
            return
        self._store(desc, conn, now)

    def _store(self, desc: Descriptor, conn: LinkConnection | None, now: float) -> None:
        node_id = desc.node_id
        if node_id == self._node_id:
            return
        known = self._entries.get(node_id)
        if known is not None and known.published >= desc.published:
            return
        if known is None and len(self._entries) >= self._max:
            return
        self._entries[node_id] = desc
        self._updated[node_id] = now
        if conn is not None:
            self._learned_from[node_id] = conn.link_id
        self.events.append(DescriptorLearned(desc))
        self._flood(node_id, conn, now)

    def _flood(self, node_id: bytes, source: LinkConnection | None, now: float) -> None:
        for link_id, feed in self._feeds.items():
            conn = self._links.get(link_id)
            if conn is None or conn is source or conn.peer_id == node_id:
                continue
            if node_id not in feed.queued:
                feed.queue.append(node_id)
                feed.queued.add(node_id)
        self.pump(now)

    def pump(self, now: float) -> None:
        """Send queued descriptors on every link that has spare credit and pace, and note
        when the pace next allows more (a link short of credit waits for its next CREDIT,
        which calls this again)."""
        self._next_pace = float("inf")
        for link_id, feed in self._feeds.items():
            conn = self._links.get(link_id)
            if conn is None:
                continue
            while feed.queue and conn.has_room(_RESERVE) and feed.pace.take(now):
                node_id = feed.queue.popleft()
                feed.queued.discard(node_id)
                desc = self._own if node_id == self._node_id else self._entries.get(node_id)
                if desc is not None:
                    conn.send(lf.DescriptorFrame(desc.encode()), now)
            if feed.queue and conn.has_room(_RESERVE):
                self._next_pace = min(self._next_pace, feed.pace.ready_at(now))
