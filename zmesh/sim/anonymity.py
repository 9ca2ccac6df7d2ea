"""Anonymity over weeks, as TorPS measures it for Tor (Johnson et al., "Users Get Routed:
Traffic Correlation on Tor by Realistic Adversaries", CCS 2013).

A network of ``relays`` relays, a fraction ``adversary`` of them hostile and colluding
(exits among them in the same proportion), runs for ``days`` simulated days while
``clients`` clients build circuits through it with the production code: each keeps a
:class:`~zmesh.onion.guards.GuardSet` (fed by :func:`~zmesh.onion.guards.eligible_guards`
and the relays' true first-seen times, as a client that watches the network would
record them), and draws its paths with :class:`~zmesh.onion.paths.RelayPool` under the
subnet rule (:func:`~zmesh.onion.paths.subnet_of`).  The age and subnet rules are never
waived here.  A circuit is *compromised* when its first and last hops are both hostile
(end-to-end timing correlation); a client is *deanonymized* once one of its circuits is.
The same clients also draw every circuit without guards (first hop anew per circuit),
the baseline of ``--no-guards``.

Model, each choice stated:

- **Sessions.**  Every ``interval`` seconds (default an hour, see below) a client opens
  a session of ``legs`` legs (default 2, as :data:`~zmesh.circuit.sessions.DEFAULT_LEGS`):
  the first leg through the first guard in use, the next through a different guard when
  the set has two in use (:meth:`~zmesh.onion.paths.RelayPool.leg`), all to one exit.
  Each leg counts as a circuit.  An hour, not Tor's 10 minutes: over 30 days a client
  still draws 1,440 circuits, so a client with a hostile guard meets a hostile exit
  (probability 1 - (1 - f)^1440) and a client without guards a compromised circuit
  (1 - (1 - f^2)^1440) all but surely either way, and the per-circuit fraction does not
  depend on the rate; the hour keeps 10,000 relays x 30 days within a couple of minutes.
- **Relays** are native (a daemon on a server, ``native_fraction``) or browser nodes.
  Exits are native (a browser cannot open TCP connections), ``exit_fraction`` of them.
  Exactly ``adversary`` of the native exits, of the other native relays and of the
  browser nodes are hostile at the start, so that a small run has the stated fraction
  among guards and exits alike.
  Each relay has an IPv4 address in one of ``relays // 2`` /16 subnets drawn uniformly,
  hostile relays exactly like honest ones (an adversary spread over many subnets, the
  worst case for the subnet rule).
- **Churn.**  Each hour a fraction ``churn`` of the relays leaves and as many newcomers
  join (same kind and exit flag, hostile with probability ``adversary``; first seen at
  their join).
  Native relays leave at the rate of a mean lifetime of ``native_lifetime_days`` (long-
  lived servers, as most Tor relays are) within that budget; browser nodes take the rest
  of the departures (sessions of minutes to hours).  A guard that leaves is unlisted, and
  the client's next guard serves; after 20 days the gone guard leaves the sample.
- **Ages at the start** are drawn from the stationary (exponential) lifetime of each
  kind, so that day 0 already has relays old enough to be guards.

Deterministic from ``seed`` (:class:`~zmesh.rng.DeterministicRng`, one fork per client
and one for the network): the same arguments give the same :class:`AnonymityReport`,
``digest`` included.
"""

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..identity import Flags
from ..onion.guards import HOUR, MIN_GUARD_AGE, GuardSet, eligible_guards
from ..onion.paths import NoPathError, RelayPool, subnet_of
from ..rng import DeterministicRng, Rng, randbelow

DAY = 24 * HOUR
PORT = 9000


@dataclass(frozen=True, slots=True)
class SimRelay:
    """A relay of the anonymity run: what path and guard selection read, plus the truth."""

    node_id: bytes
    flags: Flags
    addresses: tuple[str, ...]
    hostile: bool
    native: bool
    joined: float
    subnet: str  # its diversity key, subnet_of(self), taken once at its join


def _subnet(relay: SimRelay) -> str:
    """The ``subnet`` of :class:`~zmesh.onion.paths.RelayPool`: what the production
    :func:`~zmesh.onion.paths.subnet_of` gave this relay when it joined (its address never
    changes; 10,000 relays x 720 hourly pools would parse it again and again)."""
    return relay.subnet


