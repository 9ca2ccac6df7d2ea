"""Signed, expiring DHT records, and the bounded store that keeps, expires and republishes them.

Two types (issue 9): a **node record** (key: a node id; it carries that node's descriptor)
and a **provider record** (key: a content id; who seeds it).  Wire format, version 1::

    u8 version | u8 type | key[32] | u64 published | u64 expires
    | u16 len | publisher descriptor | u16 len | value | signature[2484]

**Who signs, and how it is checked.**  Every record carries its publisher's signed
descriptor, and the publisher id *is* that descriptor's node id (SHA-256 over the identity
keys, :func:`zmesh.identity.node_id_of`).  Verification is the descriptor's own
(:meth:`Descriptor.verify`: the hybrid Ed25519 + ML-DSA-44 signature and its window),
then the record's signature with the descriptor's ``signing_pk`` under
:func:`zmesh.crypto.signing.verify` in the context ``zmesh-dht-record-v1``, which is exactly
how descriptors are verified, so both runtimes give the same verdict (D30).  We chose to
embed the descriptor rather than look the publisher up: a record is then verifiable on its
own by any node (a replica, a reader), a STORE needs no second lookup before it can be
checked, and a provider record already tells the reader how to reach the provider (as
libp2p's provider records carry addresses).  The price is size (about 8.9 KB for a
record), paid within the store's byte and count bounds.  A node record's value is empty
(its descriptor is its content) and its key must equal its publisher.

**Bounds** (D32's style; see :class:`RecordStore`): records in all, per type, per publisher
and per key; a verification budget per source and in all, spent only after the cheap
checks and de-duplication; a publisher's update of a record at most once per
``min_update_interval``; a lifetime of at most :data:`MAX_LIFETIME`.

**Maintenance** (Kademlia section 2.5): a stored record is sent again to the ``k`` nodes
closest to its key every ``replicate_interval`` (:class:`Replicate`), unless someone stored
it with us in the meantime; our own records are re-signed and republished halfway through
their lifetime (:class:`Republish`).
"""

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum

from ..budget import TokenBucket
from ..codec import Buffer, push_uint, push_vector
from ..crypto import signing
from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..identity import (
    CLOCK_SKEW,
    MAX_DESCRIPTOR_SIZE,
    Descriptor,
    Identity,
    decode_descriptor,
)
from .routing import ID_SIZE

RECORD_VERSION = 1
SIGNATURE_CONTEXT = b"zmesh-dht-record-v1"
MAX_VALUE = 1024
MAX_RECORD_SIZE = (
    2 + ID_SIZE + 16 + 2 + MAX_DESCRIPTOR_SIZE + 2 + MAX_VALUE + signing.SIGNATURE_SIZE
)
MAX_LIFETIME = 48 * 3600  # libp2p's provider record expiry
RECORD_LIFETIME = 24 * 3600  # what our own records ask for
MAX_RECORDS = 4096
MAX_PER_TYPE = 3072
MAX_PER_PUBLISHER = 32
MAX_PER_KEY = 32  # providers of one content id
MAX_BYTES = 24 * 1024 * 1024
MIN_UPDATE_INTERVAL = 60.0
REPLICATE_INTERVAL = 3600.0
REPUBLISH_RETRY = 600.0
SWEEP_INTERVAL = 60.0
VERIFY_RATE = 20.0  # records per second one source may make us verify
VERIFY_BURST = 40.0
VERIFY_RATE_TOTAL = 200.0
MAX_SOURCES = 1024  # sources whose verification budget we remember
VERIFIED_DESCRIPTORS = 4096  # descriptor encodings whose signature we checked already


class RecordType(IntEnum):
    NODE = 1
    PROVIDER = 2


