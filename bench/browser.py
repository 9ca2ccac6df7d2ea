"""Benchmark: the browser node's start-up and relaying throughput, against same-run baselines.

Everything runs on loopback, set up by :class:`zmesh.runtime.harness.Harness`: three native
relays (the first an exit), ``zmesh web`` serving web/dist, and Debian's headless
Chromium with the harness's flags (``--allow-loopback-in-peer-connection``, ...) and
contexts with camera and microphone permission.

1. **Start-up, warm and cold.**  Warm first: one Chromium process and context, one
   unmeasured load of each page to fill the HTTP cache, then each load in a new tab (closed
   after it): a returning visitor, who keeps the cache and the identity in IndexedDB.  The
   server revalidates every file (ETag, 304), so Chromium keeps its compiled WebAssembly;
   the join page boots from the build's memory snapshot (D52), which skips Python's start,
   the wheel's unpacking and zmesh's imports.  The goal (issue 12): ready within 2 s of
   opening the page.  Then cold: every load is a fresh Chromium process and a fresh context: no
   HTTP cache, no IndexedDB identity (the node generates its keys).  For the join page
   (index.html) the figures are the page's own ``zmesh.status().timings``, in ms from
   navigation start: worker started, Pyodide booted, zmesh wheel and crypto loaded, node
   started, first link up, ready (a link, three relays known, one an exit: it can build
   circuits).  The baseline, loaded in the same rounds in rotating order, is
   bench-boot.html from the same dist (web/static/bench-boot.html): a module worker that
   only calls ``loadPyodide``, exactly as worker.js does (same loader, same lock file).
   The goal: ready within the bare boot plus 1 s (stretch goal: ready within 2 s in all).
   Both print how long after page open zmesh was imported against the bare boot's
   loadPyodide, and the ratio.
   The ratio and the difference are medians of per-round figures (ready against the bare
   boot of the same round); the difference of the two medians is printed too.
2. **Throughput through a browser middle hop.**  A native client (this process) builds
   guard (native) -> middle (a browser) -> exit (native) and downloads a file from a local
   HTTP server through it (SHA-256 checked).  Baseline: the raw WebRTC data channel
   between this process and the same page of the same browser, no zMesh at all: this
   process dials, the page answers with a plain ``RTCPeerConnection`` (the negotiated
   channel rtc.js uses), and the same number of bytes goes in 8,200-byte messages (a cell
   frame's size), native -> browser ("in") and browser -> native ("out"), each sender
   pausing above 4 MiB buffered.  A browser middle hop both receives and sends, so the
   ratio is the circuit's rate over the slower raw direction.  For reference, the same
   client also downloads through an all-native circuit (guard -> middle -> exit, all
   relays), which shows how much of the gap is the browser.  Each round runs every
   subject once, in rotating order; figures are medians over rounds.

The bare-boot page pair (web/static/bench-boot.html, bench-boot-worker.js) exists only for
this benchmark; ``build_wasm.py`` copies it into web/dist.
"""

import argparse
import asyncio
import contextlib
import functools
import hashlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _harness import note, print_table

from zmesh.errors import ZMeshError
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.node import Node, NodeConfig
from zmesh.runtime import webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.entropy import SystemRng
from zmesh.runtime.harness import (
    CHROMIUM_ARGS,
    FileServer,
    Harness,
    HarnessOptions,
    _http_get_over,  # the harness's own GET over a circuit stream, reused as is
)

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "web" / "dist"
MESSAGE = 8200  # an 8192-byte cell in its link frame: what a link's messages weigh
HIGH_WATER = 4 << 20
LOW_WATER = 1 << 20
DONE = b"done"
BUDGET_MS = 1000.0  # goal: ready <= bare Pyodide boot + 1 s
STRETCH_MS = 2000.0  # stretch goal: ready <= 2 s after opening the page

