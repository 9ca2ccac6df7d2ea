"""The browser node: the zMesh core in Pyodide, in a dedicated Web Worker.

Chromium offers no ``RTCPeerConnection`` in workers, so the page's main thread owns the
WebRTC connections (``web/src/rtc.js``) and this module drives them by message through a
small JS *host* object that ``web/src/worker.js`` passes to :func:`main`:

* :class:`BrowserRtc` is the :class:`~zmesh.runtime.rtc.RtcBackend`: ``dial`` and
  ``answer`` ask the page for an offer or answer SDP; the pending objects apply the peer's
  SDP and wait for the negotiated channel (label ``"zmesh"``, id 0) to open.
* :class:`BrowserTransport` has the RTCDataChannel shape of
  :class:`~zmesh.link.transport.Transport`: ``send`` posts the bytes to the page;
  ``bufferedAmount`` mirrors what the page reports; ``channel_binding`` is
  ``SHA-256(min(fp_a, fp_b) || max(fp_a, fp_b))`` over the two DTLS fingerprints, as
  :mod:`zmesh.runtime.webrtc` computes it, so native and browser ends agree.
* :func:`pyfetch_request` is the signaling HTTP client (``pyodide.http.pyfetch``), with
  the signature of :func:`zmesh.runtime.http.http_request`.  Its POST bodies carry no
  Content-Type, so they are CORS "simple" requests: no preflight.
* The identity lives in IndexedDB, so a reload keeps the node id.  A Web Lock per stored
  identity keeps two tabs from running the same node id: a second tab takes the next slot.
* :class:`BrowserNode` runs the :class:`~zmesh.node.Node` (a relay: ``Flags.RELAY``) under
  an :class:`~zmesh.runtime.aio.AsyncNode` on Pyodide's asyncio loop, bootstraps through
  the configured signaling URLs (each failure gets a clear status, then the next URL is
  tried), publishes its status, and serves the page's ``zmesh.fetch``
  (:mod:`zmesh.runtime.fetch`).

The JS host is reached only through :class:`JsHost`, so everything else here imports and
runs on CPython too (the tests drive it with a fake host).
"""

import asyncio
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..crypto import signing, xwing
from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError, ZMeshError
from ..identity import Flags, Identity, short_id
from ..link.transport import ReadyState
from ..node import Event, LinkClosed, LinkUp, Node, NodeConfig
from ..signaling.backoff import Backoff
from .aio import AsyncNode, wall_clock
from .circuits import CircuitPool
from .fetch import MAX_BODY, FetchError, circuit_fetch
from .sdp import (
    MAX_MESSAGE_SIZE,
    TransportError,
    channel_binding,
    remote_fingerprint,
    sdp_fingerprint,
)

if TYPE_CHECKING:
    from ..link.transport import Transport

log = logging.getLogger("zmesh.browser")

RTC_TIMEOUT: Final = 10.0
MAX_PENDING: Final = 4096  # messages held while a transport has no onmessage handler
MAX_PENDING_BYTES: Final = 64 << 20
IDENTITY_SLOTS: Final = 4
IDENTITY_LOCK_WAIT_MS: Final = 1500  # a reload: the old page's worker may still hold it
BOOTSTRAP_LINKS: Final = 2  # links made through HTTP signaling; gossip brings the rest
STATUS_INTERVAL: Final = 0.5
MAX_FETCHES: Final = 16
SIGNALING_REPLY_LIMIT: Final = 64 * 1024
_SEEDS: Final = xwing.SEED_SIZE + signing.SEED_SIZE


# -- the JS host -----------------------------------------------------------------------------


class Host(Protocol):
    """What the worker provides, in Python terms (see ``web/src/worker.js``)."""

    def rtc(self, op: str, pc: int, sdp: str | None) -> Awaitable[str | None]: ...

    def send(self, pc: int, data: bytes) -> None: ...

    def close(self, pc: int) -> None: ...

    def publish(self, status_json: str) -> None: ...

    def reply(self, call_id: int, ok: bool, value_json: str, body: bytes | None) -> None: ...

    def load(self, key: str) -> Awaitable[bytes | None]: ...

    def save(self, key: str, value: bytes) -> Awaitable[None]: ...

    def lock(self, name: str, wait_ms: int) -> Awaitable[bool]: ...

    def random(self, n: int) -> bytes: ...


