"""The node: composes links, the relay table, the circuit builder, the directory and signals.

Theory of operation (aioquic's pattern).  A driver owns the transports and the clock and
talks to one :class:`Node`.  Inputs each take ``now``: :meth:`Node.open_link`,
:meth:`Node.receive`, :meth:`Node.link_closed`, :meth:`Node.handle_timer`, and the
application API (:meth:`Node.build_circuit`, :attr:`Node.sessions`, ...).  Outputs are
pulled after every input (:func:`zmesh.driver.drain`): :meth:`Node.datagrams_to_send`,
:meth:`Node.get_timer` (one deadline) and :meth:`Node.next_event` (events, and effects such
as :class:`~zmesh.dialer.DialWanted` that the driver carries out).

The node holds no protocol state of its own.  Its components share one outer shape
(``handle_timer(now)``, ``get_timer()``, ``next_event()``, inputs taking ``now``): a
:class:`~zmesh.link.connection.LinkConnection` per link (in a
:class:`~zmesh.link.table.LinkTable`), the :class:`~zmesh.circuit.relay.RelayTable`, the
:class:`~zmesh.circuit.builder.CircuitBuilder`, the :class:`~zmesh.circuit.sessions.Sessions`
(every stream rides a session over one or more circuits), the
:class:`~zmesh.directory.Directory`, the :class:`~zmesh.signaling.router.SignalRouter` and
the :class:`~zmesh.dialer.Dialer`, and, with ``NodeConfig.dht``, the :class:`~zmesh.dht.service.Dht`
(whose :class:`~zmesh.dht.service.DhtSend` the node puts on links as DHT frames).

Frames reach them through a handler table keyed by frame type, with "allowed before the
handshake" and "after" columns.  A frame for a circuit that closed is dropped quietly; one
for a circuit id that never existed is a protocol error.  Error boundary: a
:class:`RemoteProtocolError` from a link frame closes that link (as does a link whose
``failure`` is set); one from a circuit's setup or cells destroys that circuit.  Nothing
else escapes :meth:`receive`.
"""

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .circuit.builder import CircuitBuilder
from .circuit.common import (
    BUILD_TIMEOUT,
    IDLE_TIMEOUT,
    CircuitBuilt,
    CircuitClosed,
    CircuitConfig,
    CircuitEvent,
    HopOpened,
)
from .circuit.guarding import Guards, GuardStateChanged
from .circuit.relay import RelayTable
from .circuit.sessions import SessionEvent, Sessions
from .dht.sample import PeerSample
from .dht.service import Dht, DhtConfig, DhtSend, LookupDone
from .dialer import Dialer, DialWanted
from .directory import MIN_UPDATE_INTERVAL, DescriptorLearned, Directory
from .errors import CloseCode, LocalProtocolError, RemoteProtocolError
from .identity import Descriptor, Flags, Identity, short_id
from .link import frames as lf
from .link.connection import LinkClosed, LinkConnection, LinkLimits, LinkStatus, LinkUp
from .link.handshake import LinkHandshake
from .link.routes import Route as _Route
from .link.table import LinkTable
from .onion.geometry import DEFAULT_GEOMETRY, Geometry
from .onion.keyring import DEFAULT_EPOCH_LENGTH, OnionKeyRing
from .onion.paths import subnet_of
from .rng import Rng
from .shaping import NO_SHAPING, ShapeConfig, Shaping
from .signaling.router import SignalReceived, SignalRouter

log = logging.getLogger("zmesh.node")

DESCRIPTOR_LIFETIME = 3 * 3600
MAX_INBOUND_LINKS = 256  # links peers opened to us and that are up
LINK_FAILED = 8.0  # the avoidance weight of a peer whose link failed: 4 min, until it is back


Event = (
    LinkUp
    | LinkClosed
    | CircuitEvent
    | SessionEvent
    | DescriptorLearned
    | SignalReceived
    | DialWanted
    | LookupDone
    | GuardStateChanged
)


