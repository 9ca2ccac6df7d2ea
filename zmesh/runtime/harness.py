"""The headless harness: N Chromium nodes and M native relays on loopback, and scenarios.

    async with Harness(HarnessOptions(browsers=3, relays=3)) as h:
        result = await h.run("browser-circuit")

Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (never a downloaded
browser).  By default every context is created with camera and microphone permission for
the page's origin and Chromium runs with ``--allow-loopback-in-peer-connection``, so pages
offer their host addresses.  With ``default_privacy`` (set when ``browser-pair`` is the
only scenario) neither is given, and each page runs in a Chromium of its own (as two
people's browsers would: one Chromium resolves the mDNS names of its own tabs): Chromium
hides its host addresses behind mDNS names, which do not resolve on these machines, so
pages link to each other through the reflexive candidates that the relays' STUN
responders give them (D50).

Scenarios:

* ``join``: every browser node becomes ready (linked, and able to build circuits);
* ``browser-circuit``: a native client builds a 3-hop circuit whose middle hop is a
  browser, and fetches a file through it from a local server (SHA-256 checked);
* ``fetch``: each page's ``zmesh.fetch`` gets a file from a local server through a 3-hop
  circuit to the native exit (SHA-256 checked in the page);
* ``embed``: a host page on another origin carries the embed tag; the visitor consents and
  the sandboxed relay iframe joins the mesh;
* ``browser-pair``: the two first browser nodes link to each other directly (each lists the
  other among its peers), and a native client's circuit relay -> browser -> browser -> exit
  fetches a file over that link (SHA-256 checked; both pages count a relayed circuit);
* ``heal``: the first page's ``zmesh.fetch`` gets a larger file (:data:`HEAL_FILE_SIZE`)
  while a native middle relay of one of its session's legs is killed (SIGKILL); the fetch
  still completes intact (HTTP 200, SHA-256 checked).  Needs :data:`HEAL_RELAYS` relays,
  so that the session has two legs with disjoint guards and middles.  The report says
  when the session had two legs again; with 5 relays it often has not (the only paths
  left that share nothing with the surviving leg run through the dead relay, still in
  the directory), with 6 it has.
"""

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZMeshError
from ..identity import Descriptor, Flags, Identity, short_id
from ..node import Node, NodeConfig
from . import run_command, webrtc
from .aio import AsyncNode, wall_clock
from .entropy import SystemRng
from .harness_firefox import (
    FIREFOX_PREFS,
    FirefoxDriver,
    ensure_firefox,
)
from .harness_heal import heal
from .http import serve_fixed
from .processes import LocalProcesses, free_port
from .webserver import find_dist

CHROMIUM = "/usr/bin/chromium"
FIREFOX = "/usr/bin/firefox-esr"
BROWSERS = ("chromium", "firefox")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
]
SCENARIOS = ("join", "browser-circuit", "fetch", "embed", "browser-pair", "heal")  # heal: last
FIREFOX_SCENARIOS = ("join", "fetch", "push")  # what the Firefox pages support
PUSH_WAIT = 60.0  # seconds for a page to hand its wake records out, and to be woken
FILE_SIZE = 2_000_000


@dataclass
class HarnessOptions:
    browsers: int = 2
    relays: int = 3
    dist: Path | None = None  # None: find_dist's default
    chromium: str = CHROMIUM
    timeout: float = 90.0
    default_privacy: bool = False  # no media permission, no loopback flag: mDNS hiding on
    browser: str = "chromium"  # or "firefox": Debian's Firefox ESR over WebDriver BiDi
    firefox: str = FIREFOX
    push: bool = False  # run `zmesh push-service` (Firefox's dom.push.serverURL) and test hooks


@dataclass
class ScenarioResult:
    scenario: str
    ok: bool
    seconds: float
    details: list[str] = field(default_factory=list)


