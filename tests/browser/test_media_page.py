"""The browser end of the media transport (D58) in a node: the join page in headless
Chromium, opened with ``?transport=media``, links to native relays run with
``--transport media`` inside the VP8 frames of a canvas track (RTCRtpScriptTransform,
the same ``MediaLink`` core in the Pyodide worker), and ``zmesh.fetch`` gets a file
through a 3-hop circuit over those links."""

import asyncio
import re
import time
from pathlib import Path

import browserpage
import netmesh
import pytest

from zmesh.runtime.harness import CHROMIUM_ARGS

FILE_SIZE = 1_000_000

FETCH_JS = """async (url) => {
    const started = performance.now();
    const response = await zmesh.fetch(url);
    const body = await response.arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
    return {
        status: response.status,
        size: body.byteLength,
        ms: performance.now() - started,
        sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
    };
}"""


async def _scenario(url: str) -> None:
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
            await page.goto(url + "?transport=media")
            status = await browserpage.wait_ready(page)
            print(f"\nmedia page: ready {time.monotonic() - opened:.2f} s after opening")
            assert status["peers"] >= 1, status
            result = await page.evaluate(FETCH_JS, server.url)
            assert result["status"] == 200 and result["size"] == FILE_SIZE, result
            assert result["sha256"] == server.sha256
            print(
                f"fetched {FILE_SIZE} B through 3 hops in {result['ms']:.0f} ms "
                f"({FILE_SIZE * 8 / result['ms'] / 1000:.2f} Mbit/s)"
            )
            status = await page.evaluate("() => zmesh.status()")
            # every link the page has is a media link (a relay answers what is offered)
            assert status["mediaLinks"] >= status["peers"] >= 1, status
            print(f"media links {status['mediaLinks']}, resent {status['mediaResent']} B")
            assert not errors, errors
            await browser.close()


@pytest.mark.slow
def test_media_page_fetches_through_media_links(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    pytest.importorskip("aiortc", reason="the media extra")
    browserpage.chromium()
    dist = browserpage.ensure_dist()
    procs: list[netmesh.Proc] = []
    try:
        first = netmesh.start_relay(tmp_path, "relay0", [], exit_=True, transport="media")
        procs.append(first)
        for i in (1, 2):
            procs.append(netmesh.start_relay(tmp_path, f"relay{i}", [first.url], transport="media"))
        relays = list(procs)
        args = ["web", "--port", "0", "--dist", str(dist)]
        for relay in relays:
            args += ["--bootstrap", relay.url]
        web = netmesh.start(args, tmp_path / "web.log", "web")
        procs.append(web)
        line = netmesh._read_line(web.popen, r"serving .* on http://", 30)
        url = re.search(r"on (http://\S+)", line).group(1)  # type: ignore[union-attr]
        asyncio.run(asyncio.wait_for(_scenario(url), 150))
    finally:
        for proc in reversed(procs):
            netmesh.stop(proc)
