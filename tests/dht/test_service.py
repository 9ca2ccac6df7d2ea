"""The DHT service (zmesh/dht/service.py): nodes answering each other, lookups, records,
links on demand, and hostile input (malformed, unsolicited, forged, floods, unreachable
contacts, ids failing the puzzle) against every bound; then real nodes on the simulator."""

from collections.abc import Callable
from dataclasses import replace
from functools import cache, partial

import pytest

from zmesh.crypto import signing, xwing
from zmesh.dht import puzzle, service
from zmesh.dht.messages import (
    MAX_MESSAGE_SIZE,
    FindNode,
    FindValue,
    Message,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    StoreStatus,
    Value,
    decode_message,
    encode_message,
)
from zmesh.dht.records import RecordType, sign_record
from zmesh.dht.routing import ID_SIZE, Contact, distance
from zmesh.dht.service import Dht, DhtConfig, DhtSend, LookupDone, LookupKind
from zmesh.errors import LocalProtocolError, RemoteProtocolError
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.link import frames as lf
from zmesh.node import DialWanted, NodeConfig
from zmesh.rng import DeterministicRng
from zmesh.sim import dht as sim_dht
from zmesh.sim.network import Simulator

NOW = 1_700_000_000.0
WEEK = 7 * 24 * 3600


@cache
def identity(n: int, difficulty: int = 0) -> Identity:
    """A fixed identity (hedged ML-DSA: fast); solving the puzzle if ``difficulty``."""
    if difficulty:  # a seeded search; hedged signing (the generator says "not reproducible")
        ident, _ = puzzle.solve(sim_dht.FastCryptoRng(n, b"dht-service"), difficulty)
        return ident
    rng = DeterministicRng(n, b"dht-service")
    return Identity(rng.bytes(xwing.SEED_SIZE), rng.bytes(signing.SEED_SIZE))


@cache
def descriptor(n: int, difficulty: int = 0) -> Descriptor:
    ident = identity(n, difficulty)
    return ident.make_descriptor(
        flags=Flags.RELAY,
        onion_epoch=1,
        onion_pk=ident.kem.public,
        published=int(NOW) - 60,
        lifetime=WEEK,
        addresses=(f"ws://10.{n >> 8}.{n & 255}.1:9000",),
    )