def to_bytes(value: Any) -> bytes:
    """Bytes from a JS Uint8Array/ArrayBuffer proxy (or from bytes, in tests)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    convert = getattr(value, "to_bytes", None)
    return b"" if convert is None else bytes(convert())  # None, JS null or undefined: empty


class JsHost:
    """:class:`Host` over the worker's JS object: converts values at the FFI boundary."""

    def __init__(self, js: Any) -> None:
        from pyodide.ffi import to_js  # noqa: PLC0415 (exists only in Pyodide)

        self._js = js
        self._to_js = to_js

    async def rtc(self, op: str, pc: int, sdp: str | None) -> str | None:
        try:
            result = await self._js.rtc(op, pc, sdp)
        except Exception as exc:  # a rejected promise: JsException
            raise TransportError(f"the page could not {op}: {exc}") from None
        return None if result is None else str(result)

    def send(self, pc: int, data: bytes) -> None:
        self._js.send(pc, self._to_js(data))  # a copy: its ArrayBuffer is transferred

    def close(self, pc: int) -> None:
        self._js.close(pc)

    def publish(self, status_json: str) -> None:
        self._js.publish(status_json)

    def reply(self, call_id: int, ok: bool, value_json: str, body: bytes | None) -> None:
        self._js.reply(call_id, ok, value_json, None if body is None else self._to_js(body))

    async def load(self, key: str) -> bytes | None:
        value = await self._js.load(key)
        return None if getattr(value, "to_bytes", None) is None else to_bytes(value)

    async def save(self, key: str, value: bytes) -> None:
        await self._js.save(key, self._to_js(value))

    async def lock(self, name: str, wait_ms: int) -> bool:
        return bool(await self._js.lock(name, wait_ms))

    def random(self, n: int) -> bytes:
        return to_bytes(self._js.random(n))


class BrowserRng:
    """:class:`~zmesh.rng.Rng` over ``crypto.getRandomValues`` (not reproducible)."""

    reproducible = False
    _MAX_CALL: Final = 65536  # getRandomValues fills at most 64 KiB per call

    def __init__(self, host: Host) -> None:
        self._host = host

    def bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be non-negative")
        chunks = []
        while n > 0:
            take = min(n, self._MAX_CALL)
            chunk = self._host.random(take)
            if len(chunk) != take:
                raise RuntimeError("crypto.getRandomValues returned the wrong length")
            chunks.append(chunk)
            n -= take
        return b"".join(chunks)


# -- WebRTC through the page -----------------------------------------------------------------


