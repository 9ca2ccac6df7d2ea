"""Signal routes through the DHT referrer: a node without a signaling URL (a proxy, a
browser), found by a lookup with gossip off, is dialled by signaling through the peer
that named it (issue 9, D46)."""

import pytest
from peer import RawPeer

from zmesh.crypto import signing
from zmesh.errors import RemoteProtocolError
from zmesh.identity import Identity
from zmesh.link import frames as lf
from zmesh.node import DialWanted, Node, NodeConfig, SignalReceived
from zmesh.rng import DeterministicRng
from zmesh.signaling import messages as sm
from zmesh.signaling.negotiation import Negotiation
from zmesh.signaling.router import MAX_REFERRALS, SIGNAL_TTL
from zmesh.sim.network import DIAL_FAILS_AFTER, SimNode, Simulator

FINGERPRINT = bytes(32)
SESSION = bytes(200)  # about a compact SDP's size


class SignalingSimulator(Simulator):
    """The simulator, except that a dial to a node that publishes no address goes as the
    runtime's does (``AsyncNode._dial``): a real signed offer carrying the dialler's
    descriptor, sent with ``Node.send_signal`` through the mesh's signal routers, opened
    and answered by the target's :class:`Negotiation` (which knows only what the offer
    says: gossip is off), the answer routed back the same way; the link opens when the
    dialler has verified the answer.  No route, or no answer in time, fails the dial."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.negotiations: dict[int, Negotiation] = {}
        self.mesh_dials: list[tuple[int, int]] = []  # (dialler, target) linked by signaling
        self.on_event = self._on_sim_event

    def negotiation(self, sn: SimNode) -> Negotiation:
        if sn.index not in self.negotiations:
            rng = DeterministicRng(sn.index, b"negotiation")
            self.negotiations[sn.index] = Negotiation(sn.node.identity, rng)
        return self.negotiations[sn.index]

    def _dial(self, sn: SimNode, node_id: bytes) -> None:
        target = self._by_id.get(node_id)
        if target is None or target.node.config.addresses:
            super()._dial(sn, node_id)
            return

        def offer() -> None:
            desc = target.node.descriptor(self.now)
            made = self.negotiation(sn).make_offer(
                desc,
                FINGERPRINT,
                SESSION,
                self.now,
                descriptor=sn.node.descriptor(self.now).encode(),
            )
            if not self.call(sn, lambda: sn.node.send_signal(node_id, made.data, self.now)):
                self.call(sn, lambda: sn.node.dial_failed(node_id, self.now))
                return
            self.schedule(self.now + DIAL_FAILS_AFTER, unanswered)

        def unanswered() -> None:
            if sn.node.link_to(node_id) is None:
                self.call(sn, lambda: sn.node.dial_failed(node_id, self.now))

        self.schedule(self.now, offer)

    def _on_sim_event(self, sn: SimNode, event: object) -> None:
        if not isinstance(event, SignalReceived):
            return
        origin, payload = event.origin, event.payload
        negotiation = self.negotiation(sn)
        if sm.decode_message(payload).kind is sm.Kind.OFFER:
            incoming = negotiation.open_offer(
                payload, self.now, directory=sn.node.directory, origin=origin
            )
            answer = negotiation.make_answer(incoming, FINGERPRINT, SESSION, self.now)
            self.schedule(
                self.now,
                lambda: self.call(sn, lambda: sn.node.send_signal(origin, answer, self.now)),
            )
            return
        negotiation.open_answer(payload, self.now, origin=origin)  # raises if forged
        target = self._by_id[origin]

        def link() -> None:
            if sn.node.link_to(origin) is None:
                self.mesh_dials.append((sn.index, target.index))
                self.connect(sn, target)

        self.schedule(self.now, link)


def relay(sim: Simulator, i: int) -> SimNode:
    return sim.add_node(NodeConfig(dht=True, gossip=False, addresses=(f"https://r{i}.example",)))


def proxy(sim: Simulator) -> SimNode:
    """A node without a signaling URL (a proxy or a browser): only signaling reaches it."""
    return sim.add_node(NodeConfig(dht=True, gossip=False))


def _mesh(sim: SignalingSimulator) -> tuple[SimNode, SimNode, SimNode, SimNode]:
    """r0 - r1 linked; the proxy p joins through r0 (its DHT links it to r1 too); then x
    joins through r1 alone, whose bootstrap lookup meets p, named by r1."""
    r0, r1, x = relay(sim, 0), relay(sim, 1), relay(sim, 2)
    p = proxy(sim)
    sim.connect(r0, r1)
    sim.run(max_time=3.0)
    sim.connect(p, r0)
    sim.run(max_time=8.0)
    assert p.node.link_to(r1.node.node_id) is not None  # p dialled r1 (it has a URL)
    sim.connect(x, r1)
    sim.run(max_time=20.0)
    return r0, r1, x, p


def test_a_node_without_a_url_is_dialled_through_its_dht_referrer() -> None:
    sim = SignalingSimulator(1)
    _, _, x, p = _mesh(sim)
    assert x.node.directory.get(p.node.node_id) is None  # no gossip: x never got it flooded
    wanted = [e.descriptor.node_id for e in x.events if isinstance(e, DialWanted)]
    assert p.node.node_id in wanted  # the DHT wanted a link to p
    assert (x.index, p.index) in sim.mesh_dials  # made by signaling through the mesh
    assert x.node.signals.referrals >= 1
    assert x.node.link_to(p.node.node_id) is not None
    assert x.node.dht is not None and p.node.node_id in {
        c.node_id for c in x.node.dht.table.contacts()
    }
    # p opened x's offer knowing x only from the offer itself (its directory lacks x)
    assert p.node.directory.get(x.node.node_id) is None


def test_without_the_referral_route_the_dial_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline: before routes through the referrer, x could not signal p at all."""
    monkeypatch.setattr("zmesh.signaling.router.SignalRouter.refer", lambda *a: None)
    failed: list[tuple[bytes, bytes]] = []
    dial_failed = Node.dial_failed

    def record(node: Node, node_id: bytes, now: float) -> None:
        failed.append((node.node_id, node_id))
        dial_failed(node, node_id, now)

    monkeypatch.setattr(Node, "dial_failed", record)
    sim = SignalingSimulator(1)
    _, _, x, p = _mesh(sim)
    assert (x.index, p.index) not in sim.mesh_dials
    assert (x.node.node_id, p.node.node_id) in failed  # x wanted p and could not signal it
    # (p may link to x all the same, dialling x's URL: in a mesh this small its peer sample
    # never counts as full, so it keeps walking and meets x)


