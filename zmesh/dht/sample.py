"""Peer sampling through the DHT: a bounded, continuously refreshed random sample of relays.

Without flooding, a node knows its DHT neighbourhood and this sample, and picks its paths
(and guards) from the sample (issue 9, item 2).

Theory of operation:

- **Random walks.**  Every ``walk_interval`` (``fill_interval`` while the sample has
  empty slots) the sample looks up a random id through the :class:`~zmesh.dht.service.Dht`.
  The nodes that answered a lookup of a random target are a near-uniform sample of the
  network, as ids are uniform (King and Saia, "Choosing a random peer", PODC 2004, sample
  by the owner of a random point).  Every lookup the node runs, ours or not, is used: each
  node that answered and whose verified node record the DHT holds (it had to, to dial it)
  is *offered* to the sample.
- **Min-wise slots** (Brahms: Bortnikov et al., "Brahms: Byzantine resilient random
  membership sampling", Computer Networks 2009, section 4).  The sample has ``size``
  slots; slot ``i`` has a secret key and keeps, of every id ever offered, the one whose
  keyed hash is smallest.  How often an id is offered does not matter, only which ids
  exist: a hostile node that pushes itself into every answer wins no more slots than an
  honest one, and the keys are secret, so nobody can grind ids for low ranks.  The distinct
  ids the slots hold are the sample.
- **Subnet caps.**  At most ``per_subnet`` distinct ids of one subnet
  (:func:`~zmesh.onion.paths.subnet_of`, IPv4 /16 or IPv6 /32) are in the sample: a Sybil
  flood from one subnet, however many ids it has, holds at most that many.  ``subnet``
  None (a private mesh) waives the cap.
- **Expiry.**  An entry is confirmed when it answers a lookup, when we hold a link to it,
  or when the DHT holds a newer node record for it (whose descriptor then replaces ours).
  One not confirmed for ``ttl / 2`` is checked: a FIND_VALUE lookup of its node record
  (Brahms validates its samplers the same way); one not confirmed for ``ttl``, or whose
  descriptor expired, leaves, and its slots take the next ids offered.  Ids the node
  ``keep`` s (its guards) stay even when they lose their slots, as long as they are
  confirmed.
- **Resolving next hops.**  A relay asked to extend a circuit to a node it has no
  descriptor of (the client found it in its own sample) :meth:`find` s its node record
  and dials it once found; ``unresolved`` is told if it is not.  :meth:`known` gives
  relays a view of the directory and the DHT's node records.

Bounds: ``size`` slots and entries (plus kept ids), ``walks_in_flight`` walks, ``checks``
confirmations and ``max_resolving`` resolutions under way.
"""

import contextlib
import hashlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ..errors import LocalProtocolError
from ..identity import Descriptor, Flags
from ..rng import Rng
from .routing import ID_SIZE
from .service import Dht, LookupDone, LookupKind

RANK_SIZE = 16


@dataclass(frozen=True, slots=True)
class SampleConfig:
    size: int = 64  # slots (and sampled relays) at most
    per_subnet: int = 2  # distinct ids of one subnet in the sample
    fill_interval: float = 5.0  # a walk this often until the sample is full
    walk_interval: float = 60.0  # a walk this often once it is full: every slot holds an id
    full_distinct: int = 16  # ... and this many distinct ids (at most a quarter of the slots)
    ttl: float = 3600.0  # an entry not confirmed for this long leaves
    walks_in_flight: int = 2
    checks: int = 4  # confirmation lookups under way at most
    max_resolving: int = 32  # next hops being looked up for relays at most
    resolve_timeout: float = 60.0  # a resolution whose lookup never ended is dropped


@dataclass(slots=True)
class _Entry:
    desc: Descriptor
    subnet: str | None
    confirmed: float
    slots: int = 0  # slots it holds


@dataclass(slots=True)
class _Slot:
    key: bytes
    node_id: bytes | None = None
    rank: bytes = b""