class BrowserTransport:
    """One page-side RTCDataChannel, seen from the worker (see the module doc).

    Handed out open by :meth:`BrowserPendingDial.complete` or
    :meth:`BrowserPendingAnswer.connected`.  Messages that arrive while ``onmessage`` is
    None wait (bounded); ``onclose`` fires once, after what arrived before the close was
    delivered; :attr:`error` says why a transport closed on its own.
    """

    def __init__(self, rtc: "BrowserRtc", pc: int) -> None:
        self._rtc = rtc
        self.pc = pc
        self._state: ReadyState = "connecting"
        self.channel_binding = b""
        self.error: str | None = None
        self.onopen: Callable[[], None] | None = None
        self.onbufferedamountlow: Callable[[], None] | None = None
        self._onmessage: Callable[[bytes], None] | None = None
        self._onclose: Callable[[], None] | None = None
        self._close_fired = False
        self._threshold = 0
        self._sent = 0  # bytes given to the page
        self._handed = 0  # of which the page has handed to its channel
        self._page_buffered = 0  # the channel's bufferedAmount at the page's last report
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.bytes_in = 0
        self.bytes_out = 0

    # -- the RTCDataChannel surface --------------------------------------------------------
    @property
    def readyState(self) -> ReadyState:  # noqa: N802 (W3C name)
        return self._state

    @property
    def bufferedAmount(self) -> int:  # noqa: N802
        if self._state != "open":
            return 0
        return self._page_buffered + (self._sent - self._handed)

    @property
    def bufferedAmountLowThreshold(self) -> int:  # noqa: N802
        return self._threshold

    @bufferedAmountLowThreshold.setter
    def bufferedAmountLowThreshold(self, value: int) -> None:  # noqa: N802
        if value < 0:
            raise LocalProtocolError("bufferedAmountLowThreshold must not be negative")
        self._threshold = value

    @property
    def onmessage(self) -> Callable[[bytes], None] | None:
        return self._onmessage

    @onmessage.setter
    def onmessage(self, handler: Callable[[bytes], None] | None) -> None:
        self._onmessage = handler
        if handler is not None and self._inbox:
            asyncio.get_running_loop().call_soon(self._drain)

    @property
    def onclose(self) -> Callable[[], None] | None:
        return self._onclose

    @onclose.setter
    def onclose(self, handler: Callable[[], None] | None) -> None:
        self._onclose = handler
        if handler is not None and self._state == "closed" and not self._close_fired:
            asyncio.get_running_loop().call_soon(self._fire_close)

    def send(self, data: bytes) -> None:
        if len(data) > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(
                f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit"
            )
        if self._state != "open":
            return
        self._sent += len(data)
        self.bytes_out += len(data)
        self._rtc.host.send(self.pc, data)

    def close(self) -> None:
        """Close now; undelivered received messages are dropped."""
        if self._state == "closed":
            return
        self._inbox.clear()
        self._inbox_bytes = 0
        self._finish(None)
        self._rtc.host.close(self.pc)

    # -- events from the page ----------------------------------------------------------------
    def _on_open(self) -> None:
        if self._state == "connecting":
            self._state = "open"
            if not self._opened.done():
                self._opened.set_result(None)

    def _on_message(self, data: bytes) -> None:
        if self._state != "open":
            return
        self.bytes_in += len(data)
        handler = self._onmessage
        if handler is not None and not self._inbox:
            handler(data)
            return
        if len(self._inbox) >= MAX_PENDING or self._inbox_bytes + len(data) > MAX_PENDING_BYTES:
            self.error = "receive buffer overflow"
            log.warning("browser_rtc pc=%d event=overflow", self.pc)
            self.close()
            return
        self._inbox.append(data)
        self._inbox_bytes += len(data)

    def _on_buffered(self, handed: int, amount: int) -> None:
        before = self.bufferedAmount
        self._handed = max(self._handed, handed)
        self._page_buffered = max(0, amount)
        after = self.bufferedAmount
        if before > self._threshold >= after and self.onbufferedamountlow is not None:
            self.onbufferedamountlow()

    def _on_close(self, reason: str) -> None:
        if self._state == "closed":
            return
        handler = self._onmessage
        while self._inbox and handler is not None:  # deliver what arrived before the close
            self._inbox_bytes -= len(self._inbox[0])
            handler(self._inbox.popleft())
        self._finish(reason)

    # -- internals ---------------------------------------------------------------------------
    async def wait_open(self, timeout: float) -> None:
        await asyncio.wait([self._opened], timeout=timeout)  # never cancels it
        if not self._opened.done():
            raise TransportError(f"the data channel did not open within {timeout:g} s")
        self._opened.result()  # TransportError if it closed before opening

    def _set_binding(self, local: bytes, remote: bytes) -> None:
        self.channel_binding = channel_binding(local, remote)

    def _drain(self) -> None:
        while self._inbox and self._state == "open":
            handler = self._onmessage
            if handler is None:
                return
            message = self._inbox.popleft()
            self._inbox_bytes -= len(message)
            handler(message)

    def _finish(self, error: str | None) -> None:
        self._state = "closed"
        if error is not None and self.error is None:
            self.error = error
        self._rtc._forget(self.pc)
        if not self._opened.done():
            self._opened.set_exception(TransportError(f"the connection closed: {error}"))
            self._opened.exception()  # retrieved: nobody may be waiting
        asyncio.get_running_loop().call_soon(self._fire_close)

    def _fire_close(self) -> None:
        handler = self._onclose
        if self._close_fired or handler is None:
            return
        self._close_fired = True
        handler()


