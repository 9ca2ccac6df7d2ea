"""The world of ``zmesh sim``'s control plane: every node a real
:class:`~zmesh.dht.service.Dht`, links and latencies modelled, one event heap in virtual
time (the module doc of :mod:`zmesh.sim.scale` says what is real and what is modelled).

:class:`World` runs one :class:`~zmesh.sim.scale_config.ScaleConfig` and keeps the raw
outcomes (:class:`LookupOutcome`, :class:`CircuitOutcome`, every :class:`SimNode`) that
:func:`zmesh.sim.scale.simulate` turns into figures.
"""

import hashlib
import heapq
import math
import statistics
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial

from ..dht import puzzle as dht_puzzle
from ..dht.messages import (
    FindNode,
    MessageType,
    Nodes,
    Value,
    decode_message,
    encode_message,
)
from ..dht.records import Record, decode_record
from ..dht.routing import ID_SIZE, Contact, K
from ..dht.service import Dht, DhtConfig, DhtSend, LookupDone
from ..dialer import DIAL_TIMEOUT
from ..errors import LocalProtocolError, RemoteProtocolError
from ..health.avoid import Avoidance
from ..health.cbt import BuildTimes
from ..health.link import LinkHealth
from ..identity import Descriptor, Flags, Identity
from ..link.connection import LinkLimits
from ..onion.guards import HOUR, GuardSet, eligible_guards
from ..onion.paths import NoPathError, RelayPool, subnet_of
from ..rng import DeterministicRng, Rng, randbelow
from .dht import FastCryptoRng
from .scale_config import (
    ACCESS_BROWSER,
    ACCESS_NATIVE,
    DIAL_RTTS,
    EXIT_FRACTION,
    HOP_BROWSER,
    HOP_NATIVE,
    JOIN_LINKS,
    LINK_FAILED,
    MAX_ATTEMPTS,
    MAX_RAMP,
    NATIVE_FRACTION,
    NATIVE_LIFETIME_DAYS,
    PORT,
    PUZZLE_DIFFICULTY,
    RTT_MEDIAN,
    RTT_SIGMA,
    SETTLE,
    ScaleConfig,
)

# the kinds of events on the heap
_DELIVER, _LINK_UP, _DIAL_FAILED, _LINK_DOWN, _TIMER, _JOIN, _LEAVE, _LOOKUP, _CIRCUIT = range(9)
_HONEST, _DROPPER, _LIAR = range(3)
_FIND_VALUE_KEY = 7  # version, type, request id (4), record type, then the key
FAKE_PREFIX = 20  # bytes a liar's fake contact shares with the target
HEARTBEATS = 60  # of a steady link, before the failure detector is asked (detection_delay)
SHARED_RECORDS = 1 << 17  # distinct record encodings SharedRecords keeps


@dataclass(slots=True)
class SimNode:
    index: int
    identity: Identity
    descriptor: Descriptor
    dht: Dht
    rng: Rng
    native: bool
    behaviour: int
    sybil: bool
    first_seen: float  # when the network first saw this id (before 0 for the start's nodes)
    joined: float  # when it came up in this run
    alive: bool = True
    left: float = math.inf
    links: dict[int, float] = field(default_factory=dict)  # peer -> one-way latency
    dialing: dict[int, None] = field(default_factory=dict)
    timer_at: float = math.inf
    guards: GuardSet | None = None
    avoidance: Avoidance = field(default_factory=Avoidance)
    build_times: BuildTimes = field(default_factory=BuildTimes)

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    origin: int
    target: int
    success: bool
    rounds: int
    rpcs: int
    latency: float


@dataclass(frozen=True, slots=True)
class CircuitOutcome:
    client: int
    success: bool
    attempts: int
    build: float
    paths: tuple[tuple[int, int, int], ...]


