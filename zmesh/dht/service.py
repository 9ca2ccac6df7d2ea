"""The DHT on links: RPCs in and out, lookups, records, maintenance (issue 9).

Theory of operation.  :class:`Dht` composes the sans-I/O parts of this package
(:class:`~zmesh.dht.routing.RoutingTable`, :class:`~zmesh.dht.lookup.Lookup`,
:class:`~zmesh.dht.records.RecordStore`) and speaks :mod:`zmesh.dht.messages` with linked
peers.  It has the component shape: inputs take ``now`` (:meth:`receive`, :meth:`link_up`,
:meth:`link_down`, :meth:`dial_failed` and the API), outputs are pulled with
:meth:`next_event` (:class:`DhtSend` for the node to put on the link to a peer as a DHT
frame, :class:`LookupDone`), one deadline with :meth:`get_timer`/:meth:`handle_timer`.

* **Requests and answers.**  Every request we send carries a random 32-bit id and waits in
  a bounded pending table keyed by (peer, id) until its answer or its deadline.  An answer
  nobody asked for (unsolicited, late, duplicate) is dropped quietly; one of the wrong
  type fails the request.  The deadline of a request on a link is learned from the round
  trips of answers (:meth:`Dht._timeout`: RFC 6298's SRTT + 4 RTTVAR, per peer, or over
  all peers for one not heard yet, between ``rpc_timeout_floor`` and ``rpc_timeout``); a
  request waiting for a dial has the whole ``rpc_timeout``.  Requests from a peer are
  budgeted (a token bucket per peer and one for all): beyond it they are dropped
  unanswered.
* **Links on demand.**  A request to a node we have no link to waits (bounded, per peer and
  in all) while ``dial`` (the node's :meth:`~zmesh.dialer.Dialer.want`, whose effect is
  :class:`~zmesh.dialer.DialWanted`) links to it; the link coming up sends it, a failed
  dial or the deadline fails it.  Dialling needs the node's descriptor.  So at link up a
  side that holds no current node record of the other asks it for its own
  (:mod:`~zmesh.dht.node_records`); a node keeps its peers' records (bounded), and a lookup
  that meets a contact whose descriptor it lacks
  first asks the responder that named it (FIND_VALUE(NODE, contact)), which holds it if it
  ever linked to that contact, as every routing-table entry did.  A contact nobody can
  describe fails at once, so answers full of unreachable ids cost one request each, not a
  timeout (and :mod:`~zmesh.dht.lookup` drops a liar's other referrals).
* **Signal routes through the referrer.**  Dialling a node that publishes no signaling URL
  (a proxy, a browser) means signaling through the mesh, which needs a route to it.  The
  peer that named a contact we dial, or that gave us a node record a lookup was after, is
  linked to it, so ``refer(contact, peer)`` (the node's
  :meth:`~zmesh.signaling.router.SignalRouter.refer`) makes it the route: our offer goes
  to it, and it forwards on its own link.  Signals are signed end to end, so a hostile
  referrer can only drop the signals to the ids it names.
* **Which ids count.**  Only ids solving the S/Kademlia puzzle at ``puzzle_difficulty``
  enter the routing table or a lookup; the table applies its subnet caps.  A peer enters the
  table when its link comes up and whenever it answers or asks us something.
* **Maintenance.**  Bootstrap is a lookup of our own id at the first link-up, after which
  our node record is stored at the ``k`` closest nodes.  A bootstrap counts only if ``k``
  nodes answered, or, in a small mesh, every node of the table did and no request failed;
  else (its only seed was a node that drops lookups, or one that answers with fake
  contacts) it is tried again, seeded by what the table holds then: at once if the table
  grew meanwhile (the other links of a join), else at the next link-up, up to
  :data:`MAX_BOOTSTRAPS` tries.  A newcomer that stopped after one failed bootstrap would
  stay unknown to its neighbours, and every lookup of it would fail.  Then a bucket unused
  for an hour is refreshed by a lookup (Kademlia section 2.3); held records are replicated
  hourly and our own republished halfway through their life (:mod:`~zmesh.dht.records`).

Bounds: :class:`DhtConfig` (lookups in flight, pending requests, requests waiting for a
link, in all and per peer, records verified per lookup, peers' node records kept).
"""