class Mesh:
    """Dht objects wired by hand: instant delivery on links, dials carried out at once
    (unless ``dial_ok`` is False or the target is not ``reachable``)."""

    def __init__(self, n: int, config: DhtConfig | None = None, difficulty: int = 0) -> None:
        self.now = NOW
        self.config = config or DhtConfig()
        self.dhts: list[Dht] = []
        self.index: dict[bytes, int] = {}
        self.links: set[frozenset[int]] = set()
        self.dials: list[tuple[int, bytes]] = []
        self.dial_ok = True
        self.reachable: set[int] = set()
        self.done: list[tuple[int, LookupDone]] = []
        self.sent: list[tuple[int, int, Message]] = []
        self.tamper: Callable[[int, int, Message], Message] | None = None
        self.droppers: set[int] = set()  # nodes that never answer FIND_NODE or FIND_VALUE
        self.difficulty = difficulty
        self.solved: dict[int, int] = {}
        for i in range(n):
            self.add(i)

    def add(self, i: int, difficulty: int | None = None) -> Dht:
        """Node ``i``, its id solving the puzzle at ``difficulty`` (the mesh's if None)."""
        solved = self.difficulty if difficulty is None else difficulty
        self.solved[i] = solved
        desc = descriptor(i, solved)
        dht = Dht(
            identity(i, solved),
            lambda now, desc=desc: desc,
            DeterministicRng(i, b"dht-service-rng"),
            self.now,
            dial=lambda d, now, i=i: self._dial(i, d),
            config=self.config,
        )
        self.index[dht.node_id] = len(self.dhts)
        self.dhts.append(dht)
        self.reachable.add(len(self.dhts) - 1)
        return dht

    def _dial(self, i: int, desc: Descriptor) -> bool:
        self.dials.append((i, desc.node_id))
        return self.dial_ok

    def link(self, a: int, b: int) -> None:
        self.links.add(frozenset((a, b)))
        self.dhts[a].link_up(self.dhts[b].node_id, descriptor(b, self.solved[b]), self.now)
        self.dhts[b].link_up(self.dhts[a].node_id, descriptor(a, self.solved[a]), self.now)

    def unlink(self, a: int, b: int) -> None:
        self.links.discard(frozenset((a, b)))
        self.dhts[a].link_down(self.dhts[b].node_id, self.now)
        self.dhts[b].link_down(self.dhts[a].node_id, self.now)

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for i, dht in enumerate(self.dhts):
                while (event := dht.next_event()) is not None:
                    busy = True
                    if isinstance(event, LookupDone):
                        self.done.append((i, event))
                        continue
                    j = self.index[event.peer_id]
                    if frozenset((i, j)) not in self.links:
                        continue
                    msg = decode_message(event.data)
                    if j in self.droppers and isinstance(msg, FindNode | FindValue):
                        continue
                    if self.tamper is not None:
                        msg = self.tamper(i, j, msg)
                    self.sent.append((i, j, msg))
                    self.dhts[j].receive(dht.node_id, encode_message(msg), self.now)
            dials, self.dials = self.dials, []
            for i, node_id in dials:
                busy = True
                j = self.index[node_id]
                if j in self.reachable and frozenset((i, j)) not in self.links:
                    self.link(i, j)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer due on the way."""
        end = self.now + seconds
        while True:
            due = min(d.get_timer() for d in self.dhts)
            if due > end:
                break
            self.now = max(self.now, due)
            for dht in self.dhts:
                if dht.get_timer() <= self.now:
                    dht.handle_timer(self.now)
            self.pump()
        self.now = end

    def lookup(self, i: int, target: bytes, kind: str = "node") -> LookupDone:
        dht = self.dhts[i]
        start = {
            "node": dht.lookup_node,
            "providers": dht.find_providers,
            "record": dht.find_node_record,
        }[kind]
        lookup_id = start(target, self.now)
        for _ in range(100):
            self.pump()
            for j, event in self.done:
                if j == i and event.lookup_id == lookup_id:
                    return event
            self.advance(1.0)
        raise AssertionError("the lookup never finished")


def joined(n: int, config: DhtConfig | None = None, difficulty: int = 0) -> Mesh:
    """``n`` nodes, each linked to the previous one on joining and bootstrapped."""
    mesh = Mesh(n, config, difficulty)
    for i in range(1, n):
        mesh.link(i, i - 1)
        mesh.pump()
    return mesh


def peer_message(dht: Dht, peer: bytes, msg: Message, now: float = NOW) -> list[Message]:
    """Feed ``msg`` from ``peer``; return what ``dht`` sent back to it."""
    dht.receive(peer, encode_message(msg), now)
    out = []
    while (event := dht.next_event()) is not None:
        if isinstance(event, DhtSend) and event.peer_id == peer:
            out.append(decode_message(event.data))
    return out


def fake_id(n: int) -> bytes:
    return (0xFA << 248 | n).to_bytes(ID_SIZE, "big")


# -- two nodes ------------------------------------------------------------------------------


def test_two_nodes_answer_each_other() -> None:
    mesh = Mesh(2)
    a, b = mesh.dhts
    mesh.link(0, 1)
    mesh.pump()
    assert b.node_id in a.table and a.node_id in b.table
    # each fetched the other's node record at link up, verified and kept it
    record = a.node_record(b.node_id)
    assert record is not None and record.descriptor.node_id == b.node_id
    kinds = sorted(e.kind.value for _, e in mesh.done)
    assert kinds == ["bootstrap", "bootstrap"]
    found = mesh.lookup(0, b.node_id)
    assert [c.node_id for c in found.closest] == [b.node_id]
    assert found.rounds == 1 and found.failures == 0
    assert peer_message(a, b.node_id, Ping(7)) == [Pong(7)]
    [nodes] = peer_message(a, b.node_id, FindNode(8, fake_id(1)))
    assert isinstance(nodes, Nodes) and nodes.request_id == 8
    assert b.node_id not in [c.node_id for c in nodes.contacts]  # not told about itself


def test_a_node_record_is_found_by_id() -> None:
    mesh = joined(6)
    found = mesh.lookup(5, mesh.dhts[0].node_id, "record")
    assert found.kind is LookupKind.NODE_RECORD
    assert [r.publisher for r in found.records] == [mesh.dhts[0].node_id]


def test_publish_and_find_providers() -> None:
    mesh = joined(12)
    content = bytes(range(32))
    record = sign_record(
        identity(3), descriptor(3), RecordType.PROVIDER, content, published=int(NOW), value=b"x"
    )
    with pytest.raises(LocalProtocolError):
        mesh.dhts[4].publish(record, mesh.now)  # not its record
    lookup_id = mesh.dhts[3].publish(record, mesh.now)
    mesh.pump()
    [published] = [e for i, e in mesh.done if i == 3 and e.lookup_id == lookup_id]
    assert published.stored >= 1
    found = mesh.lookup(9, content, "providers")
    assert [r.encode() for r in found.records] == [record.encode()]
    assert found.records[0].value == b"x"


def test_lookups_on_a_joined_mesh_find_every_target() -> None:
    mesh = joined(40)
    for i in range(0, 40, 3):
        target = mesh.dhts[(i * 7 + 5) % 40].node_id
        if target == mesh.dhts[i].node_id:
            continue
        found = mesh.lookup(i, target)
        assert found.closest[0].node_id == target
        assert found.rounds <= 6


# -- hostile input -----------------------------------------------------------------------


def test_malformed_and_oversized_messages_raise_remote_errors() -> None:
    mesh = Mesh(2)
    mesh.link(0, 1)
    mesh.pump()
    a, peer = mesh.dhts[0], mesh.dhts[1].node_id
    for data in (b"", b"\x01", b"\x09\x01\x00\x00\x00\x01", bytes(MAX_MESSAGE_SIZE + 1)):
        with pytest.raises(RemoteProtocolError):
            a.receive(peer, data, NOW)
    truncated = encode_message(FindNode(1, fake_id(1)))[:-1]
    with pytest.raises(RemoteProtocolError):
        a.receive(peer, truncated, NOW)


def test_unsolicited_late_and_mistyped_answers_are_dropped() -> None:
    mesh = Mesh(3)
    mesh.link(0, 1)
    mesh.pump()
    a, b = mesh.dhts[0], mesh.dhts[1]
    before = a.stats.unsolicited
    assert peer_message(a, b.node_id, Nodes(12345, (Contact(fake_id(1), None, 0.0),))) == []
    assert peer_message(a, b.node_id, Pong(999)) == []
    assert a.stats.unsolicited == before + 2
    # a request that times out, then its late answer
    mesh.links.discard(frozenset((0, 1)))  # silently: nothing arrives any more
    lookup_id = a.lookup_node(fake_id(2), mesh.now)
    [send] = [e for e in a.events if isinstance(e, DhtSend)]
    request = decode_message(send.data)
    assert isinstance(request, FindNode) and a.pending == 1
    mesh.advance(a.config.rpc_timeout + 1)
    assert a.pending == 0 and any(e.lookup_id == lookup_id for _, e in mesh.done)
    assert peer_message(a, b.node_id, Nodes(request.request_id, ()), mesh.now) == []
    assert a.stats.unsolicited == before + 3


def test_an_answer_of_the_wrong_type_fails_the_request() -> None:
    mesh = Mesh(2)
    mesh.link(0, 1)
    mesh.pump()
    a, b = mesh.dhts[0], mesh.dhts[1]
    mesh.links.discard(frozenset((0, 1)))
    a.lookup_node(fake_id(3), mesh.now)
    [send] = [e for e in a.events if isinstance(e, DhtSend)]
    a.events.clear()
    request = decode_message(send.data)
    assert isinstance(request, FindNode)
    failed = a.stats.failed
    assert peer_message(a, b.node_id, Pong(request.request_id)) == []
    assert a.stats.failed == failed + 1 and a.pending == 0


def test_a_link_fetches_each_node_record_once() -> None:
    """At link up each side asks the other for its node record (FIND_VALUE of its own id,
    answered with the record alone); nobody STOREs it, not even the publish after the
    bootstrap, since the peer fetched that very record.  A relink between nodes that hold
    each other's current record asks nothing."""
    mesh = Mesh(2)
    a, b = mesh.dhts
    mesh.link(0, 1)
    mesh.pump()
    fetches = [(i, m) for i, _, m in mesh.sent if isinstance(m, FindValue)]
    assert sorted(i for i, _ in fetches) == [0, 1]
    assert all(m.record_type is RecordType.NODE for _, m in fetches)
    values = [(i, m) for i, _, m in mesh.sent if isinstance(m, Value)]
    assert [(len(m.records), m.contacts) for _, m in values] == [(1, ()), (1, ())]
    assert not [m for _, _, m in mesh.sent if isinstance(m, Store)]
    assert a.node_record(b.node_id) is not None and b.node_record(a.node_id) is not None
    assert len(a.store) == len(b.store) == 2  # its own and the peer's (among the k closest)
    mesh.unlink(0, 1)
    mesh.sent.clear()
    mesh.link(0, 1)
    mesh.pump()
    assert not [m for _, _, m in mesh.sent if isinstance(m, FindValue | Store)]


