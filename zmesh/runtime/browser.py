"""The browser node: the zMesh core in Pyodide, in a dedicated Web Worker.

Chromium offers no ``RTCPeerConnection`` in workers, so the page's main thread owns the
WebRTC connections (``web/src/rtc.js``) and this module drives them by message through a
small JS *host* object that ``web/src/worker.js`` passes to :func:`main`
(:mod:`zmesh.runtime.browser_rtc`: :class:`BrowserRtc`, :class:`BrowserTransport`,
:class:`JsHost`, :class:`BrowserRng`):

* :func:`pyfetch_request` is the signaling HTTP client (``pyodide.http.pyfetch``), with
  the signature of :func:`zmesh.runtime.http.http_request`.  Its POST bodies carry no
  Content-Type, so they are CORS "simple" requests: no preflight.
* The identity lives in IndexedDB, so a reload keeps the node id.  A Web Lock per stored
  identity keeps two tabs from running the same node id: a second tab takes the next slot.
* :class:`BrowserNode` runs the :class:`~zmesh.node.Node` (a relay: ``Flags.RELAY``) under
  an :class:`~zmesh.runtime.aio.AsyncNode` on Pyodide's asyncio loop, bootstraps through
  the configured signaling URLs (each failure gets a clear status, then the next URL is
  tried), publishes its status, and serves the page's ``zmesh.fetch``
  (:mod:`zmesh.runtime.fetch`).  Like a native node it finds relays through the DHT and
  draws paths from its peer sample, with flooding off (:func:`browser_config`, D46); it
  publishes no signaling URL, so other nodes reach it by signaling through the relay that
  named it to their lookups.

The JS host is reached only through :class:`JsHost`, so everything else here imports and
runs on CPython too (the tests drive it with a fake host).
"""

import asyncio
import ipaddress
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from ..crypto import signing, xwing
from ..errors import RemoteProtocolError, ZMeshError
from ..identity import Flags, Identity, short_id
from ..node import Event, LinkClosed, LinkUp, Node, NodeConfig
from ..shaping import MODES, Mode, ShapeConfig
from ..signaling.backoff import Backoff
from .aio import AsyncNode, wall_clock
from .browser_content import BrowserContent
from .browser_peers import keep_browser_links, linked_stun_servers
from .browser_rtc import (
    BrowserMediaTransport,
    BrowserRng,
    BrowserRtc,
    BrowserTransport,
    Host,
    JsHost,
    to_bytes,
)
from .browser_store import ContentDb, JsContentDb, MemoryContentDb
from .browser_wake import BrowserWake
from .fetch import MAX_BODY, MAX_TRUST_CA, FetchError, circuit_fetch
from .pool import Pool
from .rtc import TransportError
from .tasks import TaskSet

if TYPE_CHECKING:
    from .tls import ChainVerifier

log = logging.getLogger("zmesh.browser")

IDENTITY_SLOTS: Final = 4
IDENTITY_LOCK_WAIT_MS: Final = 1500  # a reload: the old page's worker may still hold it
READY_POLL: Final = 0.025  # s between readiness checks until ready (a cheap path choice)
CONTENT_DELAY: Final = 5.0  # s: the content store opens once ready, or after this
BOOTSTRAP_LINKS: Final = 2  # links made through HTTP signaling; the DHT finds the rest
MAX_LINKS: Final = 32  # relays linked to on the node's own account (NodeConfig.max_links)
STATUS_INTERVAL: Final = 0.5
MAX_FETCHES: Final = 16
MAX_STATUS_SESSIONS: Final = 8  # sessions listed in the status (the newest ones)
SIGNALING_REPLY_LIMIT: Final = 64 * 1024
_SEEDS: Final = xwing.SEED_SIZE + signing.SEED_SIZE


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
    trust_ca: str = ""  # PEM CAs zmesh.fetch trusts beyond certifi's (--trust-ca, D51)
    test_hooks: bool = False  # the page was opened with ?test_hooks=1 (the harness)
    media: bool = False  # ?transport=media: dial over the media transport (D58)
    shape: Mode = "off"  # ?shape=constant|video: shape what it sends on each link (D53)

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
        trust_ca = raw.get("trustCa", "")
        if not isinstance(trust_ca, str) or len(trust_ca) > MAX_TRUST_CA:
            raise ValueError(f'config "trustCa" must be PEM text of at most {MAX_TRUST_CA} bytes')
        verbose = verbose if isinstance(verbose, int) else 0
        shape = raw.get("shape", "off")
        if shape not in MODES:
            raise ValueError(f'config "shape" must be one of {", ".join(MODES)}, not {shape!r}')
        return cls(
            urls[:32],
            timings,
            verbose,
            trust_ca,
            raw.get("testHooks") is True,
            raw.get("transport") == "media",
            shape,
        )


def on_loopback(urls: list[str]) -> bool:
    """True if every URL names this machine (``localhost`` or a loopback address): the
    page joins a mesh on loopback, as ``zmesh up`` and the harness run."""
    hosts = [urlsplit(url).hostname or "" for url in urls]
    if not hosts:
        return False
    for host in hosts:
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            if host != "localhost":
                return False
    return True


