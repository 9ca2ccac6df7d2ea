"""The asyncio driver: one :class:`~zmesh.node.Node`, real transports, one timer.

aioquic's pattern: on every input (a message, a transport closing, the timer, an API
call) the driver calls the node, then drains its output: bytes to each link's transport,
events to their handlers, and one re-armed ``loop.call_later`` for ``node.get_timer()``.

On top of the node it runs what needs the network:

* signaling: the HTTP endpoint (bootstrap) and SIGNAL frames relayed through neighbours,
  both carrying signed offers and answers.  What each message may do, and every deadline
  and cap, is decided by :class:`~zmesh.signaling.negotiation.Negotiation`; the driver
  makes the WebRTC calls and runs the deadline scopes it expires;
* link policy: carry out the node's :class:`~zmesh.node.DialWanted` effects (the
  dialer's, and the DHT's for a contact it must query): an offer POSTed to the
  signaling URL the descriptor publishes (:func:`signaling_url`), as a bootstrap does,
  else relayed through the mesh (which needs a route: a node without an address, such as
  a proxy or a browser, is reached over the link its descriptor or signals came by, or
  through the DHT peer that named it); either way the offer carries our descriptor, since
  with gossip off the target may not know us;
* streams: :class:`StreamPipe` couples a session's stream to a TCP connection, with
  backpressure both ways (exits use it towards servers, the SOCKS proxy towards apps).
"""

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..circuit.guarding import GuardStateChanged
from ..circuit.sessions import SessionClosed, SessionLegLost, SessionStreamEvent
from ..dht.relayed import LOOKUP_TARGET
from ..driver import drain
from ..errors import CloseCode, RemoteProtocolError, ZMeshError
from ..exit_policy import ExitPolicy, PolicyError, check_target
from ..identity import Descriptor, decode_descriptor, short_id
from ..link.transport import Transport
from ..node import (
    CircuitBuilt,
    CircuitClosed,
    DescriptorLearned,
    DialWanted,
    Event,
    LinkClosed,
    LinkUp,
    Node,
    SignalReceived,
)
from ..onion.paths import Addressed
from ..session.endpoint import (
    StreamEvent,
    StreamOpened,
    StreamReset,
)
from ..signaling.messages import Kind, decode_message
from ..signaling.negotiation import (
    Answer,
    AnswerAbandoned,
    IncomingOffer,
    Limits,
    Negotiation,
    NegotiationEvent,
    Offer,
    OfferExpired,
    SignalingBusyError,
)
from ..signaling.sdp import CompactSdp
from ..signaling.wake import is_wake_payload
from .entropy import SystemRng
from .http import HttpError, HttpServer, Request, http_request
from .rtc import RtcBackend, TransportError
from .streams import (
    RESET_CONNECT_FAILED,
    RESET_POLICY,
    RESET_RESOLVE_FAILED,
    StreamClosedError,
    StreamPipe,
    StreamSlot,
    resolve,
)
from .tasks import TaskSet

if TYPE_CHECKING:  # sqlite3 is optional in Pyodide; the browser node passes store=None
    from .store import Store

log = logging.getLogger("zmesh.aio")


DIAL_TIMEOUT = 15.0


def session_sdp(session: bytes, fingerprint: bytes, role: str) -> str:
    """The SDP to apply for a verified message's compact ``session``.  Raises
    RemoteProtocolError if it is malformed, or (AUTH) if it carries another DTLS
    fingerprint than the one the sender signed."""
    compact = CompactSdp.decode(session)
    if compact.fingerprint != fingerprint:
        raise RemoteProtocolError("SDP fingerprint differs from the signed one", CloseCode.AUTH)
    return compact.to_sdp(role)