@dataclass(frozen=True, slots=True)
class AnonymityConfig:
    relays: int = 10_000
    clients: int = 1_000
    days: float = 30.0
    adversary: float = 0.1  # fraction of relays hostile and colluding
    churn: float = 0.0  # fraction of relays leaving (and replaced) per hour
    native_fraction: float = 0.5
    native_lifetime_days: float = 365.0
    exit_fraction: float = 0.3  # of native relays
    legs: int = 2
    interval: float = HOUR  # between a client's sessions
    seed: int = 1

    def __post_init__(self) -> None:
        if self.relays < 10 or self.clients < 1 or self.legs < 1:
            raise ValueError("need at least 10 relays, 1 client and 1 leg")
        if not 0 < self.days <= 3650 or not 0 < self.interval <= HOUR:
            raise ValueError("days in (0, 3650] and interval in (0, 3600] seconds")
        if HOUR % self.interval:
            raise ValueError("interval must divide an hour")
        for name in ("adversary", "churn", "native_fraction", "exit_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.native_lifetime_days <= 0:
            raise ValueError("native_lifetime_days must be positive")


@dataclass(frozen=True, slots=True)
class AnonymityReport:
    relays: int
    clients: int
    anonymity_days: float
    adversary_fraction: float  # hostile share of the relays at the start
    churn: float
    circuits: int  # with guards, over all clients
    circuits_failed: int  # no path (no usable guard); not in circuits
    circuits_compromised: float  # fraction of circuits with hostile first and last hop
    clients_deanonymized: float  # fraction of clients with a compromised circuit
    circuits_compromised_no_guards: float
    clients_deanonymized_no_guards: float
    guards_per_client: int  # most guards one client used within one session
    guards_used_mean: float  # distinct guards per client over the whole run
    guards_used_max: int
    hostile_guard_share: float  # fraction of (client, guard) pairs with a hostile guard
    digest: str


def _uniform(rng: Rng) -> float:
    """A float in [0, 1) from 53 random bits."""
    return randbelow(rng, 1 << 53) / (1 << 53)


class _Network:
    """The relays over time: churn, newcomers, first sightings."""

    def __init__(self, cfg: AnonymityConfig, rng: DeterministicRng) -> None:
        self.cfg = cfg
        self.rng = rng
        self.subnets = max(16, cfg.relays // 2)
        self.keys: dict[int, str] = {}  # /16 drawn -> its diversity key (subnet_of)
        self.relays: dict[bytes, SimRelay] = {}
        self.hostile: set[bytes] = set()  # every hostile id that ever joined
        self.native_hazard = 1 / (cfg.native_lifetime_days * 24)  # per hour
        natives = round(cfg.relays * cfg.native_fraction)
        browsers = cfg.relays - natives
        spare = cfg.churn * cfg.relays - natives * self.native_hazard
        self.browser_hazard = spare / browsers if browsers and spare > 0 else self.native_hazard
        exits = [i < natives and _uniform(rng) < cfg.exit_fraction for i in range(cfg.relays)]
        hostile: set[int] = set()
        for kind in ((True, True), (True, False), (False, False)):  # (native, exit)
            group = [i for i in range(cfg.relays) if (i < natives, exits[i]) == kind]
            hostile.update(_pick(rng, group, round(len(group) * cfg.adversary)))
        for i in range(cfg.relays):
            native = i < natives
            hazard = self.native_hazard if native else self.browser_hazard
            age = -math.log(1 - _uniform(rng)) / hazard * HOUR  # stationary: exponential
            self._join(native, exits[i], i in hostile, -age)
        self.carry = 0.0
        self.native_carry = 0.0

    def _join(self, native: bool, exit_: bool, hostile: bool, now: float) -> None:
        rng = self.rng
        subnet = randbelow(rng, self.subnets)
        host = f"{1 + subnet // 256}.{subnet % 256}.{randbelow(rng, 256)}.{randbelow(rng, 256)}"
        flags = Flags.RELAY | Flags.EXIT if exit_ else Flags.RELAY
        addresses = (f"http://{host}:{PORT}",)
        key = self.keys.get(subnet)
        if key is None:  # every host of a /16 has its key: subnet_of reads the /16 of an IPv4
            key = self.keys[subnet] = subnet_of(_Addresses(addresses))
        relay = SimRelay(rng.bytes(32), flags, addresses, hostile, native, now, key)
        self.relays[relay.node_id] = relay
        if hostile:
            self.hostile.add(relay.node_id)

    def churn(self, now: float) -> None:
        """One hour of churn: ``churn`` of the relays leave, as many newcomers join."""
        cfg, rng = self.cfg, self.rng
        self.carry += cfg.churn * cfg.relays
        leave = int(self.carry)
        self.carry -= leave
        if not leave:
            return
        ids = sorted(self.relays)
        natives = [i for i in ids if self.relays[i].native]
        browsers = [i for i in ids if not self.relays[i].native]
        self.native_carry += len(natives) * self.native_hazard
        from_natives = min(int(self.native_carry), leave, len(natives))
        self.native_carry -= from_natives
        from_browsers = min(leave - from_natives, len(browsers))
        from_natives = leave - from_browsers
        gone = [
            *_pick(rng, natives, from_natives),
            *_pick(rng, browsers, from_browsers),
        ]
        for node_id in gone:
            relay = self.relays.pop(node_id)
            exit_ = bool(int(relay.flags) & int(Flags.EXIT))  # replaced by its like
            self._join(relay.native, exit_, _uniform(rng) < cfg.adversary, now)


@dataclass(frozen=True, slots=True)
class _Addresses:
    addresses: tuple[str, ...]


def _pick[T](rng: Rng, items: list[T], k: int) -> list[T]:
    """``k`` distinct elements of ``items``, uniformly (partial Fisher-Yates)."""
    pool = list(items)
    for i in range(k):
        j = i + randbelow(rng, len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


@dataclass(slots=True)
class _Client:
    rng: DeterministicRng
    guards: GuardSet
    used: set[bytes]
    compromised: int = 0
    compromised_no_guards: int = 0


def simulate_anonymity(
    cfg: AnonymityConfig, progress: Callable[[int, int], None] | None = None
) -> AnonymityReport:
    """Run the model of the module docstring; ``progress(hours_done, hours)`` is called
    after every simulated hour.  Raises ValueError for a bad configuration (at
    :class:`AnonymityConfig`)."""
    root = DeterministicRng(cfg.seed, b"zmesh-anonymity")
    net = _Network(cfg, root.fork(b"network"))
    clients = [
        _Client(root.fork(b"client-%d" % i), GuardSet(private=False), set())
        for i in range(cfg.clients)
    ]
    hours = math.ceil(cfg.days * 24)
    rounds = round(HOUR / cfg.interval)
    circuits = failed = bad = bad_no_guards = circuits_no_guards = 0
    most_in_use = 0
    for hour in range(hours):
        now = hour * HOUR
        if hour:
            net.churn(now)
        relays = list(net.relays.values())
        first_seen = {r.node_id: r.joined for r in relays}
        listed = first_seen.keys()
        # only relays old enough can be eligible: the same list, from fewer candidates
        old = [r for r in relays if r.joined <= now - MIN_GUARD_AGE]
        eligible = eligible_guards(old, first_seen, now, own_id=b"")
        pool = RelayPool(relays, b"", _subnet, first_seen=first_seen, now=now)
        for client in clients:
            rng = client.rng
            client.guards.update(now, rng, eligible, listed)
            for r in range(rounds):
                t = now + r * cfg.interval
                in_use = client.guards.in_use(t)
                try:
                    session = _session(rng, pool, cfg.legs, in_use)
                except NoPathError:
                    failed += cfg.legs
                    session = []
                firsts = {path[0].node_id for path in session}
                client.used |= firsts
                most_in_use = max(most_in_use, len(firsts))
                circuits += len(session)
                hit = sum(path[0].hostile and path[-1].hostile for path in session)
                client.compromised += hit
                bad += hit
                baseline = _session(rng, pool, cfg.legs, None)
                circuits_no_guards += len(baseline)
                hit = sum(path[0].hostile and path[-1].hostile for path in baseline)
                client.compromised_no_guards += hit
                bad_no_guards += hit
        if progress is not None:
            progress(hour + 1, hours)
    pairs = sum(len(c.used) for c in clients)
    hostile_pairs = sum(len(c.used & net.hostile) for c in clients)
    digest = hashlib.sha256()
    for c in clients:
        digest.update(
            b"%d:%d:%d;" % (c.compromised, c.compromised_no_guards, len(c.used))
            + b"".join(sorted(c.used))
        )
    n = len(clients)
    return AnonymityReport(
        relays=cfg.relays,
        clients=n,
        anonymity_days=cfg.days,
        adversary_fraction=round(cfg.relays * cfg.adversary) / cfg.relays,
        churn=cfg.churn,
        circuits=circuits,
        circuits_failed=failed,
        circuits_compromised=bad / circuits if circuits else 0.0,
        clients_deanonymized=sum(c.compromised > 0 for c in clients) / n,
        circuits_compromised_no_guards=bad_no_guards / circuits_no_guards,
        clients_deanonymized_no_guards=sum(c.compromised_no_guards > 0 for c in clients) / n,
        guards_per_client=most_in_use,
        guards_used_mean=pairs / n,
        guards_used_max=max(len(c.used) for c in clients),
        hostile_guard_share=hostile_pairs / pairs if pairs else 0.0,
        digest=digest.hexdigest(),
    )


def _session(
    rng: Rng, pool: RelayPool[SimRelay], legs: int, guards: list[bytes] | None
) -> list[list[SimRelay]]:
    """The paths of one session: a first leg, then legs to its exit through other
    relays where the guards and the pool allow.  NoPathError if the first leg has none."""
    first = pool.path(rng, None, (), guards)
    paths = [first]
    used = {first[0].node_id, first[1].node_id}
    for _ in range(legs - 1):
        path = pool.leg(rng, None, exit_id=first[-1].node_id, used=used, guards=guards)
        used.update((path[0].node_id, path[1].node_id))
        paths.append(path)
    return paths


__all__ = ["AnonymityConfig", "AnonymityReport", "SimRelay", "simulate_anonymity"]