class SharedRecords:
    """The simulator's record decoder (``Dht``'s ``record_decoder``): the same bytes give
    one shared immutable :class:`~zmesh.dht.records.Record`, parsed by the production
    :func:`~zmesh.dht.records.decode_record`.  So 10,000 nodes' copies of a record sit in
    memory once, and its signatures, which a Record and its Descriptor check once per
    object, are checked once in the whole run (the verdict is the real one).  Bounded: at
    ``limit`` encodings it starts afresh (sharing is lost, never correctness)."""

    def __init__(self, limit: int = SHARED_RECORDS) -> None:
        self._records: dict[bytes, Record] = {}
        self._limit = limit

    def __call__(self, data: bytes) -> Record:
        """The record ``data`` encodes; raises RemoteProtocolError as decode_record."""
        record = self._records.get(data)
        if record is None:
            record = decode_record(data)
            if len(self._records) >= self._limit:
                self._records.clear()
            self._records[data] = record
        return record

    def __len__(self) -> int:
        return len(self._records)


def detection_delay(limits: LinkLimits) -> float:
    """How long after a peer's last PONG the health layer finds its link dead, on a steady
    link (a PING every keepalive, answered at once): the real
    :class:`~zmesh.health.link.LinkHealth` is fed :data:`HEARTBEATS` heartbeats and asked
    (its phi rule, about 3 keepalives; ``timeout`` is only its hard cap)."""
    health = LinkHealth(limits.keepalive, limits.timeout, 0.0)
    last = 0.0
    for _ in range(HEARTBEATS):
        last = health.next_ping
        health.pong(health.ping(last), last)
    return health.dead_at(last) - last


def _is_lookup(data: bytes, own_id: bytes) -> bool:
    """True for a FIND_NODE, or a FIND_VALUE of another id than ``own_id`` (a peer that asks
    a node for its own record at link up is not looking anything up)."""
    kind = data[1]
    return kind == MessageType.FIND_NODE or (
        kind == MessageType.FIND_VALUE
        and data[_FIND_VALUE_KEY : _FIND_VALUE_KEY + ID_SIZE] != own_id
    )


def _uniform(rng: Rng) -> float:
    """A float in [0, 1) from 53 random bits."""
    return randbelow(rng, 1 << 53) / (1 << 53)