def _ip_of(url: str) -> "ipaddress.IPv4Address | ipaddress.IPv6Address | None":
    """The IP literal ``url`` names as its host (IPv4-mapped IPv6 as IPv4); None for a
    host name or a URL that does not parse."""
    try:
        host = urlsplit(url).hostname or ""
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def signaling_url(desc: Addressed, loopback: bool, own: tuple[str, ...] = ()) -> str | None:
    """The first signaling URL (``http://`` or ``https://``, as ``scheme://host:port``) that
    ``desc`` publishes and this node may post an offer to; None if there is none.

    A node on loopback (the operator's own mesh) posts anywhere.  Elsewhere a descriptor
    is anyone's to sign, so its address must not aim our requests at this machine or its
    network: an IP literal must be global, or private only if one of our ``own`` published
    addresses is private too (a mesh on a LAN); loopback, link-local, multicast, reserved
    and unspecified addresses are refused, as is a URL with credentials.  A host name is
    accepted (it is resolved when dialled, not here)."""
    own_private = any(ip is not None and ip.is_private for ip in map(_ip_of, own))
    for address in desc.addresses:
        try:
            parts = urlsplit(address)
            port = parts.port
        except ValueError:
            continue
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            continue
        ip = _ip_of(address)
        if not loopback and ip is not None:
            refused = ip.is_loopback or ip.is_link_local or ip.is_multicast
            refused = refused or ip.is_unspecified or ip.is_reserved
            if refused or not (ip.is_global or (ip.is_private and own_private)):
                continue
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    return None


def wall_clock() -> float:
    """``now`` for the core: Unix time, so key epochs agree across machines."""
    return time.time()


