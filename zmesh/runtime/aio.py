"""The asyncio driver: one :class:`~zmesh.node.Node`, real transports, one timer.

aioquic's pattern: on every input (a message, a transport closing, the timer, an API
call) the driver calls the node, then drains its output: bytes to each link's transport,
events to their handlers, and one re-armed ``loop.call_later`` for ``node.get_timer()``.

On top of the node it runs what needs the network:

* signaling: the HTTP endpoint (bootstrap) and SIGNAL frames relayed through neighbours,
  both carrying signed offers and answers (:mod:`zmesh.signaling.messages`);
* link policy: keep a link to every relay learned by gossip, up to ``max_links``;
* streams: :class:`StreamPipe` couples a circuit stream to a TCP connection, with
  backpressure both ways (exits use it towards servers, the SOCKS proxy towards apps).
"""

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import CloseCode, RemoteProtocolError, ZMeshError
from ..exit_policy import ExitPolicy, PolicyError, check_target
from ..identity import Descriptor, Flags, decode_descriptor, short_id
from ..link.transport import Transport
from ..node import (
    CircuitBuilt,
    CircuitClosed,
    CircuitStreamEvent,
    DescriptorLearned,
    Event,
    LinkClosed,
    LinkUp,
    Node,
    SignalReceived,
)
from ..session.endpoint import (
    StreamConnected,
    StreamData,
    StreamEvent,
    StreamFinished,
    StreamOpened,
    StreamReset,
)
from ..signaling.messages import (
    Kind,
    ReplayGuard,
    SignalingMessage,
    decode_message,
    verify_message,
)
from ..signaling.sdp import CompactSdp
from .entropy import SystemRng
from .http import HttpError, HttpServer, Request, http_request
from .rtc import RtcBackend, TransportError
from .tasks import TaskSet

if TYPE_CHECKING:  # sqlite3 is optional in Pyodide; the browser node passes store=None
    from .store import Store

log = logging.getLogger("zmesh.aio")

STREAM_HIGH_WATER = 1 << 20  # pause a TCP reader when this much waits for the circuit
READ_CHUNK = 64 * 1024
DIAL_TIMEOUT = 15.0
RESET_POLICY = 1
RESET_CONNECT_FAILED = 2
RESET_RESOLVE_FAILED = 3
RESET_CLOSED = 4
RESET_TIMEOUT = 5


class StreamClosedError(ZMeshError):
    """A circuit stream ended abnormally (reset, or its circuit was destroyed)."""