def browser_config(loopback: bool, shape: Mode = "off") -> NodeConfig:
    """The browser node's :class:`NodeConfig`: a relay (``Flags.RELAY``, as every node is,
    D22) with the DHT on and flooding off, paths from its peer sample, as native nodes
    (``zmesh.runtime.daemon.relay_config``, D46).  On ``loopback`` the mesh is private
    (one operator's relays on one machine): the DHT's and paths' per-subnet caps are
    waived there, as on the native nodes of that mesh.  ``shape`` is the page's ``?shape=``
    (zmesh.shaping; a shaping node links only to nodes that unwrap shaped messages, D53)."""
    return NodeConfig(
        flags=Flags.RELAY,
        auto_consume=False,
        max_links=MAX_LINKS,
        dht=True,
        sample_links=True,  # ready right after its first links, not after a DHT walk
        gossip=False,
        private=loopback,
        shape=ShapeConfig(shape),
    )


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
        loopback = on_loopback(config.bootstrap)
        self.node = Node(identity, self.rng, wall_clock(), browser_config(loopback, config.shape))
        self.rtc = BrowserRtc(
            host, stun=lambda: linked_stun_servers(self.node, loopback), media=config.media
        )
        self._http_client = http_client
        self.driver = AsyncNode(self.node, rtc=self.rtc, http_client=self._http, loopback=loopback)
        self.driver.on_event = self._on_event
        self.pool = Pool(self.driver)
        self.wake = BrowserWake(self.driver, self.rtc, host)  # woken by push (D54)
        self.signaling_blocked = False  # test hook (config testHooks): HTTP signaling fails
        self.bootstrap = [BootstrapEntry(url) for url in config.bootstrap]
        self.first_link_ms: float | None = None
        self.ready_ms: float | None = None
        self.links_closed = 0
        self.fetches = 0
        self.fetch_failures = 0
        self._active_fetches = 0
        self._chain_verifier: ChainVerifier | None = None
        self.content = BrowserContent(self.driver, host)  # zmesh.share / zmesh.get
        self._tasks = TaskSet(log)
        self._dirty = True
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, content_db: ContentDb) -> None:
        self._spawn(self._bootstrap_loop())
        self._spawn(self._open_content(content_db))
        self._spawn(self._status_loop())
        self._spawn(keep_browser_links(self.driver))  # links to other browsers (D50)
        self._spawn(self.wake.run())  # wake records at up to 3 native nodes (D54)
        log.info("browser event=started node=%s", short_id(self.node.node_id))

    async def _open_content(self, db: ContentDb) -> None:
        """Open the content store once the node is ready, or after ``CONTENT_DELAY`` s."""
        for _ in range(int(CONTENT_DELAY / READY_POLL)):
            if self.ready_ms is not None:
                break
            await asyncio.sleep(READY_POLL)
        await self.content.start(db)

    async def close(self) -> None:
        self._closing = True
        self._tasks.cancel()
        self.wake.close()
        await self.content.close()
        await self.driver.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.spawn(coro)

    # -- events from JS ------------------------------------------------------------------------
    def on_rtc_event(self, pc: int, ev: str, data: Any, handed: int = 0, amount: int = 0) -> None:
        """Called by the worker for every event the page reports; never raises."""
        try:
            self.rtc.on_event(int(pc), str(ev), to_bytes(data), int(handed), int(amount))
        except Exception:
            log.exception("browser event=rtc_event_failed ev=%s", ev)

    def on_push(self, data: Any, arrived_ms: float) -> None:
        """A push payload the page's service worker received (D54); never raises."""
        try:
            self.wake.on_push(to_bytes(data), float(arrived_ms))
        except Exception:
            log.exception("browser event=push_failed")
        self._dirty = True

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
            elif method == "share":
                self._spawn(self.content.share(call_id, to_bytes(body)))
            elif method == "get":
                self._spawn(self.content.get(call_id, args))
            elif method == "isolate" and self.config.test_hooks:
                self._isolate()
                self.host.reply(call_id, True, "{}", None)
            else:
                raise ValueError(f"unknown method {method!r}")
        except Exception as exc:
            self.host.reply(call_id, False, json.dumps({"error": str(exc)}), None)

    def _isolate(self) -> None:
        """Test hook (the harness's ``push`` scenario): from now on every HTTP signaling
        request fails as if the relays' endpoints were blocked, and every link closes."""
        self.signaling_blocked = True
        for link_id in list(self.driver._transports):
            self._spawn(self.driver._close_transport(link_id))

    async def _http(self, url: str, **kwargs: Any) -> tuple[int, bytes]:
        if self.signaling_blocked:
            raise ZMeshError("unreachable (blocked by the test hook)")
        return await self._http_client(url, **kwargs)

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
            await self._bootstrap_pass()
            if self.node.peers():
                backoff.reset()
                await asyncio.sleep(5.0)
            else:
                await asyncio.sleep(backoff.next_delay())

    async def _bootstrap_pass(self) -> None:
        """Dial the entries in order, as many at once as links are missing, until enough
        are up or every entry was tried once."""
        pending = []
        for entry in self.bootstrap:
            if entry.peer is not None and self.node.link_to(entry.peer) is not None:
                continue
            if entry.state == "linked":
                entry.state = "waiting"  # its link went away
            pending.append(entry)
        while pending and (missing := BOOTSTRAP_LINKS - len(set(self.node.peers()))) > 0:
            batch, pending = pending[:missing], pending[missing:]
            await asyncio.gather(*(self._try_bootstrap(entry) for entry in batch))
        for entry in pending:
            if entry.state == "waiting":
                entry.state = "standby"  # not needed: enough links already

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
        known = node.directory if node.sample is None else node.sample
        relays = [d for d in known.values() if d.flags & Flags.RELAY]
        own = len(node.builder.built())
        relayed = len(node.relay)
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
            "guardsPerClient": len(
                {p[0] for c in node.builder.built() if (p := node.builder.path(c))}
            ),
            "cellsRelayed": node.relay.cells_relayed,
            "bytesRelayed": node.relay.cells_relayed * node.geometry.cell_size,
            "bytesIn": sum(t.bytes_in for t in transports),
            "bytesOut": sum(t.bytes_out for t in transports),
            # over the media transport (D58): connections, and stream bytes sent again
            "shape": self.config.shape,
            "mediaLinks": sum(isinstance(t, BrowserMediaTransport) for t in transports),
            "mediaResent": sum(
                t.link.resent for t in transports if isinstance(t, BrowserMediaTransport) and t.link
            ),
            "linksClosed": self.links_closed,
            "fetches": self.fetches,
            "fetchFailures": self.fetch_failures,
            "content": self.content.status(),
            "bootstrap": [e.as_dict() for e in self.bootstrap],
            "sessions": self._sessions_status(),
            "push": self.wake.status(),
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

    def _sessions_status(self) -> list[dict[str, Any]]:
        """The pool's sessions (the newest :data:`MAX_STATUS_SESSIONS`), each with its legs
        (circuit id, path of full hex node ids from the first hop to the exit, smoothed
        RTT, phi-accrual suspicion), its open streams, failovers, longest stall around a
        failover and bytes received."""
        sessions, builder = self.node.sessions, self.node.builder
        alive = set(sessions.ids())
        ids = sorted(s.session_id for s in self.pool.core.sessions() if s.session_id in alive)
        out = []
        for session_id in ids[-MAX_STATUS_SESSIONS:]:
            info = sessions.info(session_id, wall_clock())
            legs = [
                {
                    "circuit": leg.leg_id,
                    "path": [hop.hex() for hop in builder.path(leg.leg_id)],
                    "rttMs": None if leg.srtt is None else round(leg.srtt * 1000, 1),
                    "phi": round(leg.phi, 2),
                }
                for leg in sorted(info.legs, key=lambda leg: leg.leg_id)
            ]
            out.append(
                {
                    "id": session_id,
                    "streams": info.streams,
                    "legs": legs,
                    "failovers": info.failovers,
                    "longestStallMs": round(info.longest_stall * 1000, 1),
                    "bytesReceived": info.bytes_received,
                }
            )
        return out

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
            await asyncio.sleep(STATUS_INTERVAL if self.ready_ms is not None else READY_POLL)
            self._dirty = self._dirty or self.ready_ms is not None  # live counters

    # -- zmesh.fetch ---------------------------------------------------------------------------
    def _verifier(self) -> "ChainVerifier":
        """The certificate verifier of https fetches (made on first use: it loads tlslite-ng
        and reads the CAs)."""
        from .tls import make_verifier  # noqa: PLC0415

        if self._chain_verifier is None:
            self._chain_verifier = make_verifier(self.config.trust_ca)
        return self._chain_verifier

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
                    verifier=self._verifier() if url.lower().startswith("https:") else None,
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
    content_db: Callable[[BrowserNode], ContentDb] | None = None,
) -> BrowserNode:
    """Load (or create) the identity, then start the node: it bootstraps in the background,
    and opens its content store on ``content_db(node)`` (in memory if None) once it is
    ready or after ``CONTENT_DELAY`` s, so that loading and verifying the tab's content
    does not slow the join (``zmesh.share`` and ``zmesh.get`` wait for it).

    ``http_client`` is for tests on CPython (the browser uses fetch)."""
    rng = BrowserRng(host)
    identity, note = await load_identity(host, rng)
    node = BrowserNode(host, config, identity, note, http_client=http_client)
    node.start(MemoryContentDb() if content_db is None else content_db(node))
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

    def content_db(node: BrowserNode) -> ContentDb:
        return JsContentDb(host_js.contentDb, node.content.store_name())

    return await start(config, JsHost(host_js), content_db=content_db)


__all__ = [
    "BrowserConfig",
    "BrowserNode",
    "BrowserRng",
    "BrowserRtc",
    "BrowserTransport",
    "Host",
    "JsHost",
    "browser_config",
    "describe_failure",
    "load_identity",
    "main",
    "on_loopback",
    "pyfetch_request",
    "start",
]