def test_a_forged_answer_to_the_record_fetch_is_not_kept() -> None:
    def forge(_i: int, _j: int, msg: Message) -> Message:
        if isinstance(msg, Value) and msg.records:
            bad = replace(msg.records[0], signature=bytes(len(msg.records[0].signature)))
            return Value(msg.request_id, (bad,), msg.contacts)
        return msg

    mesh = Mesh(2)
    mesh.tamper = forge
    mesh.link(0, 1)
    mesh.pump()
    a, b = mesh.dhts
    assert a.node_record(b.node_id) is None and b.node_record(a.node_id) is None
    assert b.node_id in a.table  # the link still counts; only the record is refused


def test_a_held_node_record_is_answered_without_referrals() -> None:
    mesh = Mesh(3)
    mesh.link(0, 1)
    mesh.link(1, 2)
    mesh.pump()
    b, c = mesh.dhts[1], mesh.dhts[2]
    [own] = peer_message(b, c.node_id, FindValue(9, RecordType.NODE, b.node_id))
    assert isinstance(own, Value) and own.contacts == ()
    assert [r.publisher for r in own.records] == [b.node_id]
    held = mesh.dhts[0].node_id
    [other] = peer_message(b, c.node_id, FindValue(10, RecordType.NODE, held))
    assert isinstance(other, Value) and other.contacts == ()
    assert [r.publisher for r in other.records] == [held]
    [missing] = peer_message(b, c.node_id, FindValue(11, RecordType.NODE, fake_id(4)))
    assert isinstance(missing, Value) and not missing.records and missing.contacts