class PeerSample(Mapping[bytes, Descriptor]):
    """A node's sample of relays, by node id (see the module doc); read it as a mapping.

    ``dht`` runs the walks and holds the verified node records; ``linked`` says whether we
    hold a link to a node; ``subnet`` is the cap's key (None: no cap); ``keep`` names ids
    to keep while confirmed; ``dial`` and ``unresolved`` serve :meth:`find`."""

    def __init__(
        self,
        dht: Dht,
        rng: Rng,
        now: float,
        *,
        linked: Callable[[bytes], bool],
        subnet: Callable[[Descriptor], str] | None,
        keep: Callable[[bytes], bool] = lambda _: False,
        dial: Callable[[Descriptor, float], bool] = lambda _d, _t: False,
        unresolved: Callable[[bytes, float], None] = lambda _i, _t: None,
        config: SampleConfig | None = None,
    ) -> None:
        self.config = cfg = config or SampleConfig()
        if cfg.size < 1 or cfg.per_subnet < 1 or cfg.ttl <= 0:
            raise LocalProtocolError("a sample needs a slot, a per-subnet cap and a ttl")
        self._dht = dht
        self._rng = rng
        self._linked = linked
        self._subnet = subnet
        self._keep = keep
        self._dial = dial
        self._unresolved = unresolved
        self._slots = [_Slot(rng.bytes(16)) for _ in range(cfg.size)]
        self._entries: dict[bytes, _Entry] = {}
        self._per_subnet: Counter[str] = Counter()
        self._walks: dict[int, float] = {}  # lookup id -> started
        self._checks: dict[int, bytes] = {}  # lookup id -> the entry it confirms
        self._resolving: dict[int, tuple[bytes, float]] = {}  # lookup id -> (node, started)
        self._next_walk = now
        self.walks = 0  # walks started (figures)
        self.events: deque[LookupDone] = deque()  # the component shape; it emits none

    # -- the mapping ----------------------------------------------------------------------
    def __getitem__(self, node_id: bytes) -> Descriptor:
        return self._entries[node_id].desc

    def __iter__(self) -> Iterator[bytes]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def full(self) -> bool:
        """Every slot holds an id, and the slots hold ``full_distinct`` distinct ids (a few
        ids offered early, a node's first links, may hold every slot: it keeps walking)."""
        held = {slot.node_id for slot in self._slots}
        enough = min(self.config.full_distinct, max(1, len(self._slots) // 4))
        return None not in held and len(held) >= enough

    def subnets(self) -> Counter[str]:
        """Distinct ids in the sample per subnet (empty without a cap)."""
        return Counter(self._per_subnet)

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> LookupDone | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        return self._next_walk

    def handle_timer(self, now: float) -> None:
        """Expire and check entries, drop stale resolutions, start the next walk."""
        if now < self._next_walk:
            return
        cfg = self.config
        self._sweep(now)
        for lookup_id, (node_id, started) in list(self._resolving.items()):
            if now - started >= cfg.resolve_timeout:
                del self._resolving[lookup_id]
                self._unresolved(node_id, now)
        for lookup_id, started in list(self._walks.items()):
            if now - started >= cfg.resolve_timeout:
                del self._walks[lookup_id]
        if len(self._walks) < cfg.walks_in_flight and len(self._dht.table):
            target = self._rng.bytes(ID_SIZE)
            with contextlib.suppress(LocalProtocolError):  # lookups full: the next timer
                self._walks[self._dht.lookup_node(target, now)] = now
                self.walks += 1
        interval = cfg.walk_interval if self.full() else cfg.fill_interval
        self._next_walk = now + interval

    # -- input ----------------------------------------------------------------------------
    def lookup_done(self, event: LookupDone, now: float) -> bool:
        """A lookup of the node's DHT finished: offer the nodes that answered; finish our
        walk, check or resolution.  True if the lookup was ours (one of those)."""
        walked = self._walks.pop(event.lookup_id, None) is not None
        checked = self._checks.pop(event.lookup_id, None)
        resolving = self._resolving.pop(event.lookup_id, None)
        ours = walked or checked is not None or resolving is not None
        for record in event.records:
            if event.kind is LookupKind.NODE_RECORD and record.publisher == record.key:
                self._refresh(record.descriptor, now, confirm=record.key == checked)
                if resolving is not None and record.key == resolving[0]:
                    if not self._dial(record.descriptor, now):
                        self._unresolved(resolving[0], now)
                    resolving = None
        if resolving is not None:
            self._unresolved(resolving[0], now)
        for contact in event.closest:
            held = self._dht.node_record(contact.node_id)
            if held is not None and held.expires > now:
                self.offer(held.descriptor, now)
        return ours

    def offer(self, desc: Descriptor, now: float) -> None:
        """``desc`` (verified) belongs to a node that proved live at ``now``: confirm it if
        sampled, and let each slot take it if it ranks lower than what the slot holds."""
        node_id = desc.node_id
        if not int(desc.flags) & int(Flags.RELAY) or node_id == self._dht.node_id:
            return
        if desc.expires <= now:
            return
        self._refresh(desc, now, confirm=True)
        subnet = None if self._subnet is None else self._subnet(desc)
        for slot in self._slots:
            if slot.node_id == node_id:
                continue
            rank = hashlib.blake2b(node_id, key=slot.key, digest_size=RANK_SIZE).digest()
            if slot.node_id is not None and rank >= slot.rank:
                continue
            held = self._entries.get(slot.node_id) if slot.node_id is not None else None
            if (
                subnet is not None
                and node_id not in self._entries
                and self._per_subnet[subnet] >= self.config.per_subnet
                and not (held is not None and held.subnet == subnet and held.slots == 1)
            ):
                continue  # its subnet is full (a newcomer may only take a slot whose
                # holder, of the same subnet, then leaves: the count stays)
            if held is not None:
                self._release(slot)
            slot.node_id, slot.rank = node_id, rank
            entry = self._entries.get(node_id)
            if entry is None:
                entry = self._entries[node_id] = _Entry(desc, subnet, now)
                if subnet is not None:
                    self._per_subnet[subnet] += 1
            entry.slots += 1

    def find(self, node_id: bytes, now: float) -> bool:
        """A relay needs a link to ``node_id`` and has no descriptor of it: look its node
        record up, then dial it (``dial``), or tell ``unresolved``.  False if no lookup
        can start now (bounds, or a malformed id)."""
        if len(node_id) != ID_SIZE or len(self._resolving) >= self.config.max_resolving:
            return False
        if any(n == node_id for n, _ in self._resolving.values()):
            return True
        try:
            lookup_id = self._dht.find_node_record(node_id, now)
        except LocalProtocolError:
            return False
        self._resolving[lookup_id] = (node_id, now)
        return True

    def known(self, directory: Mapping[bytes, Descriptor]) -> "KnownDescriptors":
        """A view of ``directory`` that also finds the DHT's verified node records and
        the sample (for relays dialling next hops)."""
        return KnownDescriptors(directory, self)

    def describe(self, node_id: bytes) -> Descriptor | None:
        """The freshest descriptor of ``node_id`` we hold: the sample's, or the DHT's node
        record (perhaps expired: enough to dial it)."""
        entry = self._entries.get(node_id)
        record = self._dht.node_record(node_id)
        best = None if entry is None else entry.desc
        if record is not None and (best is None or record.descriptor.published > best.published):
            best = record.descriptor
        return best

    # -- internals ------------------------------------------------------------------------
    def _refresh(self, desc: Descriptor, now: float, *, confirm: bool) -> None:
        entry = self._entries.get(desc.node_id)
        if entry is None:
            return
        if confirm:
            entry.confirmed = max(entry.confirmed, now)
        if desc.published > entry.desc.published:
            entry.desc = desc

    def _release(self, slot: _Slot) -> None:
        """Empty a slot; its id leaves the sample if it holds no other slot (unless kept)."""
        node_id = slot.node_id
        slot.node_id, slot.rank = None, b""
        if node_id is None:
            return
        entry = self._entries[node_id]
        entry.slots -= 1
        if not entry.slots and not self._keep(node_id):
            self._drop(node_id)

    def _drop(self, node_id: bytes) -> None:
        entry = self._entries.pop(node_id)
        if entry.subnet is not None:
            self._per_subnet[entry.subnet] -= 1
            if not self._per_subnet[entry.subnet]:
                del self._per_subnet[entry.subnet]

    def _sweep(self, now: float) -> None:
        """Confirm linked entries, take newer node records, check the old, expire the
        unconfirmed."""
        ttl = self.config.ttl
        for node_id in sorted(self._entries):
            entry = self._entries[node_id]
            record = self._dht.node_record(node_id)
            if record is not None and record.published > entry.desc.published:
                entry.desc = record.descriptor
                entry.confirmed = max(entry.confirmed, float(record.published))
            if self._linked(node_id):
                entry.confirmed = now
            age = now - entry.confirmed
            if age >= ttl or entry.desc.expires <= now:
                for slot in self._slots:
                    if slot.node_id == node_id:
                        slot.node_id, slot.rank = None, b""
                self._drop(node_id)
            elif not entry.slots and not self._keep(node_id):
                self._drop(node_id)
            elif (
                age >= ttl / 2
                and len(self._checks) < self.config.checks
                and node_id not in self._checks.values()
            ):
                self._check(node_id, now)

    def _check(self, node_id: bytes, now: float) -> None:
        with contextlib.suppress(LocalProtocolError):  # lookups full: the next sweep
            self._checks[self._dht.find_node_record(node_id, now)] = node_id


class KnownDescriptors(Mapping[bytes, Descriptor]):
    """The node's directory, and for ids it lacks, what :meth:`PeerSample.describe`
    holds (iteration and length are the directory's)."""

    def __init__(self, directory: Mapping[bytes, Descriptor], sample: PeerSample) -> None:
        self._directory = directory
        self._sample = sample

    def __getitem__(self, node_id: bytes) -> Descriptor:
        desc = self._directory.get(node_id)
        if desc is None:
            desc = self._sample.describe(node_id)
        if desc is None:
            raise KeyError(node_id)
        return desc

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._directory)

    def __len__(self) -> int:
        return len(self._directory)


__all__ = ["KnownDescriptors", "PeerSample", "SampleConfig"]