@dataclass
class _StreamSlot:
    inbox: asyncio.Queue[StreamEvent | None]


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
        max_links: int = 64,
    ) -> None:
        self.node = node
        self.rtc = rtc
        self.http_client = http_client
        self.store = store
        self.loopback = loopback
        self.exit_policy = exit_policy
        self.max_links = max_links
        self.rng = SystemRng()
        self._loop = asyncio.get_running_loop()
        self._transports: dict[int, Transport] = {}
        self._next_link = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._link_waiters: dict[bytes, list[asyncio.Future[int]]] = {}
        self._circuit_waiters: dict[int, asyncio.Future[None]] = {}
        self._streams: dict[tuple[int, int], _StreamSlot] = {}
        self._answers: dict[tuple[bytes, bytes], asyncio.Future[SignalingMessage]] = {}
        self._dialing: set[bytes] = set()
        self._replay = ReplayGuard()
        self._tasks = TaskSet(log)
        self._progress = asyncio.Event()  # set whenever a flush may have freed buffers
        self.on_event: Callable[[Event], None] | None = None
        self.http: HttpServer | None = None
        self._closing = False

    # -- the driver loop ------------------------------------------------------------
    def call[T](self, action: Callable[[], T]) -> T:
        """Run a node API call or input, then drain the node's output."""
        result = action()
        self._flush()
        return result

    def _flush(self) -> None:
        node = self.node
        for link_id, data in node.messages_to_send():
            transport = self._transports.get(link_id)
            if transport is not None and transport.readyState == "open":
                try:
                    transport.send(data)
                except Exception as exc:  # a transport failing under us: treat as closed
                    log.info("link=%d event=send_failed error=%r", link_id, str(exc))
                    self._spawn(self._close_transport(link_id))
        while (event := node.next_event()) is not None:
            self._dispatch(event)
        self._progress.set()
        self._progress = asyncio.Event()
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.node.get_timer()
        if deadline == self._timer_at or self._closing:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - wall_clock())
        self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self.call(lambda: self.node.handle_timer(wall_clock()))

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.spawn(coro)

    # -- transports and links -------------------------------------------------------
    def attach(self, transport: Transport, peer: Descriptor | None) -> int:
        """Hand an open transport to the node; ``peer`` when we dialled it."""
        link_id = self._next_link
        self._next_link += 1
        self._transports[link_id] = transport

        def on_message(data: bytes) -> None:
            self.call(lambda: self.node.receive(link_id, data, wall_clock()))

        def on_close() -> None:
            if self._transports.pop(link_id, None) is not None:
                self.call(lambda: self.node.link_closed(link_id, wall_clock()))

        transport.onmessage = on_message
        transport.onclose = on_close
        self.call(
            lambda: self.node.open_link(
                link_id, wall_clock(), binding=transport.channel_binding, peer=peer
            )
        )
        return link_id

    async def _close_transport(self, link_id: int) -> None:
        transport = self._transports.pop(link_id, None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
            self.call(lambda: self.node.link_closed(link_id, wall_clock()))

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
                self._maybe_dial(desc)
            case SignalReceived(origin, payload):
                self._spawn(self._on_signal(origin, payload))
            case CircuitBuilt(cid):
                built = self._circuit_waiters.pop(cid, None)
                if built is not None and not built.done():
                    built.set_result(None)
            case CircuitClosed(cid, code):
                failed = self._circuit_waiters.pop(cid, None)
                if failed is not None and not failed.done():
                    failed.set_exception(StreamClosedError(f"circuit closed ({code.name})"))
                for key in [k for k in self._streams if k[0] == cid]:
                    self._streams.pop(key).inbox.put_nowait(None)
            case CircuitStreamEvent(cid, inner):
                self._on_stream_event(cid, inner)

    def _on_stream_event(self, cid: int, event: StreamEvent) -> None:
        if isinstance(event, StreamOpened):
            self._streams[(cid, event.stream_id)] = _StreamSlot(asyncio.Queue())
            self._spawn(self._serve_exit(cid, event.stream_id, event.target))
            return
        slot = self._streams.get((cid, event.stream_id))
        if slot is not None:
            slot.inbox.put_nowait(event)
            if isinstance(event, StreamReset):
                del self._streams[(cid, event.stream_id)]

    # -- signaling ------------------------------------------------------------------
    def _sign(
        self, kind: Kind, target: bytes, sdp: str, nonce: bytes, with_descriptor: bool
    ) -> bytes:
        compact = CompactSdp.from_sdp(sdp)
        msg = SignalingMessage(
            kind=kind,
            sender=self.node.node_id,
            target=target,
            timestamp_ms=int(wall_clock() * 1000),
            nonce=nonce,
            fingerprint=compact.fingerprint,
            session=compact.encode(),
            descriptor=self.node.descriptor(wall_clock()).encode() if with_descriptor else b"",
        )
        return msg.sign(self.node.identity).encode()

    def _open_message(
        self, data: bytes, kind: Kind, known: Descriptor | None
    ) -> tuple[SignalingMessage, Descriptor, str]:
        """Decode and verify a message; return it, its sender, and the SDP to apply."""
        msg = decode_message(data)
        if msg.kind is not kind:
            raise RemoteProtocolError(f"expected an {kind.name}", CloseCode.PROTOCOL)
        now = wall_clock()
        sender = verify_message(
            msg,
            now_ms=int(now * 1000),
            expected_target=self.node.node_id,
            known=known,
            now=now,
        )
        compact = CompactSdp.decode(msg.session)
        if compact.fingerprint != msg.fingerprint:
            raise RemoteProtocolError("SDP fingerprint differs from the signed one", CloseCode.AUTH)
        role = "offer" if kind is Kind.OFFER else "answer"
        return msg, sender, compact.to_sdp(role)

    async def _answer_offer(self, data: bytes, known: Descriptor | None) -> tuple[bytes, bytes]:
        """Verify an offer, answer it, and attach the link once it opens in the background.

        Returns (answer bytes, offering node id)."""
        msg, sender, offer_sdp = self._open_message(data, Kind.OFFER, known)
        self._replay.check(msg)
        pending, answer_sdp = await self.rtc.answer(offer_sdp, loopback=self.loopback)
        answer = self._sign(Kind.ANSWER, msg.sender, answer_sdp, msg.nonce, False)

        async def connect() -> None:
            try:
                transport = await pending.connected(timeout=DIAL_TIMEOUT)
            except TransportError as exc:
                log.info(
                    "signal event=answer_failed peer=%s error=%r",
                    short_id(sender.node_id),
                    str(exc),
                )
                return
            self.attach(transport, None)

        self._spawn(connect())
        return answer, msg.sender

    async def handle_http(self, request: Request) -> tuple[str, bytes]:
        """The signaling endpoint: GET the descriptor, POST an offer for an answer."""
        if request.path == "/zmesh/descriptor":
            if request.method != "GET":
                raise HttpError(405)
            return "application/octet-stream", self.node.descriptor(wall_clock()).encode()
        if request.path == "/zmesh/signal":
            if request.method != "POST":
                raise HttpError(405)
            try:
                msg = decode_message(request.body)
                known = self.node.directory.get(msg.sender)
                answer, _ = await self._answer_offer(request.body, known)
            except RemoteProtocolError as exc:
                status = 403 if exc.code in (CloseCode.AUTH, CloseCode.REPLAY) else 400
                raise HttpError(status, str(exc)) from None
            except TransportError as exc:
                raise HttpError(400, str(exc)) from None
            return "application/octet-stream", answer
        if request.path == "/":
            return "text/plain", f"zmesh node {self.node.node_id.hex()}\n".encode()
        raise HttpError(404)

    async def serve_http(self, host: str, port: int) -> int:
        self.http = HttpServer(self.handle_http)
        return await self.http.start(host, port)

    async def bootstrap(self, url: str) -> bytes:
        """Link to the node serving signaling at ``url``; return its node id."""
        base = url.rstrip("/")
        status, body = await self.http_client(base + "/zmesh/descriptor")
        if status != 200:
            raise ZMeshError(f"{base}: descriptor request failed with HTTP {status}")
        desc = decode_descriptor(body)
        desc.verify(wall_clock())
        if self.node.link_to(desc.node_id) is not None:
            return desc.node_id
        pending, offer_sdp = await self.rtc.dial(loopback=self.loopback)
        try:
            nonce = self.rng.bytes(16)
            offer = self._sign(Kind.OFFER, desc.node_id, offer_sdp, nonce, True)
            status, body = await self.http_client(base + "/zmesh/signal", method="POST", body=offer)
            if status != 200:
                raise ZMeshError(f"{base}: offer refused with HTTP {status}: {body[:200]!r}")
            answer, _, answer_sdp = self._open_message(body, Kind.ANSWER, desc)
            if answer.nonce != nonce:
                raise RemoteProtocolError("answer does not match our offer", CloseCode.AUTH)
            transport = await pending.complete(answer_sdp, timeout=DIAL_TIMEOUT)
        except BaseException:
            await pending.aclose()
            raise
        self.node.directory.setdefault(desc.node_id, desc)
        self.attach(transport, desc)
        await self.wait_link(desc.node_id)
        return desc.node_id

    def _maybe_dial(self, desc: Descriptor) -> None:
        """Link to relays we learn about, up to max_links; the lower id dials (no races)."""
        node_id = desc.node_id
        if (
            self._closing
            or not desc.flags & Flags.RELAY
            or node_id in self._dialing
            or self.node.link_to(node_id) is not None
            or len(self.node.peers()) >= self.max_links
            or self.node.node_id > node_id
        ):
            return
        self._dialing.add(node_id)
        self._spawn(self._dial_via_mesh(desc))

    async def _dial_via_mesh(self, desc: Descriptor) -> None:
        pending = None
        try:
            pending, offer_sdp = await self.rtc.dial(loopback=self.loopback)
            nonce = self.rng.bytes(16)
            offer = self._sign(Kind.OFFER, desc.node_id, offer_sdp, nonce, False)
            fut: asyncio.Future[SignalingMessage] = self._loop.create_future()
            self._answers[(desc.node_id, nonce)] = fut
            if not self.call(lambda: self.node.send_signal(desc.node_id, offer)):
                raise ZMeshError("no route to the peer for signaling")
            msg = await asyncio.wait_for(fut, DIAL_TIMEOUT)
            _, _, answer_sdp = self._open_message(msg.encode(), Kind.ANSWER, desc)
            transport = await pending.complete(answer_sdp, timeout=DIAL_TIMEOUT)
            pending = None
            self.attach(transport, desc)
        except (ZMeshError, TimeoutError, TransportError) as exc:
            log.info("signal event=dial_failed peer=%s error=%r", short_id(desc.node_id), str(exc))
        finally:
            self._dialing.discard(desc.node_id)
            self._answers = {k: v for k, v in self._answers.items() if not v.done()}
            if pending is not None:
                await pending.aclose()

    async def _on_signal(self, origin: bytes, payload: bytes) -> None:
        try:
            msg = decode_message(payload)
            if msg.kind is Kind.ANSWER:
                fut = self._answers.get((origin, msg.nonce))
                if fut is not None and not fut.done() and msg.sender == origin:
                    fut.set_result(msg)
                return
            answer, sender = await self._answer_offer(payload, self.node.directory.get(origin))
            if sender != origin:
                return
            self.call(lambda: self.node.send_signal(origin, answer))
        except (RemoteProtocolError, TransportError) as exc:
            log.info("signal event=drop origin=%s reason=%r", short_id(origin), str(exc))

    # -- circuits and streams -------------------------------------------------------
    async def build_circuit(self, path: list[Descriptor], timeout: float = 10.0) -> int:
        cid = self.call(lambda: self.node.build_circuit(path, wall_clock()))
        fut: asyncio.Future[None] = self._loop.create_future()
        self._circuit_waiters[cid] = fut
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._circuit_waiters.pop(cid, None)
            with contextlib.suppress(ZMeshError):
                self.call(lambda: self.node.close_circuit(cid))
            raise
        return cid

    def open_stream(self, cid: int, target: str) -> "StreamPipe":
        sid = self.call(lambda: self.node.open_stream(cid, target))
        slot = _StreamSlot(asyncio.Queue())
        self._streams[(cid, sid)] = slot
        return StreamPipe(self, cid, sid, slot)

    async def _serve_exit(self, cid: int, sid: int, target: str) -> None:
        """An exit: resolve, apply the exit policy, connect, then pipe both ways."""
        slot = self._streams[(cid, sid)]
        pipe = StreamPipe(self, cid, sid, slot)
        if self.exit_policy is None:
            pipe.reset(RESET_POLICY)
            return
        try:
            host, port = split_target(target)
            infos = await asyncio.wait_for(
                self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=10.0
            )
            addresses = [str(info[4][0]) for info in infos]
            ip = check_target(self.exit_policy, host, port, addresses)
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
            self.call(lambda: self.node.accept_stream(cid, sid))
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


class StreamPipe:
    """One circuit stream coupled to a TCP connection, with backpressure both ways."""

    def __init__(self, driver: AsyncNode, cid: int, sid: int, slot: _StreamSlot) -> None:
        self.driver = driver
        self.cid = cid
        self.sid = sid
        self._slot = slot

    async def wait_connected(self, timeout: float) -> None:
        """Wait for the endpoint's CONNECTED; raise StreamClosedError if refused."""
        event = await asyncio.wait_for(self._slot.inbox.get(), timeout)
        if isinstance(event, StreamConnected):
            return
        if isinstance(event, StreamReset):
            raise StreamClosedError(f"refused by the exit (code {event.code})")
        raise StreamClosedError("circuit closed before the stream connected")

    async def receive(self, timeout: float | None = None) -> StreamEvent | None:
        """The stream's next event; None once its circuit has closed.  TimeoutError if
        nothing arrives within ``timeout`` seconds."""
        return await asyncio.wait_for(self._slot.inbox.get(), timeout)

    def finish(self) -> None:
        """Finish our direction and stop listening (once the peer has finished its own)."""
        self.driver._streams.pop((self.cid, self.sid), None)
        with contextlib.suppress(ZMeshError):
            self.driver.call(lambda: self.driver.node.finish(self.cid, self.sid))

    def reset(self, code: int) -> None:
        self.driver._streams.pop((self.cid, self.sid), None)
        with contextlib.suppress(ZMeshError):
            self.driver.call(lambda: self.driver.node.reset(self.cid, self.sid, code))

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pipe until both directions finish; reset the stream on any failure."""
        node, call = self.driver.node, self.driver.call

        async def upstream() -> None:  # TCP -> circuit
            while data := await reader.read(READ_CHUNK):
                call(lambda: node.send(self.cid, self.sid, data))
                while node.stream_buffered(self.cid, self.sid) > STREAM_HIGH_WATER:
                    await self.driver._progress.wait()
            call(lambda: node.finish(self.cid, self.sid))

        async def downstream() -> None:  # circuit -> TCP
            while True:
                event = await self._slot.inbox.get()
                if isinstance(event, StreamData):
                    writer.write(event.data)
                    await writer.drain()
                    taken = len(event.data)
                    if not node.config.auto_consume:  # slide the window as the app reads
                        call(lambda: node.consume(self.cid, self.sid, taken))  # noqa: B023
                elif isinstance(event, StreamFinished):
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                elif event is None or isinstance(event, StreamReset):
                    raise StreamClosedError("the stream was reset or its circuit closed")

        up = asyncio.ensure_future(upstream())
        down = asyncio.ensure_future(downstream())
        try:
            await asyncio.gather(up, down)
        except (StreamClosedError, ConnectionError, ZMeshError) as exc:
            log.info("stream event=aborted reason=%r", str(exc))
            self.reset(RESET_CLOSED)
        finally:
            up.cancel()
            down.cancel()
            self.driver._streams.pop((self.cid, self.sid), None)
            writer.close()