def test_an_offer_that_carries_its_descriptor_fits_a_signal() -> None:
    rng = DeterministicRng(5)
    a = Node(Identity.generate(rng), rng, 0.0, NodeConfig(addresses=("https://a.example:8443",)))
    b = Node(Identity.generate(rng), rng, 0.0)
    offer = Negotiation(a.identity, rng).make_offer(
        b.descriptor(0.0),
        FINGERPRINT,
        bytes(sm.MAX_SESSION),
        0.0,
        descriptor=a.descriptor(0.0).encode(),
    )
    assert lf.MAX_SIGNAL_PAYLOAD >= len(offer.data) > 8192  # the old limit was too small
    assert lf.MAX_SIGNAL_PAYLOAD >= sm.MAX_MESSAGE


def test_a_hostile_referrer_cannot_answer_for_the_contact() -> None:
    """Signals are authenticated end to end: the referrer sees x's offer to p, but an answer
    it signs in p's name is refused, as is p's offer replayed to another node."""
    rng = DeterministicRng(6)
    x, p, r = (Identity.generate(rng) for _ in range(3))
    xn = Node(x, rng, 0.0)
    pn = Node(p, rng, 0.0)
    nx = Negotiation(x, rng)
    offer = nx.make_offer(
        pn.descriptor(0.0), FINGERPRINT, SESSION, 0.0, descriptor=xn.descriptor(0.0).encode()
    )
    msg = sm.decode_message(offer.data)
    forged = sm.SignalingMessage(
        sm.Kind.ANSWER, p.node_id, x.node_id, msg.timestamp_ms, msg.nonce, FINGERPRINT, SESSION
    )
    forged = forged.sign(r)  # the referrer's key, p's name
    with pytest.raises(RemoteProtocolError, match="signature"):
        nx.open_answer(forged.encode(), 0.0, origin=p.node_id)
    with pytest.raises(RemoteProtocolError, match="another node"):
        Negotiation(r, rng).open_offer(offer.data, 0.0, directory={}, origin=x.node_id)
    assert signing.verify(
        xn.descriptor(0.0).signing_pk, msg.signature, msg.signed_part(), sm.CONTEXT
    )


