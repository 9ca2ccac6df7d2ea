"""The join page in headless Chromium: a full zMesh node (client and relay) in a browser.

Three native relays (one an exit allowed to reach loopback) run as processes; ``zmesh
web`` serves web/dist with a config.json whose bootstrap list starts with a relay that is
down and a server that answers garbage.  One scenario (each page load boots Pyodide, so
the checks share it):

* the page joins: ``zmesh.ready`` resolves within 30 s, ``status()`` shows a peer, and the
  two bad bootstrap entries carry a clear error while a later relay is linked;
* ``zmesh.fetch`` gets a file from a local HTTP server through a 3-hop circuit to the
  native exit, and the SHA-256 computed in the page (crypto.subtle) matches;
* a native test peer reaches the browser node through mesh signaling and sends garbage on
  the data channel, before the link handshake and after it: the browser drops that link
  and keeps working (another fetch succeeds);
* the main thread never ran a task over 200 ms (PerformanceObserver "longtask");
* a reload keeps the node id (IndexedDB); reloaded with ``?shape=constant`` the page
  shapes its links (a fetch works, and the idle page sends constant cover).
"""

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import browserpage
import netmesh
import pytest

from zmesh.identity import Descriptor, Flags, Identity
from zmesh.node import Node, NodeConfig
from zmesh.runtime import webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.entropy import SystemRng
from zmesh.runtime.harness import CHROMIUM_ARGS

FILE_SIZE = 1_000_000

FETCH_JS = """async (url) => {
    const response = await zmesh.fetch(url);
    const body = await response.arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
    return {
        status: response.status,
        size: body.byteLength,
        sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
    };
}"""


async def _dial_without_handshake(driver: AsyncNode, target: Descriptor) -> Any:
    """Open a WebRTC data channel to ``target`` through mesh signaling, and hand it back
    raw: no link handshake, so the test can write anything on it."""
    return await driver._connect_via_mesh(target)


async def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _send_garbage(page: Any, relay_url: str, browser_id: bytes) -> None:
    """A native peer sends garbage to the browser node: on a fresh data channel (before
    any handshake), then on a handshaken link (an oversized frame)."""
    rng = SystemRng()
    config = NodeConfig(flags=Flags.NONE, dht=True, gossip=False)  # as the mesh runs (D46)
    node = Node(Identity.generate(rng), rng, wall_clock(), config)
    driver = AsyncNode(node, rtc=webrtc, loopback=True)  # max_links=0: dials only when told
    dht = node.dht
    assert dht is not None
    try:
        await driver.bootstrap(relay_url)
        driver.call(lambda now: dht.find_node_record(browser_id, now))  # no gossip: look it up
        await _wait_for(lambda: dht.node_record(browser_id), 15, "the browser's node record")
        record = dht.node_record(browser_id)
        assert record is not None
        target = record.descriptor
        before = (await page.evaluate("() => zmesh.status()"))["linksClosed"]

        raw = await _dial_without_handshake(driver, target)
        closed = asyncio.Event()
        raw.onclose = closed.set
        raw.onmessage = lambda data: None
        raw.send(os.urandom(3000))
        await asyncio.wait_for(closed.wait(), 10)  # the browser dropped the channel

        await driver._dial(
            target
        )  # a real link this time (through the referrer), handshake and all
        link_id = await driver.wait_link(browser_id, 10)
        driver._transports[link_id].send(bytes([9, 0xFF, 0xFF, 0xFF]))  # PADDING, 16 MiB
        await _wait_for(lambda: node.link_to(browser_id) is None, 10, "the link to close")

        deadline = time.monotonic() + 5  # the page's status is republished twice a second
        while True:
            status = await page.evaluate("() => zmesh.status()")
            if status["linksClosed"] >= before + 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert status["linksClosed"] >= before + 2, status
        assert status["ready"] and status["peers"] >= 1, status
    finally:
        await driver.close()


async def _scenario(url: str, bad_urls: list[str], relays: list[netmesh.Proc]) -> None:
    from playwright.async_api import async_playwright

    with netmesh.file_server(FILE_SIZE) as server:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
            )
            context = await browser.new_context(permissions=browserpage.PERMISSIONS)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            opened = time.monotonic()
            await page.goto(url)
            status = await browserpage.wait_ready(page)
            took = time.monotonic() - opened
            timings = status["timings"]
            print(f"\njoin page: ready {took:.2f} s after opening; timings {timings}")
            assert status["peers"] >= 1, status
            assert status["relaysKnown"] >= 3 and status["exitsKnown"] >= 1, status

            entries = {e["url"]: e for e in status["bootstrap"]}
            down, garbage = (entries[u] for u in bad_urls)
            assert down["state"] == "failed" and "unreachable" in down["error"], down
            assert garbage["state"] == "failed" and "garbage" in garbage["error"], garbage
            assert any(entries[r.url]["state"] == "linked" for r in relays), status["bootstrap"]

            result = await page.evaluate(FETCH_JS, server.url)
            assert result == {"status": 200, "size": FILE_SIZE, "sha256": server.sha256}

            browser_id = bytes.fromhex(status["nodeId"])
            await _send_garbage(page, relays[1].url, browser_id)
            result = await page.evaluate(FETCH_JS, server.url)  # still works afterwards
            assert result["sha256"] == server.sha256, result

            status = await page.evaluate("() => zmesh.status()")
            assert status["maxLongTaskMs"] < 200, f"a main-thread task took {status}"

            await page.goto(url + "?shape=constant")  # reloaded, shaping its links (D53)
            again = await browserpage.wait_ready(page)
            assert again["nodeId"] == status["nodeId"], (again["identity"], status["identity"])
            assert "IndexedDB" in again["identity"], again["identity"]
            assert again["shape"] == "constant", again
            result = await page.evaluate(FETCH_JS, server.url)
            assert result["sha256"] == server.sha256, result
            before = await page.evaluate("() => zmesh.status()")
            await asyncio.sleep(2.0)  # idle: constant cover, 8 KiB every 20 ms on each link
            after = await page.evaluate("() => zmesh.status()")
            cover = after["bytesOut"] - before["bytesOut"]
            assert cover > 200_000 * min(before["peers"], after["peers"]), (before, after)
            assert again["maxLongTaskMs"] < 200, again
            assert not errors, errors
            await browser.close()


@pytest.mark.slow
def test_join_page(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    browserpage.chromium()
    dist = browserpage.ensure_dist()
    procs: list[netmesh.Proc] = []
    try:
        first = netmesh.start_relay(tmp_path, "relay0", [], exit_=True)
        procs.append(first)
        for i in (1, 2):
            procs.append(netmesh.start_relay(tmp_path, f"relay{i}", [first.url]))
        relays = list(procs)
        down = f"http://127.0.0.1:{netmesh.free_port()}"
        with browserpage.garbage_server() as garbage:
            args = ["web", "--port", "0", "--dist", str(dist)]
            for bootstrap in [down, garbage, *(r.url for r in relays)]:
                args += ["--bootstrap", bootstrap]
            web = netmesh.start(args, tmp_path / "web.log", "web")
            procs.append(web)
            line = netmesh._read_line(web.popen, r"serving .* on http://", 30)
            url = re.search(r"on (http://\S+)", line).group(1)  # type: ignore[union-attr]
            asyncio.run(asyncio.wait_for(_scenario(url, [down, garbage], relays), 150))
    finally:
        for proc in reversed(procs):
            netmesh.stop(proc)
