"""Peers' node records, kept to dial and describe their nodes (issue 9), and our own.

At link up each side that holds no current record of the other (:meth:`NodeRecords.current`)
asks it for its own, a FIND_VALUE(NODE) of its id, which a node answers with its record
alone (:meth:`NodeRecords.own`).  The side that dialled through a lookup holds one already
(it fetched it from the referrer to dial), so a link costs one such exchange, not a STORE
each way (D55).  A publish of our node record skips the peers that fetched that very
record on their link (:meth:`NodeRecords.has_ours`): each kept it and stored it if it is
among the ``k`` closest to us that it knows, as a STORE would have.  A lookup's
FIND_VALUE(NODE) may bring other records.  A :class:`~zmesh.dht.service.Dht` answers
FIND_VALUE(NODE) from them too, and tells a STORE's outcome with :func:`store_status`."""

from collections import OrderedDict

from ..errors import RemoteProtocolError
from ..identity import Descriptor, Identity
from . import puzzle
from .messages import StoreStatus
from .records import PutOutcome, Record, RecordType, sign_record

_STATUS = {
    PutOutcome.STORED: StoreStatus.STORED,
    PutOutcome.UPDATED: StoreStatus.STORED,
    PutOutcome.DUPLICATE: StoreStatus.DUPLICATE,
    PutOutcome.TOO_SOON: StoreStatus.DUPLICATE,
}


def store_status(outcome: PutOutcome) -> StoreStatus:
    """The STORED status of a record store's outcome (a bound or budget: REFUSED)."""
    return _STATUS.get(outcome, StoreStatus.REFUSED)


class NodeRecords:
    """Verified node records by node id, at most ``limit`` (the least recently used
    go), each of an id that solves the puzzle at ``difficulty``."""

    def __init__(self, limit: int, difficulty: int) -> None:
        self._records: OrderedDict[bytes, Record] = OrderedDict()
        self._limit = limit
        self._difficulty = difficulty
        self._own: Record | None = None
        self._served: dict[bytes, Record] = {}  # linked peer -> our record it fetched

    def current(self, node_id: bytes, descriptor: Descriptor | None, now: float) -> bool:
        """True if we hold ``node_id``'s record before its half-life (when its publisher
        signs a fresh one) and with ``descriptor``, the one its link knows (if any)."""
        held = self._records.get(node_id)
        return (
            held is not None
            and now < (held.published + held.expires) / 2
            and (descriptor is None or held.descriptor == descriptor)
        )

    def own(self, identity: Identity, descriptor: Descriptor, now: float) -> Record:
        """Our node record, signed afresh when our descriptor changed or half its life
        passed."""
        own = self._own
        if own is None or own.descriptor != descriptor or now >= (own.published + own.expires) / 2:
            own = self._own = sign_record(
                identity, descriptor, RecordType.NODE, identity.node_id, published=int(now)
            )
        return own

    def served(self, peer_id: bytes, record: Record) -> None:
        """The linked ``peer_id`` fetched our node ``record``."""
        self._served[peer_id] = record

    def has_ours(self, peer_id: bytes, record: Record) -> bool:
        """True if ``peer_id`` fetched this very ``record`` of ours on its link."""
        return self._served.get(peer_id) is record

    def unlink(self, peer_id: bytes) -> None:
        """The link to ``peer_id`` went down (what it fetched over it is forgotten)."""
        self._served.pop(peer_id, None)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, node_id: bytes) -> Record | None:
        """The record held for ``node_id``, if any."""
        return self._records.get(node_id)

    def keep(self, record: Record, now: float) -> bool:
        """Verify a node record (two signature checks) and keep it; False if it is not a
        valid node record, or older than the one held."""
        if record.type is not RecordType.NODE or not puzzle.satisfies(record.key, self._difficulty):
            return False
        held = self._records.get(record.key)
        if held is not None and (held is record or held.encode() == record.encode()):
            self._records.move_to_end(record.key)
            return True
        if held is not None and record.published < held.published:
            return False
        try:
            record.verify(now)
        except RemoteProtocolError:
            return False
        self._records[record.key] = record
        self._records.move_to_end(record.key)
        while len(self._records) > self._limit:
            self._records.popitem(last=False)
        return True


__all__ = ["NodeRecords", "store_status"]