@dataclass(frozen=True, slots=True)
class Record:
    """A signed record; ``publisher`` is its descriptor's node id."""

    type: RecordType
    key: bytes
    published: int
    expires: int
    descriptor: Descriptor
    value: bytes
    signature: bytes
    _signed: bytes = field(default=b"", init=False, repr=False, compare=False)
    _signature_ok: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def publisher(self) -> bytes:
        return self.descriptor.node_id

    def signed_part(self) -> bytes:
        """The bytes the signature covers, built once (a record is compared, sized and
        verified by its encoding again and again)."""
        if not self._signed:
            object.__setattr__(self, "_signed", self._build_signed_part())
        return self._signed

    def _build_signed_part(self) -> bytes:
        return b"".join(
            (
                bytes([RECORD_VERSION, self.type]),
                self.key,
                push_uint(self.published, 8),
                push_uint(self.expires, 8),
                push_vector(self.descriptor.encode(), 2),
                push_vector(self.value, 2),
            )
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def check_shape(self, now: float) -> None:
        """The cheap checks (no signature): type rules and times.  Raises
        RemoteProtocolError (AUTH) for an expired, future-dated, too long-lived or
        inconsistent record."""
        if self.type is RecordType.NODE and (self.key != self.publisher or self.value):
            raise RemoteProtocolError("a node record names its publisher and has no value")
        if self.expires <= now:
            raise RemoteProtocolError("record has expired", CloseCode.AUTH)
        if self.published > now + CLOCK_SKEW:
            raise RemoteProtocolError("record is published in the future", CloseCode.AUTH)
        if self.expires - self.published > MAX_LIFETIME:
            raise RemoteProtocolError("record lifetime is too long", CloseCode.AUTH)
        if self.expires > self.descriptor.expires:
            raise RemoteProtocolError("record outlives its descriptor", CloseCode.AUTH)

    def verify(self, now: float, *, descriptor_verified: bool = False) -> None:
        """Check the shape, the publisher's descriptor (unless ``descriptor_verified``)
        and the record's signature (checked once per object: a record is immutable);
        raises RemoteProtocolError (AUTH) if any fails."""
        self.check_shape(now)
        if not descriptor_verified:
            self.descriptor.verify(now)
        if not self._signature_ok:
            if not signing.verify(
                self.descriptor.signing_pk, self.signature, self.signed_part(), SIGNATURE_CONTEXT
            ):
                raise RemoteProtocolError("record signature does not verify", CloseCode.AUTH)
            object.__setattr__(self, "_signature_ok", True)


def decode_record(data: bytes) -> Record:
    """Parse a record (without verifying it); raises RemoteProtocolError if malformed or
    oversized."""
    if len(data) > MAX_RECORD_SIZE:
        raise RemoteProtocolError("record is oversized", CloseCode.RESOURCE)
    buf = Buffer(data)
    record = pull_record(buf)
    buf.expect_eof()
    return record


def pull_record(buf: Buffer) -> Record:
    """Pull one record from ``buf``; raises RemoteProtocolError if malformed."""
    version = buf.pull_uint8()
    if version != RECORD_VERSION:
        raise RemoteProtocolError(f"unknown record version {version}")
    raw_type = buf.pull_uint8()
    if raw_type not in (RecordType.NODE, RecordType.PROVIDER):
        raise RemoteProtocolError(f"unknown record type {raw_type}")
    key = buf.pull_bytes(ID_SIZE)
    published, expires = buf.pull_uint64(), buf.pull_uint64()
    descriptor = decode_descriptor(buf.pull_vector(2, MAX_DESCRIPTOR_SIZE))
    value = buf.pull_vector(2, MAX_VALUE)
    signature = buf.pull_bytes(signing.SIGNATURE_SIZE)
    return Record(RecordType(raw_type), key, published, expires, descriptor, value, signature)


def sign_record(
    identity: Identity,
    descriptor: Descriptor,
    record_type: RecordType,
    key: bytes,
    *,
    published: int,
    lifetime: int = RECORD_LIFETIME,
    value: bytes = b"",
) -> Record:
    """Sign a record as ``identity``, carrying its ``descriptor``.  The lifetime is cut to
    the descriptor's expiry.  Raises LocalProtocolError for a record no peer would accept
    (another node's descriptor, a bad key or value, a lifetime out of range)."""
    if descriptor.node_id != identity.node_id:
        raise LocalProtocolError("a record carries its own publisher's descriptor")
    if len(key) != ID_SIZE or len(value) > MAX_VALUE:
        raise LocalProtocolError(f"keys are {ID_SIZE} bytes and values at most {MAX_VALUE}")
    if record_type is RecordType.NODE and (key != identity.node_id or value):
        raise LocalProtocolError("a node record's key is our id, and it has no value")
    if not 0 < lifetime <= MAX_LIFETIME:
        raise LocalProtocolError(f"lifetimes are at most {MAX_LIFETIME} s")
    expires = min(published + lifetime, descriptor.expires)
    if expires <= published:
        raise LocalProtocolError("the descriptor expires before the record would start")
    unsigned = Record(record_type, key, published, expires, descriptor, value, b"")
    return replace(
        unsigned, signature=identity.signing.sign(unsigned.signed_part(), SIGNATURE_CONTEXT)
    )


# -- the store ------------------------------------------------------------------------------


class PutOutcome(Enum):
    STORED = "stored"  # a new record
    UPDATED = "updated"  # a newer version of one we held
    DUPLICATE = "duplicate"  # no newer than ours: dropped before verification
    TOO_SOON = "too soon"  # an update within min_update_interval: dropped unverified
    OVER_BUDGET = "over budget"  # the source (or everyone) spent its verifications
    FULL = "full"  # a bound holds (total, type, publisher, key, bytes): dropped


@dataclass(frozen=True, slots=True)
class Replicate:
    """Effect: send STORE(record) to the ``k`` nodes closest to ``record.key``."""

    record: Record


@dataclass(frozen=True, slots=True)
class Republish:
    """Effect: our own ``record`` is halfway through its life: sign a fresh one (with
    :func:`sign_record`), :meth:`RecordStore.publish` it and STORE it at the k closest."""

    record: Record


Event = Replicate | Republish
Slot = tuple[RecordType, bytes, bytes]  # (type, key, publisher)


@dataclass(slots=True)
class _Held:
    record: Record
    size: int
    stored: float  # when we accepted this version
    due: float  # next Replicate (or, for our own, Republish)
    own: bool


class RecordStore:
    """The records a node holds for the DHT, bounded, with the component shape
    (``get_timer``/``handle_timer``/``next_event``)."""

    def __init__(
        self,
        own_id: bytes,
        now: float,
        *,
        max_records: int = MAX_RECORDS,
        max_per_type: int = MAX_PER_TYPE,
        max_per_publisher: int = MAX_PER_PUBLISHER,
        max_per_key: int = MAX_PER_KEY,
        max_bytes: int = MAX_BYTES,
        min_update_interval: float = MIN_UPDATE_INTERVAL,
        replicate_interval: float = REPLICATE_INTERVAL,
        verify_rate: float = VERIFY_RATE,
        verify_burst: float = VERIFY_BURST,
        verify_rate_total: float = VERIFY_RATE_TOTAL,
    ) -> None:
        self._own_id = int.from_bytes(own_id, "big")
        self._max = max_records
        self._max_type = max_per_type
        self._max_publisher = max_per_publisher
        self._max_key = max_per_key
        self._max_bytes = max_bytes
        self._min_update = min_update_interval
        self._replicate = replicate_interval
        self._rate, self._burst = verify_rate, verify_burst
        self._held: dict[Slot, _Held] = {}
        self._per_type: dict[RecordType, int] = {}
        self._per_publisher: dict[bytes, int] = {}
        self._by_key: dict[tuple[RecordType, bytes], dict[bytes, None]] = {}  # -> publishers
        self._bytes = 0
        self._budgets: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self._budget_all = TokenBucket(verify_rate_total, verify_rate_total * 2)
        self._verified: OrderedDict[bytes, None] = OrderedDict()  # sha256 of descriptors
        self._events: deque[Event] = deque()
        self._next_sweep = now + SWEEP_INTERVAL
        # no record expires or is due before this (a lower bound: a due only moves later
        # between sweeps, and a new record lowers it), so most sweeps skip the loop
        self._soonest = float("inf")

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float:
        return self._next_sweep

    def handle_timer(self, now: float) -> None:
        """Drop expired records; emit Replicate/Republish for records that are due."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        if now < self._soonest:
            return  # nothing expired and nothing due (the common sweep)
        self._soonest = float("inf")
        for slot in [s for s, h in self._held.items() if h.record.expires <= now]:
            self._drop(slot)
        for held in self._held.values():
            if held.due <= now:
                if held.own:
                    held.due = now + REPUBLISH_RETRY  # until the driver publishes a fresh one
                    self._events.append(Republish(held.record))
                else:
                    held.due = now + self._replicate
                    self._events.append(Replicate(held.record))
            self._soonest = min(self._soonest, held.due, held.record.expires)

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._held)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, record_type: RecordType, key: bytes, now: float, limit: int) -> list[Record]:
        """Up to ``limit`` unexpired records of ``record_type`` under ``key`` (for a
        FIND_VALUE answer), the most recently published first."""
        publishers = self._by_key.get((record_type, key), {})
        found = [
            held.record
            for held in (self._held[(record_type, key, p)] for p in publishers)
            if held.record.expires > now
        ]
        found.sort(key=lambda r: (-r.published, r.publisher))
        return found[:limit]

    def count_by_publisher(self, publisher: bytes) -> int:
        return self._per_publisher.get(publisher, 0)

    # -- inputs ----------------------------------------------------------------------------
    def put(self, record: Record, now: float, source: bytes) -> PutOutcome:
        """A STORE from ``source`` (the peer that sent it: its link's node id).

        In order: de-duplication and the update interval (no work), the shape checks, the
        bounds, then the verification budget, then the signatures.  Raises
        RemoteProtocolError for a forged, expired, future-dated or inconsistent record;
        returns what became of an acceptable one.
        """
        slot = (record.type, record.key, record.publisher)
        held = self._held.get(slot)
        if held is not None:
            if record.published <= held.record.published:
                same = record is held.record or record.encode() == held.record.encode()
                if same and not held.own:
                    held.due = max(held.due, now + self._replicate)  # someone replicated it
                return PutOutcome.DUPLICATE
            if now < held.stored + self._min_update:
                return PutOutcome.TOO_SOON
        record.check_shape(now)
        if held is None and not self._bounds_allow(record):
            return PutOutcome.FULL
        if not self._take_budget(source, now):
            return PutOutcome.OVER_BUDGET
        size = len(record.encode())
        victims = self._room_for(record, size, held)
        if victims is None:
            return PutOutcome.FULL
        digest = hashlib.sha256(record.descriptor.encode()).digest()
        record.verify(now, descriptor_verified=digest in self._verified)
        self._remember_descriptor(digest)
        for victim in victims:
            self._drop(victim)
        self._store(slot, record, size, now, own=False)
        return PutOutcome.UPDATED if held is not None else PutOutcome.STORED

    def publish(self, record: Record, now: float) -> None:
        """Hold one of our own records (signed by us, so not verified again), replacing an
        older version; Republish comes halfway through its life.  Own records count
        against the bounds but are never shed for others'.  Raises LocalProtocolError if
        it is malformed or a bound would be broken."""
        try:
            record.check_shape(now)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(str(exc)) from None
        slot = (record.type, record.key, record.publisher)
        size = len(record.encode())
        held = self._held.get(slot)
        victims = self._room_for(record, size, held)
        if victims is None or (held is None and not self._bounds_allow(record)):
            raise LocalProtocolError("the record store has no room for our own record")
        for victim in victims:
            self._drop(victim)
        self._store(slot, record, size, now, own=True)

    def unpublish(self, record_type: RecordType, key: bytes, publisher: bytes) -> None:
        """Stop holding (and republishing) a record."""
        if (record_type, key, publisher) in self._held:
            self._drop((record_type, key, publisher))

    # -- internals -------------------------------------------------------------------------
    def _take_budget(self, source: bytes, now: float) -> bool:
        bucket = self._budgets.get(source)
        if bucket is None:
            bucket = self._budgets[source] = TokenBucket(self._rate, self._burst)
            if len(self._budgets) > MAX_SOURCES:
                self._budgets.popitem(last=False)
        else:
            self._budgets.move_to_end(source)
        return bucket.take(now) and self._budget_all.take(now)

    def _remember_descriptor(self, digest: bytes) -> None:
        self._verified[digest] = None
        self._verified.move_to_end(digest)
        if len(self._verified) > VERIFIED_DESCRIPTORS:
            self._verified.popitem(last=False)

    def _bounds_allow(self, record: Record) -> bool:
        """For a new slot: the publisher and key bounds (which shed nobody)."""
        return (
            self._per_publisher.get(record.publisher, 0) < self._max_publisher
            and len(self._by_key.get((record.type, record.key), ())) < self._max_key
        )

    def _room_for(self, record: Record, size: int, held: _Held | None) -> list[Slot] | None:
        """The stored records (not ours) to shed so that ``record`` fits the total, type
        and byte bounds: those whose keys are farthest from our id, and only if each is
        farther than the new one.  None if it cannot fit.  Sheds nothing itself (the caller
        does, once the record has verified)."""
        count = len(self._held) - (held is not None)
        of_type = self._per_type.get(record.type, 0) - (held is not None)
        used = self._bytes - (held.size if held is not None else 0)
        if count < self._max and of_type < self._max_type and used + size <= self._max_bytes:
            return []
        mine = int.from_bytes(record.key, "big") ^ self._own_id
        candidates = sorted(
            (
                (int.from_bytes(slot[1], "big") ^ self._own_id, slot)
                for slot, h in self._held.items()
                if not h.own and h is not held
            ),
            reverse=True,
        )
        victims: list[Slot] = []
        for far, slot in candidates:
            if count < self._max and of_type < self._max_type and used + size <= self._max_bytes:
                break
            if far <= mine:
                return None
            if of_type >= self._max_type and slot[0] is not record.type:
                continue
            victims.append(slot)
            count -= 1
            of_type -= slot[0] is record.type
            used -= self._held[slot].size
        if count < self._max and of_type < self._max_type and used + size <= self._max_bytes:
            return victims
        return None

    def _store(self, slot: Slot, record: Record, size: int, now: float, *, own: bool) -> None:
        if slot in self._held:
            self._drop(slot)
        if own:
            due = record.published + (record.expires - record.published) / 2
        else:
            due = now + self._replicate
        self._held[slot] = _Held(record, size, now, due, own)
        self._soonest = min(self._soonest, due, record.expires)
        self._per_type[record.type] = self._per_type.get(record.type, 0) + 1
        self._per_publisher[slot[2]] = self._per_publisher.get(slot[2], 0) + 1
        self._by_key.setdefault((record.type, record.key), {})[slot[2]] = None
        self._bytes += size

    def _drop(self, slot: Slot) -> None:
        held = self._held.pop(slot)
        _decrement(self._per_type, slot[0])
        _decrement(self._per_publisher, slot[2])
        publishers = self._by_key[(slot[0], slot[1])]
        del publishers[slot[2]]
        if not publishers:
            del self._by_key[(slot[0], slot[1])]
        self._bytes -= held.size


def _decrement[T](counts: dict[T, int], key: T) -> None:
    counts[key] -= 1
    if not counts[key]:
        del counts[key]