def test_forged_and_expired_stores_are_refused() -> None:
    mesh = Mesh(2)
    mesh.link(0, 1)
    mesh.pump()
    a, peer = mesh.dhts[0], mesh.dhts[1].node_id
    held = len(a.store)  # the node records (a 2-node mesh: each is among the k closest)
    good = sign_record(
        identity(1), descriptor(1), RecordType.PROVIDER, fake_id(5), published=int(NOW)
    )
    forged = replace(good, signature=bytes(len(good.signature)))
    assert peer_message(a, peer, Store(1, forged)) == [Stored(1, StoreStatus.INVALID)]
    old = sign_record(
        identity(1), descriptor(1), RecordType.PROVIDER, fake_id(6), published=int(NOW) - 7200,
        lifetime=3600,
    )  # fmt: skip
    assert peer_message(a, peer, Store(2, old)) == [Stored(2, StoreStatus.INVALID)]
    # a forged node record in the peer's own name is not kept to describe it
    own = sign_record(identity(1), descriptor(1), RecordType.NODE, peer, published=int(NOW) + 5)
    bad = replace(own, signature=bytes(len(own.signature)))
    assert peer_message(a, peer, Store(3, bad)) == [Stored(3, StoreStatus.INVALID)]
    assert a.node_record(peer) is not None and a.node_record(peer) != bad
    assert len(a.store) == held
    assert peer_message(a, peer, Store(4, good)) == [Stored(4, StoreStatus.STORED)]
    assert len(a.store) == held + 1