@dataclass(frozen=True)
class NodeConfig:
    geometry: Geometry = DEFAULT_GEOMETRY
    flags: Flags = Flags.RELAY
    epoch_length: float = DEFAULT_EPOCH_LENGTH
    addresses: tuple[str, ...] = ()
    stream_window: int = 1 << 20
    gossip: bool = True
    keepalive: float = 1.0  # send a PING on every link this often (phi-accrual, D42)
    link_timeout: float = 10.0  # close a link silent this long, whatever phi says
    credit_timeout: float = 30.0  # close a link whose peer holds our credit this long
    link_batch: int = lf.SEND_BATCH  # frames per link message, in bytes (D56); 0: one each
    # (no batches while shaping is on: the shaper cuts its own messages)
    build_timeout: float = BUILD_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT  # destroy relayed circuits with no cell this long
    auto_consume: bool = True  # see CircuitConfig.auto_consume
    hop_events: bool = False  # see CircuitConfig.hop_events
    max_links: int = 0  # relays to link to on our own (DialWanted); 0: only when told
    max_inbound_links: int = MAX_INBOUND_LINKS
    dht: bool = False  # run the DHT on links (zmesh/dht/service.py)
    sample_links: bool = False  # offer each linked relay to the peer sample (a browser: D61)
    puzzle_difficulty: int = 0  # DHT contacts' ids must solve the S/Kademlia puzzle at this
    guards: bool = False  # first hops from persistent guards (zmesh/circuit/guarding.py)
    private: bool = True  # loopback or operator-named relays: no subnet or guard-age rules
    shape: ShapeConfig = NO_SHAPING  # how links' messages go on the wire (zmesh/shaping)