class AsyncNode:
    def __init__(
        self,
        node: Node,
        *,
        rtc: RtcBackend,
        http_client: Callable[..., Awaitable[tuple[int, bytes]]] = http_request,
        store: "Store | None" = None,
        loopback: bool = False,
        exit_policy: ExitPolicy | None = None,
        signaling_limits: Limits | None = None,
    ) -> None:
        self.node = node
        self.rtc = rtc
        self.http_client = http_client
        self.store = store
        self.loopback = loopback
        self.exit_policy = exit_policy
        self.rng = SystemRng()
        self._loop = asyncio.get_running_loop()
        self._transports: dict[int, Transport] = {}
        self._next_link = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._link_waiters: dict[bytes, list[asyncio.Future[int]]] = {}
        self._circuit_waiters: dict[int, asyncio.Future[None]] = {}
        self._streams: dict[tuple[int, int], StreamSlot] = {}  # (session, stream) ->
        self.negotiation = Negotiation(node.identity, self.rng, signaling_limits)
        self._answers: dict[bytes, asyncio.Future[Answer]] = {}  # our offer's nonce -> answer
        self._scopes: dict[bytes, asyncio.Timeout] = {}  # negotiation key -> its deadline
        self._tasks = TaskSet(log)
        self._progress = asyncio.Event()  # set whenever a flush may have freed buffers
        self.on_event: Callable[[Event], None] | None = None
        # streams whose target is a content id (``zm1...``): zmesh/runtime/content.py
        self.content: Callable[[StreamPipe, str], Awaitable[None]] | None = None
        # streams whose target is LOOKUP_TARGET: zmesh/runtime/lookups.py
        self.lookup: Callable[[StreamPipe], Awaitable[None]] | None = None
        # SIGNAL payloads that are wake records or dials (D54): zmesh/runtime/wake.py
        self.on_wake: Callable[[bytes, bytes], None] | None = None
        self.http: HttpServer | None = None
        self.dials = dict.fromkeys(("http", "mesh", "failed"), 0)  # DialWanted, carried out
        self._closing = False
        if store is not None and node.guards is not None:
            store.restore_guards(node.guards, wall_clock())

    # -- the driver loop ------------------------------------------------------------
    def call[T](self, action: Callable[[float], T]) -> T:
        """Run a node (or negotiation) input at the driver's clock, then drain the output."""
        now = wall_clock()
        result = action(now)
        deadline = drain(self.node, now, self._send, self._dispatch)
        self._progress.set()
        self._progress = asyncio.Event()
        self._arm_timer(self._drain_signaling(deadline))
        return result

    def _send(self, link_id: int, data: bytes) -> None:
        transport = self._transports.get(link_id)
        if transport is not None and transport.readyState == "open":
            try:
                transport.send(data)
            except Exception as exc:  # a transport failing under us: treat as closed
                log.info("link=%d event=send_failed error=%r", link_id, str(exc))
                self._spawn(self._close_transport(link_id))

    def _drain_signaling(self, deadline: float) -> float:
        """Carry out the negotiation's events; return the earlier of ``deadline`` and the
        negotiation's timer."""
        while (event := self.negotiation.next_event()) is not None:
            self._on_negotiation_event(event)
        signaling = self.negotiation.get_timer()
        return deadline if signaling is None else min(deadline, signaling)

    def _arm_timer(self, deadline: float) -> None:
        if deadline == self._timer_at or self._closing:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - wall_clock())
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None

        def tick(now: float) -> None:
            self.negotiation.handle_timer(now)
            self.node.handle_timer(now)

        self.call(tick)

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.spawn(coro)

    # -- transports and links -------------------------------------------------------
    def attach(self, transport: Transport, peer: Descriptor | None) -> int:
        """Hand an open transport to the node; ``peer`` when we dialled it."""
        link_id = self._next_link
        self._next_link += 1
        self._transports[link_id] = transport

        def on_message(data: bytes) -> None:
            self.call(lambda now: self.node.receive(link_id, data, now))

        def on_close() -> None:
            if self._transports.pop(link_id, None) is not None:
                self.call(lambda now: self.node.link_closed(link_id, now))

        transport.onmessage = on_message
        transport.onclose = on_close
        self.call(
            lambda now: self.node.open_link(
                link_id, now, binding=transport.channel_binding, peer=peer
            )
        )
        return link_id

    async def _close_transport(self, link_id: int) -> None:
        transport = self._transports.pop(link_id, None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
            self.call(lambda now: self.node.link_closed(link_id, now))

    async def wait_link(self, node_id: bytes, timeout: float = DIAL_TIMEOUT) -> int:
        existing = self.node.link_to(node_id)
        if existing is not None:
            return existing
        fut: asyncio.Future[int] = self._loop.create_future()
        self._link_waiters.setdefault(node_id, []).append(fut)
        return await asyncio.wait_for(fut, timeout)

    # -- events ---------------------------------------------------------------------
    def _dispatch(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
        match event:
            case LinkUp(link_id, peer_id):
                log.info("link=%d event=up peer=%s", link_id, short_id(peer_id))
                for fut in self._link_waiters.pop(peer_id, []):
                    if not fut.done():
                        fut.set_result(link_id)
            case LinkClosed(link_id, peer_id, code):
                log.info("link=%d event=closed code=%s", link_id, code.name)
                transport = self._transports.pop(link_id, None)
                if transport is not None:
                    with contextlib.suppress(Exception):
                        transport.close()
            case DescriptorLearned(desc):
                if self.store is not None:
                    self.store.remember_peer(desc)
            case GuardStateChanged(state):
                if self.store is not None:
                    self.store.save_guards(state)
            case DialWanted(desc):
                if not self._closing:
                    self._spawn(self._dial(desc))
            case SignalReceived(origin, payload):
                self._on_signal(origin, payload)
            case CircuitBuilt(cid, seconds):
                path = ",".join(short_id(i) for i in self.node.builder.path(cid))
                ms = seconds * 1000
                log.info("circuit=%d event=circuit_built build_ms=%.1f path=%s", cid, ms, path)
                built = self._circuit_waiters.pop(cid, None)
                if built is not None and not built.done():
                    built.set_result(None)
            case CircuitClosed(cid, code):
                log.debug("circuit=%d event=closed code=%s", cid, code.name)
                failed = self._circuit_waiters.pop(cid, None)
                if failed is not None and not failed.done():
                    failed.set_exception(StreamClosedError(f"circuit closed ({code.name})"))
            case SessionLegLost(session_id, cid, reason):
                log.info("session=%d event=leg_lost circuit=%d reason=%s", session_id, cid, reason)
            case SessionClosed(session_id, reason):
                log.info("session=%d event=closed reason=%r", session_id, reason)
                for key in [k for k in self._streams if k[0] == session_id]:
                    self._streams.pop(key).inbox.put_nowait(None)
            case SessionStreamEvent(session_id, inner):
                self._on_stream_event(session_id, inner)

    def _on_stream_event(self, session_id: int, event: StreamEvent) -> None:
        key = (session_id, event.stream_id)
        if isinstance(event, StreamOpened):
            self._streams[key] = StreamSlot(asyncio.Queue())
            self._spawn(self._serve_exit(session_id, event.stream_id, event.target))
            return
        slot = self._streams.get(key)
        if slot is not None:
            slot.inbox.put_nowait(event)
            if isinstance(event, StreamReset):
                del self._streams[key]

    # -- signaling ------------------------------------------------------------------
    def _on_negotiation_event(self, event: NegotiationEvent) -> None:
        """A negotiation lost its deadline or its slot: end the work waiting on it."""
        match event:
            case OfferExpired(_, nonce):
                key = b"o" + nonce
            case AnswerAbandoned(sender, nonce, _):
                key = b"a" + sender + nonce
        scope = self._scopes.get(key)
        if scope is not None and not scope.expired():
            scope.reschedule(self._loop.time())

    @contextlib.asynccontextmanager
    async def _deadline(self, key: bytes) -> AsyncIterator[None]:
        """Raise TimeoutError out of the block when the negotiation expires ``key``."""
        async with asyncio.timeout(None) as scope:
            self._scopes[key] = scope
            try:
                yield
            finally:
                self._scopes.pop(key, None)

    async def _connect(
        self, desc: Descriptor, deliver: Callable[[Offer], Awaitable[Answer]]
    ) -> Transport:
        """Dial ``desc``: make a signed offer (carrying our descriptor), have
        ``deliver`` carry it and return the verified answer, and open the connection, all
        before the offer's deadline.  Returns the open transport (no link handshake yet).
        Raises TimeoutError, TransportError or ZMeshError (RemoteProtocolError for a bad
        answer)."""
        pending, offer_sdp = await self.rtc.dial(loopback=self.loopback)
        offer: Offer | None = None
        try:
            compact = CompactSdp.from_sdp(offer_sdp)
            offer = self.call(
                lambda now: self.negotiation.make_offer(
                    desc,
                    compact.fingerprint,
                    compact.encode(),
                    now,
                    descriptor=self.node.descriptor(now).encode(),
                )
            )
            async with self._deadline(b"o" + offer.nonce):
                answer = await deliver(offer)
                answer_sdp = session_sdp(answer.session, answer.fingerprint, "answer")
                timeout = self.negotiation.limits.offer_timeout
                return await pending.complete(answer_sdp, timeout=timeout)
        except BaseException:
            await pending.aclose()
            raise
        finally:
            if offer is not None:
                self.negotiation.offer_done(offer.nonce)

    async def _answer(self, offer: IncomingOffer, answered: asyncio.Future[bytes]) -> None:
        """Answer a verified offer: resolve ``answered`` with the signed answer (or the
        error that prevented it), then attach the link once it opens.  The offer's
        pending-answer slot is held until then, within its deadline."""
        sender = offer.sender.node_id
        pending = None
        try:
            async with self._deadline(b"a" + sender + offer.nonce):
                offer_sdp = session_sdp(offer.session, offer.fingerprint, "offer")
                pending, answer_sdp = await self.rtc.answer(offer_sdp, loopback=self.loopback)
                compact = CompactSdp.from_sdp(answer_sdp)
                answer = self.negotiation.make_answer(
                    offer, compact.fingerprint, compact.encode(), wall_clock()
                )
                if not answered.done():
                    answered.set_result(answer)
                timeout = self.negotiation.limits.answer_timeout
                transport = await pending.connected(timeout=timeout)
            pending = None
            self.attach(transport, None)
        except (ZMeshError, TimeoutError, TransportError) as exc:
            log.info("signal event=answer_failed peer=%s error=%r", short_id(sender), str(exc))
            if not answered.done():
                answered.set_exception(exc)
        finally:
            if not answered.done():
                answered.cancel()
            self.negotiation.answer_done(sender, offer.nonce)
            if pending is not None:
                await pending.aclose()

    async def handle_http(self, request: Request) -> tuple[str, bytes]:
        """The signaling endpoint: GET the descriptor, POST an offer for an answer.

        A bad offer gets 400 (malformed) or 403 (forged, stale, replayed); an offer
        refused for load (pending-answer caps) or not answered in time gets 503."""
        if request.path == "/zmesh/descriptor":
            if request.method != "GET":
                raise HttpError(405)
            return "application/octet-stream", self.node.descriptor(wall_clock()).encode()
        if request.path == "/zmesh/signal":
            if request.method != "POST":
                raise HttpError(405)
            try:
                offer = self.call(
                    lambda now: self.negotiation.open_offer(
                        request.body, now, directory=self.node.directory
                    )
                )
                answered: asyncio.Future[bytes] = self._loop.create_future()
                self._spawn(self._answer(offer, answered))
                answer = await answered
            except RemoteProtocolError as exc:
                status = 403 if exc.code in (CloseCode.AUTH, CloseCode.REPLAY) else 400
                raise HttpError(status, str(exc)) from None
            except (SignalingBusyError, TimeoutError) as exc:
                raise HttpError(503, str(exc) or "signaling timed out") from None
            except (TransportError, ZMeshError) as exc:
                raise HttpError(400, str(exc)) from None
            return "application/octet-stream", answer
        if request.path == "/":
            return "text/plain", f"zmesh node {self.node.node_id.hex()}\n".encode()
        raise HttpError(404)

    async def serve_http(self, host: str, port: int) -> int:
        self.http = HttpServer(self.handle_http)
        return await self.http.start(host, port)

    async def _descriptor_at(self, base: str) -> Descriptor:
        status, body = await self.http_client(base + "/zmesh/descriptor")
        if status != 200:
            raise ZMeshError(f"{base}: descriptor request failed with HTTP {status}")
        desc = decode_descriptor(body)
        desc.verify(wall_clock())
        return desc

    async def bootstrap(self, url: str) -> bytes:
        """Link to the node serving signaling at ``url``; return its node id.  Raises
        ZMeshError (RemoteProtocolError for a bad answer), OSError, TimeoutError or
        TransportError."""
        base = url.rstrip("/")
        start = time.perf_counter()
        desc = await self._descriptor_at(base)
        if self.node.link_to(desc.node_id) is not None:
            return desc.node_id

        def learn(now: float) -> None:
            self.node.dialing(desc.node_id, now)  # first: learning it must not dial it too
            self.node.learn_descriptor(desc, now)

        self.call(learn)
        try:
            transport = await self._connect(desc, self._post_to(base))
            self.attach(transport, desc)
            await self.wait_link(desc.node_id)
        except BaseException:
            if not self._closing:  # the caller retries: no failure recorded
                self.call(lambda now: self.node.dial_ended(desc.node_id))
            raise
        took = (time.perf_counter() - start) * 1000
        log.debug("bootstrap event=linked url=%s ms=%.0f", base, took)
        return desc.node_id

    def _post_to(self, base: str) -> Callable[[Offer], Awaitable[Answer]]:
        """Deliver an offer by POSTing it to the signaling endpoint at ``base``; the
        answer is verified.  The delivery raises ZMeshError for a refusal (an HTTP status
        other than 200) or a bad answer, OSError, TimeoutError or ValueError."""

        async def post(offer: Offer) -> Answer:
            status, body = await self.http_client(
                base + "/zmesh/signal", method="POST", body=offer.data
            )
            if status != 200:
                raise ZMeshError(f"{base}: offer refused with HTTP {status}: {body[:200]!r}")
            return self.negotiation.open_answer(body, wall_clock())

        return post

    async def _connect_via_mesh(self, desc: Descriptor) -> Transport:
        """Open a transport to ``desc`` with signaling relayed through the mesh (no link
        handshake yet); the offer introduces us (gossip may not have).  Raises as
        :meth:`_connect`."""

        async def relay(offer: Offer) -> Answer:
            answered: asyncio.Future[Answer] = self._loop.create_future()
            self._answers[offer.nonce] = answered
            try:
                if not self.call(lambda now: self.node.send_signal(desc.node_id, offer.data, now)):
                    raise ZMeshError("no route to the peer for signaling")
                return await answered
            finally:
                self._answers.pop(offer.nonce, None)

        return await self._connect(desc, relay)

    async def _dial(self, desc: Descriptor) -> None:
        """Carry out a :class:`DialWanted`: post a signed offer (introducing us) to the
        signaling URL ``desc`` publishes, if :func:`signaling_url` lets us, else signal
        through the mesh.  A failure is logged and reported (``Node.dial_failed``)."""
        if self.node.link_to(desc.node_id) is not None:
            return  # it came up meanwhile (a bootstrap, or the peer dialled us)
        url = signaling_url(desc, self.loopback, self.node.config.addresses)
        how = "http" if url is not None else "mesh"
        try:
            if url is not None:
                transport = await self._connect(desc, self._post_to(url))
            else:
                transport = await self._connect_via_mesh(desc)
            self.attach(transport, desc)
            self.dials[how] += 1
        except (ZMeshError, TimeoutError, TransportError, OSError, ValueError) as exc:
            self.dials["failed"] += 1
            log.info(
                "signal event=dial_failed peer=%s via=%s error=%r",
                short_id(desc.node_id),
                how,
                str(exc) or type(exc).__name__,
            )
            if not self._closing:
                self.call(lambda now: self.node.dial_failed(desc.node_id, now))

    def _on_signal(self, origin: bytes, payload: bytes) -> None:
        """A SIGNAL payload from ``origin``: an answer to one of our offers, or an offer
        to answer (in the background, replying through the mesh).  Bad or refused
        messages are dropped."""
        if is_wake_payload(payload):
            if self.on_wake is not None:
                self.on_wake(origin, payload)
            return
        now = wall_clock()
        try:
            if decode_message(payload).kind is Kind.ANSWER:
                answer = self.negotiation.open_answer(payload, now, origin=origin)
                waiter = self._answers.get(answer.nonce)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
                return
            offer = self.negotiation.open_offer(
                payload, now, directory=self.node.directory, origin=origin
            )
        except (RemoteProtocolError, SignalingBusyError) as exc:
            log.info("signal event=drop origin=%s reason=%r", short_id(origin), str(exc))
            return
        answered: asyncio.Future[bytes] = self._loop.create_future()

        def reply(done: asyncio.Future[bytes]) -> None:
            if not done.cancelled() and done.exception() is None:
                answer = done.result()
                self.call(lambda now: self.node.send_signal(origin, answer, now))

        answered.add_done_callback(reply)
        self._spawn(self._answer(offer, answered))

    # -- circuits and streams -------------------------------------------------------
    async def build_circuit(self, path: list[Descriptor], timeout: float = 10.0) -> int:
        cid = self.call(lambda now: self.node.build_circuit(path, now))
        fut: asyncio.Future[None] = self._loop.create_future()
        self._circuit_waiters[cid] = fut
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._circuit_waiters.pop(cid, None)
            with contextlib.suppress(ZMeshError):
                self.call(lambda now: self.node.close_circuit(cid, now))
            raise
        return cid

    def session_for(self, cids: list[int]) -> int:
        """The session whose legs are the built circuits ``cids``: the session of the
        first if it has one, else a new one over all of them.  Raises ZMeshError."""
        sessions = self.node.sessions
        existing = sessions.session_of(cids[0])
        if existing is not None:
            return existing

        def create(now: float) -> int:
            session_id = sessions.create(now)
            for cid in cids:
                sessions.add_leg(session_id, cid, now)
            return session_id

        return self.call(create)

    def open_stream(self, session_id: int, target: str) -> StreamPipe:
        sid = self.call(lambda now: self.node.sessions.open(session_id, target, now))
        slot = StreamSlot(asyncio.Queue())
        self._streams[(session_id, sid)] = slot
        return StreamPipe(self, session_id, sid, slot)

    async def _serve_exit(self, session_id: int, sid: int, target: str) -> None:
        """An exit: resolve, apply the exit policy, connect, then pipe both ways."""
        slot = self._streams[(session_id, sid)]
        pipe = StreamPipe(self, session_id, sid, slot)
        if self.content is not None and target.startswith("zm1"):
            await self.content(pipe, target)
            return
        if self.lookup is not None and target == LOOKUP_TARGET:
            await self.lookup(pipe)
            return
        if self.exit_policy is None:
            pipe.reset(RESET_POLICY)
            return
        try:
            host, port = split_target(target)
            ip = check_target(self.exit_policy, host, port, await resolve(self._loop, host, port))
        except PolicyError as exc:
            log.info("exit event=refused reason=%r", str(exc))
            pipe.reset(RESET_POLICY)
            return
        except (OSError, ValueError, TimeoutError) as exc:
            log.info("exit event=resolve_failed reason=%r", str(exc))
            pipe.reset(RESET_RESOLVE_FAILED)
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(str(ip), port), timeout=10.0
            )
        except (OSError, TimeoutError) as exc:
            log.info("exit event=connect_failed reason=%r", str(exc))
            pipe.reset(RESET_CONNECT_FAILED)
            return
        log.debug("exit event=connected target=%s", target)
        with contextlib.suppress(ZMeshError):
            self.call(lambda now: self.node.sessions.accept(session_id, sid, now))
        await pipe.run(reader, writer)

    async def close(self) -> None:
        self._closing = True
        if self.http is not None:
            await self.http.close()
        if self._timer is not None:
            self._timer.cancel()
        self._tasks.cancel()
        for link_id in list(self._transports):
            transport = self._transports.pop(link_id)
            with contextlib.suppress(Exception):
                transport.close()
        if self.store is not None:
            self.store.close()


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ValueError if malformed."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"bad stream target {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