def test_a_flood_from_one_peer_is_budgeted() -> None:
    mesh = Mesh(3)
    mesh.link(0, 1)
    mesh.link(0, 2)
    mesh.pump()
    a, x, y = mesh.dhts
    cfg = a.config
    answered = 0
    for rid in range(1000):
        answered += len(peer_message(a, x.node_id, FindNode(rid, fake_id(rid)), mesh.now))
    assert answered <= cfg.request_burst
    assert a.stats.over_budget >= 1000 - cfg.request_burst
    assert peer_message(a, y.node_id, Ping(1), mesh.now) == [Pong(1)]  # others still served
    later = sum(len(peer_message(a, x.node_id, Ping(2000 + i), mesh.now + 1.0)) for i in range(100))
    assert later <= cfg.request_rate + 1


def test_all_peers_together_are_budgeted_and_budgets_are_bounded() -> None:
    cfg = DhtConfig(request_rate_total=10.0, max_pending=4)
    mesh = Mesh(1, cfg)
    a = mesh.dhts[0]
    answered = sum(len(peer_message(a, fake_id(i), Ping(i))) for i in range(200))
    assert answered == 20  # the total bucket's burst, though each peer asked once
    assert len(a._budgets) <= 4 * cfg.max_pending


def test_answers_full_of_unreachable_contacts_do_not_stop_lookups() -> None:
    mesh = joined(30)
    hostile = 7
    targets: dict[tuple[int, int], bytes] = {}

    def tamper(src: int, dst: int, msg: Message) -> Message:
        if dst == hostile and isinstance(msg, FindNode | FindValue):
            key = msg.target if isinstance(msg, FindNode) else msg.key
            targets[(src, msg.request_id)] = key
        if src == hostile and isinstance(msg, Nodes):
            target = targets.get((dst, msg.request_id), fake_id(0))
            t = int.from_bytes(target, "big")
            fakes = tuple(
                Contact((t ^ (i + 1)).to_bytes(ID_SIZE, "big"), None, 0.0) for i in range(20)
            )
            return Nodes(msg.request_id, fakes)  # closer to the target than anyone
        return msg

    mesh.tamper = tamper
    for i in range(0, 30, 4):
        if i == hostile:
            continue
        target = mesh.dhts[(i + 11) % 30].node_id
        found = mesh.lookup(i, target)
        assert found.closest[0].node_id == target
        assert found.elapsed < mesh.dhts[i].config.rpc_timeout  # failed fast, no timeouts
        assert not any(distance(c.node_id, target) < 32 for c in found.closest[1:])


def test_ids_failing_the_puzzle_are_kept_out() -> None:
    difficulty = 4
    mesh = Mesh(4, DhtConfig(puzzle_difficulty=difficulty), difficulty=difficulty)
    cheap = mesh.add(4, difficulty=0)  # an id that did not solve the puzzle
    assert not puzzle.satisfies(cheap.node_id, difficulty)
    mesh.link(0, 1)
    mesh.link(0, 4)
    mesh.pump()
    a = mesh.dhts[0]
    assert mesh.dhts[1].node_id in a.table and cheap.node_id not in a.table
    # contacts failing the puzzle in an answer are never asked
    bad = [
        Contact(fake_id(i), None, 0.0)
        for i in range(40)
        if not puzzle.satisfies(fake_id(i), difficulty)
    ][:10]

    def tamper(src: int, dst: int, msg: Message) -> Message:
        if src == 1 and isinstance(msg, Nodes):
            return Nodes(msg.request_id, tuple(bad))
        return msg

    mesh.tamper = tamper
    mesh.lookup(0, fake_id(1))
    asked = {mesh.dhts[j].node_id for i, j, m in mesh.sent if i == 0}
    assert not asked & {c.node_id for c in bad}


