"""A scripted peer for attack tests: it completes the real link handshake with a Node,
then sends whatever frames a test likes and reads what the node answers.  No simulator:
the test owns the clock."""

from zmesh.crypto import signing, xwing
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.link import frames as lf
from zmesh.link.connection import LINK_WINDOW, UNCOUNTED
from zmesh.link.handshake import LinkHandshake
from zmesh.node import Node
from zmesh.rng import DeterministicRng

BINDING = b"\x07" * 32
_PENDING: dict[tuple[int, int], list[bytes]] = {}


def quick_identity(seed: int, label: bytes = b"quick") -> Identity:
    """A fixed identity that signs ML-DSA hedged (pyca, about 1 ms) rather than
    deterministically (about 35 ms in pure Python): for tests that sign many descriptors."""
    rng = DeterministicRng(seed, label)
    return Identity(rng.bytes(xwing.SEED_SIZE), rng.bytes(signing.SEED_SIZE))


class RawPeer:
    def __init__(
        self,
        node: Node,
        link_id: int,
        now: float,
        seed: int = 99,
        identity: Identity | None = None,
    ) -> None:
        self.node = node
        self.link_id = link_id
        self.rng = DeterministicRng(seed, b"raw-peer-%d" % link_id)
        self.identity = identity or quick_identity(seed, b"raw-peer-%d" % link_id)
        self.decoder = lf.FrameDecoder(node.geometry)
        self.inbox: list[lf.Frame] = []
        own = node.descriptor(now)
        hs = LinkHandshake(
            self.identity,
            initiator=True,
            binding=BINDING,
            rng=self.rng,
            expected_peer_kem_pk=own.identity_kem_pk,
            expected_peer_id=node.node_id,
        )
        node.open_link(link_id, now, binding=BINDING)
        self.send(hs.start(), now)
        hello2 = next(f for f in self.read(now) if isinstance(f, lf.Hello2))
        hello3 = hs.receive(hello2)
        assert hello3 is not None
        self.send(hello3, now)
        conn = node._links.get(link_id)
        assert conn is not None and conn.up, "the handshake failed"

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    def descriptor(self, now: float, published: int | None = None) -> Descriptor:
        return self.identity.make_descriptor(
            flags=Flags.NONE,
            onion_epoch=0,
            onion_pk=bytes(1216),
            published=int(now) if published is None else published,
            lifetime=3600,
        )

    def send(self, frame: lf.Frame, now: float) -> None:
        self.send_raw(lf.encode_frame(frame), now)

    def send_raw(self, data: bytes, now: float) -> None:
        self.node.receive(self.link_id, data, now)

    def read(self, now: float) -> list[lf.Frame]:
        """Decode what the node sent us since the last read (what it sent on other links
        waits in ``_PENDING`` for their readers)."""
        for link_id, data in self.node.datagrams_to_send(now):
            _PENDING.setdefault((id(self.node), link_id), []).append(data)
        frames = []
        for data in _PENDING.pop((id(self.node), self.link_id), []):
            frames += self.decoder.feed(data)
        self.inbox += frames
        return frames

    def read_all(self, now: float) -> list[lf.Frame]:
        """Read until the node has nothing more for us, returning link credit as an honest
        peer does."""
        frames: list[lf.Frame] = []
        while got := self.read(now):
            frames += got
            counted = sum(1 for f in got if type(f) not in UNCOUNTED)
            while counted > 0 and not self.closed():
                self.send(lf.Credit(min(counted, LINK_WINDOW // 2)), now)
                counted -= LINK_WINDOW // 2
        return frames

    def closed(self) -> bool:
        return self.node._links.get(self.link_id) is None
