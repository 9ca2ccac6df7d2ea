"""``zmesh sim``: the control plane of an open network at scale, then anonymity over days
(issue 9).

:func:`simulate` runs two levels on the production components and returns one
:class:`ScaleReport` (the keys of ``zmesh sim --json``):

1. **The control plane for ``duration`` seconds.**  Every node, honest or hostile, is a
   real :class:`~zmesh.dht.service.Dht` (one per node, with its own identity, signed
   descriptor, routing table, record store and seeded generator) driven directly by an
   event heap in virtual time.  What is real and what is modelled:

   *Real*: every DHT message is encoded by the sender's ``Dht`` (:mod:`zmesh.dht.messages`)
   and decoded by the receiver's ``Dht.receive``; lookups (bootstrap, refresh, replication,
   republishing, measured lookups), the routing tables and their subnet caps, the record
   stores and their budgets, the S/Kademlia puzzle on every id (every id, Sybils included,
   is solved with :func:`zmesh.dht.puzzle.solve` at :data:`PUZZLE_DIFFICULTY` and checked by
   each ``Dht``), node records signed with the real hybrid signature (Ed25519 + ML-DSA-44)
   and verified by the receiving ``Dht``.  Path choice is the production
   :class:`~zmesh.onion.paths.RelayPool` under the subnet rule, fed with what the client's
   DHT knows (the descriptors of the node records it holds for its routing-table
   entries); guards are each client's own :class:`~zmesh.onion.guards.GuardSet` over
   :func:`~zmesh.onion.guards.eligible_guards`; relays that failed are avoided through
   each client's :class:`~zmesh.health.avoid.Avoidance` (a lost link weighs
   ``LINK_FAILED``, as in the node); a failed build waits for its client's
   :class:`~zmesh.health.cbt.BuildTimes` timeout before the next try.

   *Modelled*: links carry no :class:`~zmesh.link.connection.LinkConnection` and no
   handshake.  A ``Dht``'s ``dial`` schedules :meth:`Dht.link_up` at both ends after
   :data:`DIAL_RTTS` round trips (signaling, ICE and DTLS, the link handshake); a dial to a
   node that left fails after the dialer's :data:`~zmesh.dialer.DIAL_TIMEOUT`.  A
   :class:`~zmesh.dht.service.DhtSend` is handed to the peer's ``Dht.receive`` one one-way
   latency later.  Links stay up until a node leaves; idle keepalives are not sent.  A
   node that leaves stops at once (messages to it are lost); each linked peer learns it
   after the link layer's detection delay, drawn as ``link_timeout - U(0, keepalive)``
   plus one latency (:class:`~zmesh.link.connection.LinkLimits` defaults: a keepalive every
   1 s, a link silent 3 s is closed), then gets ``Dht.link_down``.

   *Latency*: each pair of nodes has a fixed core round-trip time drawn from a log-normal
   with median :data:`RTT_MEDIAN` (150 ms) and sigma :data:`RTT_SIGMA` (0.6: 10% of pairs
   under 70 ms, 10% over 325 ms), an approximation of the pairwise RTTs of the King data
   set (Gummadi, Saroiu and Gribble, "King: Estimating Latency between Arbitrary Internet
   End Hosts", IMW 2002; the matrix of 1,740 DNS servers Vivaldi was evaluated on, Dabek
   et al., SIGCOMM 2004), whose RTTs are unimodal with a long right tail and a median in
   the 100-200 ms range; the parameters are chosen by hand to that shape, not fitted to
   the matrix, which is not available here.  Each end adds an access delay one way:
   :data:`ACCESS_NATIVE` for a native relay on a server, :data:`ACCESS_BROWSER` for a
   browser node on a home connection.  Half of the nodes are native, half browsers.

   *Crypto stand-in* (labelled ``fast_crypto`` in the report): nodes' generators are
   :class:`~zmesh.sim.dht.FastCryptoRng`, so ML-DSA signing draws its randomness from the
   OS (real signatures, same sizes, different bytes from run to run: no signature byte
   enters the digest); and for the duration of the run two *pure* functions are memoized
   across the simulated nodes: :func:`zmesh.crypto.signing.verify` (a signature that
   verified once for one node verifies for the next: the verdict is the real one, computed
   once) and the record decoder the DHT messages use (:func:`zmesh.dht.records.decode_record`:
   the same bytes give one shared immutable :class:`~zmesh.dht.records.Record`, which keeps
   10,000 nodes' copies of the same records in memory once).  Both are restored on exit.

   *Hostile nodes* (``adversary``: that fraction of the nodes, and of the newcomers that
   replace leavers) run the real ``Dht`` for their own upkeep and answer PING and STORE,
   but never answer a lookup honestly: half of them drop every FIND_NODE and FIND_VALUE
   (the asker waits for its timeout), the other half answer each with ``k`` fake contacts
   closer to the target than anyone, ids that pass the puzzle but name no node (the asker
   cannot describe them, so each costs a failed request).  In circuits they relay
   correctly (a passive, colluding adversary, as TorPS's).

   *Sybils* (``sybil``): extra identities in ``sybil_subnets`` IPv4 /24 networks (each in
   its own /16), every one solving the puzzle, joining during the ramp like any node, never
   leaving, claiming the EXIT flag, and behaving well in the DHT (answering every lookup
   truthfully), which is what gets an id into other nodes' tables and samples.  They are
   new (first seen at their join), so the guard age rule applies to them.

   *Churn* (``churn``): per simulated hour that fraction of the nodes leaves, at uniformly
   drawn times, each replaced at once by a newcomer of the same kind that links to
   :data:`JOIN_LINKS` native nodes (its operator's bootstrap list) and bootstraps.  As in
   :mod:`zmesh.sim.anonymity`, native relays leave at the rate of a mean lifetime of a year
   and browser nodes take the other departures; the nodes of the start have been in the
   network for a time drawn from that stationary lifetime (what the guard age rule reads).

   *Start*: the initial nodes come up one by one over a ramp of ``min(duration / 4, 600
   s)``, each linking to :data:`JOIN_LINKS` earlier nodes and bootstrapping through the
   real protocol; measurements start a minute after the ramp.

   *Workload*: ``lookups`` lookups (:meth:`Dht.lookup_node`) of a random live honest node's
   id from another, at uniform times; a success is the target itself among the answers,
   closest first.  ``circuits`` circuit requests from random live honest nodes: up to
   :data:`MAX_ATTEMPTS` paths drawn with the production code, each failing if a hop has
   left (the client's table still lists it); a successful build takes one round trip over
   the path (Sphinx setup: CREATE out, CREATED back, D8), plus a dial of :data:`DIAL_RTTS`
   round trips for each hop pair not linked, plus per-hop processing
   (:data:`HOP_NATIVE`: a CREATE through a CPython node, D40; :data:`HOP_BROWSER` for a
   browser hop).  Circuits do not add DHT links.

   ``bytes_per_node_per_s``: the DHT message bytes each node sent and received (its
   ``Dht.stats``, link-up record exchange included), summed over the honest and hostile
   nodes (not Sybils) and divided by their summed time in the network.

2. **Anonymity over ``anonymity_days`` days**: :func:`zmesh.sim.anonymity.simulate_anonymity`
   with the run's node count, adversary fraction, churn and seed (TorPS, Johnson et al.,
   CCS 2013).

Deterministic: the same :class:`ScaleConfig` gives the same :attr:`ScaleReport.digest`,
a SHA-256 over every measured outcome (lookups, circuits, each node's byte counts) and the
anonymity run's digest; wall time and signature bytes never enter it.
"""