def knowing(mesh: Mesh, i: int) -> int:
    """How many other nodes hold node ``i`` in their routing table."""
    node_id = mesh.dhts[i].node_id
    return sum(node_id in d.table for j, d in enumerate(mesh.dhts) if j != i)


def test_a_newcomer_whose_first_link_drops_lookups_bootstraps_again() -> None:
    """The traced failure of ``zmesh sim --adversary 0.1``: a newcomer bootstrapped once,
    through its first link, a node that drops lookups; nobody else ever heard of it, so
    its neighbours could not name it and every lookup of it failed.  Now the bootstrap is
    tried again through the links that came up meanwhile."""
    mesh = joined(12, DhtConfig(publish_node_record=False))
    mesh.droppers.add(0)
    newcomer = mesh.add(12)
    mesh.link(12, 0)  # its bootstrap asks the dropper and waits
    mesh.pump()
    mesh.link(12, 1)  # the second link of its join comes up meanwhile
    mesh.pump()
    assert knowing(mesh, 12) == 2  # only its two links know it so far
    mesh.advance(newcomer.config.rpc_timeout + 1)  # the dropper's request times out
    mesh.pump()
    bootstraps = [e for i, e in mesh.done if i == 12 and e.kind is LookupKind.BOOTSTRAP]
    assert len(bootstraps) >= 2 and len(bootstraps[-1].closest) >= 10
    assert knowing(mesh, 12) >= 10  # it asked them, so they hold it
    found = mesh.lookup(7, newcomer.node_id)
    assert found.closest[0].node_id == newcomer.node_id


def test_a_newcomer_whose_first_link_answers_with_fakes_bootstraps_again() -> None:
    mesh = joined(12, DhtConfig(publish_node_record=False))

    def lie(i: int, j: int, msg: Message) -> Message:
        if i == 0 and isinstance(msg, Nodes):
            return Nodes(msg.request_id, tuple(Contact(fake_id(n), None, 0.0) for n in range(5)))
        return msg

    mesh.tamper = lie
    mesh.add(12)
    mesh.link(12, 0)  # bootstraps through the liar: only the liar answers
    mesh.pump()
    [first] = [e for i, e in mesh.done if i == 12]
    assert len(first.closest) == 1 and first.failures >= 1
    mesh.link(12, 1)  # the next link-up tries again, through an honest node
    mesh.pump()
    assert len([e for i, e in mesh.done if i == 12]) >= 2
    assert knowing(mesh, 12) >= 10


def test_a_bootstrap_that_reached_everyone_is_not_repeated() -> None:
    mesh = joined(6)
    for i in range(6):
        assert len([e for j, e in mesh.done if j == i and e.kind is LookupKind.BOOTSTRAP]) == 1


def test_bootstraps_are_bounded() -> None:
    mesh = Mesh(14, DhtConfig(publish_node_record=False))
    mesh.droppers.update(range(1, 14))
    for j in range(1, 14):  # every link drops lookups: each link-up may try once more
        mesh.link(0, j)
        mesh.pump()
        mesh.advance(mesh.config.rpc_timeout + 1)
    assert len([e for i, e in mesh.done if i == 0]) == service.MAX_BOOTSTRAPS