# -- the router's referral table ----------------------------------------------------------

NOW = 1000.0


def test_referrals_route_signals_are_bounded_and_forgotten_with_their_link() -> None:
    rng = DeterministicRng(7)
    node = Node(Identity.generate(rng), rng, NOW)
    referrer = RawPeer(node, 1, NOW, seed=2)
    other = RawPeer(node, 2, NOW, seed=3)
    referrer.read_all(NOW)
    other.read_all(NOW)
    contact = rng.bytes(32)
    assert not node.send_signal(contact, b"offer", NOW)  # no route yet
    node.signals.refer(contact, rng.bytes(32))  # through a node we have no link to: ignored
    node.signals.refer(node.node_id, referrer.node_id)  # ourselves: ignored
    assert node.signals.referrals == 0
    node.signals.refer(contact, other.node_id)
    node.signals.refer(contact, referrer.node_id)  # the latest referral wins
    assert node.send_signal(contact, b"offer", NOW)
    sent = [f for f in referrer.read_all(NOW) if isinstance(f, lf.Signal)]
    assert sent == [lf.Signal(node.node_id, contact, SIGNAL_TTL, b"offer")]
    assert not [f for f in other.read_all(NOW) if isinstance(f, lf.Signal)]
    # a flood of referrals (a hostile DHT peer naming fresh ids) stays bounded
    for _ in range(MAX_REFERRALS + 100):
        node.signals.refer(rng.bytes(32), other.node_id)
    assert node.signals.referrals == MAX_REFERRALS
    assert not node.send_signal(contact, b"offer", NOW)  # the oldest went first
    node.signals.refer(contact, referrer.node_id)
    node.link_closed(referrer.link_id, NOW)
    assert not node.send_signal(contact, b"offer", NOW)  # its link closed: route gone
    node.link_closed(other.link_id, NOW)
    assert node.signals.referrals == 0


def test_a_node_that_samples_its_links_knows_its_relays_before_any_walk() -> None:
    """``sample_links`` (the browser's): each relay it links to enters its peer sample at
    link-up, from the descriptor it dialled (D61), so it need not wait for a DHT walk
    (whose lookup may wait 10 s for a departed contact)."""
    sim = Simulator(1)
    r0, r1 = relay(sim, 0), relay(sim, 1)
    sim.connect(r0, r1)
    sim.run(max_time=3.0)
    browser = sim.add_node(NodeConfig(dht=True, gossip=False, sample_links=True))
    browser.node.directory.add(r0.node.descriptor(sim.now), sim.now)  # a bootstrap's
    sim.connect(browser, r0)
    started = sim.now
    while browser.node.link_to(r0.node.node_id) is None and sim.now < started + 5:
        sim.run(max_time=sim.now + 0.01)
    assert browser.node.sample is not None and r0.node.node_id in browser.node.sample
    assert browser.node.sample.walks <= 1  # not from a walk: none has ended yet
