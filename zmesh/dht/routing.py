"""The Kademlia routing table: k-buckets over the XOR metric, with subnet caps.

Theory of operation (Maymounkov and Mazières, IPTPS 2002, sections 2.2 and 4.1):

* Ids are 256-bit; the distance between two ids is their XOR read as an integer.  Bucket
  ``i`` holds the contacts whose distance from our own id has its highest set bit at
  ``i`` (so bucket 255 covers half the id space and bucket 0 a single id).
* A bucket holds at most ``k`` entries, least recently seen first.  A contact we hear from
  moves to the tail.  A newcomer for a full bucket does **not** evict anyone (old live
  contacts are the most likely to stay up, section 2.2): it waits in the bucket's bounded
  replacement cache, and the table asks the driver (a :class:`PingContact` effect) to
  check the least recently seen entry if that entry has not been heard from for
  ``ping_after`` seconds.  An entry leaves only when RPCs to it fail (:meth:`failed`):
  at once if a replacement is waiting, else after ``max_failures`` failures in a row
  (section 4.1), and the most recently seen replacement that fits the caps takes its slot.
* Only contacts that proved themselves live belong here (a response, a request we
  verified): contacts merely named in someone's answer go to a lookup's shortlist, not to
  the table, as in libp2p's Kademlia.

Sybil bounds (S/Kademlia section 4; issue 9): a bucket holds at most
``subnet_bucket_cap`` entries (and as many replacements) from one /24 (IPv4) or /48 (IPv6),
and the whole table at most ``subnet_table_cap`` from one subnet.  A contact without an
address is its own subnet of one; a host name (not an IP literal) is its own subnet.  A
private mesh whose relays all sit on loopback passes ``subnet_bucket_cap=None`` to waive
the caps.  The table is bounded: 256 buckets of ``k`` entries and ``replacements`` cached.

Maintenance: :meth:`handle_timer` emits :class:`RefreshBucket` for a bucket nobody touched
for ``refresh_interval`` (the driver runs a lookup for the random target it carries), as
Kademlia's hourly bucket refresh.
"""

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from operator import itemgetter
from urllib.parse import urlsplit

from ..errors import LocalProtocolError
from ..rng import Rng

ID_SIZE = 32
ID_BITS = ID_SIZE * 8
K = 20
SUBNET_BUCKET_CAP = 2  # entries per /24 or /48 in one bucket (and in its replacement cache)
SUBNET_TABLE_CAP = 10  # entries per /24 or /48 in the whole table
MAX_FAILURES = 5  # failed RPCs in a row before an entry leaves with no replacement waiting
PING_AFTER = 15 * 60.0  # an entry not heard from for this long is "questionable" (BEP 5)
REFRESH_INTERVAL = 3600.0
SUBNET_CACHE = 1 << 15  # addresses whose subnet is remembered (parsing one costs ~20 us;
# process-wide: the simulator's 12,000 nodes share it)
REFRESH_CHECK = 60.0
MAX_REFRESH_PER_SWEEP = 16
_first = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Contact:
    """A node we may send RPCs to: its 32-byte id, its address (if known), when last seen."""

    node_id: bytes
    address: str | None
    seen: float


@dataclass(frozen=True, slots=True)
class PingContact:
    """Effect: check that ``contact`` is still up (a full bucket has a newcomer waiting).
    Answer with :meth:`RoutingTable.seen` or :meth:`RoutingTable.failed`."""

    contact: Contact


@dataclass(frozen=True, slots=True)
class RefreshBucket:
    """Effect: run a lookup for ``target``, a random id in a bucket nobody touched lately."""

    target: bytes


Event = PingContact | RefreshBucket