if TYPE_CHECKING:

    def _is_a_transport(transport: BrowserTransport) -> Transport:
        return transport


class BrowserPendingDial:
    """Our offer is out; :meth:`complete` applies the peer's answer."""

    def __init__(self, transport: BrowserTransport, local_sdp: str) -> None:
        self._transport = transport
        self._local = sdp_fingerprint(local_sdp)
        self._used = False
        self._handed_over = False

    async def complete(self, answer_sdp: str, *, timeout: float = RTC_TIMEOUT) -> BrowserTransport:
        """Apply the answer and wait until the channel is open (closed on any failure).

        RemoteProtocolError for an answer we cannot use; TransportError if the connection
        fails or times out."""
        if self._used:
            raise LocalProtocolError("complete() was already called")
        self._used = True
        transport = self._transport
        try:
            remote = remote_fingerprint(answer_sdp, "answer")
            if remote == self._local:
                raise RemoteProtocolError("the answer carries our own fingerprint", CloseCode.AUTH)
            rtc = transport._rtc
            try:
                await asyncio.wait_for(rtc.host.rtc("remote", transport.pc, answer_sdp), timeout)
            except TimeoutError:
                raise TransportError("the page did not apply the answer in time") from None
            await transport.wait_open(timeout)
        except BaseException:
            transport.close()
            raise
        transport._set_binding(self._local, remote)
        self._handed_over = True
        return transport

    async def aclose(self) -> None:
        self._used = True
        if not self._handed_over:
            self._transport.close()


class BrowserPendingAnswer:
    """Our answer is out; :meth:`connected` waits for the peer to connect."""

    def __init__(self, transport: BrowserTransport, local: bytes, remote: bytes) -> None:
        self._transport = transport
        self._local = local
        self._remote = remote
        self._used = False
        self._handed_over = False

    async def connected(self, *, timeout: float = RTC_TIMEOUT) -> BrowserTransport:
        if self._used:
            raise LocalProtocolError("connected() was already called")
        self._used = True
        try:
            await self._transport.wait_open(timeout)
        except BaseException:
            self._transport.close()
            raise
        self._transport._set_binding(self._local, self._remote)
        self._handed_over = True
        return self._transport

    async def aclose(self) -> None:
        self._used = True
        if not self._handed_over:
            self._transport.close()