from collections import deque
from collections.abc import Callable

from ..budget import TokenBucket
from ..errors import LocalProtocolError, RemoteProtocolError
from ..identity import Descriptor, Identity
from ..rng import Rng
from . import puzzle
from .config import (
    MAX_BOOTSTRAPS,
    MAX_VERIFY_PER_LOOKUP,
    VALUE_KINDS,
    DhtConfig,
    DhtSend,
    DhtStats,
    Event,
    LookupDone,
    LookupKind,
)
from .lookup import FindRequest, Lookup
from .messages import (
    MAX_RECORDS,
    FindNode,
    FindValue,
    Message,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    StoreStatus,
    Value,
    decode_message,
    encode_message,
)
from .node_records import NodeRecords, store_status
from .records import (
    Record,
    RecordStore,
    RecordType,
    Replicate,
    Republish,
    decode_record,
    sign_record,
)
from .requests import EXPECT, Deadlines, Entry, Pending, Purpose, RoundTrips, Search
from .routing import ID_SIZE, Contact, PingContact, RefreshBucket, RoutingTable


class Dht:
    """One node's DHT: see the module doc.  ``dial`` asks for a link to a descriptor's node
    (False if it cannot); ``descriptor_of`` is the node's own knowledge (its directory);
    ``refer(contact, peer)`` says that the linked ``peer`` can forward signals to
    ``contact`` (before we dial it); ``record_decoder`` parses the records of incoming
    messages (:func:`decode_record`; the simulator passes one that shares each record
    among its nodes)."""

    def __init__(
        self,
        identity: Identity,
        own_descriptor: Callable[[float], Descriptor],
        rng: Rng,
        now: float,
        *,
        dial: Callable[[Descriptor, float], bool],
        descriptor_of: Callable[[bytes], Descriptor | None] = lambda _: None,
        refer: Callable[[bytes, bytes], None] = lambda _contact, _via: None,
        settle: Callable[[float], None] = lambda _: None,
        config: DhtConfig | None = None,
        record_decoder: Callable[[bytes], Record] = decode_record,
    ) -> None:
        self.config = cfg = config or DhtConfig()
        self.node_id = identity.node_id
        self._identity = identity
        self._own_descriptor = own_descriptor
        self._rng = rng
        self._dial = dial
        self._descriptor_of = descriptor_of
        self._refer = refer
        self._settle = settle  # the node collects our events after an API call
        self._decode_record = record_decoder  # record bytes -> Record (decode_message)
        caps = cfg.subnet_caps
        self.table = RoutingTable(
            self.node_id,
            rng,
            now,
            k=cfg.k,
            subnet_bucket_cap=None if not caps else 2,
            subnet_table_cap=None if not caps else 10,
        )
        self.store = RecordStore(self.node_id, now)
        self.stats = DhtStats()
        self.events: deque[Event] = deque()
        self._linked: dict[bytes, str | None] = {}  # linked peer -> its address, if known
        self._budgets: dict[bytes, TokenBucket] = {}
        self._budget_all = TokenBucket(cfg.request_rate_total, cfg.request_rate_total * 2)
        self._pending: dict[tuple[bytes, int], Pending] = {}
        self._deadlines = Deadlines(self._live, 2 * cfg.max_pending + 64)
        self._round_trips = RoundTrips(cfg.rpc_timeout_floor, cfg.rpc_timeout)
        self._waiting: dict[bytes, dict[int, Pending]] = {}
        self._waiting_count = 0
        self._searches: dict[int, Search] = {}
        self._next_lookup = 1
        self._node_records = NodeRecords(cfg.max_node_records, cfg.puzzle_difficulty)
        self._bootstraps = 0  # bootstrap lookups started
        self._bootstrapping: int | None = None  # the one in flight
        self._bootstrap_done = False  # one reached the k closest (or all the table knew)
        self._bootstrap_seeds = 0  # the table's size when the last one started

    # -- the component shape --------------------------------------------------------------
    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    def get_timer(self) -> float:
        timer = min(self.table.get_timer(), self.store.get_timer(), self._deadlines.first())
        for search in self._searches.values():  # a loop: asked after every input
            timer = min(timer, search.lookup.get_timer())
        return timer

    def handle_timer(self, now: float) -> None:
        """Fail requests past their deadline, advance lookups, run table and store upkeep."""
        if self._deadlines.first() <= now:
            for key in [k for k, p in self._pending.items() if p.deadline <= now]:
                self._fail(key[0], self._pending.pop(key), now)
            for peer in [
                p for p, q in self._waiting.items() if any(w.deadline <= now for w in q.values())
            ]:
                queue = self._waiting[peer]
                for rid in [r for r, w in queue.items() if w.deadline <= now]:
                    self._fail(peer, self._unwait(peer, rid), now)
        for lookup_id in list(self._searches):
            search = self._searches.get(lookup_id)
            if search is not None:
                search.lookup.handle_timer(now)
                self._pump(lookup_id, now)
        self.table.handle_timer(now)
        while (event := self.table.next_event()) is not None:
            if isinstance(event, RefreshBucket):
                self._start(LookupKind.REFRESH, event.target, now)
            else:
                self._ping(event, now)
        self.store.handle_timer(now)
        while (due := self.store.next_event()) is not None:
            self._maintain(due, now)

    # -- API -------------------------------------------------------------------------------
    def lookup_node(self, target: bytes, now: float) -> int:
        """Start a lookup of the ``k`` nodes closest to ``target``; returns its id
        (:class:`LookupDone` follows).  Raises LocalProtocolError for a malformed target or
        if :attr:`DhtConfig.max_lookups` are in flight."""
        return self._start_or_raise(LookupKind.NODE, target, now)

    def find_providers(self, key: bytes, now: float) -> int:
        """Start a FIND_VALUE lookup of the provider records of content id ``key``; it stops
        at ``max_providers`` verified records.  Raises as :meth:`lookup_node`."""
        return self._start_or_raise(LookupKind.PROVIDERS, key, now)

    def find_node_record(self, node_id: bytes, now: float) -> int:
        """Start a FIND_VALUE lookup of ``node_id``'s signed node record (its descriptor);
        it stops at the first that verifies.  Raises as :meth:`lookup_node`."""
        return self._start_or_raise(LookupKind.NODE_RECORD, node_id, now)

    def publish(self, record: Record, now: float) -> int:
        """Hold one of our own records (republished halfway through its life) and store it
        at the ``k`` nodes closest to its key.  Raises LocalProtocolError if the record is
        not ours or not acceptable (:meth:`RecordStore.publish`), or lookups are full."""
        if record.publisher != self.node_id:
            raise LocalProtocolError("we publish only records we signed")
        self.store.publish(record, now)
        return self._start_or_raise(LookupKind.PUBLISH, record.key, now, record)

    def bootstrap(self, now: float) -> int | None:
        """Look up our own id (filling the buckets near us), then, if configured, store our
        node record at the ``k`` closest.  None if lookups are full."""
        lookup_id = self._start_bootstrap(now)
        self._settle(now)
        return lookup_id

    def link_up(self, peer_id: bytes, descriptor: Descriptor | None, now: float) -> None:
        """A link to ``peer_id`` came up (``descriptor``: its verified descriptor, if the
        node knows it).  The peer enters the table if its id passes the puzzle; we ask it for
        its node record unless we hold a current one; requests waiting for this link go
        out; the first link bootstraps."""
        address = descriptor.addresses[0] if descriptor and descriptor.addresses else None
        self._linked[peer_id] = address
        self._seen(peer_id, now, address)
        if not self._node_records.current(peer_id, descriptor, now):
            self._request(
                peer_id, lambda rid: FindValue(rid, RecordType.NODE, peer_id), Purpose.RECORD, now
            )
        queue = self._waiting.pop(peer_id, {})
        self._waiting_count -= len(queue)
        for rid, pending in queue.items():
            self._send_pending(peer_id, rid, pending, now)
        if not self._bootstrap_done and self._bootstrapping is None:
            self._bootstrap_again(now)

    def link_down(self, peer_id: bytes, now: float) -> None:
        """Our last link to ``peer_id`` closed: its requests in flight fail now."""
        self._linked.pop(peer_id, None)
        self._budgets.pop(peer_id, None)
        self._node_records.unlink(peer_id)
        for key in [k for k in self._pending if k[0] == peer_id]:
            self._fail(peer_id, self._pending.pop(key), now)

    def dial_failed(self, node_id: bytes, now: float) -> None:
        """The link ``dial`` asked for could not be made: what waited for it fails."""
        for rid in list(self._waiting.get(node_id, {})):
            self._fail(node_id, self._unwait(node_id, rid), now)

    # -- input -----------------------------------------------------------------------------
    def receive(self, peer_id: bytes, data: bytes, now: float) -> None:
        """A DHT message from a linked peer.  Raises RemoteProtocolError if it is malformed
        (the caller closes the link); anything else is answered, matched or dropped."""
        msg = decode_message(data, self._decode_record)
        self.stats.bytes_in += len(data)
        expect = EXPECT.get(type(msg))
        if expect is None:
            self._on_answer(peer_id, msg, now)
            return
        self.stats.requests_in += 1
        budget = self._budgets.get(peer_id)
        if budget is None:
            if len(self._budgets) >= 4 * self.config.max_pending:
                self._budgets.clear()  # peers that never linked down: start afresh
            budget = self._budgets[peer_id] = TokenBucket(
                self.config.request_rate, self.config.request_burst
            )
        if not (budget.take(now) and self._budget_all.take(now)):
            self.stats.over_budget += 1
            return
        self._seen(peer_id, now)
        reply: Message
        k = self.config.k
        match msg:
            case Ping(rid):
                reply = Pong(rid)
            case FindNode(rid, target):
                reply = Nodes(rid, self._closest(target, k, peer_id))
            case FindValue(rid, RecordType.NODE, key) if key == self.node_id:
                own = self._own_node_record(now)
                if peer_id in self._linked:
                    self._node_records.served(peer_id, own)
                reply = Value(rid, (own,), ())  # ours: no referrals needed
            case FindValue(rid, record_type, key):
                records = self.store.get(record_type, key, now, MAX_RECORDS)
                held = self._node_records.get(key)
                if record_type is RecordType.NODE and not records and held is not None:
                    records = [held] if held.expires > now else []
                # a node's record is the value itself (Kademlia's FIND_VALUE): no referrals
                found = record_type is RecordType.NODE and records
                reply = Value(rid, tuple(records), () if found else self._closest(key, k, peer_id))
            case Store(rid, record):
                reply = Stored(rid, self._on_store(peer_id, record, now))
        self._send(peer_id, encode_message(reply))

    # -- answers ---------------------------------------------------------------------------
    def _on_answer(self, peer_id: bytes, msg: Message, now: float) -> None:
        pending = self._pending.pop((peer_id, msg.request_id), None)
        if pending is None:
            self.stats.unsolicited += 1
            return
        if type(msg) is not pending.expect:
            self._fail(peer_id, pending, now)
            return
        self._round_trips.sample(peer_id, now - pending.sent)
        self._seen(peer_id, now)
        search = self._searches.get(pending.lookup_id)
        match pending.purpose, msg:
            case Purpose.LOOKUP, Nodes(_, contacts) if search is not None:
                search.lookup.response(peer_id, self._usable(search, peer_id, contacts), now)
            case Purpose.LOOKUP, Value(_, records, contacts) if search is not None:
                self._collect(search, peer_id, records, now)
                search.lookup.response(peer_id, self._usable(search, peer_id, contacts), now)
                if len(search.records) >= self._wanted(search):
                    search.lookup.cancel(now)
            case Purpose.FETCH, Value(_, records, _) if search is not None:
                subject = pending.subject
                known = any(self._node_records.keep(r, now) for r in records if r.key == subject)
                if not (known and self._lookup_request(pending.lookup_id, search, subject, now)):
                    search.lookup.timeout(subject, now)
            case Purpose.RECORD, Value(_, records, _):
                for record in [r for r in records if r.key == peer_id == r.publisher][:1]:
                    self._on_store(peer_id, record, now)  # kept to describe it; stored if close
            case _:
                pass  # PONG and STORED: the peer is live, nothing more
        self._pump(pending.lookup_id, now)

    def _fail(self, peer_id: bytes, pending: Pending, now: float) -> None:
        self.stats.failed += 1
        if pending.purpose in (Purpose.LOOKUP, Purpose.PING):
            self.table.failed(peer_id, now)
        search = self._searches.get(pending.lookup_id)
        if search is not None:
            subject = pending.subject if pending.purpose is Purpose.FETCH else peer_id
            search.lookup.timeout(subject, now)
            self._pump(pending.lookup_id, now)

    def _on_store(self, peer_id: bytes, record: Record, now: float) -> StoreStatus:
        """A STORE: a peer's own node record is kept to describe it; records for which we
        are among the ``k`` closest we know go to the store."""
        if record.type is RecordType.NODE and record.publisher == peer_id:
            if not self._node_records.keep(record, now):
                return StoreStatus.INVALID
            if not self._among_closest(record.key):
                return StoreStatus.STORED
        try:
            outcome = self.store.put(record, now, peer_id)
        except RemoteProtocolError:
            return StoreStatus.INVALID
        return store_status(outcome)

    def _collect(
        self, search: Search, responder: bytes, records: tuple[Record, ...], now: float
    ) -> None:
        """Verify the records of a VALUE answer that fit the search (bounded per lookup).
        A node record found this way is routed (for a dial through the mesh) through the
        linked peer that named its node in this lookup, else the ``responder``."""
        record_type = VALUE_KINDS.get(search.kind)
        for record in records:
            if (
                record.type is not record_type
                or record.key != search.lookup.target
                or record.publisher in search.records
                or len(search.records) >= self._wanted(search)
                or search.verified >= MAX_VERIFY_PER_LOOKUP
            ):
                continue
            search.verified += 1
            if record_type is RecordType.NODE:
                if self._node_records.keep(record, now):
                    search.records[record.publisher] = record
                    if record.key not in self._linked:
                        via = search.referrers.get(record.key)
                        self._refer(record.key, via if via and via in self._linked else responder)
                continue
            try:
                record.verify(now)
            except RemoteProtocolError:
                continue
            search.records[record.publisher] = record

    # -- lookups ---------------------------------------------------------------------------
    def _start_or_raise(
        self, kind: LookupKind, target: bytes, now: float, record: Record | None = None
    ) -> int:
        if len(target) != ID_SIZE:
            raise LocalProtocolError(f"lookup targets are {ID_SIZE}-byte ids")
        lookup_id = self._start(kind, target, now, record)
        if lookup_id is None:
            raise LocalProtocolError(f"{self.config.max_lookups} lookups are in flight")
        self._settle(now)
        return lookup_id

    def _start(
        self, kind: LookupKind, target: bytes, now: float, record: Record | None = None
    ) -> int | None:
        if len(self._searches) >= self.config.max_lookups:
            return None
        cfg = self.config
        lookup = Lookup(
            target,
            self.table.closest(target, cfg.k, now),
            now,
            alpha=cfg.alpha,
            k=cfg.k,
            disjoint_paths=cfg.disjoint_paths,
            rpc_timeout=cfg.rpc_timeout,
            own_id=self.node_id,
        )
        lookup_id = self._next_lookup
        self._next_lookup += 1
        self._searches[lookup_id] = Search(lookup, kind, now, record)
        self._pump(lookup_id, now)
        return lookup_id

    def _pump(self, lookup_id: int, now: float) -> None:
        """Send what a lookup asks for; finish it once done."""
        search = self._searches.get(lookup_id)
        if search is None:
            return
        lookup = search.lookup
        while (req := lookup.next_event()) is not None:
            self._find(lookup_id, search, req, now)
        if lookup.result is None or self._searches.pop(lookup_id, None) is None:
            return
        result = lookup.result
        stored = 0
        if search.kind is LookupKind.BOOTSTRAP:
            self._bootstrapping = None
            answered = len(result.closest)
            if answered >= self.config.k or (answered >= len(self.table) and not result.failures):
                self._bootstrap_done = True
            if self.config.publish_node_record:
                search.record = self._own_node_record(now)
                self.store.publish(search.record, now)
        if search.record is not None:
            own = search.record
            for contact in result.closest:
                if self._node_records.has_ours(contact.node_id, own):
                    continue  # it fetched this very record on its link (and stored it if close)
                stored += self._request(
                    contact.node_id, lambda rid: Store(rid, own), Purpose.STORE, now
                )
        self.events.append(
            LookupDone(
                lookup_id,
                search.kind,
                lookup.target,
                result.closest,
                tuple(search.records.values()),
                result.rounds,
                result.rpcs,
                result.failures,
                result.exhausted,
                now - search.started,
                stored,
            )
        )
        if search.kind is LookupKind.BOOTSTRAP and len(self.table) > self._bootstrap_seeds:
            self._bootstrap_again(now)  # the table grew meanwhile: try the new seeds now

    def _start_bootstrap(self, now: float) -> int | None:
        self._bootstraps += 1
        self._bootstrap_seeds = len(self.table)
        lookup_id = self._start(LookupKind.BOOTSTRAP, self.node_id, now)
        if lookup_id is not None:
            self._bootstrapping = lookup_id
        return lookup_id

    def _bootstrap_again(self, now: float) -> None:
        """Bootstrap (again) if no bootstrap reached the ``k`` closest yet, none is in
        flight, the table has a seed, and tries are left (:data:`MAX_BOOTSTRAPS`)."""
        if (
            not self._bootstrap_done
            and self._bootstrapping is None
            and self._bootstraps < MAX_BOOTSTRAPS
            and len(self.table)
        ):
            self._start_bootstrap(now)

    def _find(self, lookup_id: int, search: Search, req: FindRequest, now: float) -> None:
        """Send a lookup's request (a contact we have no link to is dialled, signaling
        through the linked peer that named it); for a contact we cannot describe, ask that
        peer for its node record first; if neither works, it fails at once."""
        peer = req.contact.node_id
        referrer = search.referrers.get(peer)
        if peer not in self._linked and referrer is not None and referrer in self._linked:
            self._refer(peer, referrer)  # the route of a dial through the mesh
        else:
            referrer = None
        if self._lookup_request(lookup_id, search, peer, now):
            return
        if referrer is not None and self._describe(peer) is None:
            self.stats.fetches += 1

            def fetch(rid: int) -> Message:
                return FindValue(rid, RecordType.NODE, peer)

            if self._request(referrer, fetch, Purpose.FETCH, now, lookup_id, subject=peer):
                return
        search.lookup.timeout(peer, now)

    def _lookup_request(self, lookup_id: int, search: Search, peer: bytes, now: float) -> bool:
        target = search.lookup.target
        record_type = VALUE_KINDS.get(search.kind)
        if record_type is None:
            return self._request(
                peer, lambda rid: FindNode(rid, target), Purpose.LOOKUP, now, lookup_id
            )
        return self._request(
            peer, lambda rid: FindValue(rid, record_type, target), Purpose.LOOKUP, now, lookup_id
        )

    def _usable(
        self, search: Search, responder: bytes, contacts: tuple[Contact, ...]
    ) -> list[Contact]:
        cfg = self.config
        return search.usable(responder, contacts, cfg.k, self.node_id, cfg.puzzle_difficulty)

    def _wanted(self, search: Search) -> int:
        return 1 if search.kind is LookupKind.NODE_RECORD else self.config.max_providers

    # -- maintenance -----------------------------------------------------------------------
    def _maintain(self, event: Replicate | Republish, now: float) -> None:
        record = event.record
        if isinstance(event, Replicate):
            self._start(LookupKind.REPLICATE, record.key, now, record)
            return
        if record.type is RecordType.NODE:
            fresh = self._own_node_record(now)
        else:
            fresh = sign_record(
                self._identity,
                self._own_descriptor(now),
                record.type,
                record.key,
                published=int(now),
                value=record.value,
            )
        self.store.publish(fresh, now)
        self._start(LookupKind.PUBLISH, fresh.key, now, fresh)

    def _ping(self, event: PingContact, now: float) -> None:
        peer = event.contact.node_id
        if not self._request(peer, Ping, Purpose.PING, now):
            self.table.failed(peer, now)

    def _own_node_record(self, now: float) -> Record:
        return self._node_records.own(self._identity, self._own_descriptor(now), now)

    # -- sending ---------------------------------------------------------------------------
    def _request(
        self,
        peer: bytes,
        make: Callable[[int], Message],
        purpose: Purpose,
        now: float,
        lookup_id: int = 0,
        *,
        subject: bytes = b"",
    ) -> bool:
        """Send a request to ``peer`` now, or once a link to it is up (dialling it); False
        if it can be neither sent nor queued (bounds, or no descriptor to dial)."""
        if len(self._pending) + self._waiting_count >= self.config.max_pending:
            return False
        rid = self._request_id(peer)
        msg = make(rid)
        pending = Pending(
            purpose, EXPECT[type(msg)], now + self.config.rpc_timeout, lookup_id, subject
        )
        data = encode_message(msg)
        if peer in self._linked:
            pending.data = data
            self._send_pending(peer, rid, pending, now)
            return True
        queue = self._waiting.get(peer)
        if self._waiting_count >= self.config.max_waiting or (
            queue is not None and len(queue) >= self.config.max_waiting_per_peer
        ):
            return False
        if queue is None:
            desc = self._describe(peer)
            if desc is None or not self._dial(desc, now):
                return False
            self.stats.dials += 1
            queue = self._waiting[peer] = {}
        pending.data = data
        queue[rid] = pending
        self._waiting_count += 1
        self._deadlines.push(peer, rid, pending)
        return True

    def _live(self, entry: Entry) -> bool:
        """True while the entry's request is pending or waiting for its link, with this
        deadline (one sent after a dial has a new deadline, and a new entry)."""
        deadline, _, peer, rid, pending = entry
        if pending.deadline != deadline:
            return False
        if self._pending.get((peer, rid)) is pending:
            return True
        queue = self._waiting.get(peer)
        return queue is not None and queue.get(rid) is pending

    def _send_pending(self, peer: bytes, rid: int, pending: Pending, now: float) -> None:
        """Put a request on the link; its deadline is now the peer's learned timeout."""
        data, pending.data = pending.data, b""
        pending.sent = now
        pending.deadline = now + self._round_trips.timeout(peer)
        self._pending[(peer, rid)] = pending
        self._deadlines.push(peer, rid, pending)
        self.stats.requests_out += 1
        self._send(peer, data)

    def _unwait(self, peer: bytes, rid: int) -> Pending:
        queue = self._waiting[peer]
        pending = queue.pop(rid)
        self._waiting_count -= 1
        if not queue:
            del self._waiting[peer]
        return pending

    def _send(self, peer: bytes, data: bytes) -> None:
        self.stats.bytes_out += len(data)
        self.events.append(DhtSend(peer, data))

    def _request_id(self, peer: bytes) -> int:
        while True:
            rid = int.from_bytes(self._rng.bytes(4), "big")
            if (peer, rid) not in self._pending and rid not in self._waiting.get(peer, {}):
                return rid

    # -- contacts --------------------------------------------------------------------------
    def _puzzle_ok(self, node_id: bytes) -> bool:
        return puzzle.satisfies(node_id, self.config.puzzle_difficulty)

    def _describe(self, node_id: bytes) -> Descriptor | None:
        record = self._node_records.get(node_id)
        if record is not None:
            return record.descriptor
        return self._descriptor_of(node_id)

    def _seen(self, peer_id: bytes, now: float, address: str | None = None) -> None:
        """``peer_id`` proved live on a link: into the table if its id passes the puzzle."""
        if peer_id == self.node_id or not self._puzzle_ok(peer_id):
            return
        if address is None:  # the link's (a peer's STORE comes before we hold its record)
            address = self._linked.get(peer_id)
        if address is None:
            desc = self._describe(peer_id)
            address = desc.addresses[0] if desc is not None and desc.addresses else None
        self.table.seen(Contact(peer_id, address, now), now)

    def _closest(self, target: bytes, n: int, asker: bytes) -> tuple[Contact, ...]:
        found = self.table.closest(target, n + 1)
        return tuple(c for c in found if c.node_id != asker)[:n]

    def _among_closest(self, key: bytes) -> bool:
        """True if we are among the ``k`` nodes closest to ``key`` that our table knows."""
        return self.table.rank(key) < self.config.k

    # -- queries ---------------------------------------------------------------------------
    @property
    def lookups(self) -> int:
        return len(self._searches)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def waiting(self) -> int:
        return self._waiting_count

    def node_record(self, node_id: bytes) -> Record | None:
        """A verified node record we hold for ``node_id`` (a peer's, or one a lookup found)."""
        return self._node_records.get(node_id)


__all__ = ["Dht", "DhtConfig", "DhtSend", "DhtStats", "Event", "LookupDone", "LookupKind"]
