"""The parts split out of ``zmesh.dht.service``: peers' node records (bounded, verified,
never replaced by an older one), the request deadlines heap (bounded, lazy deletion) and
the RFC 6298 round trips (bounded per peer, timeouts between floor and cap)."""

from dataclasses import replace

from dhtrecords import NOW, descriptor, identity, node_record

from zmesh.dht.config import MAX_RTT_PEERS
from zmesh.dht.messages import StoreStatus
from zmesh.dht.node_records import NodeRecords, store_status
from zmesh.dht.records import PutOutcome, RecordType, sign_record
from zmesh.dht.requests import Deadlines, Entry, Pending, Purpose, RoundTrips
from zmesh.dht.service import DhtConfig, LookupDone  # re-exported for old importers


def test_node_records_keep_only_valid_ones_and_at_most_their_limit() -> None:
    records = NodeRecords(limit=3, difficulty=0)
    for n in range(5):
        assert records.keep(node_record(n), NOW)
    assert len(records) == 3  # the limit: the least recently used went
    assert records.get(identity(0).node_id) is None and records.get(identity(4).node_id)
    forged = replace(node_record(7), signature=bytes(len(node_record(7).signature)))
    assert not records.keep(forged, NOW) and records.get(identity(7).node_id) is None


def test_node_records_refuse_an_older_record_and_ids_failing_the_puzzle() -> None:
    ident = identity(1)
    newer = sign_record(ident, descriptor(1), RecordType.NODE, ident.node_id, published=NOW)
    older = sign_record(ident, descriptor(1), RecordType.NODE, ident.node_id, published=NOW - 9)
    records = NodeRecords(limit=8, difficulty=0)
    assert records.keep(newer, NOW) and not records.keep(older, NOW)
    assert records.get(ident.node_id) is newer
    hard = NodeRecords(limit=8, difficulty=64)  # no test id has 64 leading zero bits
    assert not hard.keep(newer, NOW) and len(hard) == 0


def test_store_status_maps_every_outcome() -> None:
    assert store_status(PutOutcome.STORED) is StoreStatus.STORED
    assert store_status(PutOutcome.UPDATED) is StoreStatus.STORED
    assert store_status(PutOutcome.DUPLICATE) is StoreStatus.DUPLICATE
    assert store_status(PutOutcome.TOO_SOON) is StoreStatus.DUPLICATE
    for outcome in (PutOutcome.FULL, PutOutcome.OVER_BUDGET):
        assert store_status(outcome) is StoreStatus.REFUSED


def test_deadlines_skip_dead_entries_and_stay_bounded() -> None:
    live: set[int] = set()

    def is_live(entry: Entry) -> bool:
        return entry[3] in live

    deadlines = Deadlines(is_live, limit=10)
    for rid in range(100):  # a flood of requests answered at once
        deadlines.push(b"p", rid, Pending(Purpose.PING, object, float(rid)))
        assert len(deadlines._heap) <= 11
    assert deadlines.first() == float("inf")
    live.update({40, 7})
    deadlines.push(b"p", 40, Pending(Purpose.PING, object, 40.0))
    deadlines.push(b"p", 7, Pending(Purpose.PING, object, 7.0))
    assert deadlines.first() == 7.0
    live.discard(7)
    assert deadlines.first() == 40.0


def test_round_trips_give_the_cap_first_then_a_bounded_learned_timeout() -> None:
    trips = RoundTrips(floor=1.0, cap=10.0)
    assert trips.timeout(b"a") == 10.0  # nothing heard yet
    trips.sample(b"a", 0.1)
    assert trips.timeout(b"a") == 1.0  # 0.1 + 4 * 0.05, raised to the floor
    trips.sample(b"b", 4.0)
    assert trips.timeout(b"b") == 10.0  # 4 + 4 * 2, capped
    assert trips.timeout(b"c") > 1.0  # a peer not heard yet: the estimate over everyone
    for n in range(MAX_RTT_PEERS + 50):
        trips.sample(n.to_bytes(4, "big"), 0.2)
    assert len(trips._rtts) == MAX_RTT_PEERS


def test_the_service_module_still_exports_its_names() -> None:
    assert DhtConfig().k == 20 and LookupDone.__name__ == "LookupDone"