class BrowserRtc:
    """The :class:`~zmesh.runtime.rtc.RtcBackend` of a browser node (``loopback`` is
    ignored: the browser gathers its own candidates)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._conns: dict[int, BrowserTransport] = {}
        self._next = 1

    def _new(self) -> BrowserTransport:
        pc = self._next
        self._next += 1
        transport = BrowserTransport(self, pc)
        self._conns[pc] = transport
        return transport

    def _forget(self, pc: int) -> None:
        self._conns.pop(pc, None)

    async def _local_sdp(self, transport: BrowserTransport, op: str, sdp: str | None) -> str:
        try:
            local = await asyncio.wait_for(self.host.rtc(op, transport.pc, sdp), RTC_TIMEOUT)
        except TimeoutError:
            transport.close()
            raise TransportError(f"the page did not {op} within {RTC_TIMEOUT:g} s") from None
        except BaseException:
            transport.close()
            raise
        if not local:
            transport.close()
            raise TransportError(f"the page returned no SDP for {op}")
        return local

    async def dial(self, *, loopback: bool = False) -> tuple[BrowserPendingDial, str]:
        transport = self._new()
        sdp = await self._local_sdp(transport, "dial", None)
        return BrowserPendingDial(transport, sdp), sdp

    async def answer(
        self, offer_sdp: str, *, loopback: bool = False
    ) -> tuple[BrowserPendingAnswer, str]:
        remote = remote_fingerprint(offer_sdp, "offer")
        transport = self._new()
        sdp = await self._local_sdp(transport, "answer", offer_sdp)
        local = sdp_fingerprint(sdp)
        if local == remote:
            transport.close()
            raise RemoteProtocolError("the offer carries our own fingerprint", CloseCode.AUTH)
        return BrowserPendingAnswer(transport, local, remote), sdp

    def on_event(self, pc: int, ev: str, data: bytes, handed: int, amount: int) -> None:
        """An event from the page for connection ``pc`` (see ``web/src/rtc.js``)."""
        transport = self._conns.get(pc)
        if transport is None:
            return
        if ev == "message":
            transport._on_message(data)
        elif ev == "open":
            transport._on_open()
        elif ev == "buffered":
            transport._on_buffered(handed, amount)
        elif ev == "close":
            transport._on_close(data.decode("utf-8", "replace") or "closed by the page")

    def transports(self) -> list[BrowserTransport]:
        return list(self._conns.values())


# -- signaling over fetch --------------------------------------------------------------------


async def pyfetch_request(
    url: str, *, method: str = "GET", body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes]:
    """HTTP for signaling with the browser's fetch; returns (status, body).

    ZMeshError when the server cannot be reached (the message says so), TimeoutError when
    it does not answer in time.  The body carries no Content-Type (no CORS preflight)."""
    from js import AbortSignal  # noqa: PLC0415 (exists only in Pyodide)
    from pyodide.ffi import to_js  # noqa: PLC0415 (exists only in Pyodide)
    from pyodide.http import pyfetch  # noqa: PLC0415

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"unsupported URL {url!r}")
    options: dict[str, Any] = {
        "method": method,
        "cache": "no-store",
        "credentials": "omit",
        "redirect": "error",
        "signal": AbortSignal.timeout(int(timeout * 1000)),
    }
    if body:
        options["body"] = to_js(body)
    try:
        response = await asyncio.wait_for(pyfetch(url, **options), timeout)
        length = response.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > SIGNALING_REPLY_LIMIT):
            raise ZMeshError(f"{url}: reply too large ({length} bytes)")
        data = await asyncio.wait_for(response.bytes(), timeout)
    except (TimeoutError, ZMeshError):
        raise
    except Exception as exc:  # JsException / OSError from fetch: unreachable or refused
        raise ZMeshError(f"unreachable ({exc})") from None
    if len(data) > SIGNALING_REPLY_LIMIT:
        raise ZMeshError(f"{url}: reply too large")
    return int(response.status), bytes(data)


# -- identity --------------------------------------------------------------------------------


async def load_identity(host: Host, rng: BrowserRng) -> tuple[Identity, str]:
    """The node's identity from IndexedDB (created on first use); and how it was found.

    Each stored identity (a *slot*) is held with a Web Lock while its node runs, so two
    tabs never run the same node id: a tab whose slot is busy takes the next one.  When
    IndexedDB is unusable the identity is temporary (a new node id on every load).  A
    stored identity that cannot be read is never overwritten.
    """
    try:
        for slot in range(IDENTITY_SLOTS):
            wait = IDENTITY_LOCK_WAIT_MS if slot == 0 else 100
            if not await host.lock(f"zmesh-identity-{slot}", wait):
                continue
            key = f"identity-{slot}"
            stored = await host.load(key)
            if stored is None:
                identity = Identity.generate(rng)
                await host.save(key, identity.kem_seed + identity.signing.seed)
                return identity, f"new (saved in IndexedDB slot {slot})"
            if len(stored) != _SEEDS:
                return Identity.generate(rng), f"temporary: IndexedDB slot {slot} is unreadable"
            kem_seed, signing_seed = stored[: xwing.SEED_SIZE], stored[xwing.SEED_SIZE :]
            return Identity(kem_seed, signing_seed), f"restored from IndexedDB slot {slot}"
        return Identity.generate(rng), "temporary: every identity slot is in use by other tabs"
    except (ZMeshError, ValueError):
        raise
    except Exception as exc:  # IndexedDB or Web Locks unavailable (private mode, policy)
        return Identity.generate(rng), f"temporary: storage unavailable ({exc})"


# -- the node --------------------------------------------------------------------------------


@dataclass
class BootstrapEntry:
    url: str
    state: str = "waiting"  # waiting, connecting, linked, failed, standby (not needed)
    error: str = ""
    peer: bytes | None = None
    attempts: int = 0
    took_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "error": self.error,
            "peer": short_id(self.peer) if self.peer else None,
            "attempts": self.attempts,
            "tookMs": round(self.took_ms, 1),
        }


def describe_failure(exc: BaseException) -> str:
    """A short, clear reason for a failed bootstrap."""
    if isinstance(exc, RemoteProtocolError):
        return f"not a usable zMesh signaling endpoint (it sent garbage: {exc})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, TransportError):
        return f"WebRTC link failed: {exc}"
    if isinstance(exc, OSError):
        return f"unreachable ({exc.strerror or exc})"
    return str(exc) or type(exc).__name__


@dataclass
class BrowserConfig:
    bootstrap: list[str]
    boot: dict[str, float] = field(default_factory=dict)  # the worker's timestamps (ms)
    verbose: int = 0

    @classmethod
    def parse(cls, text: str) -> "BrowserConfig":
        """From the JSON the worker passes; ValueError with a clear message if unusable."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("config must be a JSON object")
        urls = raw.get("bootstrap", [])
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError('config "bootstrap" must be a list of URLs')
        urls = [u for u in dict.fromkeys(urls) if u.startswith(("http://", "https://"))]
        boot = raw.get("boot", {})
        if not isinstance(boot, dict):
            boot = {}
        timings = {k: float(v) for k, v in boot.items() if isinstance(v, int | float)}
        verbose = raw.get("verbose", 0)
        return cls(urls[:32], timings, verbose if isinstance(verbose, int) else 0)