# The page side of the raw baseline: a plain RTCPeerConnection with the negotiated channel
# rtc.js uses, answering this process's offer.  "in": count what arrives, answer "done"
# once it is all there.  "out": on the first message, send `total` bytes as fast as the
# channel takes them (pausing above 4 MiB buffered, as the native sender does).
RAW_ANSWER_JS = """async ([offer, mode, total, size, high, low]) => {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const dc = pc.createDataChannel("zmesh", { negotiated: true, id: 0, ordered: true });
  dc.binaryType = "arraybuffer";
  dc.bufferedAmountLowThreshold = low;
  const done = new TextEncoder().encode("done");
  let received = 0;
  let started = false;
  dc.onmessage = (event) => {
    if (mode === "in") {
      received += event.data.byteLength;
      if (received === total) dc.send(done);
      return;
    }
    if (started) return;
    started = true;
    const message = new Uint8Array(size);
    let left = Math.floor(total / size);
    const pump = () => {
      while (left > 0) {
        if (dc.bufferedAmount > high) { dc.onbufferedamountlow = pump; return; }
        dc.send(message);
        left -= 1;
      }
      dc.onbufferedamountlow = null;
    };
    pump();
  };
  (window.zmeshBenchPcs ||= []).push(pc);
  await pc.setRemoteDescription({ type: "offer", sdp: offer });
  await pc.setLocalDescription(await pc.createAnswer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 3000);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }
  return pc.localDescription.sdp;
}"""
CLOSE_RAW_JS = """() => {
  for (const pc of window.zmeshBenchPcs || []) pc.close();
  window.zmeshBenchPcs = [];
}"""


def median(values: list[float]) -> float:
    return statistics.median(values)


def diff(later: list[float], earlier: list[float]) -> list[float]:
    return [a - b for a, b in zip(later, earlier, strict=True)]


