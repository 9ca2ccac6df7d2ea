"""The headless harness: N Chromium nodes and M native relays on loopback, and scenarios.

    async with Harness(HarnessOptions(browsers=3, relays=3)) as h:
        result = await h.run("browser-circuit")

Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright (never a downloaded
browser).  WebRTC on loopback needs ``--allow-loopback-in-peer-connection`` and camera and
microphone permission for the page's origin (otherwise Chromium offers only mDNS
candidates), so every context is created with those permissions.

Scenarios:

* ``join``: every browser node becomes ready (linked, and able to build circuits);
* ``browser-circuit``: a native client builds a 3-hop circuit whose middle hop is a
  browser, and fetches a file through it from a local server (SHA-256 checked);
* ``fetch``: each page's ``zmesh.fetch`` gets a file from a local server through a 3-hop
  circuit to the native exit (SHA-256 checked in the page);
* ``embed``: a host page on another origin carries the embed tag; the visitor consents and
  the sandboxed relay iframe joins the mesh.
"""

import asyncio
import contextlib
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
from ..node import Node
from . import run_command, webrtc
from .aio import AsyncNode, wall_clock
from .entropy import SystemRng
from .http import serve_fixed
from .processes import LocalProcesses, free_port
from .webserver import find_dist

CHROMIUM = "/usr/bin/chromium"
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
SCENARIOS = ("join", "browser-circuit", "fetch", "embed")
FILE_SIZE = 2_000_000


@dataclass
class HarnessOptions:
    browsers: int = 2
    relays: int = 3
    dist: Path | None = None  # None: find_dist's default
    chromium: str = CHROMIUM
    timeout: float = 90.0


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
        if not Path(self.opts.chromium).exists():
            raise ZMeshError(f"{self.opts.chromium} not found: apt-get install chromium")
        try:
            from playwright.async_api import async_playwright  # noqa: PLC0415 (optional)
        except ImportError:
            raise ZMeshError("the harness needs Playwright: pip install playwright") from None
        self.relay_urls = await self.procs.start_relays(self.opts.relays, self._tmp)
        port = free_port()
        args = ["web", "--port", str(port), "--dist", str(self.dist)]
        for url in self.relay_urls:
            args += ["--bootstrap", url]
        await self.procs.start(args, "http://")
        self.web_url = f"http://127.0.0.1:{port}"
        await self.files.start()
        playwright = await self._stack.enter_async_context(async_playwright())
        self._browser = await playwright.chromium.launch(
            executable_path=self.opts.chromium, args=CHROMIUM_ARGS, headless=True
        )
        for _ in range(self.opts.browsers):
            self.pages.append(await self.open_page(f"{self.web_url}/index.html"))

    async def open_page(self, url: str) -> Any:
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
        }
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
        client = AsyncNode(
            Node(Identity.generate(rng), rng, wall_clock()), rtc=webrtc, loopback=True
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
            self.step = "waiting for the client to learn a browser's descriptor"
            deadline = time.monotonic() + self.opts.timeout
            while not any(
                i in {d.node_id.hex() for d in client.node.directory.values()} for i in browser_ids
            ):
                if time.monotonic() > deadline:
                    raise ZMeshError("the client never learned a browser node's descriptor")
                await asyncio.sleep(0.2)
            directory = client.node.directory
            middles = [d for d in directory.values() if d.node_id.hex() in browser_ids]
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
    async with Harness(opts) as h:
        print(
            f"harness: {opts.relays} native relays, {opts.browsers} headless Chromium nodes, "
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