class BrowserNode:
    """A running browser node: the driver, its circuit pool, bootstrap and status."""

    def __init__(
        self,
        host: Host,
        config: BrowserConfig,
        identity: Identity,
        identity_note: str,
        *,
        http_client: Callable[..., Awaitable[tuple[int, bytes]]] = pyfetch_request,
    ) -> None:
        self.host = host
        self.config = config
        self.identity_note = identity_note
        self.rng = BrowserRng(host)
        self.started_ms = time.time() * 1000
        node_config = NodeConfig(flags=Flags.RELAY, auto_consume=False, max_links=32)
        self.node = Node(identity, self.rng, wall_clock(), node_config)
        self.rtc = BrowserRtc(host)
        self.driver = AsyncNode(self.node, rtc=self.rtc, http_client=http_client, loopback=False)
        self.driver.on_event = self._on_event
        self.pool = CircuitPool(self.driver)
        self.bootstrap = [BootstrapEntry(url) for url in config.bootstrap]
        self.first_link_ms: float | None = None
        self.ready_ms: float | None = None
        self.links_closed = 0
        self.fetches = 0
        self.fetch_failures = 0
        self._active_fetches = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty = True
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._bootstrap_loop())
        self._spawn(self._status_loop())
        log.info("browser event=started node=%s", short_id(self.node.node_id))

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await self.driver.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("browser event=task_failed error=%r", str(t.exception()))

        task.add_done_callback(done)

    # -- events from JS ------------------------------------------------------------------------
    def on_rtc_event(self, pc: int, ev: str, data: Any, handed: int = 0, amount: int = 0) -> None:
        """Called by the worker for every event the page reports; never raises."""
        try:
            self.rtc.on_event(int(pc), str(ev), to_bytes(data), int(handed), int(amount))
        except Exception:
            log.exception("browser event=rtc_event_failed ev=%s", ev)

    def on_call(self, call_id: int, method: str, args_json: str, body: Any) -> None:
        """A ``window.zmesh`` call from the page; the answer goes back through host.reply."""
        try:
            args = json.loads(args_json) if args_json else {}
            if not isinstance(args, dict):
                raise ValueError("arguments must be an object")
            if method == "status":
                self.host.reply(call_id, True, json.dumps(self.status()), None)
            elif method == "fetch":
                self._spawn(self._fetch(call_id, args, to_bytes(body)))
            else:
                raise ValueError(f"unknown method {method!r}")
        except Exception as exc:
            self.host.reply(call_id, False, json.dumps({"error": str(exc)}), None)

    # -- the mesh ------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        self._dirty = True
        if isinstance(event, LinkUp) and self.first_link_ms is None:
            self.first_link_ms = time.time() * 1000
            log.info("browser event=first_link peer=%s", short_id(event.peer_id))
        elif isinstance(event, LinkClosed):
            self.links_closed += 1

    def is_ready(self) -> bool:
        """At least one link, and enough relays known for a 3-hop circuit with an exit."""
        return bool(self.node.peers()) and self.pool.usable()

    async def _bootstrap_loop(self) -> None:
        """Keep ``BOOTSTRAP_LINKS`` links made through HTTP signaling; back off while the
        node has no link at all, and check every 5 s once it has one."""
        backoff = Backoff(self.rng)
        while not self._closing:
            for entry in self.bootstrap:
                if entry.peer is not None and self.node.link_to(entry.peer) is not None:
                    continue
                if entry.state == "linked":
                    entry.state = "waiting"  # its link went away
                if len(set(self.node.peers())) >= BOOTSTRAP_LINKS:
                    if entry.state == "waiting":
                        entry.state = "standby"  # not needed: enough links already
                    continue
                await self._try_bootstrap(entry)
            if self.node.peers():
                backoff.reset()
                await asyncio.sleep(5.0)
            else:
                await asyncio.sleep(backoff.next_delay())

    async def _try_bootstrap(self, entry: BootstrapEntry) -> None:
        entry.state, entry.error = "connecting", ""
        entry.attempts += 1
        self._publish()
        start = time.perf_counter()
        try:
            entry.peer = await asyncio.wait_for(self.driver.bootstrap(entry.url), 30.0)
        except Exception as exc:
            entry.state, entry.error = "failed", describe_failure(exc)
            log.warning("bootstrap event=failed url=%s error=%r", entry.url, entry.error)
        else:
            entry.state = "linked"
            log.info("bootstrap event=linked url=%s peer=%s", entry.url, short_id(entry.peer))
        entry.took_ms = (time.perf_counter() - start) * 1000
        self._publish()

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        node = self.node
        peers = list(dict.fromkeys(node.peers()))
        relays = [d for d in node.directory.values() if d.flags & Flags.RELAY]
        own = len(node.client_circuits())
        relayed = node.relayed_circuits()
        transports = self.rtc.transports()
        boot = self.config.boot
        page_start = boot.get("pageStart")

        def since_page(t: float | None) -> float | None:
            return None if t is None or page_start is None else round(t - page_start, 1)

        def span(a: str, b: str) -> float | None:
            return round(boot[b] - boot[a], 1) if a in boot and b in boot else None

        return {
            "nodeId": node.node_id.hex(),
            "shortId": short_id(node.node_id),
            "identity": self.identity_note,
            "ready": self.ready_ms is not None and self.is_ready(),  # now, not just once
            "peers": len(peers),  # distinct nodes (two links to one node count once)
            "peerIds": [short_id(p) for p in peers],
            "relaysKnown": len(relays),
            "exitsKnown": sum(1 for d in relays if d.flags & Flags.EXIT),
            "circuits": own + relayed,
            "circuitsOwn": own,
            "circuitsRelayed": relayed,
            "cellsRelayed": node.cells_relayed,
            "bytesRelayed": node.cells_relayed * node.geometry.cell_size,
            "bytesIn": sum(t.bytes_in for t in transports),
            "bytesOut": sum(t.bytes_out for t in transports),
            "linksClosed": self.links_closed,
            "fetches": self.fetches,
            "fetchFailures": self.fetch_failures,
            "bootstrap": [e.as_dict() for e in self.bootstrap],
            "timings": {
                "workerStartMs": span("pageStart", "workerStart"),
                "pyodideBootMs": span("workerStart", "pyodideLoaded"),
                "packageLoadMs": span("pyodideLoaded", "packagesLoaded"),
                "nodeStartMs": since_page(self.started_ms),
                "firstLinkMs": since_page(self.first_link_ms),
                "readyMs": since_page(self.ready_ms),
                "joinMs": (
                    round(self.first_link_ms - self.started_ms, 1)
                    if self.first_link_ms is not None
                    else None
                ),
            },
        }

    def _publish(self) -> None:
        self._dirty = False
        try:
            self.host.publish(json.dumps(self.status()))
        except Exception:
            log.exception("browser event=publish_failed")

    async def _status_loop(self) -> None:
        while not self._closing:
            if self.ready_ms is None and self.is_ready():
                self.ready_ms = time.time() * 1000
                log.info("browser event=ready node=%s", short_id(self.node.node_id))
                self._dirty = True
            if self._dirty:
                self._publish()
            await asyncio.sleep(STATUS_INTERVAL if self.ready_ms is not None else 0.1)
            self._dirty = self._dirty or self.ready_ms is not None  # live counters

    # -- zmesh.fetch ---------------------------------------------------------------------------
    async def _fetch(self, call_id: int, args: dict[str, Any], body: bytes) -> None:
        self.fetches += 1
        try:
            if self._active_fetches >= MAX_FETCHES:
                raise FetchError(f"too many requests at once (at most {MAX_FETCHES})")
            url, method = args.get("url"), args.get("method", "GET")
            headers = args.get("headers", [])
            if not isinstance(url, str) or not isinstance(method, str):
                raise FetchError("fetch needs a URL and a method")
            if not isinstance(headers, list) or not all(
                isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
                for h in headers
            ):
                raise FetchError("headers must be a list of [name, value] pairs")
            self._active_fetches += 1
            try:
                if not self.is_ready():
                    raise FetchError("the node is not ready yet (await zmesh.ready)")
                response = await circuit_fetch(
                    self.driver,
                    self.pool,
                    url,
                    method=method,
                    headers=[(h[0], h[1]) for h in headers],
                    body=body,
                    max_body=MAX_BODY,
                )
            finally:
                self._active_fetches -= 1
        except (FetchError, ZMeshError) as exc:
            self.fetch_failures += 1
            self.host.reply(call_id, False, json.dumps({"error": str(exc)}), None)
            return
        meta = {
            "status": response.status,
            "statusText": response.reason,
            "headers": response.headers,
        }
        self.host.reply(call_id, True, json.dumps(meta), response.body)


async def start(
    config: BrowserConfig,
    host: Host,
    *,
    http_client: Callable[..., Awaitable[tuple[int, bytes]]] = pyfetch_request,
) -> BrowserNode:
    """Load (or create) the identity, then start the node: it bootstraps in the background.

    ``http_client`` is for tests on CPython (the browser uses fetch)."""
    rng = BrowserRng(host)
    identity, note = await load_identity(host, rng)
    node = BrowserNode(host, config, identity, note, http_client=http_client)
    node.start()
    return node


async def main(config_json: str, host_js: Any) -> BrowserNode:
    """The worker's entry point: ``await main(JSON.stringify(config), host)``."""
    config = BrowserConfig.parse(config_json)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(config.verbose, 2),
        format="%(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    return await start(config, JsHost(host_js))


__all__ = [
    "BrowserConfig",
    "BrowserNode",
    "BrowserPendingAnswer",
    "BrowserPendingDial",
    "BrowserRng",
    "BrowserRtc",
    "BrowserTransport",
    "Host",
    "JsHost",
    "describe_failure",
    "load_identity",
    "main",
    "pyfetch_request",
    "start",
]