def span(values: list[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


# -- 1. start-up -----------------------------------------------------------------------------


class ColdLoader:
    """Loads a page in a fresh Chromium process and context, as the harness configures them."""

    title = "cold (a fresh Chromium process and context per load)"
    tag = "cold"

    def __init__(self, h: Harness) -> None:
        self.h = h
        # the harness's own browser gives us its Playwright BrowserType to launch more
        self.browser_type = h._browser.browser_type

    async def load(self, path: str, measure: Callable[[Any], Awaitable[Any]]) -> Any:
        browser = await self.browser_type.launch(
            executable_path=self.h.opts.chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(permissions=["camera", "microphone"])
            page = await context.new_page()
            await page.goto(f"{self.h.web_url}/{path}")
            return await asyncio.wait_for(measure(page), self.h.opts.timeout)
        finally:
            await browser.close()

    async def close(self) -> None:
        pass


class WarmLoader:
    """Loads each page in a new tab of one Chromium process and context, after a first load
    of each that fills the HTTP cache (not counted): as a returning visitor opens the page.
    The tab is closed after each load (its worker ends, the identity lock goes with it)."""

    title = "warm HTTP cache (one Chromium and context; a new tab per load, after one unmeasured)"
    tag = "warm"

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.browser_type = h._browser.browser_type
        self.browser: Any = None
        self.context: Any = None

    async def load(self, path: str, measure: Callable[[Any], Awaitable[Any]]) -> Any:
        if self.browser is None:
            self.browser = await self.browser_type.launch(
                executable_path=self.h.opts.chromium, args=CHROMIUM_ARGS, headless=True
            )
            self.context = await self.browser.new_context(permissions=["camera", "microphone"])
        page = await self.context.new_page()
        try:
            await page.goto(f"{self.h.web_url}/{path}")
            return await asyncio.wait_for(measure(page), self.h.opts.timeout)
        finally:
            await page.close()

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()


async def bare_boot(page: Any) -> dict[str, float]:
    await page.wait_for_function("() => window.boot !== undefined")
    result: dict[str, float] = await page.evaluate("() => window.boot")
    return result


async def join_page(h: Harness, page: Any) -> dict[str, Any]:
    await h.wait_ready(page)
    status = await h.status(page)
    timings: dict[str, Any] = status["timings"]
    if timings.get("readyMs") is None or timings.get("firstLinkMs") is None:
        raise ZMeshError(f"the page is ready but its timings are incomplete: {timings}")
    return {**timings, "snapshot": status.get("snapshot")}


async def startup(h: Harness, rounds: int, loader: ColdLoader | WarmLoader) -> None:
    bare: list[dict[str, float]] = []
    joins: list[dict[str, Any]] = []
    try:
        if isinstance(loader, WarmLoader):
            note("warm: one unmeasured load of each page fills the cache")
            await loader.load("bench-boot.html", bare_boot)
            await loader.load("index.html", lambda page: join_page(h, page))
        for r in range(rounds):
            order = ["bare", "join"] if r % 2 == 0 else ["join", "bare"]
            for which in order:
                if which == "bare":
                    t = await loader.load("bench-boot.html", bare_boot)
                    bare.append(t)
                    note(
                        f"{loader.tag} load {r + 1}/{rounds}: bare Pyodide boot: up "
                        f"{t['pyodideLoadedMs']:.0f} ms after page open"
                    )
                else:
                    t = await loader.load("index.html", lambda page: join_page(h, page))
                    joins.append(t)
                    note(
                        f"{loader.tag} load {r + 1}/{rounds}: join page (snapshot "
                        f"{t['snapshot']}): Pyodide {t['pyodideBootMs']:.0f}, "
                        f"packages {t['packageLoadMs']:.0f}, first link {t['firstLinkMs']:.0f}, "
                        f"ready {t['readyMs']:.0f} ms after page open"
                    )
    finally:
        await loader.close()

    def col(rows: list[dict[str, Any]], f: Callable[[dict[str, Any]], float]) -> list[float]:
        return [f(t) for t in rows]

    base = col(bare, lambda t: t["pyodideLoadedMs"])
    worker = col(joins, lambda t: t["workerStartMs"])
    pyodide = col(joins, lambda t: t["pyodideBootMs"])
    packages = col(joins, lambda t: t["packageLoadMs"])
    node_up = col(joins, lambda t: t["nodeStartMs"])
    first = col(joins, lambda t: t["firstLinkMs"])
    ready = col(joins, lambda t: t["readyMs"])
    pyodide_up = [w + p for w, p in zip(worker, pyodide, strict=True)]
    packages_up = [u + p for u, p in zip(pyodide_up, packages, strict=True)]
    stages: list[tuple[str, list[float], list[float]]] = [
        ("bare Pyodide boot: page open -> loadPyodide done (baseline)", base, base),
        ("join page: page open -> worker running", worker, worker),
        ("  Pyodide boot (worker -> loadPyodide done)", pyodide, pyodide_up),
        ("  package load (zmesh wheel, crypto, import; 0 from a snapshot)", packages, packages_up),
        ("  node start (identity, driver)", diff(node_up, packages_up), node_up),
        ("  mesh join (node start -> first link)", diff(first, node_up), first),
        ("  first link -> ready", diff(ready, first), ready),
    ]
    rows = []
    for name, durations, at in stages:
        rows.append(
            [
                name,
                f"{median(durations):.0f}",
                span(durations),
                f"{median(at):.0f}",
            ]
        )
    used = sum(1 for t in joins if t["snapshot"] == "used")
    print(
        f"\nStart-up, {loader.title}, median of {rounds} load(s) each, ms; "
        f"the join page booted from the memory snapshot in {used} of {len(joins)}"
    )
    print_table(["stage", "took", "range", "done at (from page open)"], rows)
    ratios = [rd / b for rd, b in zip(ready, base, strict=True)]
    over = diff(ready, base)
    first_over = diff(first, base)
    goal = median(over) <= BUDGET_MS
    print(
        f"page open -> first link up: {median(first):.0f} ms; "
        f"-> able to build a circuit (ready): {median(ready):.0f} ms"
    )
    print(
        f"ratio ready / bare Pyodide boot: {median(ratios):.2f} "
        f"(median of per-round ratios; first link / bare boot "
        f"{median([f / b for f, b in zip(first, base, strict=True)]):.2f})"
    )
    print(
        f"ready - bare boot: {median(over) / 1000:.2f} s (per-round median; the medians differ "
        f"by {(median(ready) - median(base)) / 1000:.2f} s) against a budget of "
        f"{BUDGET_MS / 1000:.0f} s: {'met' if goal else 'NOT met'}; "
        f"first link - bare boot: {median(first_over) / 1000:.2f} s"
    )
    imported = [u / b for u, b in zip(packages_up, base, strict=True)]
    print(
        f"zmesh imported {median(packages_up):.0f} ms after page open, bare Pyodide up at "
        f"{median(base):.0f} ms: ratio {median(imported):.2f} (median of per-round ratios)"
    )
    label = "goal (issue 12)" if isinstance(loader, WarmLoader) else "stretch goal"
    print(
        f"{label}, ready within {STRETCH_MS / 1000:.0f} s of page open: "
        f"{median(ready) / 1000:.2f} s, {'met' if median(ready) <= STRETCH_MS else 'not met'}"
    )


# -- 2. throughput -----------------------------------------------------------------------------


async def raw_run(page: Any, mode: str, total: int) -> float:
    """``total`` bytes over a fresh data channel between this process and the page; MB/s."""
    count = total // MESSAGE
    total = count * MESSAGE
    pending, offer = await webrtc.dial(loopback=True)
    try:
        answer = await page.evaluate(
            RAW_ANSWER_JS, [offer, mode, total, MESSAGE, HIGH_WATER, LOW_WATER]
        )
    except BaseException:
        await pending.aclose()
        raise
    transport = await pending.complete(answer)
    try:
        finished = asyncio.Event()
        received = 0

        def on_message(data: bytes) -> None:
            nonlocal received
            if mode == "in":
                if data == DONE:
                    finished.set()
                return
            received += len(data)
            if received >= total:
                finished.set()

        transport.onmessage = on_message
        low = asyncio.Event()
        transport.bufferedAmountLowThreshold = LOW_WATER
        transport.onbufferedamountlow = low.set
        start = time.perf_counter()
        if mode == "in":
            message = bytes(MESSAGE)
            for _ in range(count):
                if transport.bufferedAmount > HIGH_WATER:
                    low.clear()
                    await low.wait()
                transport.send(message)
        else:
            transport.send(b"go")
        await asyncio.wait_for(finished.wait(), 120)
        return total / (time.perf_counter() - start) / 1e6
    finally:
        await transport.aclose()
        await page.evaluate(CLOSE_RAW_JS)


async def native_relays(
    client: AsyncNode, browser_id: str, timeout: float = 30.0
) -> list[Descriptor]:
    """The native relays the client knows (directory, peer sample, DHT node records of its
    peers: with flooding off the directory holds what bootstrap gave, D46), once two of
    them are not exits or ``timeout`` passed; it looks its peers' records up every 2 s."""
    dht = client.node.dht
    assert dht is not None
    deadline = time.monotonic() + timeout
    while True:
        known = dict(client.node.directory)
        if client.node.sample is not None:
            known.update(client.node.sample)
        for peer in client.node.peers():
            if (record := dht.node_record(peer)) is not None:
                known[peer] = record.descriptor
        relays = [
            d for d in known.values() if d.node_id.hex() != browser_id and d.flags & Flags.RELAY
        ]
        if len([d for d in relays if not d.flags & Flags.EXIT]) >= 2 or time.monotonic() > deadline:
            return relays
        for peer in client.node.peers():
            with contextlib.suppress(ZMeshError):
                client.call(functools.partial(dht.find_node_record, peer))
        await asyncio.sleep(2.0)


async def native_circuit(client: AsyncNode, browser_id: str) -> int:
    """guard -> middle -> exit, all native relays."""
    relays = await native_relays(client, browser_id)
    exits = [d for d in relays if d.flags & Flags.EXIT]
    others = [d for d in relays if not d.flags & Flags.EXIT]
    errors = []
    for guard, middle in ((a, b) for a in others for b in others if a is not b):
        if client.node.link_to(guard.node_id) is None:
            continue
        try:
            return await client.build_circuit([guard, middle, exits[0]], timeout=10)
        except (TimeoutError, ZMeshError) as exc:
            errors.append(f"{guard.node_id.hex()[:8]}>{middle.node_id.hex()[:8]}: {exc!r}")
    raise ZMeshError(
        f"no all-native circuit could be built ({len(relays)} relays known; "
        f"{'; '.join(errors) or 'no linked guard'})"
    )


async def download(client: AsyncNode, cid: int, files: FileServer, timeout: float) -> float:
    """GET the file over a new stream on circuit ``cid`` (SHA-256 checked); MB/s."""
    start = time.perf_counter()
    pipe = client.open_stream(client.session_for([cid]), files.url.split("/")[2])
    await pipe.wait_connected(timeout)
    body = await _http_get_over(pipe, files.url)
    took = time.perf_counter() - start
    if hashlib.sha256(body).hexdigest() != files.sha256:
        raise ZMeshError(f"SHA-256 mismatch: {len(body)} bytes, expected {len(files.payload)}")
    return len(body) / took / 1e6


async def throughput(h: Harness, rounds: int, total: int) -> None:
    note("throughput: opening the join page and waiting for it to be ready")
    page = await h.open_page(f"{h.web_url}/index.html")
    await h.wait_ready(page)
    browser_id = (await h.status(page))["nodeId"]
    rng = SystemRng()
    config = NodeConfig(dht=True, gossip=False)  # as every node of the mesh (D46)
    client = AsyncNode(
        Node(Identity.generate(rng), rng, wall_clock(), config), rtc=webrtc, loopback=True
    )
    try:
        for url in h.relay_urls:
            await client.bootstrap(url)
        # the browser node's record, by DHT lookup (the harness's browser-circuit does so)
        middles = await h._find_records(client, [bytes.fromhex(browser_id)])
        directory = client.node.directory
        exits = [d for d in directory.values() if d.flags & Flags.EXIT]
        guards: list[Descriptor] = [
            d
            for d in directory.values()
            if client.node.link_to(d.node_id) is not None
            and not d.flags & Flags.EXIT
            and d.node_id.hex() != browser_id
        ]
        details: list[str] = []  # the harness's browser-circuit scenario picks the same way
        browser_cid = await h._first_working_circuit(client, guards, middles, exits[0], details)
        note(f"throughput: {details[-1]}")
        native_cid = await native_circuit(client, browser_id)
        subjects: dict[str, Callable[[], Awaitable[float]]] = {
            "raw in": lambda: raw_run(page, "in", total),
            "raw out": lambda: raw_run(page, "out", total),
            "browser": lambda: download(client, browser_cid, h.files, h.opts.timeout),
            "native": lambda: download(client, native_cid, h.files, h.opts.timeout),
        }
        names = list(subjects)
        note("throughput: warm-up (one of each)")
        for name in names:
            await subjects[name]()
        rates: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for k in range(len(names)):
                name = names[(r + k) % len(names)]
                rates[name].append(await subjects[name]())
                note(f"throughput round {r + 1}/{rounds}: {name}: {rates[name][-1]:.2f} MB/s")
        status = await h.status(page)
    finally:
        await client.close()

    slower_raw = [min(a, b) for a, b in zip(rates["raw in"], rates["raw out"], strict=True)]
    ratios = [c / s for c, s in zip(rates["browser"], slower_raw, strict=True)]
    labels = {
        "raw in": f"raw data channel, native -> browser ({MESSAGE}-byte messages)",
        "raw out": f"raw data channel, browser -> native ({MESSAGE}-byte messages)",
        "browser": "circuit: guard (native) -> middle (browser) -> exit (native)",
        "native": "circuit, all native hops (reference)",
    }
    base = median(slower_raw)
    rows = [
        [
            labels[n],
            f"{median(rates[n]):.2f}",
            span(rates[n], fmt="{:.2f}"),
            f"{median(rates[n]) / base:.3f}",
        ]
        for n in names
    ]
    print(
        f"\nThroughput, {total / 1e6:g} MB per run, median of {rounds} round(s) "
        f"(subjects interleaved), MB/s"
    )
    print_table(["path", "MB/s", "range", "vs slower raw"], rows)
    print(
        f"ratio circuit through a browser middle / raw data channel (slower direction): "
        f"{median(ratios):.3f} (median of per-round ratios)"
    )
    print(
        f"circuit through the browser / all-native circuit: "
        f"{median(rates['browser']) / median(rates['native']):.2f} "
        f"(the browser relayed {status['bytesRelayed'] / 1e6:.0f} MB in cells)"
    )


async def run(args: argparse.Namespace) -> None:
    if not (DIST / "bench-boot.html").is_file():
        raise ZMeshError(f"{DIST}/bench-boot.html is missing: run build_wasm.py")
    h = Harness(HarnessOptions(browsers=0, relays=3, dist=DIST))
    h.files = FileServer(int(args.megabytes * 1e6))
    note("starting 3 native relays, zmesh web and Chromium")
    async with h:
        print(f"zMesh browser node on loopback: 3 native relays, page {h.web_url}/index.html")
        if not args.skip_startup:
            await startup(h, args.warm_loads, WarmLoader(h))
            await startup(h, args.loads, ColdLoader(h))
        if not args.skip_throughput:
            await throughput(h, args.rounds, len(h.files.payload))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=3, help="cold loads of each page (default 3)")
    parser.add_argument(
        "--warm-loads", type=int, default=5, help="warm-cache loads of each page (default 5)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="throughput rounds, one run of each path (default 5)"
    )
    parser.add_argument(
        "--megabytes", type=float, default=16.0, help="data per throughput run, in MB (default 16)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 cold load each, 1 round of 1 MB (smoke test)"
    )
    parser.add_argument("--skip-startup", action="store_true", help="only the throughput part")
    parser.add_argument("--skip-throughput", action="store_true", help="only the start-up part")
    args = parser.parse_args(argv)
    if args.quick:
        args.loads, args.warm_loads, args.rounds, args.megabytes = 1, 1, 1, 1.0
    if args.loads < 1 or args.warm_loads < 1 or args.rounds < 1 or args.megabytes <= 0:
        parser.error("loads, warm loads, rounds and megabytes must be positive")
    try:
        asyncio.run(run(args))
    except (OSError, ZMeshError, TimeoutError) as exc:
        print(f"bench/browser.py: error: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