class FileServer:
    """A throwaway HTTP server on loopback serving random bytes (the fetch target)."""

    def __init__(self, size: int = FILE_SIZE) -> None:
        self.payload = os.urandom(size)
        self.sha256 = hashlib.sha256(self.payload).hexdigest()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        self._server, base = await serve_fixed(self.payload, "application/octet-stream")
        self.url = f"{base}/file.bin"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def host_page_html(zmesh_origin: str) -> bytes:
    """A third-party site on its own origin carrying the embed tag; it also throws and
    fills the console, which must not disturb the relay."""
    return (
        "<!doctype html><title>A site that embeds zMesh</title>"
        "<h1>Some news site</h1>"
        "<script>setInterval(() => { console.log('host noise', Date.now()); }, 50);"
        "window.addEventListener('load', () => { throw new Error('host page bug'); });"
        "</script>"
        f'<script async src="{zmesh_origin}/embed.js" data-cap-kbps="512"></script>'
    ).encode()


class Harness:
    def __init__(self, opts: HarnessOptions) -> None:
        self.opts = opts
        self.procs = LocalProcesses()
        self.relay_urls: list[str] = []
        self.web_url = ""
        self.dist = Path()
        self.files = FileServer()
        self.pages: list[Any] = []
        self._stack = contextlib.AsyncExitStack()
        self._tmp = Path(tempfile.mkdtemp(prefix="zmesh-harness-"))
        self._browser: Any = None
        self._playwright: Any = None
        self.step = ""  # what the running scenario is doing (named when it fails)

    async def __aenter__(self) -> "Harness":
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        self.dist = find_dist(self.opts.dist)
        firefox = self.opts.browser == "firefox"
        if self.opts.push and not firefox:
            raise ZMeshError("the push scenario needs --browser firefox (Chromium pushes via FCM)")
        if firefox:
            ensure_firefox(self.opts.firefox)
        elif not Path(self.opts.chromium).exists():
            raise ZMeshError(f"{self.opts.chromium} not found: apt-get install chromium")
        else:
            try:
                from playwright.async_api import async_playwright  # noqa: PLC0415 (optional)
            except ImportError:
                raise ZMeshError("the harness needs Playwright: pip install playwright") from None
        # browser nodes run the DHT like the relays: nothing is flooded (D46)
        self.relay_urls = await self.procs.start_relays(self.opts.relays, self._tmp)
        port = free_port()
        args = ["web", "--port", str(port), "--dist", str(self.dist)]
        for url in self.relay_urls:
            args += ["--bootstrap", url]
        await self.procs.start(args, "http://")
        self.web_url = f"http://127.0.0.1:{port}"
        await self.files.start()
        page_url = f"{self.web_url}/index.html" + ("?test_hooks=1" if self.opts.push else "")
        if firefox:
            prefs = dict(FIREFOX_PREFS)
            if self.opts.push:  # `zmesh push-service`, a process like the relays
                args = ["push-service", "--listen", "127.0.0.1:0", "--data", str(self._tmp)]
                line = await self.procs.start(args, "dom.push.serverURL = ")
                prefs["dom.push.serverURL"] = line.split(" = ", 1)[1].strip()
            self._browser = await FirefoxDriver.launch(self.dist.parent, self.opts.firefox, prefs)
            self._stack.push_async_callback(self._browser.close)
            for _ in range(self.opts.browsers):
                self.pages.append(await self._browser.open(page_url))
            return
        self._playwright = await self._stack.enter_async_context(async_playwright())
        self._browser = await self._launch()
        for _ in range(self.opts.browsers):
            self.pages.append(await self.open_page(page_url))

    async def _launch(self) -> Any:
        args = CHROMIUM_ARGS
        if self.opts.default_privacy:
            args = [a for a in args if a != "--allow-loopback-in-peer-connection"]
        return await self._playwright.chromium.launch(
            executable_path=self.opts.chromium, args=args, headless=True
        )

    async def open_page(self, url: str) -> Any:
        if self.opts.default_privacy:  # a Chromium of its own, default permissions
            browser = self._browser if not self.pages else await self._launch()
            context = await browser.new_context()
        else:
            context = await self._browser.new_context(permissions=["camera", "microphone"])
        page = await context.new_page()
        await page.goto(url)
        return page

    async def wait_ready(self, page_or_frame: Any) -> float:
        start = time.monotonic()
        await asyncio.wait_for(
            page_or_frame.evaluate("() => window.zmesh.ready.then(() => true)"),
            self.opts.timeout,
        )
        return time.monotonic() - start

    async def status(self, page_or_frame: Any) -> dict[str, Any]:
        result: dict[str, Any] = await page_or_frame.evaluate("() => window.zmesh.status()")
        return result

    async def run(self, scenario: str) -> ScenarioResult:
        scenarios: dict[str, Callable[[list[str]], Awaitable[bool]]] = {
            "join": self._join,
            "browser-circuit": self._browser_circuit,
            "fetch": self._fetch,
            "embed": self._embed,
            "browser-pair": self._browser_pair,
            "heal": functools.partial(heal, self),
            "push": self._push,
        }
        if self.opts.browser == "firefox" and scenario not in FIREFOX_SCENARIOS:
            raise ZMeshError(f"with Firefox the harness runs {', '.join(FIREFOX_SCENARIOS)}")
        if scenario not in scenarios:
            raise ZMeshError(f"unknown scenario {scenario!r} (choose from {', '.join(SCENARIOS)})")
        details: list[str] = []
        start = time.monotonic()
        self.step = "starting"
        try:
            ok = await scenarios[scenario](details)
        except (TimeoutError, OSError, ZMeshError) as exc:
            details.append(f"failed while {self.step}: {str(exc) or type(exc).__name__}")
            ok = False
        return ScenarioResult(scenario, ok, time.monotonic() - start, details)

    # -- scenarios ------------------------------------------------------------------
    async def _join(self, details: list[str]) -> bool:
        for i, page in enumerate(self.pages):
            self.step = f"waiting for browser {i} to be ready"
            took = await self.wait_ready(page)
            status = await self.status(page)
            details.append(f"browser {i}: ready in {took:.1f} s, status {json.dumps(status)}")
        return True

    async def _push(self, details: list[str]) -> bool:
        """The first page hands wake records to its wake nodes; then HTTP signaling is
        blocked in the page and every link dropped; a wake node's push alone links it again
        (D54).  Prints ``push-to-link: N ms`` (push arrival in the page to the link)."""
        page = self.pages[0]
        self.step = "waiting for browser 0 to be ready"
        await self.wait_ready(page)
        self.step = "waiting for the page to hand out wake records"
        push = await self._poll_push(page, lambda p: p["subscribed"] >= 1 and p["wakeNodes"])
        details.append(f"wake records sent to {', '.join(push['wakeNodes'])}")
        await asyncio.sleep(1.0)  # the records cross the links
        tried = {b["url"]: b["attempts"] for b in (await self.status(page))["bootstrap"]}
        self.step = "blocking HTTP signaling in the page and dropping its links"
        await page.evaluate("() => window.zmeshTest.isolate().then(() => true)")
        start = time.monotonic()
        self.step = "waiting for a wake node's push to link the page again"
        push = await self._poll_push(page, lambda p: p["dialsLinked"] >= 1)
        status = await self.status(page)
        boot = [f"{b['url']}: {b['state']} ({b['error']})" for b in status["bootstrap"]]
        figure = push["lastPushToLinkMs"]
        print(f"push-to-link: {figure:.0f} ms", flush=True)
        details.append(f"push-to-link: {figure:.0f} ms (push arrival in the page to the link)")
        details.append(
            f"linked again {time.monotonic() - start:.1f} s after the isolation, "
            f"{status['peers']} peer(s); HTTP signaling meanwhile: {'; '.join(boot)}"
        )
        details.append(f"push status {json.dumps(push)}")
        # no link came back through HTTP signaling: every attempt since was blocked (an
        # entry may still read "linked" when its relay is linked again by push)
        return status["peers"] >= 1 and all(
            "blocked" in b["error"] or b["attempts"] == tried.get(b["url"])
            for b in status["bootstrap"]
        )

    async def _poll_push(
        self, page: Any, done: Callable[[dict[str, Any]], object]
    ) -> dict[str, Any]:
        deadline = time.monotonic() + PUSH_WAIT
        while True:
            push: dict[str, Any] = (await self.status(page)).get("push") or {}
            if push and done(push):
                return push
            if time.monotonic() > deadline:
                raise ZMeshError(f"push status after {PUSH_WAIT:g} s: {json.dumps(push)}")
            await asyncio.sleep(0.2)

    async def _fetch(self, details: list[str]) -> bool:
        ok = True
        for i, page in enumerate(self.pages):
            self.step = f"waiting for browser {i} to be ready"
            await self.wait_ready(page)
            self.step = f"fetching through browser {i}'s zmesh.fetch"
            start = time.monotonic()
            digest = await page.evaluate(
                """async (url) => {
                    const response = await window.zmesh.fetch(url);
                    const body = await response.arrayBuffer();
                    const hash = await crypto.subtle.digest("SHA-256", body);
                    const hex = Array.from(new Uint8Array(hash),
                                           (b) => b.toString(16).padStart(2, "0"));
                    return [response.status, body.byteLength, hex.join("")];
                }""",
                self.files.url,
            )
            status, size, sha = digest
            match = sha == self.files.sha256
            ok = ok and match and status == 200
            details.append(
                f"browser {i}: zmesh.fetch got HTTP {status}, {size} bytes in "
                f"{time.monotonic() - start:.2f} s, SHA-256 {'matches' if match else 'MISMATCH'}"
            )
        return ok

    async def _browser_circuit(self, details: list[str]) -> bool:
        """A native client builds guard (native) -> middle (a browser) -> exit (native)."""
        for i, page in enumerate(self.pages):
            self.step = f"waiting for browser {i} to be ready"
            await self.wait_ready(page)
        browser_ids = {(await self.status(page))["nodeId"] for page in self.pages}
        rng = SystemRng()
        config = NodeConfig(dht=True, gossip=False)  # as every node of the mesh (D46)
        client = AsyncNode(
            Node(Identity.generate(rng), rng, wall_clock(), config), rtc=webrtc, loopback=True
        )
        try:
            self.step = "linking the native client to the relays"
            linked = 0
            for url in self.relay_urls:
                try:
                    await client.bootstrap(url)
                    linked += 1
                except (TimeoutError, OSError, ZMeshError) as exc:
                    details.append(f"bootstrap {url}: {str(exc) or type(exc).__name__}")
            if not linked:
                raise ZMeshError("the client could link to no relay")
            self.step = "finding a browser's node record through the DHT"
            middles = await self._find_records(client, [bytes.fromhex(i) for i in browser_ids])
            directory = client.node.directory
            exits = [d for d in directory.values() if d.flags & Flags.EXIT]
            guards = [
                d
                for d in directory.values()
                if client.node.link_to(d.node_id) is not None
                and not d.flags & Flags.EXIT
                and d.node_id.hex() not in browser_ids
            ]
            if not middles or not exits or not guards:
                raise ZMeshError("not enough nodes for a guard, a browser middle and an exit")
            self.step = "building a circuit through a browser"
            cid = await self._first_working_circuit(client, guards, middles, exits[0], details)
            self.step = "opening a stream to the file server"
            pipe = client.open_stream(client.session_for([cid]), self.files.url.split("/")[2])
            await pipe.wait_connected(self.opts.timeout)
            self.step = "fetching the file through the circuit"
            body = await _http_get_over(pipe, self.files.url)
            match = hashlib.sha256(body).hexdigest() == self.files.sha256
            details.append(
                f"fetched {len(body)} bytes through the circuit, SHA-256 "
                f"{'matches' if match else 'MISMATCH'}"
            )
            return match
        finally:
            await client.close()

    async def _browser_pair(self, details: list[str]) -> bool:
        """Two browser nodes link to each other directly; a circuit crosses that link."""
        if len(self.pages) < 2:
            raise ZMeshError("the browser-pair scenario needs --browsers 2 or more")
        pair = self.pages[:2]
        details.append(
            "two Chromiums with default privacy (mDNS host names, no media permission)"
            if self.opts.default_privacy
            else "pages with media permission (host addresses shown)"
        )
        for i, page in enumerate(pair):
            self.step = f"waiting for browser {i} to be ready"
            await self.wait_ready(page)
        ids = [(await self.status(page))["nodeId"] for page in pair]
        short = [short_id(bytes.fromhex(i)) for i in ids]
        self.step = "waiting for the two browser nodes to link to each other"
        start = time.monotonic()
        while True:
            statuses = [await self.status(page) for page in pair]
            if short[1] in statuses[0]["peerIds"] and short[0] in statuses[1]["peerIds"]:
                break
            if time.monotonic() - start > self.opts.timeout:
                raise ZMeshError(f"the browsers did not link: peers {statuses[0]['peerIds']}, "
                                 f"{statuses[1]['peerIds']}")  # fmt: skip
            await asyncio.sleep(0.5)
        details.append(
            f"browser {short[0]} and browser {short[1]} linked to each other directly "
            f"{time.monotonic() - start:.1f} s after both were ready"
        )
        relayed_before = [s["circuitsRelayed"] for s in statuses]
        rng = SystemRng()
        client = AsyncNode(
            Node(Identity.generate(rng), rng, wall_clock(), NodeConfig(dht=True, gossip=False)),
            rtc=webrtc,
            loopback=True,
        )
        try:
            self.step = "linking the native client to the relays"
            for url in self.relay_urls:
                with contextlib.suppress(TimeoutError, OSError, ZMeshError):
                    await client.bootstrap(url)
            self.step = "finding the browsers' node records through the DHT"
            wanted = [bytes.fromhex(i) for i in ids]
            found = await self._find_records(client, wanted, every=True)
            browsers = {d.node_id: d for d in found}
            first, second = browsers[wanted[0]], browsers[wanted[1]]
            directory = client.node.directory
            exits = [d for d in directory.values() if d.flags & Flags.EXIT]
            guards = [
                d
                for d in directory.values()
                if client.node.link_to(d.node_id) is not None and not d.flags & Flags.EXIT
            ]
            if not exits or not guards:
                raise ZMeshError("not enough relays for a guard and an exit")
            self.step = "building relay -> browser -> browser -> exit"
            cid, tried = None, []
            for guard in guards:
                try:
                    cid = await client.build_circuit([guard, first, second, exits[0]], timeout=10)
                    break
                except (TimeoutError, ZMeshError) as exc:
                    tried.append(f"{short_id(guard.node_id)}: {str(exc) or type(exc).__name__}")
            if cid is None:
                raise ZMeshError(f"no circuit over the browsers' link ({'; '.join(tried)})")
            path = " -> ".join(short_id(h) for h in client.node.builder.path(cid))
            details.append(f"circuit {path} (relay -> browser -> browser -> exit) built")
            self.step = "fetching the file over the browsers' link"
            pipe = client.open_stream(client.session_for([cid]), self.files.url.split("/")[2])
            await pipe.wait_connected(self.opts.timeout)
            body = await _http_get_over(pipe, self.files.url)
            match = hashlib.sha256(body).hexdigest() == self.files.sha256
            details.append(
                f"fetched {len(body)} bytes over it, SHA-256 {'matches' if match else 'MISMATCH'}"
            )
            after = [await self.status(page) for page in pair]
            relayed = [a["circuitsRelayed"] - b for a, b in zip(after, relayed_before, strict=True)]
            still = short[1] in after[0]["peerIds"] and short[0] in after[1]["peerIds"]
            details.append(
                f"status: circuits relayed since linking {relayed[0]} and {relayed[1]}; "
                f"still linked to each other: {still}"
            )
            paths = [json.dumps(a.get("page", {}).get("paths", {})) for a in after]
            details.append(f"ICE paths of the pages' links (local/remote): {paths[0]}, {paths[1]}")
            return match and still and min(relayed) >= 1
        finally:
            await client.close()

    async def _find_records(
        self, client: AsyncNode, node_ids: list[bytes], *, every: bool = False
    ) -> list[Descriptor]:
        """The descriptors of ``node_ids`` that DHT lookups of their node records find
        (one lookup each, again every 2 s, until one is found, or ``every`` one, or the
        timeout); raises ZMeshError if none is (or not every one)."""
        dht = client.node.dht
        assert dht is not None
        deadline = time.monotonic() + self.opts.timeout
        while True:
            found = [r.descriptor for i in node_ids if (r := dht.node_record(i)) is not None]
            if found and (not every or len(found) == len(node_ids)):
                return found
            if time.monotonic() > deadline:
                raise ZMeshError(f"DHT lookups found {len(found)} of {len(node_ids)} records")
            for node_id in node_ids:
                with contextlib.suppress(ZMeshError):
                    client.call(functools.partial(dht.find_node_record, node_id))
            await asyncio.sleep(2.0)

    async def _first_working_circuit(
        self,
        client: AsyncNode,
        guards: list[Descriptor],
        middles: list[Descriptor],
        exit_: Descriptor,
        details: list[str],
    ) -> int:
        tried = []
        for middle in middles:
            for guard in guards:
                start = time.monotonic()
                try:
                    cid = await client.build_circuit([guard, middle, exit_], timeout=10)
                except (TimeoutError, ZMeshError) as exc:
                    # that guard may have no link to this browser (yet)
                    tried.append(f"{short_id(guard.node_id)}: {str(exc) or type(exc).__name__}")
                    continue
                details.append(
                    f"circuit built in {1000 * (time.monotonic() - start):.1f} ms: "
                    f"guard {short_id(guard.node_id)} (native) -> "
                    f"middle {short_id(middle.node_id)} (browser) -> "
                    f"exit {short_id(exit_.node_id)} (native)"
                )
                return cid
        raise ZMeshError(f"no guard could extend a circuit to a browser node ({'; '.join(tried)})")

    async def _embed(self, details: list[str]) -> bool:
        host, host_url = await serve_fixed(host_page_html(self.web_url), "text/html")
        try:
            self.step = "opening the host page and consenting"
            page = await self.open_page(host_url + "/")
            await page.get_by_role("button", name="Run relay").click(
                timeout=self.opts.timeout * 1000
            )
            deadline = time.monotonic() + self.opts.timeout
            frame = None
            while frame is None:
                frame = next((f for f in page.frames if "/relay.html" in f.url), None)
                if time.monotonic() > deadline:
                    raise ZMeshError("the relay iframe never appeared")
                await asyncio.sleep(0.1)
            self.step = "waiting for the relay iframe to be ready"
            took = await self.wait_ready(frame)
            status = await self.status(frame)
            details.append(
                f"host {host_url} -> relay iframe from {self.web_url}: ready in {took:.1f} s, "
                f"status {json.dumps(status)}"
            )
            card = page.get_by_role("dialog", name="zMesh relay consent")
            linked, text = False, ""
            while not linked and time.monotonic() < deadline + self.opts.timeout:
                text = await card.inner_text()
                linked = "zMesh relay linked to" in text
                if not linked:
                    await asyncio.sleep(0.2)
            details.append(f"the card says what is true: {text.splitlines()[0]!r}")
            await page.get_by_role("button", name="Stop").click()
            gone = not any("/relay.html" in f.url for f in page.frames)
            details.append(f"stop control removed the relay: {gone}")
            return gone and linked
        finally:
            host.close()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()
        await self.files.close()
        await self.procs.stop()