def distance(a: bytes, b: bytes) -> int:
    """The Kademlia XOR distance between two ids, as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own_id: bytes, node_id: bytes) -> int:
    """The bucket ``node_id`` falls in, from ``own_id``: the highest bit of the distance
    (0..255); raises LocalProtocolError for our own id, which has no bucket."""
    d = distance(own_id, node_id)
    if d == 0:
        raise LocalProtocolError("our own id has no bucket")
    return d.bit_length() - 1


@lru_cache(maxsize=SUBNET_CACHE)
def subnet_of(address: str | None) -> str | None:
    """The group ``address`` counts against: its IPv4 /24 or IPv6 /48 (an IPv4-mapped IPv6
    address counts as IPv4), a lower-cased host name, or None (no address: a group of one).

    Accepts a bare IP, ``host:port``, ``[v6]:port`` or a URL such as ``ws://1.2.3.4:9000``.
    """
    if not address:
        return None
    host = address
    if "://" in address:
        try:
            host = urlsplit(address).hostname or ""
        except ValueError:
            host = ""
    elif address.startswith("["):
        host = address[1:].split("]", 1)[0]
    elif address.count(":") == 1:
        host = address.split(":", 1)[0]
    try:
        ip = ip_address(host)
    except ValueError:
        return "name:" + host.lower() if host else "raw:" + address
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, IPv4Address):
        return str(ip_network(f"{ip}/24", strict=False))
    return str(ip_network(f"{ip}/48", strict=False))


@dataclass(slots=True)
class _Entry:
    contact: Contact
    subnet: str
    key: int = 0  # the id as an integer (set once: XOR distances are taken on it)
    failures: int = 0
    pinged: float = float("-inf")

    def __post_init__(self) -> None:
        self.key = int.from_bytes(self.contact.node_id, "big")


@dataclass(slots=True)
class _Bucket:
    entries: "OrderedDict[bytes, _Entry]" = field(default_factory=OrderedDict)  # LRS first
    cache: "OrderedDict[bytes, _Entry]" = field(default_factory=OrderedDict)  # oldest first
    touched: float = 0.0


class RoutingTable:
    """The k-buckets of one node: ``seen``/``failed`` in, ``closest`` out, effects by
    ``next_event`` (the component shape: ``get_timer``/``handle_timer``/``next_event``)."""

    def __init__(
        self,
        own_id: bytes,
        rng: Rng,
        now: float,
        *,
        k: int = K,
        replacements: int = K,
        subnet_bucket_cap: int | None = SUBNET_BUCKET_CAP,
        subnet_table_cap: int | None = SUBNET_TABLE_CAP,
        max_failures: int = MAX_FAILURES,
        ping_after: float = PING_AFTER,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        if len(own_id) != ID_SIZE:
            raise LocalProtocolError(f"node ids are {ID_SIZE} bytes")
        self.own_id = own_id
        self._own_int = int.from_bytes(own_id, "big")
        self._rng = rng
        self.k = k
        self._replacements = replacements
        self._bucket_cap = subnet_bucket_cap
        self._table_cap = subnet_table_cap
        self._max_failures = max_failures
        self._ping_after = ping_after
        self._refresh_interval = refresh_interval
        self._buckets: dict[int, _Bucket] = {}
        self._subnets: dict[str, int] = {}  # subnet -> entries in buckets (not caches)
        self._count = 0
        self._events: deque[Event] = deque()
        self._next_check = now + REFRESH_CHECK
        self._created = now

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float:
        return self._next_check

    def handle_timer(self, now: float) -> None:
        """Emit :class:`RefreshBucket` for stale buckets (at most 16 per sweep, the
        deepest first), from the farthest bucket down to the deepest non-empty one."""
        if now < self._next_check:
            return
        self._next_check = now + REFRESH_CHECK
        if not self._buckets:
            return
        deepest = min(i for i, b in self._buckets.items() if b.entries)
        # the sweep below emits only if some bucket from ``deepest`` up is stale: find the
        # oldest touch first (one pass over the buckets that exist, not 256 indices)
        present = [b.touched for i, b in self._buckets.items() if i >= deepest]
        if len(present) < ID_BITS - deepest:
            present.append(self._created)  # a bucket never made counts from our start
        if now - min(present) < self._refresh_interval:
            return
        emitted = 0
        for index in range(deepest, ID_BITS):
            bucket = self._buckets.get(index)
            touched = bucket.touched if bucket is not None else self._created
            if now - touched < self._refresh_interval:
                continue
            if bucket is None:
                bucket = self._buckets[index] = _Bucket(touched=now)
            bucket.touched = now
            self._events.append(RefreshBucket(self.random_id_in_bucket(index)))
            emitted += 1
            if emitted >= MAX_REFRESH_PER_SWEEP:
                break

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, bytes) and self.get(node_id) is not None

    @property
    def capacity(self) -> int:
        """The most entries the table can ever hold (replacement caches aside)."""
        return ID_BITS * self.k

    def get(self, node_id: bytes) -> Contact | None:
        """The entry for ``node_id`` (not a cached replacement), if any."""
        bucket = self._bucket_of(node_id)
        entry = bucket.entries.get(node_id) if bucket is not None else None
        return entry.contact if entry is not None else None

    def contacts(self) -> list[Contact]:
        """Every entry, bucket by bucket (farthest bucket first), least recently seen first."""
        return [
            e.contact
            for index in sorted(self._buckets, reverse=True)
            for e in self._buckets[index].entries.values()
        ]

    def replacements_of(self, index: int) -> list[Contact]:
        """The replacement cache of bucket ``index``, oldest first (for tests and stats)."""
        bucket = self._buckets.get(index)
        return [e.contact for e in bucket.cache.values()] if bucket is not None else []

    def bucket(self, index: int) -> list[Contact]:
        """The entries of bucket ``index``, least recently seen first."""
        bucket = self._buckets.get(index)
        return [e.contact for e in bucket.entries.values()] if bucket is not None else []

    def closest(self, target: bytes, n: int, now: float | None = None) -> list[Contact]:
        """Up to ``n`` entries sorted by XOR distance to ``target`` (closest first).  With
        ``now``, the target's bucket counts as touched (a lookup into it is a refresh)."""
        if now is not None and target != self.own_id:
            bucket = self._buckets.get(bucket_index(self.own_id, target))
            if bucket is not None:
                bucket.touched = now
        # Per-bucket selection, not a sort of the table.  With D = own ^ target and j its
        # top bit, an entry of bucket i is at distance D ^ (its distance from us), whose top
        # bit is i's: bucket j holds the distances below 2**j; a bucket i < j those that
        # agree with D above bit i and differ at i, so closer than every bucket under it if
        # D has bit i set and farther if not; a bucket i > j the distances in
        # [2**i, 2**(i+1)).  So whole buckets come in a fixed order and only those that
        # reach ``n`` are sorted (XOR distances never tie).
        t = int.from_bytes(target, "big")
        d = t ^ self._own_int
        j = d.bit_length() - 1  # -1: the target is our own id
        buckets = self._buckets
        indices = sorted(buckets)
        order = [i for i in reversed(indices) if i < j and d >> i & 1]
        order += [i for i in indices if i < j and not d >> i & 1]
        order += [i for i in indices if i > j]
        if j in buckets:
            order.insert(0, j)
        out: list[Contact] = []
        for i in order:
            entries = buckets[i].entries
            if entries:
                pairs = sorted([(e.key ^ t, e.contact) for e in entries.values()], key=_first)
                out.extend([c for _, c in pairs])
                if len(out) >= n:
                    return out[:n]
        return out

    def rank(self, target: bytes) -> int:
        """How many entries are closer to ``target`` than our own id (so we are among the
        ``n`` closest to it that we know if this is below ``n``).  Counted per bucket, no
        sort: with D = own ^ target and j its top bit, every entry of bucket j is closer
        than we are, an entry of a bucket i < j is closer exactly if D has bit i set (its
        distance agrees with D above bit i and not at i), and buckets above j are farther
        (see :meth:`closest`)."""
        d = int.from_bytes(target, "big") ^ self._own_int
        j = d.bit_length() - 1
        return sum(
            len(b.entries) for i, b in self._buckets.items() if i == j or (i < j and d >> i & 1)
        )

    def random_id_in_bucket(self, index: int) -> bytes:
        """A random id whose distance from ours has its highest bit at ``index``."""
        noise = int.from_bytes(self._rng.bytes(ID_SIZE), "big") & ((1 << index) - 1)
        own = int.from_bytes(self.own_id, "big")
        return (own ^ ((1 << index) | noise)).to_bytes(ID_SIZE, "big")

    # -- inputs ----------------------------------------------------------------------------
    def seen(self, contact: Contact, now: float) -> bool:
        """``contact`` proved itself live (it answered, or sent a request we verified).

        Moves a known entry to the tail (an address change is taken only if the new
        subnet fits the caps; a contact without an address keeps the one its entry or
        cached replacement has); adds a newcomer if its bucket has room under the caps, else
        caches it as a replacement and may emit :class:`PingContact` for the bucket's least
        recently seen entry.  Returns True if ``contact`` is now an entry of the table.
        Raises LocalProtocolError for a malformed id (callers check ids on decoding).
        """
        node_id = contact.node_id
        if len(node_id) != ID_SIZE:
            raise LocalProtocolError(f"node ids are {ID_SIZE} bytes")
        if node_id == self.own_id:
            return False
        index = (int.from_bytes(node_id, "big") ^ self._own_int).bit_length() - 1
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket(touched=now)
        bucket.touched = max(bucket.touched, now)
        entry = bucket.entries.get(node_id)
        if entry is not None and contact.address in (None, entry.contact.address):
            # the hot path (a known entry heard from again): same address, same subnet
            entry.contact = Contact(node_id, entry.contact.address, now)
            entry.failures = 0
            bucket.entries.move_to_end(node_id)
            return True
        known = entry or bucket.cache.get(node_id)
        if contact.address is None and known is not None:
            # seen without an address (a request before we could describe the peer): not
            # knowing it is not having none, which would free its subnet's slot
            contact = Contact(node_id, known.contact.address, now)
        else:
            contact = Contact(node_id, contact.address, now)
        subnet = subnet_of(contact.address) or "id:" + node_id.hex()
        entry = bucket.entries.get(node_id)
        if entry is not None:
            if subnet != entry.subnet:
                if not self._fits(bucket, subnet, bucket.entries, table=True):
                    entry.contact = Contact(node_id, entry.contact.address, now)
                    entry.failures = 0
                    bucket.entries.move_to_end(node_id)
                    return True  # live, but the new address would break the caps
                self._subnets[entry.subnet] -= 1
                if not self._subnets[entry.subnet]:
                    del self._subnets[entry.subnet]
                self._subnets[subnet] = self._subnets.get(subnet, 0) + 1
                entry.subnet = subnet
            entry.contact, entry.failures = contact, 0
            bucket.entries.move_to_end(node_id)
            return True
        bucket.cache.pop(node_id, None)
        if len(bucket.entries) < self.k and self._fits(bucket, subnet, bucket.entries, table=True):
            self._insert(bucket, _Entry(contact, subnet))
            return True
        if self._fits(bucket, subnet, bucket.cache, table=False):
            bucket.cache[node_id] = _Entry(contact, subnet)
            while len(bucket.cache) > self._replacements:
                bucket.cache.popitem(last=False)
            if len(bucket.entries) >= self.k:
                oldest = next(iter(bucket.entries.values()))
                if (
                    now - oldest.contact.seen >= self._ping_after
                    and now - oldest.pinged >= self._ping_after
                ):
                    oldest.pinged = now
                    self._events.append(PingContact(oldest.contact))
        return False

    def failed(self, node_id: bytes, now: float) -> None:
        """An RPC to ``node_id`` failed (a timeout, a refused link).  The entry leaves at
        once if a replacement is waiting (which takes its slot), else after
        ``max_failures`` failures in a row.  A cached replacement that fails is dropped."""
        bucket = self._bucket_of(node_id)
        if bucket is None:
            return
        if bucket.cache.pop(node_id, None) is not None:
            return
        entry = bucket.entries.get(node_id)
        if entry is None:
            return
        entry.failures += 1
        if entry.failures >= self._max_failures or bucket.cache:
            self._evict(bucket, node_id)
            self._promote(bucket)

    def remove(self, node_id: bytes) -> None:
        """Forget ``node_id`` (entry or replacement), e.g. its id failed a check; a waiting
        replacement takes a freed slot."""
        bucket = self._bucket_of(node_id)
        if bucket is None:
            return
        bucket.cache.pop(node_id, None)
        if node_id in bucket.entries:
            self._evict(bucket, node_id)
            self._promote(bucket)

    # -- internals -------------------------------------------------------------------------
    def _bucket_of(self, node_id: bytes) -> _Bucket | None:
        if len(node_id) != ID_SIZE or node_id == self.own_id:
            return None
        return self._buckets.get(bucket_index(self.own_id, node_id))

    def _fits(
        self, bucket: _Bucket, subnet: str, within: "OrderedDict[bytes, _Entry]", *, table: bool
    ) -> bool:
        if subnet.startswith("id:"):
            return True
        if (
            self._bucket_cap is not None
            and sum(1 for e in within.values() if e.subnet == subnet) >= self._bucket_cap
        ):
            return False
        if table and self._table_cap is not None:
            return self._subnets.get(subnet, 0) < self._table_cap
        return True

    def _insert(self, bucket: _Bucket, entry: _Entry) -> None:
        bucket.entries[entry.contact.node_id] = entry
        self._subnets[entry.subnet] = self._subnets.get(entry.subnet, 0) + 1
        self._count += 1

    def _evict(self, bucket: _Bucket, node_id: bytes) -> None:
        entry = bucket.entries.pop(node_id)
        self._subnets[entry.subnet] -= 1
        if not self._subnets[entry.subnet]:
            del self._subnets[entry.subnet]
        self._count -= 1

    def _promote(self, bucket: _Bucket) -> None:
        """Move the most recently seen replacement that fits the caps into a free slot."""
        for node_id in reversed(bucket.cache):
            candidate = bucket.cache[node_id]
            if self._fits(bucket, candidate.subnet, bucket.entries, table=True):
                del bucket.cache[node_id]
                candidate.failures = 0
                self._insert(bucket, candidate)
                return