def test_request_timeouts_are_learned_from_round_trips() -> None:
    mesh = Mesh(2)
    a, b = mesh.dhts
    mesh.link(0, 1)
    mesh.pump()
    mesh.links.discard(frozenset((0, 1)))  # we answer by hand from here on
    a.events.clear()

    def request() -> FindNode:
        a.lookup_node(fake_id(4), mesh.now)
        [send] = [e for e in a.events if isinstance(e, DhtSend)]
        a.events.clear()
        msg = decode_message(send.data)
        assert isinstance(msg, FindNode)
        return msg

    # instant answers so far: the timeout is the floor, not the 10 s cap
    request()
    assert a.get_timer() == pytest.approx(mesh.now + a.config.rpc_timeout_floor)
    mesh.advance(a.config.rpc_timeout_floor + 0.01)  # a peer that drops: one second
    assert a.pending == 0
    # an answer after 2 s: SRTT 2 s, RTTVAR 1 s (RFC 6298 2.3 from the 0 s samples)
    msg = request()
    mesh.now += 2.0
    a.receive(b.node_id, encode_message(Nodes(msg.request_id, ())), mesh.now)
    request()
    rtt = a._round_trips._rtts[b.node_id]
    assert rtt.srtt == pytest.approx(0.25) and a.get_timer() == pytest.approx(
        mesh.now + max(a.config.rpc_timeout_floor, rtt.srtt + 4 * rtt.rttvar)
    )
    # never beyond the cap, however slow the peer was
    for _ in range(6):
        msg = request()
        mesh.now += 60.0
        a.receive(b.node_id, encode_message(Nodes(msg.request_id, ())), mesh.now)
    request()
    assert a.get_timer() == pytest.approx(mesh.now + a.config.rpc_timeout)


# -- links on demand, and the bounds ------------------------------------------------------


def test_a_contact_without_a_link_is_described_by_its_referrer_and_dialled() -> None:
    mesh = Mesh(3, DhtConfig(publish_node_record=False))
    mesh.link(1, 2)
    mesh.pump()
    a, c = mesh.dhts[0], mesh.dhts[2]
    mesh.link(0, 1)  # a bootstraps through b, which names c
    mesh.pump()
    assert a.stats.fetches >= 1 and a.stats.dials >= 1
    assert frozenset((0, 2)) in mesh.links  # dialled on demand
    assert a.node_record(c.node_id) is not None  # described by b
    found = mesh.lookup(0, c.node_id)
    assert found.closest[0].node_id == c.node_id and found.rounds == 1


def test_a_failed_dial_fails_the_request_at_once() -> None:
    mesh = Mesh(3, DhtConfig(publish_node_record=False))
    mesh.link(1, 2)
    mesh.pump()
    mesh.reachable.discard(2)
    a = mesh.dhts[0]
    mesh.link(0, 1)
    mesh.pump()
    assert a.waiting == 1 and a.lookups == 1  # the bootstrap waits for the dial to c
    a.dial_failed(mesh.dhts[2].node_id, mesh.now)
    mesh.pump()
    assert a.waiting == 0 and a.lookups == 0
    [done] = [e for i, e in mesh.done if i == 0]
    assert [c.node_id for c in done.closest] == [mesh.dhts[1].node_id] and done.failures == 1


def test_requests_waiting_for_links_are_bounded_and_expire() -> None:
    cfg = DhtConfig(max_waiting=3, max_waiting_per_peer=1, publish_node_record=False)
    mesh = joined(12, cfg)
    a = mesh.dhts[0]
    for j in range(2, 12):
        mesh.unlink(0, j) if frozenset((0, j)) in mesh.links else None
    mesh.dial_ok = True
    mesh.reachable.clear()  # dials are accepted but never complete
    for j in range(2, 8):
        a.lookup_node(mesh.dhts[j].node_id, mesh.now)
        mesh.pump()
        assert a.waiting <= 3
    mesh.advance(10 * cfg.rpc_timeout)
    assert a.waiting == 0 and a.lookups == 0


def test_pending_requests_are_bounded() -> None:
    cfg = DhtConfig(max_pending=8)
    mesh = Mesh(2, cfg)
    mesh.link(0, 1)
    mesh.pump()
    mesh.links.clear()  # the peer goes silent
    a = mesh.dhts[0]
    for i in range(16):
        a.lookup_node(fake_id(100 + i), mesh.now)
        mesh.pump()
        assert a.pending <= 8
    mesh.advance(cfg.rpc_timeout + 1)
    assert a.pending == 0 and a.lookups == 0