async def _http_get_over(pipe: Any, url: str) -> bytes:
    """HTTP/1.0 GET over a circuit stream, with an in-memory socket pair as the app side."""
    host = url.split("/")[2]
    path = "/" + url.split("/", 3)[3]
    reader_app, writer_app = await _socket_pair(pipe)
    writer_app.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer_app.drain()
    data = await asyncio.wait_for(reader_app.read(), 60)
    return data.partition(b"\r\n\r\n")[2]


async def _socket_pair(pipe: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Run the stream pipe against one end of a loopback TCP pair; return the other end."""
    ready: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ready.set_result((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    app = await asyncio.open_connection("127.0.0.1", port)
    inner_reader, inner_writer = await ready
    server.close()
    _PIPES.add(asyncio.ensure_future(pipe.run(inner_reader, inner_writer)))
    return app


_PIPES: set["asyncio.Future[None]"] = set()  # keep running pipes referenced


def format_result(result: ScenarioResult) -> str:
    lines = [
        f"scenario {result.scenario}: {'OK' if result.ok else 'FAILED'} ({result.seconds:.1f} s)"
    ]
    lines += [f"  {d}" for d in result.details]
    return "\n".join(lines)


async def run_harness(opts: HarnessOptions, scenarios: list[str]) -> int:
    opts.push = opts.push or "push" in scenarios
    async with Harness(opts) as h:
        name = "Firefox ESR" if opts.browser == "firefox" else "Chromium"
        print(
            f"harness: {opts.relays} native relays, {opts.browsers} headless {name} nodes, "
            f"page {h.web_url}/index.html",
            flush=True,
        )
        failed = 0
        for name in scenarios:
            result = await h.run(name)
            print(format_result(result), flush=True)
            failed += not result.ok
    return 1 if failed else 0


def main_harness(opts: HarnessOptions, scenarios: list[str]) -> int:
    return run_command("harness", run_harness(opts, scenarios))