import hashlib
import heapq
import math
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from functools import partial

from ..crypto import signing
from ..dht import messages
from ..dht import puzzle as dht_puzzle
from ..dht.messages import (
    FindNode,
    MessageType,
    Nodes,
    Value,
    decode_message,
    encode_message,
)
from ..dht.records import Record
from ..dht.routing import ID_SIZE, Contact, K
from ..dht.service import Dht, DhtConfig, DhtSend, LookupDone
from ..dialer import DIAL_TIMEOUT
from ..errors import LocalProtocolError, RemoteProtocolError
from ..health.avoid import Avoidance
from ..health.cbt import BuildTimes
from ..identity import Descriptor, Flags, Identity
from ..link.connection import LinkLimits
from ..onion.guards import HOUR, GuardSet, eligible_guards
from ..onion.paths import NoPathError, RelayPool, subnet_of
from ..rng import DeterministicRng, Rng, randbelow
from .anonymity import AnonymityConfig, simulate_anonymity
from .dht import FastCryptoRng

DAY = 24 * HOUR
PORT = 9000
PUZZLE_DIFFICULTY = 4  # every id solves it (16 tries, ~1 ms); production's is not set yet (D39)
RTT_MEDIAN = 0.150  # seconds: the core round trip of a median pair (King data set, see doc)
RTT_SIGMA = 0.6
ACCESS_NATIVE = 0.002  # one-way access delay of a server
ACCESS_BROWSER = 0.015  # of a browser on a home connection
DIAL_RTTS = 4  # signaling, ICE + DTLS (2), the link handshake
HOP_NATIVE = 0.0001  # a CREATE through a CPython node (docs/decisions.md D40: 1.61 x 62 us)
HOP_BROWSER = 0.001  # the same in Pyodide (WebAssembly crypto, about 10x)
MAX_ATTEMPTS = 3  # paths tried for one circuit request
JOIN_LINKS = 3  # bootstrap links of a joining node
LINK_FAILED = 8.0  # avoidance weight of a peer whose link failed (as zmesh.node.LINK_FAILED)
NATIVE_FRACTION = 0.5
EXIT_FRACTION = 0.3  # of native nodes
NATIVE_LIFETIME_DAYS = 365.0
MAX_RAMP = 600.0
SETTLE = 60.0  # measurements start this long after the ramp
MAX_NODES = 100_000
MAX_SYBIL = 1_000_000
ANONYMITY_CLIENTS = 300