class World:
    """One control-plane run: the nodes, the event heap and the measurements."""

    def __init__(self, cfg: ScaleConfig, progress: Callable[[str, int, int], None] | None):
        self.cfg = cfg
        self.progress = progress
        self.root = DeterministicRng(cfg.seed, b"zmesh-sim-scale")
        self.rng = self.root.fork(b"world")
        self.now = 0.0
        self.heap: list[tuple[float, int, int, int, int, tuple[bytes, ...]]] = []
        self.seq = 0
        self.events = 0
        self.nodes: list[SimNode] = []
        self.by_id: dict[bytes, int] = {}
        self.first_seen: dict[bytes, float] = {}
        self.limits = LinkLimits()
        self.detection = detection_delay(self.limits)
        self.dht_config = DhtConfig(puzzle_difficulty=PUZZLE_DIFFICULTY)
        self.records = SharedRecords()
        self.subnets = max(16, cfg.nodes // 2)
        self.ramp = min(cfg.duration / 4, MAX_RAMP)
        self.start = min(self.ramp + SETTLE, cfg.duration / 2)
        self.lookups: dict[tuple[int, int], tuple[int, float]] = {}
        self.lookup_results: list[LookupOutcome] = []
        self.circuit_results: list[CircuitOutcome] = []
        self.native_hazard = 1 / (NATIVE_LIFETIME_DAYS * 24)  # per hour
        natives = round(cfg.nodes * NATIVE_FRACTION)
        spare = cfg.churn * cfg.nodes - natives * self.native_hazard
        browsers = cfg.nodes - natives
        self.browser_hazard = spare / browsers if browsers and spare > 0 else self.native_hazard
        self.joined_count = 0
        self.up: list[int] = []  # nodes up, Sybils aside
        self.up_natives: list[int] = []  # of them, the native ones (bootstrap lists)
        self.left_count = 0
        self.half_bytes: int | None = None
        self.half_seconds = 0.0

    # -- the heap ------------------------------------------------------------------------
    def push(self, t: float, kind: int, a: int, b: int = 0, data: tuple[bytes, ...] = ()) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b, data))

    def run(self) -> None:
        cfg = self.cfg
        self._schedule()
        end = cfg.duration
        half = end / 2
        step = max(1.0, end / 200)
        next_report = 0.0
        handlers: dict[int, Callable[[int, int, tuple[bytes, ...]], None]] = {
            _DELIVER: self._deliver,
            _LINK_UP: self._link_up,
            _DIAL_FAILED: self._dial_failed,
            _LINK_DOWN: self._link_down,
            _TIMER: self._timer,
            _JOIN: self._join_event,
            _LEAVE: self._leave_event,
            _LOOKUP: self._lookup_event,
            _CIRCUIT: self._circuit_event,
        }
        heap = self.heap
        while heap and heap[0][0] <= end:
            t, _, kind, a, b, data = heapq.heappop(heap)
            if self.half_bytes is None and t >= half:
                self.half_bytes, self.half_seconds = self.bytes_and_seconds(half)
            self.now = t
            self.events += 1
            handlers[kind](a, b, data)
            if self.progress is not None and t >= next_report:
                next_report = t + step
                self.progress("control", int(t), int(end))
        self.now = end
        if self.half_bytes is None:
            self.half_bytes, self.half_seconds = self.bytes_and_seconds(half)
        if self.progress is not None:
            self.progress("control", int(end), int(end))

    # -- setting up ----------------------------------------------------------------------
    def _schedule(self) -> None:
        cfg, rng = self.cfg, self.rng
        natives = round(cfg.nodes * NATIVE_FRACTION)
        hostile = _pick(rng, list(range(cfg.nodes)), round(cfg.nodes * cfg.adversary))
        behaviour = {i: (_DROPPER if n % 2 == 0 else _LIAR) for n, i in enumerate(hostile)}
        for i in range(cfg.nodes):
            native = i < natives  # the order of joining is shuffled below
            hazard = self.native_hazard if native else self.browser_hazard
            age = -math.log(1 - _uniform(rng)) / hazard * HOUR  # stationary: exponential
            exit_ = native and _uniform(rng) < EXIT_FRACTION
            self._add(native, exit_=exit_, behaviour=behaviour.get(i, _HONEST), first_seen=-age)
        order = _pick(rng, list(range(cfg.nodes)), cfg.nodes)
        gap = self.ramp / cfg.nodes
        joins = [(k * gap, i) for k, i in enumerate(order)]
        for s in range(cfg.sybil):
            index = self._add(
                True, exit_=True, first_seen=math.inf, sybil_subnet=s % cfg.sybil_subnets
            )
            joins.append((_uniform(rng) * self.ramp, index))
        joins.sort()
        for t, i in joins:
            self.nodes[i].joined = t
            self.nodes[i].first_seen = min(self.nodes[i].first_seen, t)
            self.first_seen[self.nodes[i].node_id] = self.nodes[i].first_seen
            self.push(t, _JOIN, i)
        leaves = round(cfg.churn * cfg.nodes * cfg.duration / HOUR)
        for _ in range(leaves):
            self.push(self.ramp + _uniform(rng) * (cfg.duration - self.ramp), _LEAVE, 0)
        span = cfg.duration - self.start
        for _ in range(cfg.lookup_count):
            self.push(self.start + _uniform(rng) * span, _LOOKUP, 0)
        for n in range(cfg.circuit_count):
            self.push(self.start + _uniform(rng) * span, _CIRCUIT, n)

    def _add(
        self,
        native: bool,
        *,
        exit_: bool,
        first_seen: float,
        behaviour: int = _HONEST,
        sybil_subnet: int | None = None,
    ) -> int:
        """Make a node (identity solving the puzzle, descriptor, Dht); returns its index.
        It joins the network when its _JOIN event runs."""
        index = len(self.nodes)
        rng = FastCryptoRng(self.cfg.seed, b"node-%d" % index)
        identity, _ = dht_puzzle.solve(rng, PUZZLE_DIFFICULTY)
        if sybil_subnet is not None:  # a /24 of its own /16 per Sybil subnet
            host = f"203.{sybil_subnet}.{7 + sybil_subnet}.{1 + randbelow(self.rng, 254)}"
        else:
            subnet = randbelow(self.rng, self.subnets)
            a, b = 1 + subnet // 256, subnet % 256
            host = f"{a}.{b}.{randbelow(self.rng, 256)}.{1 + randbelow(self.rng, 254)}"
        flags = Flags.RELAY | Flags.EXIT if exit_ else Flags.RELAY
        published = max(0, int(self.now))
        desc = identity.make_descriptor(
            flags=flags,
            onion_epoch=0,
            onion_pk=identity.kem.public,  # an onion key's size; no circuit is built here
            published=published,
            lifetime=7 * 24 * 3600,
            addresses=(f"http://{host}:{PORT}",),
        )
        dht = Dht(
            identity,
            partial(_same, desc),
            rng,
            self.now,
            dial=partial(self._dial, index),
            config=self.dht_config,
            record_decoder=self.records,
        )
        sybil = sybil_subnet is not None
        node = SimNode(index, identity, desc, dht, rng, native, behaviour, sybil, first_seen, 0.0)
        self.nodes.append(node)
        self.by_id[identity.node_id] = index
        self.first_seen[identity.node_id] = first_seen
        return index

    # -- links -----------------------------------------------------------------------------
    def _latency(self, a: int, b: int) -> float:
        """The one-way latency between nodes ``a`` and ``b``: half a log-normal core RTT
        fixed per pair, plus each end's access delay."""
        lo, hi = min(a, b), max(a, b)
        h = hashlib.blake2b(b"%d:%d:%d" % (self.cfg.seed, lo, hi), digest_size=8).digest()
        u = (int.from_bytes(h, "big") + 0.5) / 2**64
        rtt = RTT_MEDIAN * math.exp(RTT_SIGMA * statistics.NormalDist().inv_cdf(u))
        na, nb = self.nodes[a], self.nodes[b]
        access = (ACCESS_NATIVE if na.native else ACCESS_BROWSER) + (
            ACCESS_NATIVE if nb.native else ACCESS_BROWSER
        )
        return rtt / 2 + access

    def _dial(self, index: int, desc: Descriptor, now: float) -> bool:
        """A Dht's ``dial``: link to ``desc``'s node after DIAL_RTTS round trips, or fail
        after the dialer's timeout if it has left."""
        node = self.nodes[index]
        peer = self.by_id.get(desc.node_id)
        if peer is None or peer == index or peer in node.dialing:
            return peer is not None and peer != index
        node.dialing[peer] = None
        if self.nodes[peer].alive:
            self.push(now + DIAL_RTTS * 2 * self._latency(index, peer), _LINK_UP, index, peer)
        else:
            self.push(now + DIAL_TIMEOUT, _DIAL_FAILED, index, peer)
        return True

    def _link_up(self, a: int, b: int, _: tuple[bytes, ...]) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        na.dialing.pop(b, None)
        if not na.alive:
            return
        if not nb.alive:
            self.push(self.now + DIAL_TIMEOUT, _DIAL_FAILED, a, b)
            return
        if b in na.links:
            return
        latency = self._latency(a, b)
        na.links[b] = nb.links[a] = latency
        na.avoidance.clear(nb.node_id)
        nb.avoidance.clear(na.node_id)
        na.dht.link_up(nb.node_id, nb.descriptor, self.now)
        nb.dht.link_up(na.node_id, na.descriptor, self.now)
        self._drain(na)
        self._drain(nb)

    def _dial_failed(self, a: int, b: int, _: tuple[bytes, ...]) -> None:
        node = self.nodes[a]
        node.dialing.pop(b, None)
        if node.alive and b not in node.links:
            node.dht.dial_failed(self.nodes[b].node_id, self.now)
            self._drain(node)

    def _link_down(self, a: int, b: int, _: tuple[bytes, ...]) -> None:
        node = self.nodes[a]
        if node.alive and node.links.pop(b, None) is not None:
            peer = self.nodes[b].node_id
            node.avoidance.failed(peer, self.now, LINK_FAILED)
            node.dht.link_down(peer, self.now)
            self._drain(node)

    # -- messages --------------------------------------------------------------------------
    def _drain(self, node: SimNode) -> None:
        """Carry out a node's Dht effects, then re-arm its timer."""
        dht = node.dht
        now = self.now
        batches: dict[int, list[bytes]] = {}  # what goes to one peer now arrives together
        while (event := dht.next_event()) is not None:
            if isinstance(event, DhtSend):
                peer = self.by_id[event.peer_id]
                if peer in node.links:
                    batch = batches.get(peer)
                    if batch is None:
                        batches[peer] = [event.data]
                    else:
                        batch.append(event.data)
            elif isinstance(event, LookupDone):
                self._lookup_done(node, event)
        for peer, batch in batches.items():
            self.push(now + node.links[peer], _DELIVER, peer, node.index, tuple(batch))
        # only an earlier deadline is scheduled: a later one is re-armed when the one on
        # the heap fires (a Dht may be asked early; it fails nothing before its time)
        timer = max(dht.get_timer(), now + 1e-3)
        if timer < node.timer_at:
            node.timer_at = timer
            self.push(timer, _TIMER, node.index)

    def _deliver(self, dst: int, src: int, batch: tuple[bytes, ...]) -> None:
        """Messages sent together on one link arrive together, in order (one event, and
        the receiver's effects are carried out once, after the last)."""
        node = self.nodes[dst]
        if not node.alive or src not in node.links:
            return  # it left, or the link went down: lost
        sender = self.nodes[src].node_id
        dht = node.dht
        honest = node.behaviour == _HONEST
        for data in batch:
            if not honest and _is_lookup(data, node.node_id):
                self._misbehave(node, src, data)
                continue
            with suppress(RemoteProtocolError):  # a node would close the link; none sends garbage
                dht.receive(sender, data, self.now)
        self._drain(node)

    def _misbehave(self, node: SimNode, src: int, data: bytes) -> None:
        """A hostile node's answer to a lookup request: none, or fake contacts."""
        node.dht.stats.bytes_in += len(data)
        if node.behaviour == _DROPPER:
            return
        msg = decode_message(data)
        target = msg.target if isinstance(msg, FindNode) else getattr(msg, "key", b"")
        fakes = self._fake_contacts(node, target)
        reply = (
            Nodes(msg.request_id, fakes)
            if isinstance(msg, FindNode)
            else Value(msg.request_id, (), fakes)
        )
        out = encode_message(reply)
        node.dht.stats.bytes_out += len(out)
        self.push(self.now + node.links[src], _DELIVER, src, node.index, (out,))

    def _fake_contacts(self, node: SimNode, target: bytes) -> tuple[Contact, ...]:
        """``K`` ids closer to ``target`` than almost anyone, each solving the puzzle, naming
        no node (a fresh set per answer: liars do not vouch for each other's fakes): suffixes
        drawn from the liar's generator in batches, each try one SHA-256 of the id (the
        puzzle hash is below ``2**(256 - difficulty)`` exactly when it starts with
        ``difficulty`` zero bits)."""
        head = target[:FAKE_PREFIX]
        size = ID_SIZE - FAKE_PREFIX
        most = ((1 << (256 - PUZZLE_DIFFICULTY)) - 1).to_bytes(32, "big")  # the puzzle holds
        sha256 = hashlib.sha256
        ids: list[bytes] = []
        while len(ids) < K:
            batch = node.rng.bytes(size * (K << PUZZLE_DIFFICULTY))  # about K solutions
            tries = [head + batch[at : at + size] for at in range(0, len(batch), size)]
            ids += [fake for fake in tries if sha256(fake).digest() <= most]
        del ids[K:]
        hosts = node.rng.bytes(2 * K)  # an address in 198.51.0.0/16 for each
        return tuple(
            Contact(fake, f"http://198.51.{hosts[2 * i]}.{1 + hosts[2 * i + 1] % 254}:{PORT}", 0.0)
            for i, fake in enumerate(ids)
        )

    def _timer(self, a: int, _: int, __: tuple[bytes, ...]) -> None:
        node = self.nodes[a]
        if not node.alive or self.now != node.timer_at:
            return
        node.timer_at = math.inf
        if node.dht.get_timer() <= self.now:  # else the deadline it was armed for has gone
            node.dht.handle_timer(self.now)
        self._drain(node)

    # -- churn -----------------------------------------------------------------------------
    def _join_event(self, a: int, _: int, __: tuple[bytes, ...]) -> None:
        """Node ``a`` comes up: it dials JOIN_LINKS native nodes already up (its
        operator's bootstrap list; any node up while there are too few), and bootstraps
        at its first link."""
        node = self.nodes[a]
        node.joined = self.now
        self.joined_count += 1
        pool = self.up_natives if len(self.up_natives) >= JOIN_LINKS else self.up
        chosen: dict[int, None] = {}
        while len(chosen) < min(JOIN_LINKS, len(pool)):
            chosen[pool[randbelow(self.rng, len(pool))]] = None
        for peer in chosen:
            self._dial(a, self.nodes[peer].descriptor, self.now)
        if not node.sybil:
            self.up.append(a)
            if node.native:
                self.up_natives.append(a)
        self._drain(node)

    def _leave_event(self, _: int, __: int, ___: tuple[bytes, ...]) -> None:
        """A node leaves (native or browser by their hazards) and a newcomer of its kind
        and of a fresh id replaces it."""
        rate = self.cfg.churn * self.cfg.nodes
        natives = len(self.up_natives)
        p_native = min(1.0, natives * self.native_hazard / rate) if rate else 0.0
        want_native = _uniform(self.rng) < p_native or natives == len(self.up)
        node = None
        for _attempt in range(1000):
            pick = self.nodes[self.up[randbelow(self.rng, len(self.up))]]
            if pick.native == want_native or not natives:
                node = pick
                break
        if node is None:
            return
        self._leave(node)
        exit_ = bool(int(node.descriptor.flags) & int(Flags.EXIT))
        hostile = _uniform(self.rng) < self.cfg.adversary
        behaviour = (_DROPPER if _uniform(self.rng) < 0.5 else _LIAR) if hostile else _HONEST
        index = self._add(node.native, exit_=exit_, behaviour=behaviour, first_seen=self.now)
        self._join_event(index, 0, ())

    def _leave(self, node: SimNode) -> None:
        node.alive = False
        node.left = self.now
        self.up.remove(node.index)
        if node.native:
            self.up_natives.remove(node.index)
        self.left_count += 1
        keepalive, detection = self.limits.keepalive, self.detection
        for peer, latency in node.links.items():
            delay = detection - _uniform(self.rng) * keepalive + latency
            self.push(self.now + delay, _LINK_DOWN, peer, node.index)
        node.links.clear()

    # -- lookups ---------------------------------------------------------------------------
    def _honest_node(self) -> SimNode | None:
        """A random honest node that has been up for SETTLE seconds (None if none found)."""
        settled = self.now - SETTLE
        if not self.up:
            return None
        for _attempt in range(1000):
            node = self.nodes[self.up[randbelow(self.rng, len(self.up))]]
            if node.behaviour == _HONEST and node.joined <= settled:
                return node
        return None

    def _lookup_event(self, _: int, __: int, ___: tuple[bytes, ...]) -> None:
        origin, target = self._honest_node(), self._honest_node()
        if origin is None or target is None or origin is target:
            return
        try:
            lookup_id = origin.dht.lookup_node(target.node_id, self.now)
        except LocalProtocolError:
            self.lookup_results.append(LookupOutcome(origin.index, target.index, False, 0, 0, 0))
            return
        self.lookups[(origin.index, lookup_id)] = (target.index, self.now)
        self._drain(origin)

    def _lookup_done(self, node: SimNode, event: LookupDone) -> None:
        measured = self.lookups.pop((node.index, event.lookup_id), None)
        if measured is None:
            return
        target = self.nodes[measured[0]].node_id
        found = any(c.node_id == target for c in event.closest[:1])
        self.lookup_results.append(
            LookupOutcome(node.index, measured[0], found, event.rounds, event.rpcs, event.elapsed)
        )

    # -- circuits --------------------------------------------------------------------------
    def _circuit_event(self, _: int, __: int, ___: tuple[bytes, ...]) -> None:
        client = self._honest_node()
        if client is not None:
            self.circuit_results.append(self._build(client))

    def _known_relays(self, client: SimNode) -> list[Descriptor]:
        """What the client's DHT can describe: its table entries' node records."""
        out = []
        for contact in client.dht.table.contacts():
            record = client.dht.node_record(contact.node_id)
            if record is not None:
                out.append(record.descriptor)
        return out

    def _build(self, client: SimNode) -> CircuitOutcome:
        """Up to MAX_ATTEMPTS paths for one circuit request (see the module doc)."""
        now = self.now
        elapsed = 0.0
        paths: list[tuple[int, int, int]] = []
        relays = self._known_relays(client)
        pool = RelayPool(relays, client.node_id, subnet_of, first_seen=self.first_seen, now=now)
        guards: list[bytes] | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            t = now + elapsed
            if not self.cfg.no_guards:
                if client.guards is None:
                    client.guards = GuardSet(private=False)
                eligible = eligible_guards(relays, self.first_seen, t, own_id=client.node_id)
                client.guards.update(t, client.rng, eligible, pool.by_id.keys())
                guards = client.guards.in_use(t)
            try:
                path = pool.path(client.rng, None, client.avoidance.avoided_ids(t), guards)
            except NoPathError:
                elapsed += client.build_times.timeout()
                client.build_times.add_timeout(client.build_times.timeout())
                continue
            hops = [self.nodes[self.by_id[d.node_id]] for d in path]
            paths.append((hops[0].index, hops[1].index, hops[2].index))
            gone = next((h for h in hops if not h.alive), None)
            if gone is not None:
                wait = client.build_times.timeout()
                client.build_times.add_timeout(wait)
                client.avoidance.failed(gone.node_id, t)
                if client.guards is not None and gone is hops[0]:
                    client.guards.note_failure(gone.node_id, t)
                elapsed += wait
                continue
            build = 0.0
            prev = client
            for hop in hops:
                one_way = prev.links.get(hop.index)
                if one_way is None:
                    one_way = self._latency(prev.index, hop.index)
                    build += DIAL_RTTS * 2 * one_way
                build += 2 * one_way + (HOP_NATIVE if hop.native else HOP_BROWSER)
                prev = hop
            client.build_times.add(build)
            if client.guards is not None:
                client.guards.note_success(hops[0].node_id, t)
            return CircuitOutcome(client.index, True, attempt, elapsed + build, tuple(paths))
        return CircuitOutcome(client.index, False, MAX_ATTEMPTS, elapsed, tuple(paths))

    # -- figures ---------------------------------------------------------------------------
    def bytes_and_seconds(self, until: float) -> tuple[int, float]:
        total = 0
        seconds = 0.0
        for n in self.nodes:
            if n.sybil or n.joined > until:
                continue
            stats = n.dht.stats
            total += stats.bytes_in + stats.bytes_out
            seconds += max(0.0, min(n.left, until) - n.joined)
        return total, seconds


def _same(desc: Descriptor, _: float) -> Descriptor:
    return desc


def _pick[T](rng: Rng, items: list[T], k: int) -> list[T]:
    """``k`` distinct elements of ``items``, uniformly (partial Fisher-Yates)."""
    pool = list(items)
    for i in range(k):
        j = i + randbelow(rng, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


__all__ = ["CircuitOutcome", "LookupOutcome", "SharedRecords", "SimNode", "World"]