def test_lookups_in_flight_are_bounded() -> None:
    cfg = DhtConfig(max_lookups=4)
    mesh = Mesh(2, cfg)
    mesh.link(0, 1)
    mesh.pump()
    mesh.links.clear()  # the peer goes silent: each lookup waits for its answer
    a = mesh.dhts[0]
    for i in range(4):
        a.lookup_node(fake_id(100 + i), mesh.now)
    with pytest.raises(LocalProtocolError, match="lookups"):
        a.lookup_node(fake_id(99), mesh.now)
    with pytest.raises(LocalProtocolError):
        a.lookup_node(b"short", mesh.now)
    mesh.advance(cfg.rpc_timeout + 1)
    assert a.pending == 0 and a.lookups == 0
    a.lookup_node(fake_id(99), mesh.now)  # room again


def test_link_down_fails_requests_in_flight_at_once() -> None:
    mesh = Mesh(2)
    mesh.link(0, 1)
    mesh.pump()
    mesh.links.clear()
    a = mesh.dhts[0]
    lookup_id = a.lookup_node(fake_id(7), mesh.now)
    mesh.pump()
    assert a.pending == 1
    a.link_down(mesh.dhts[1].node_id, mesh.now)
    mesh.pump()
    assert a.pending == 0
    assert any(e.lookup_id == lookup_id for i, e in mesh.done if i == 0)


def test_buckets_nobody_used_are_refreshed_hourly() -> None:
    mesh = joined(8)
    a = mesh.dhts[0]
    before = len([e for i, e in mesh.done if i == 0 and e.kind is LookupKind.REFRESH])
    mesh.advance(3700.0)
    after = [e for i, e in mesh.done if i == 0 and e.kind is LookupKind.REFRESH]
    assert len(after) > before
    assert a.lookups == 0


# -- real nodes on the simulator ------------------------------------------------------------


def test_nodes_run_the_dht_on_links() -> None:
    sim = Simulator(3)
    cfg = NodeConfig(dht=True, gossip=False)
    a, b, c = (sim.add_node(cfg) for _ in range(3))
    sim.connect(b, c)
    sim.run(max_time=2.0)
    sim.connect(a, b)  # a bootstraps through b, which names c: a dials c
    sim.run(max_time=5.0)
    assert a.node.dht is not None
    assert {b.node.node_id, c.node.node_id} <= {x.node_id for x in a.node.dht.table.contacts()}
    wanted = [e.descriptor.node_id for e in a.events if isinstance(e, DialWanted)]
    assert wanted == [c.node.node_id]  # the dialer's effect, reused
    assert a.node.link_to(c.node.node_id) is not None
    mark = a.event_count
    sim.call(a, partial(a.node.dht.lookup_node, c.node.node_id, sim.now))
    sim.run(max_time=sim.now + 5.0)
    [done] = [e for e in a.events_since(mark) if isinstance(e, LookupDone)]
    assert done.kind is LookupKind.NODE and done.closest[0].node_id == c.node.node_id


def test_a_node_without_the_dht_ignores_dht_frames() -> None:
    sim = Simulator(4)
    a = sim.add_node(NodeConfig(dht=True, gossip=False))
    b = sim.add_node(NodeConfig(gossip=False))
    sim.connect(a, b)
    sim.run(max_time=12.0)
    assert b.node.dht is None
    assert a.node.link_to(b.node.node_id) is not None  # the link stays up
    assert lf.FrameType.DHT == 15


@pytest.mark.slow
def test_lookups_across_200_nodes_find_targets_in_a_few_rounds() -> None:
    sim = sim_dht.build(200, 5)
    figures = sim_dht.measure(sim, sim_dht.pairs(sim, 40))
    assert figures.success == 1.0
    assert figures.rounds_median <= 4
    assert figures.rounds_max <= 6