class Node:
    def __init__(
        self, identity: Identity, rng: Rng, now: float, config: NodeConfig | None = None
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.config = config or NodeConfig()
        if self.config.epoch_length < MIN_UPDATE_INTERVAL:  # else key updates would be dropped
            raise LocalProtocolError(f"epoch_length must be at least {MIN_UPDATE_INTERVAL:g} s")
        self.geometry = self.config.geometry
        self._rng = rng
        self.keyring = OnionKeyRing(rng, now, epoch_length=self.config.epoch_length)
        self._next_rotation = self.keyring.next_rotation(now)
        self._links = LinkTable()
        self.shaping = Shaping(self.config.shape, rng)  # every link's messages pass it
        ids = itertools.count(1)
        cfg = self.config
        cc = CircuitConfig(
            cfg.stream_window, cfg.build_timeout, cfg.idle_timeout, cfg.auto_consume, cfg.hop_events
        )
        # a shaper cuts its own messages from the frames, and spots urgent ones alone
        batch = cfg.link_batch if cfg.shape.mode == "off" else 0
        self._limits = LinkLimits(cfg.keepalive, cfg.link_timeout, cfg.credit_timeout, batch)
        self.directory = Directory(self.node_id, self._links, now)
        self.dialer = Dialer(self.node_id, self.config.max_links)
        self.relay = RelayTable(
            self._links, self.keyring, self.geometry, rng, config=cc, ids=ids, now=now
        )
        self.builder = CircuitBuilder(self._links, self.geometry, rng, config=cc, ids=ids)
        self.signals = SignalRouter(self.node_id, self._links, self.directory.route)
        self.sessions = Sessions(self.builder, self.relay, rng, config=cc, settle=self._settle)
        subnet: Callable[[Descriptor], str] | None = None if cfg.private else subnet_of
        dc = DhtConfig(puzzle_difficulty=cfg.puzzle_difficulty, subnet_caps=not cfg.private)
        self.dht = self.sample = None
        if cfg.dht:  # paths come from a peer sample (zmesh/dht/sample.py), not the directory
            self.dht = Dht(
                identity, self.descriptor, rng, now, dial=self.dialer.want, settle=self._settle,
                descriptor_of=self.directory.get, refer=self.signals.refer, config=dc,
            )  # fmt: skip
            self.sample = PeerSample(
                self.dht, rng, now, linked=lambda i: self._links.to_peer(i) is not None,
                subnet=subnet, dial=self.dialer.want, unresolved=self.relay.dial_failed,
                keep=lambda i: self.guards is not None and self.guards.holds(i),
            )  # fmt: skip
        relays = self.directory if self.sample is None else self.sample
        known = self.directory if self.sample is None else self.sample.known(self.directory)
        self.relay.dial_through(
            known, self.dialer.want, None if self.sample is None else self.sample.find
        )
        self.guards = None if not cfg.guards else Guards(
            self.node_id, relays, self._links, rng, now, dial=self.dialer.want, private=cfg.private
        )  # fmt: skip
        self.sessions.route_with(
            relays, self._links, self.node_id, guards=self.guards, subnet=subnet
        )
        extra = tuple(c for c in (self.dht, self.sample, self.guards) if c is not None)
        self._timed = (self.relay, self.builder, self.sessions, self.directory, self.dialer, *extra)
        self._sources = (*self._timed, self.signals)
        self._events: deque[Event] = deque()
        self._descriptor: Descriptor | None = None
        self._closing: list[tuple[int, bytes]] = []  # CLOSE frames of links already gone
        # the frame-handler table: handler, allowed before the handshake, and after it
        handshake = _Route(self._on_handshake, before_handshake=True, after_handshake=False)
        self._routes: dict[type, _Route] = {
            lf.Hello1: handshake,
            lf.Hello2: handshake,
            lf.Hello3: handshake,
            lf.Close: _Route(self._on_close, before_handshake=True),
            lf.Credit: _Route(self._on_credit),
            lf.Padding: _Route(lambda conn, frame, now: None),  # the receive refreshed the link
            lf.Ping: _Route(LinkConnection.on_ping),
            lf.Pong: _Route(LinkConnection.on_pong),
            lf.Create: _Route(self.relay.on_create),
            lf.Created: _Route(self._on_circuit_frame),
            lf.Cell: _Route(self._on_circuit_frame),
            lf.Destroy: _Route(self._on_circuit_frame),
            lf.DescriptorFrame: _Route(self.directory.on_descriptor),
            lf.Signal: _Route(self.signals.on_signal),
            lf.DhtFrame: _Route(self._on_dht),
        }

    def descriptor(self, now: float) -> Descriptor:
        """This node's signed descriptor for the current onion key epoch."""
        epoch, onion_pk = self.keyring.current(now)
        if self._descriptor is None or self._descriptor.onion_epoch != epoch:
            self._descriptor = self.identity.make_descriptor(
                flags=self.config.flags,
                onion_epoch=epoch,
                onion_pk=onion_pk,
                published=int(now),
                lifetime=DESCRIPTOR_LIFETIME,
                addresses=self.config.addresses,
            )
        return self._descriptor

    def link_to(self, node_id: bytes) -> int | None:
        """An open link to ``node_id`` (the first one, if both sides dialled)."""
        conn = self._links.to_peer(node_id)
        return None if conn is None else conn.link_id

    def peers(self) -> list[bytes]:
        return self._links.peers()

    def link_health(self, now: float) -> list[LinkStatus]:
        """Each up link's peer, RTT, loss, phi and age."""
        return [conn.status(now) for conn in self._links if conn.up]

    # -- driver outputs -------------------------------------------------------------
    def datagrams_to_send(self, now: float) -> list[tuple[int, bytes]]:
        """Bytes to send, per link, in order."""
        out, self._closing = self._closing, []
        ready = self._links.watch.ready
        while ready:
            conn = next(iter(ready))
            del ready[conn]
            sent = self.shaping.send(conn.link_id, conn.datagrams_to_send())
            if isinstance(sent, CloseCode):  # unreachable within the link's credit
                conn.fail("shaping queue full", sent)  # closed by the next input's settle
                continue
            out += [(conn.link_id, data) for data in sent]
        return out + self.shaping.due()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float:
        timers = [c.get_timer() for c in self._links]
        shaping = self.shaping.get_timer()
        return min(self._next_rotation, shaping, *(c.get_timer() for c in self._timed), *timers)

    def handle_timer(self, now: float) -> None:
        for conn in self._links:
            conn.handle_timer(now)
        self.shaping.handle_timer(now)
        for component in self._timed:
            component.handle_timer(now)
        if now >= self._next_rotation:
            self.keyring.rotate(now)
            self._next_rotation = self.keyring.next_rotation(now)
            if self.config.gossip:
                self.directory.announce(self.descriptor(now), now)
        self._settle(now)

    def _settle(self, now: float) -> None:
        """After every input: close failed links, collect the components' events."""
        failed = self._links.watch.failed
        while failed:
            conn = next(iter(failed))
            assert conn.failure is not None
            reason, code = conn.failure
            log.info("link=%d event=close reason=%r", conn.link_id, reason)
            self._close_link(conn, code, now)
        self._collect(now)

    def _collect(self, now: float) -> None:
        """Move the components' events into ours, in order, reacting to some."""
        while any(source.events for source in self._sources):
            for source in self._sources:
                events = source.events
                while events:
                    event = events.popleft()
                    if isinstance(event, DhtSend):  # the DHT's RPCs ride on links
                        conn = self._links.to_peer(event.peer_id)
                        if conn is not None and conn.has_room(0):
                            conn.send(lf.DhtFrame(event.data), now)
                        continue
                    if type(event) is LookupDone and self._sampled(event, now):
                        continue  # the sample's own walk: not the application's
                    self._events.append(event)
                    if type(event) is CircuitClosed:
                        self.sessions.circuit_closed(event.circuit_id, now)
                    elif type(event) is CircuitBuilt:
                        self.sessions.circuit_built(event.circuit_id, now)
                    elif type(event) is DescriptorLearned:
                        desc = event.descriptor
                        linked = self._links.to_peer(desc.node_id) is not None
                        self.dialer.consider(desc, linked, len(self._links.peers()), now)

    def _sampled(self, event: LookupDone, now: float) -> bool:
        return self.sample is not None and self.sample.lookup_done(event, now)

    # -- links ----------------------------------------------------------------------
    def open_link(
        self, link_id: int, now: float, *, binding: bytes, peer: Descriptor | None = None
    ) -> None:
        """A transport opened.  ``peer`` is given when we initiated it (we know whom we
        dialled); otherwise we wait for the peer's HELLO1 (the caps on inbound links:
        :meth:`LinkTable.add`)."""
        hs = LinkHandshake(
            self.identity,
            initiator=peer is not None,
            binding=binding,
            rng=self._rng,
            expected_peer_kem_pk=peer.identity_kem_pk if peer else None,
            expected_peer_id=peer.node_id if peer else None,
        )
        conn = LinkConnection(
            link_id, hs, self.geometry, now, limits=self._limits, watch=self._links.watch
        )
        self._links.add(conn, self.config.max_inbound_links)
        self.shaping.open(link_id, now)
        if peer is not None:
            conn.send(hs.start(), now)
        self._settle(now)

    def link_closed(self, link_id: int, now: float) -> None:
        """The transport closed under us."""
        conn = self._links.get(link_id)
        if conn is not None:
            self._close_link(conn, CloseCode.CONNECTION_FAILED, now, notify=False)
            self._settle(now)

    def _close_link(
        self, conn: LinkConnection, code: CloseCode, now: float, *, notify: bool = True
    ) -> None:
        if conn.closed:
            return
        if notify:
            conn.send(lf.Close(code), now)
            # what was queued within credit, and the CLOSE, still go out
            last = self.shaping.close(conn.link_id, conn.datagrams_to_send())
            self._closing.extend((conn.link_id, d) for d in last)
        else:
            self.shaping.close(conn.link_id, [])
        self._links.remove(conn)  # first: teardowns send nothing more on it
        if conn.peer_id is not None and code in (CloseCode.CONNECTION_FAILED, CloseCode.TIMEOUT):
            self.builder.avoidance.failed(conn.peer_id, now, LINK_FAILED)  # likely dead
            self.dialer.failed(conn.peer_id, now)
            if self.guards:
                self.guards.link_failed(conn.peer_id, now)
        self.relay.link_closed(conn, now)
        self.builder.link_closed(conn, now)
        self.directory.link_closed(conn.link_id)
        self.signals.link_closed(conn.link_id)
        if self.dht and conn.peer_id and self._links.to_peer(conn.peer_id) is None:
            self.dht.link_down(conn.peer_id, now)
        self._collect(now)  # the circuits' events come before the link's
        self._events.append(LinkClosed(conn.link_id, conn.peer_id, code))

    def receive(self, link_id: int, data: bytes, now: float) -> None:
        """Bytes arrived on a link."""
        conn = self._links.get(link_id)
        if conn is None:
            return
        try:
            counted = 0
            for frame in conn.feed(self.shaping.unwrap(link_id, data), now):
                route = self._routes[type(frame)]
                if not (route.after_handshake if conn.up else route.before_handshake):
                    raise RemoteProtocolError(
                        f"{type(frame).__name__} frame out of place", CloseCode.HANDSHAKE
                    )
                counts = conn.admit(frame)
                route.handler(conn, frame, now)
                if conn.closed:
                    break
                counted += counts
            else:
                conn.processed_frames(counted)
        except RemoteProtocolError as exc:
            log.info("link=%d event=close reason=%r", link_id, str(exc))
            self._close_link(conn, exc.code, now)
        self._settle(now)

    # -- frame handlers -------------------------------------------------------------
    def _on_handshake(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        reply = conn.handshake.receive(frame)
        if reply is not None:
            conn.send(reply, now)
        if conn.handshake.done:
            conn.peer_id = conn.handshake.peer_id
            assert conn.peer_id is not None
            self._links.mark_up(conn)
            conn.start(now)
            self.dialer.done(conn.peer_id)
            self.builder.avoidance.clear(conn.peer_id)  # alive after all
            if self.guards:
                self.guards.link_up(conn.peer_id, now)
            self.relay.link_up(conn, now)  # CREATEs that waited for this link go on
            if self.dht:
                self.dht.link_up(conn.peer_id, self.directory.get(conn.peer_id), now)
            if self.sample is not None and self.config.sample_links:
                desc = self.sample.describe(conn.peer_id) or self.directory.get(conn.peer_id)
                if desc is not None:  # verified (a bootstrap's, or the node record dialled)
                    self.sample.offer(desc, now)
            log.debug("link=%d event=up peer=%s", conn.link_id, short_id(conn.peer_id))
            self._collect(now)
            self._events.append(LinkUp(conn.link_id, conn.peer_id))
            own = self.descriptor(now) if self.config.gossip else None
            self.directory.link_up(conn, own, now)

    def _on_close(self, conn: LinkConnection, frame: lf.Close, now: float) -> None:
        self._close_link(conn, frame.code, now, notify=False)

    def _on_dht(self, conn: LinkConnection, frame: lf.DhtFrame, now: float) -> None:
        if self.dht and conn.peer_id:  # a node without the DHT ignores it
            self.dht.receive(conn.peer_id, frame.data, now)

    def _on_credit(self, conn: LinkConnection, frame: lf.Credit, now: float) -> None:
        conn.receive_credit(frame.frames, now)
        self.directory.pump(now)

    def _on_circuit_frame(
        self, conn: LinkConnection, frame: lf.Created | lf.Cell | lf.Destroy, now: float
    ) -> None:
        """To the table that owns the circuit.  A frame for a circuit that closed is a race
        with a DESTROY, not an attack: dropped.  One for an id that never existed is a
        protocol error (RemoteProtocolError)."""
        owner = conn.circuits.get(frame.circ_id)
        if owner is None:
            if conn.circuit_state(frame.circ_id) is None and not isinstance(frame, lf.Destroy):
                raise RemoteProtocolError(f"{type(frame).__name__} for an unknown circuit")
            return
        table = self.relay if owner == "relay" else self.builder
        if isinstance(frame, lf.Cell):
            table.on_cell(conn, frame, now)
        elif isinstance(frame, lf.Created):
            table.on_created(conn, frame, now)
        else:
            table.on_destroy(conn, frame, now)

    def dial_failed(self, node_id: bytes, now: float) -> None:
        """A :class:`DialWanted` could not be carried out."""
        self.dialer.failed(node_id, now)
        self.relay.dial_failed(node_id, now)
        if self.dht:
            self.dht.dial_failed(node_id, now)
        if self.guards:
            self.guards.link_failed(node_id, now)
        self._settle(now)

    def dialing(self, node_id: bytes, now: float) -> None:
        """The driver dials ``node_id`` on its own (a bootstrap); the dial policy waits for
        it rather than dialling the same node twice.  Report the end: the link coming up,
        or :meth:`dial_ended`."""
        self.dialer.dialing(node_id, now)

    def dial_ended(self, node_id: bytes) -> None:
        """The driver's own dial to ``node_id`` ended without a link (nothing recorded)."""
        self.dialer.done(node_id)

    def learn_descriptor(self, desc: Descriptor, now: float) -> None:
        """A descriptor obtained out of band (bootstrap); RemoteProtocolError if invalid."""
        self.directory.add(desc, now)
        self._settle(now)

    def send_signal(self, target: bytes, payload: bytes, now: float) -> bool:
        """Send a signaling payload to ``target`` through the mesh; False if no route."""
        sent = self.signals.send(target, payload, now)
        self._settle(now)
        return sent

    # -- circuits and streams --------------------------------------------------------
    def build_circuit(self, path: list[Descriptor], now: float) -> int:
        """Start building a circuit through ``path`` (verified descriptors, first hop
        linked); returns its id.  :class:`CircuitBuilt` follows one round trip later."""
        circuit_id = self.builder.build(path, now)
        self._settle(now)
        return circuit_id

    def close_circuit(self, circuit_id: int, now: float) -> None:
        table = self.builder if circuit_id in self.builder else self.relay
        table.close(circuit_id, now)
        self._settle(now)


__all__ = [
    "CircuitBuilt",
    "CircuitClosed",
    "DescriptorLearned",
    "DialWanted",
    "Event",
    "HopOpened",
    "LinkClosed",
    "LinkUp",
    "LookupDone",
    "Node",
    "NodeConfig",
    "SessionEvent",
    "SignalReceived",
]
