"""Peers' node records, kept to dial and describe their nodes (issue 9): every linked peer
STOREs its own at link up, and a lookup's FIND_VALUE(NODE) may bring others.  A
:class:`~zmesh.dht.service.Dht` answers FIND_VALUE(NODE) from them too, and tells a
STORE's outcome with :func:`store_status`."""

from collections import OrderedDict

from ..errors import RemoteProtocolError
from . import puzzle
from .messages import StoreStatus
from .records import PutOutcome, Record, RecordType

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
