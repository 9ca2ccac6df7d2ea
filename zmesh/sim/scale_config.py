"""The configuration and the modelling constants of ``zmesh sim`` (the module doc of
:mod:`zmesh.sim.scale` says what they mean and why each value)."""

from dataclasses import dataclass

from ..onion.guards import HOUR

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
ANONYMITY_CLIENTS = 4000  # standard error about 0.006 at 0.2 (the bound's margin is 0.02)


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


__all__ = ["DAY", "MAX_NODES", "MAX_SYBIL", "PUZZLE_DIFFICULTY", "ScaleConfig"]
