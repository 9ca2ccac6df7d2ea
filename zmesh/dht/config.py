"""The DHT's configuration, bounds and outputs (:class:`~zmesh.dht.service.Dht` uses them;
``zmesh.dht.service`` re-exports them)."""

from dataclasses import dataclass
from enum import Enum

from .lookup import ALPHA
from .records import Record, RecordType
from .routing import Contact, K

RPC_TIMEOUT = 10.0  # per request, a dial (and a record fetch) included: the cap
RPC_TIMEOUT_FLOOR = 1.0  # a learned timeout is never shorter (RFC 6298's minimum RTO)
MAX_RTT_PEERS = 4096  # peers whose round-trip estimate is kept (the least recent go)
REQUEST_RATE = 20.0  # requests per second one peer may make us answer
REQUEST_BURST = 60.0
REQUEST_RATE_TOTAL = 400.0
MAX_LOOKUPS = 64
MAX_PENDING = 1024
MAX_WAITING = 256  # requests waiting for a link, in all
MAX_WAITING_PER_PEER = 8
MAX_NODE_RECORDS = 2048  # peers' node records kept to describe them to others
MAX_REFERRERS = 4096  # per lookup: which responder first named a contact
MAX_VERIFY_PER_LOOKUP = 64  # records a lookup verifies from answers
MAX_BOOTSTRAPS = 4  # bootstrap lookups tried until one reaches the k closest


@dataclass(frozen=True, slots=True)
class DhtConfig:
    k: int = K
    alpha: int = ALPHA
    disjoint_paths: int = 2
    rpc_timeout: float = RPC_TIMEOUT
    rpc_timeout_floor: float = RPC_TIMEOUT_FLOOR
    puzzle_difficulty: int = 0
    subnet_caps: bool = True  # False only for a private mesh on loopback
    publish_node_record: bool = True  # store ours at the k closest after bootstrap
    max_providers: int = 20  # a provider lookup stops once it verified this many
    request_rate: float = REQUEST_RATE
    request_burst: float = REQUEST_BURST
    request_rate_total: float = REQUEST_RATE_TOTAL
    max_lookups: int = MAX_LOOKUPS
    max_pending: int = MAX_PENDING
    max_waiting: int = MAX_WAITING
    max_waiting_per_peer: int = MAX_WAITING_PER_PEER
    max_node_records: int = MAX_NODE_RECORDS


class LookupKind(Enum):
    NODE = "node"  # lookup_node: the k closest to a target
    PROVIDERS = "providers"  # find_providers: provider records of a content id
    NODE_RECORD = "node record"  # find_node_record: a node's signed descriptor
    BOOTSTRAP = "bootstrap"  # our own id, at the first link-up
    PUBLISH = "publish"  # a record of ours, stored at the k closest when done
    REPLICATE = "replicate"  # someone's record we hold, stored again at the k closest
    REFRESH = "refresh"  # a bucket nobody used for an hour


VALUE_KINDS = {LookupKind.PROVIDERS: RecordType.PROVIDER, LookupKind.NODE_RECORD: RecordType.NODE}


@dataclass(frozen=True, slots=True)
class DhtSend:
    """Effect: send ``data`` to ``peer_id`` as a DHT link frame (the link is up)."""

    peer_id: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class LookupDone:
    """A lookup finished: the ``k`` closest that answered, the verified records found
    (providers, or a node record), sequential ``rounds``, requests sent and failed, whether
    the request bound cut it short, ``elapsed`` seconds, and STOREs sent (publishing)."""

    lookup_id: int
    kind: LookupKind
    target: bytes
    closest: tuple[Contact, ...]
    records: tuple[Record, ...]
    rounds: int
    rpcs: int
    failures: int
    exhausted: bool
    elapsed: float
    stored: int


Event = DhtSend | LookupDone


@dataclass(slots=True)
class DhtStats:
    requests_in: int = 0
    over_budget: int = 0  # requests dropped unanswered
    unsolicited: int = 0  # answers nobody asked for (or late), dropped
    requests_out: int = 0
    failed: int = 0  # requests out that timed out, could not be sent or were refused
    dials: int = 0
    fetches: int = 0  # node records asked of a referrer
    bytes_out: int = 0
    bytes_in: int = 0


__all__ = [
    "MAX_BOOTSTRAPS",
    "MAX_LOOKUPS",
    "MAX_NODE_RECORDS",
    "MAX_PENDING",
    "MAX_REFERRERS",
    "MAX_RTT_PEERS",
    "MAX_VERIFY_PER_LOOKUP",
    "MAX_WAITING",
    "MAX_WAITING_PER_PEER",
    "REQUEST_BURST",
    "REQUEST_RATE",
    "REQUEST_RATE_TOTAL",
    "RPC_TIMEOUT",
    "RPC_TIMEOUT_FLOOR",
    "VALUE_KINDS",
    "DhtConfig",
    "DhtSend",
    "DhtStats",
    "Event",
    "LookupDone",
    "LookupKind",
]
