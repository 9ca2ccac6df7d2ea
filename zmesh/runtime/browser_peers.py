"""Links between browser nodes: a browser node keeps a few links to nodes that publish no
endpoint (other browsers), not only to native relays (D50).

A node that publishes no address at all (no signaling URL, no STUN server) is a browser
or a proxy: it is reached only by signaling through the mesh.  Every
:data:`CHECK_INTERVAL` seconds, while the node holds fewer than :data:`BROWSER_LINKS`
links to such nodes, :func:`want_browser_link` picks one from the peer sample and asks the
sample to find it (:meth:`~zmesh.dht.sample.PeerSample.find`): a DHT lookup of its node
record, which makes the peer that held the record the signal route to it
(:meth:`~zmesh.signaling.router.SignalRouter.refer`), then a dial, whose signed offer and
answer travel as SIGNAL frames through that peer.  As in the dialer's own policy the
lower node id dials, so two tabs never dial each other at once; a dial that failed is not
retried for the dialer's ``FAILURE_LIFETIME``.  The link itself is direct: the two pages'
ICE agents connect over the reflexive candidates that the native nodes' STUN responders
gave them (:mod:`zmesh.runtime.stun`), and circuits use it like any other link.
"""

import asyncio
from typing import Final

from ..identity import Descriptor, Flags
from ..node import Node
from .aio import AsyncNode
from .stun import stun_servers

BROWSER_LINKS: Final = 2  # links to endpoint-less nodes (browsers) a browser node keeps
CHECK_INTERVAL: Final = 5.0
RETRY_AFTER: Final = 60.0  # a candidate tried is not tried again for this long
MAX_TRIED: Final = 256


def without_endpoint(desc: Descriptor) -> bool:
    """A relay that publishes no address: a browser node (or a native proxy)."""
    return bool(desc.flags & Flags.RELAY) and not desc.addresses


def browser_links(node: Node) -> list[bytes]:
    """The peers we hold a link to that publish no endpoint, in link order."""
    out = []
    for peer in dict.fromkeys(node.peers()):
        desc = node.directory.get(peer)
        if desc is not None and without_endpoint(desc):
            out.append(peer)
    return out


class BrowserLinks:
    """The policy above, for one node (sans-I/O: ``now`` is passed in).  Each candidate is
    tried at most once per :data:`RETRY_AFTER` seconds; at most :data:`MAX_TRIED` tries
    are remembered, the oldest forgotten first."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._tried: dict[bytes, float] = {}  # node id -> when we may try it again
        self.tries = 0

    def check(self, now: float) -> bytes | None:
        """If we hold fewer than :data:`BROWSER_LINKS` links to endpoint-less nodes, start
        finding (then dialling) one from the peer sample whose id is above ours; return
        its id, or None if none is wanted or none can be tried now."""
        node = self.node
        if node.sample is None or len(browser_links(node)) >= BROWSER_LINKS:
            return None
        for node_id in [k for k, until in self._tried.items() if now >= until]:
            del self._tried[node_id]
        for node_id in sorted(node.sample):
            if (
                node_id <= node.node_id
                or node_id in self._tried
                or node.link_to(node_id) is not None
                or not without_endpoint(node.sample[node_id])
            ):
                continue
            if not node.sample.find(node_id, now):
                return None  # lookups are full: next time
            self._tried[node_id] = now + RETRY_AFTER
            while len(self._tried) > MAX_TRIED:
                del self._tried[next(iter(self._tried))]
            self.tries += 1
            return node_id
        return None


def linked_stun_servers(node: Node, loopback: bool) -> list[str]:
    """The ICE servers for the page: the STUN responders that the nodes we are linked to
    publish (:func:`~zmesh.runtime.stun.stun_servers`)."""
    descs = [d for p in dict.fromkeys(node.peers()) if (d := node.directory.get(p)) is not None]
    return stun_servers([d.addresses for d in descs], loopback)


async def keep_browser_links(driver: AsyncNode) -> None:
    """Run :meth:`BrowserLinks.check` every :data:`CHECK_INTERVAL` seconds (until
    cancelled)."""
    links = BrowserLinks(driver.node)
    while True:
        driver.call(links.check)
        await asyncio.sleep(CHECK_INTERVAL)
