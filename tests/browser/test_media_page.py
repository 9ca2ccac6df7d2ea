"""The browser end of the media transport (D58) in a node: the join page in headless
Chromium, opened with ``?transport=media``, links to native relays run with
``--transport media`` inside the VP8 frames of a canvas track (RTCRtpScriptTransform,
the same ``MediaLink`` core in the Pyodide worker), and ``zmesh.fetch`` gets a file
through a 3-hop circuit over those links; then the same page without the option links to
the same relays over data channels (the figures of both are printed)."""

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import browserpage
import netmesh
import pytest

from zmesh.runtime.harness import CHROMIUM_ARGS

FILE_SIZE = 1_000_000
MEDIA_READY_TIMEOUT = 2 * browserpage.READY_TIMEOUT

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


async def _page(browser: Any, url: str, file_url: str, sha256: str, media: bool) -> None:
    context = await browser.new_context(permissions=browserpage.PERMISSIONS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    opened = time.monotonic()
    await page.goto(url + ("?transport=media" if media else ""))
    # a media link carries about 2 Mbit/s and repairs its losses by going back: the DHT
    # fetches that tell the page of the exit took over 30 s once on a loaded CI machine
    status = await browserpage.wait_ready(
        page, MEDIA_READY_TIMEOUT if media else browserpage.READY_TIMEOUT
    )
    name = "media" if media else "data channel"
    print(f"\n{name} page: ready {time.monotonic() - opened:.2f} s after opening")
    assert status["peers"] >= 1, status
    for _ in range(2):
        result = await page.evaluate(FETCH_JS, file_url)
        assert result["status"] == 200 and result["size"] == FILE_SIZE, result
        assert result["sha256"] == sha256
        print(
            f"{name}: fetched {FILE_SIZE} B through 3 hops in {result['ms']:.0f} ms "
            f"({FILE_SIZE * 8 / result['ms'] / 1000:.2f} Mbit/s)"
        )
    status = await page.evaluate("() => zmesh.status()")
    if media:  # every link the page has is a media link
        assert status["mediaLinks"] >= status["peers"] >= 1, status
        print(f"media links {status['mediaLinks']}, resent {status['mediaResent']} B")
    else:  # a media relay answers a data channel's offer with one
        assert status["mediaLinks"] == 0 and status["peers"] >= 1, status
    assert not errors, errors
    await context.close()


async def _scenario(url: str) -> None:
    from playwright.async_api import async_playwright

    with netmesh.file_server(FILE_SIZE) as server:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
            )
            for media in (True, False):
                await _page(browser, url, server.url, server.sha256, media)
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
        asyncio.run(asyncio.wait_for(_scenario(url), 240))
    finally:
        for proc in reversed(procs):
            netmesh.stop(proc)