# the kinds of events on the heap
_DELIVER, _LINK_UP, _DIAL_FAILED, _LINK_DOWN, _TIMER, _JOIN, _LEAVE, _LOOKUP, _CIRCUIT = range(9)
_HONEST, _DROPPER, _LIAR = range(3)
_LOOKUP_TYPES = (MessageType.FIND_NODE, MessageType.FIND_VALUE)


@dataclass(frozen=True, slots=True)
class ScaleConfig:
    """The arguments of ``zmesh sim`` (see the module doc); ``lookups`` and ``circuits``
    default to half the nodes, between 100 and 2,000."""

    nodes: int
    duration: float
    churn: float = 0.0
    adversary: float = 0.0
    sybil: int = 0
    sybil_subnets: int = 0
    anonymity_days: float = 30.0
    no_guards: bool = False
    seed: int = 1
    lookups: int | None = None
    circuits: int | None = None
    anonymity_clients: int = ANONYMITY_CLIENTS

    def __post_init__(self) -> None:
        """Raises ValueError for a run that cannot be simulated."""
        if not 10 <= self.nodes <= MAX_NODES:
            raise ValueError(f"nodes must be between 10 and {MAX_NODES}")
        if not 60 <= self.duration <= 7 * DAY:
            raise ValueError("duration must be between 60 s and 7 days")
        if not 0 <= self.churn <= 10:
            raise ValueError("churn must be between 0 and 10 (fraction of nodes per hour)")
        if not 0 <= self.adversary < 1:
            raise ValueError("adversary must be in [0, 1)")
        if not 0 <= self.sybil <= MAX_SYBIL:
            raise ValueError(f"sybil must be between 0 and {MAX_SYBIL}")
        if self.sybil and not 1 <= self.sybil_subnets <= 256:
            raise ValueError("--sybil needs --sybil-subnets between 1 and 256")
        if not self.sybil and self.sybil_subnets:
            raise ValueError("--sybil-subnets needs --sybil")
        if not 0 < self.anonymity_days <= 3650:
            raise ValueError("anonymity days must be in (0, 3650]")
        for name in ("lookups", "circuits"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 1_000_000:
                raise ValueError(f"{name} must be between 1 and 1,000,000")
        if not 1 <= self.anonymity_clients <= 100_000:
            raise ValueError("anonymity clients must be between 1 and 100,000")

    @property
    def lookup_count(self) -> int:
        return self.lookups if self.lookups is not None else min(2000, max(100, self.nodes // 2))

    @property
    def circuit_count(self) -> int:
        return self.circuits if self.circuits is not None else min(2000, max(100, self.nodes // 2))


@dataclass(frozen=True, slots=True)
class ScaleReport:
    """What ``zmesh sim --json`` writes: the issue's keys, then details."""

    nodes: int
    simulated_s: float
    wall_s: float
    digest: str
    lookup_success: float
    lookup_hops_median: float
    lookup_latency_ms_median: float
    circuit_success: float
    circuit_build_ms_median: float
    adversary_fraction: float
    guards_per_client: int
    anonymity_days: float
    circuits_compromised: float
    clients_deanonymized: float
    clients_deanonymized_no_guards: float
    sybil_path_share: float
    sybil_guard_share: float
    bytes_per_node_per_s: float
    # details
    churn: float
    sybil: int
    sybil_subnets: int
    no_guards: bool
    seed: int
    fast_crypto: bool
    puzzle_difficulty: int
    lookups: int
    lookup_rpcs_median: float
    lookup_latency_ms_p90: float
    circuits: int
    circuit_first_try: float
    circuit_build_ms_p90: float
    bytes_per_node_per_s_second_half: float
    nodes_joined: int
    nodes_left: int
    links_per_node_median: float
    table_size_median: float
    events: int
    anonymity_clients: int
    anonymity_wall_s: float
    control_wall_s: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# -- the pure functions memoized across simulated nodes -----------------------------------


@contextmanager
def shared_pure_functions() -> Iterator[None]:
    """Memoize :func:`zmesh.crypto.signing.verify` and the DHT messages' record decoder for
    the duration (see the module doc), then restore them."""
    verify = signing.verify
    decode: Callable[[bytes], Record] = getattr(messages, "decode_record")  # noqa: B009
    verdicts: dict[bytes, bool] = {}
    records: dict[bytes, Record] = {}

    def verify_once(public: bytes, signature: bytes, message: bytes, context: bytes) -> bool:
        h = hashlib.blake2b(digest_size=20)
        for part in (public, signature, context):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        h.update(message)
        key = h.digest()
        verdict = verdicts.get(key)
        if verdict is None:
            verdict = verdicts[key] = verify(public, signature, message, context)
        return verdict

    def decode_once(data: bytes) -> Record:
        record = records.get(data)
        if record is None:
            record = records[data] = decode(data)
        return record

    setattr(signing, "verify", verify_once)  # noqa: B010 (a module attribute, restored below)
    setattr(messages, "decode_record", decode_once)  # noqa: B010
    try:
        yield
    finally:
        setattr(signing, "verify", verify)  # noqa: B010
        setattr(messages, "decode_record", decode)  # noqa: B010


# -- the nodes -------------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
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
class _LookupOutcome:
    origin: int
    target: int
    success: bool
    rounds: int
    rpcs: int
    latency: float


@dataclass(frozen=True, slots=True)
class _CircuitOutcome:
    client: int
    success: bool
    attempts: int
    build: float
    paths: tuple[tuple[int, int, int], ...]


def _uniform(rng: Rng) -> float:
    """A float in [0, 1) from 53 random bits."""
    return randbelow(rng, 1 << 53) / (1 << 53)


class _Run:
    """One control-plane run: the nodes, the event heap and the measurements."""

    def __init__(self, cfg: ScaleConfig, progress: Callable[[str, int, int], None] | None):
        self.cfg = cfg
        self.progress = progress
        self.root = DeterministicRng(cfg.seed, b"zmesh-sim-scale")
        self.rng = self.root.fork(b"world")
        self.now = 0.0
        self.heap: list[tuple[float, int, int, int, int, bytes]] = []
        self.seq = 0
        self.events = 0
        self.nodes: list[_Node] = []
        self.by_id: dict[bytes, int] = {}
        self.first_seen: dict[bytes, float] = {}
        self.limits = LinkLimits()
        self.dht_config = DhtConfig(puzzle_difficulty=PUZZLE_DIFFICULTY)
        self.subnets = max(16, cfg.nodes // 2)
        self.ramp = min(cfg.duration / 4, MAX_RAMP)
        self.start = min(self.ramp + SETTLE, cfg.duration / 2)
        self.lookups: dict[tuple[int, int], tuple[int, float]] = {}
        self.lookup_results: list[_LookupOutcome] = []
        self.circuit_results: list[_CircuitOutcome] = []
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
    def push(self, t: float, kind: int, a: int, b: int = 0, data: bytes = b"") -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b, data))

    def run(self) -> None:
        cfg = self.cfg
        self._schedule()
        end = cfg.duration
        half = end / 2
        step = max(1.0, end / 200)
        next_report = 0.0
        handlers: dict[int, Callable[[int, int, bytes], None]] = {
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
                self.half_bytes, self.half_seconds = self._bytes_and_seconds(half)
            self.now = t
            self.events += 1
            handlers[kind](a, b, data)
            if self.progress is not None and t >= next_report:
                next_report = t + step
                self.progress("control", int(t), int(end))
        self.now = end
        if self.half_bytes is None:
            self.half_bytes, self.half_seconds = self._bytes_and_seconds(half)
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
        )
        sybil = sybil_subnet is not None
        node = _Node(index, identity, desc, dht, rng, native, behaviour, sybil, first_seen, 0.0)
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

    def _link_up(self, a: int, b: int, _: bytes) -> None:
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

    def _dial_failed(self, a: int, b: int, _: bytes) -> None:
        node = self.nodes[a]
        node.dialing.pop(b, None)
        if node.alive and b not in node.links:
            node.dht.dial_failed(self.nodes[b].node_id, self.now)
            self._drain(node)

    def _link_down(self, a: int, b: int, _: bytes) -> None:
        node = self.nodes[a]
        if node.alive and node.links.pop(b, None) is not None:
            peer = self.nodes[b].node_id
            node.avoidance.failed(peer, self.now, LINK_FAILED)
            node.dht.link_down(peer, self.now)
            self._drain(node)

    # -- messages --------------------------------------------------------------------------
    def _drain(self, node: _Node) -> None:
        """Carry out a node's Dht effects, then re-arm its timer."""
        dht = node.dht
        now = self.now
        while (event := dht.next_event()) is not None:
            if isinstance(event, DhtSend):
                peer = self.by_id[event.peer_id]
                latency = node.links.get(peer)
                if latency is not None:
                    self.push(now + latency, _DELIVER, peer, node.index, event.data)
            elif isinstance(event, LookupDone):
                self._lookup_done(node, event)
        timer = max(dht.get_timer(), now + 1e-3)
        if timer != node.timer_at:
            node.timer_at = timer
            if timer < math.inf:
                self.push(timer, _TIMER, node.index)

    def _deliver(self, dst: int, src: int, data: bytes) -> None:
        node = self.nodes[dst]
        if not node.alive or src not in node.links:
            return  # it left, or the link went down: lost
        sender = self.nodes[src].node_id
        if node.behaviour != _HONEST and data[1] in _LOOKUP_TYPES:
            self._misbehave(node, src, data)
            return
        with suppress(RemoteProtocolError):  # a node would close the link; none sends garbage
            node.dht.receive(sender, data, self.now)
        self._drain(node)

    def _misbehave(self, node: _Node, src: int, data: bytes) -> None:
        """A hostile node's answer to a lookup request: none, or fake contacts."""
        node.dht.stats.bytes_in += len(data)
        if node.behaviour == _DROPPER:
            return
        msg = decode_message(data)
        target = msg.target if isinstance(msg, FindNode) else getattr(msg, "key", b"")
        fakes = tuple(self._fake_contact(node, target) for _ in range(K))
        reply = (
            Nodes(msg.request_id, fakes)
            if isinstance(msg, FindNode)
            else Value(msg.request_id, (), fakes)
        )
        out = encode_message(reply)
        node.dht.stats.bytes_out += len(out)
        self.push(self.now + node.links[src], _DELIVER, src, node.index, out)

    def _fake_contact(self, node: _Node, target: bytes) -> Contact:
        """An id closer to ``target`` than almost anyone, solving the puzzle, naming no node."""
        while True:
            fake = target[:20] + node.rng.bytes(ID_SIZE - 20)
            if dht_puzzle.satisfies(fake, PUZZLE_DIFFICULTY):
                host = f"198.51.{randbelow(node.rng, 256)}.{1 + randbelow(node.rng, 254)}"
                return Contact(fake, f"http://{host}:{PORT}", self.now)

    def _timer(self, a: int, _: int, __: bytes) -> None:
        node = self.nodes[a]
        if not node.alive or self.now != node.timer_at:
            return
        node.timer_at = math.inf
        node.dht.handle_timer(self.now)
        self._drain(node)

    # -- churn -----------------------------------------------------------------------------
    def _join_event(self, a: int, _: int, __: bytes) -> None:
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

    def _leave_event(self, _: int, __: int, ___: bytes) -> None:
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
        self._join_event(index, 0, b"")

    def _leave(self, node: _Node) -> None:
        node.alive = False
        node.left = self.now
        self.up.remove(node.index)
        if node.native:
            self.up_natives.remove(node.index)
        self.left_count += 1
        keepalive, timeout = self.limits.keepalive, self.limits.timeout
        for peer, latency in node.links.items():
            delay = timeout - _uniform(self.rng) * keepalive + latency
            self.push(self.now + delay, _LINK_DOWN, peer, node.index)
        node.links.clear()

    # -- lookups ---------------------------------------------------------------------------
    def _honest_node(self) -> _Node | None:
        """A random honest node that has been up for SETTLE seconds (None if none found)."""
        settled = self.now - SETTLE
        if not self.up:
            return None
        for _attempt in range(1000):
            node = self.nodes[self.up[randbelow(self.rng, len(self.up))]]
            if node.behaviour == _HONEST and node.joined <= settled:
                return node
        return None

    def _lookup_event(self, _: int, __: int, ___: bytes) -> None:
        origin, target = self._honest_node(), self._honest_node()
        if origin is None or target is None or origin is target:
            return
        try:
            lookup_id = origin.dht.lookup_node(target.node_id, self.now)
        except LocalProtocolError:
            self.lookup_results.append(_LookupOutcome(origin.index, target.index, False, 0, 0, 0))
            return
        self.lookups[(origin.index, lookup_id)] = (target.index, self.now)
        self._drain(origin)

    def _lookup_done(self, node: _Node, event: LookupDone) -> None:
        measured = self.lookups.pop((node.index, event.lookup_id), None)
        if measured is None:
            return
        target = self.nodes[measured[0]].node_id
        found = any(c.node_id == target for c in event.closest[:1])
        self.lookup_results.append(
            _LookupOutcome(node.index, measured[0], found, event.rounds, event.rpcs, event.elapsed)
        )

    # -- circuits --------------------------------------------------------------------------
    def _circuit_event(self, _: int, __: int, ___: bytes) -> None:
        client = self._honest_node()
        if client is not None:
            self.circuit_results.append(self._build(client))

    def _known_relays(self, client: _Node) -> list[Descriptor]:
        """What the client's DHT can describe: its table entries' node records."""
        out = []
        for contact in client.dht.table.contacts():
            record = client.dht.node_record(contact.node_id)
            if record is not None:
                out.append(record.descriptor)
        return out

    def _build(self, client: _Node) -> _CircuitOutcome:
        """Up to MAX_ATTEMPTS paths for one circuit request (see the module doc)."""
        now = self.now
        elapsed = 0.0
        paths: list[tuple[int, int, int]] = []
        relays = self._known_relays(client)
        pool = RelayPool(relays, client.node_id, subnet_of)
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
            return _CircuitOutcome(client.index, True, attempt, elapsed + build, tuple(paths))
        return _CircuitOutcome(client.index, False, MAX_ATTEMPTS, elapsed, tuple(paths))

    # -- figures ---------------------------------------------------------------------------
    def _bytes_and_seconds(self, until: float) -> tuple[int, float]:
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


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _p90(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))]


def simulate(
    cfg: ScaleConfig,
    *,
    clock: Callable[[], float] = lambda: 0.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> ScaleReport:
    """Run the control plane and the anonymity run of the module doc; ``clock`` (the
    driver's wall clock, for ``wall_s`` only) and ``progress(phase, done, total)`` are the
    caller's.  Raises ValueError for a bad configuration (at :class:`ScaleConfig`)."""
    t0 = clock()
    with shared_pure_functions():
        run = _Run(cfg, progress)
        run.run()
    t1 = clock()
    anonymity = simulate_anonymity(
        AnonymityConfig(
            relays=cfg.nodes,
            clients=min(cfg.anonymity_clients, cfg.nodes),
            days=cfg.anonymity_days,
            adversary=cfg.adversary,
            churn=min(cfg.churn, 1.0),
            seed=cfg.seed,
        ),
        None if progress is None else partial(_anonymity_progress, progress),
    )
    t2 = clock()
    lookups = run.lookup_results
    circuits = run.circuit_results
    total_bytes, seconds = run._bytes_and_seconds(cfg.duration)
    half_bytes = run.half_bytes or 0
    second_half = (total_bytes - half_bytes) / max(1e-9, seconds - run.half_seconds)
    positions = sybil_positions = 0
    for outcome in circuits:
        for path in outcome.paths:
            positions += len(path)
            sybil_positions += sum(run.nodes[i].sybil for i in path)
    slots = sybil_slots = 0
    for n in run.nodes:
        if n.guards is not None:
            for g in n.guards.guards:
                slots += 1
                sybil_slots += run.nodes[run.by_id[g.node_id]].sybil
    live = [n for n in run.nodes if n.alive and not n.sybil]
    digest = hashlib.sha256(repr(_digest_config(cfg)).encode())
    for lo in lookups:
        digest.update(
            b"L%d:%d:%d:%d:%d:%d;"
            % (lo.origin, lo.target, lo.success, lo.rounds, lo.rpcs, round(lo.latency * 1e6))
        )
    for co in circuits:
        digest.update(
            b"C%d:%d:%d:%d:%r;"
            % (co.client, co.success, co.attempts, round(co.build * 1e6), co.paths)
        )
    for n in run.nodes:
        digest.update(b"N%d:%d:%d;" % (n.index, n.dht.stats.bytes_in, n.dht.stats.bytes_out))
    digest.update(anonymity.digest.encode())
    builds = [c.build * 1000 for c in circuits if c.success]
    latencies = [lo.latency * 1000 for lo in lookups]
    return ScaleReport(
        nodes=cfg.nodes,
        simulated_s=cfg.duration,
        wall_s=round(t2 - t0, 3),
        digest=digest.hexdigest(),
        lookup_success=sum(lo.success for lo in lookups) / len(lookups) if lookups else 0.0,
        lookup_hops_median=_median([float(lo.rounds) for lo in lookups]),
        lookup_latency_ms_median=_median(latencies),
        circuit_success=sum(c.success for c in circuits) / len(circuits) if circuits else 0.0,
        circuit_build_ms_median=_median(builds),
        adversary_fraction=anonymity.adversary_fraction,
        guards_per_client=0 if cfg.no_guards else anonymity.guards_per_client,
        anonymity_days=cfg.anonymity_days,
        circuits_compromised=(
            anonymity.circuits_compromised_no_guards
            if cfg.no_guards
            else anonymity.circuits_compromised
        ),
        clients_deanonymized=(
            anonymity.clients_deanonymized_no_guards
            if cfg.no_guards
            else anonymity.clients_deanonymized
        ),
        clients_deanonymized_no_guards=anonymity.clients_deanonymized_no_guards,
        sybil_path_share=sybil_positions / positions if positions else 0.0,
        sybil_guard_share=sybil_slots / slots if slots else 0.0,
        bytes_per_node_per_s=total_bytes / seconds if seconds else 0.0,
        churn=cfg.churn,
        sybil=cfg.sybil,
        sybil_subnets=cfg.sybil_subnets,
        no_guards=cfg.no_guards,
        seed=cfg.seed,
        fast_crypto=True,
        puzzle_difficulty=PUZZLE_DIFFICULTY,
        lookups=len(lookups),
        lookup_rpcs_median=_median([float(lo.rpcs) for lo in lookups]),
        lookup_latency_ms_p90=_p90(latencies),
        circuits=len(circuits),
        circuit_first_try=(
            sum(c.success and c.attempts == 1 for c in circuits) / len(circuits)
            if circuits
            else 0.0
        ),
        circuit_build_ms_p90=_p90(builds),
        bytes_per_node_per_s_second_half=second_half,
        nodes_joined=run.joined_count,
        nodes_left=run.left_count,
        links_per_node_median=_median([float(len(n.links)) for n in live]),
        table_size_median=_median([float(len(n.dht.table)) for n in live]),
        events=run.events,
        anonymity_clients=min(cfg.anonymity_clients, cfg.nodes),
        anonymity_wall_s=round(t2 - t1, 3),
        control_wall_s=round(t1 - t0, 3),
    )


def _digest_config(cfg: ScaleConfig) -> tuple[object, ...]:
    return (
        cfg.nodes,
        cfg.duration,
        cfg.churn,
        cfg.adversary,
        cfg.sybil,
        cfg.sybil_subnets,
        cfg.anonymity_days,
        cfg.no_guards,
        cfg.seed,
        cfg.lookup_count,
        cfg.circuit_count,
        cfg.anonymity_clients,
    )


def _anonymity_progress(progress: Callable[[str, int, int], None], done: int, total: int) -> None:
    progress("anonymity", done, total)


__all__ = ["PUZZLE_DIFFICULTY", "ScaleConfig", "ScaleReport", "shared_pure_functions", "simulate"]
