"""Issue 11's Done-when: two headless Chromiums with default privacy settings (mDNS hiding
on, no camera or microphone permission, no loopback flag) open the page of ``zmesh up``
and end up linked to each other directly (D50), each in a Chromium of its own, as two
people's browsers would be."""

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from browserpage import ensure_dist
from netmesh import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chunks_fetch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"),
]

LINK_TIMEOUT = 90.0


async def _pair(url: str) -> tuple[list[str], float]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        pages: list[Any] = []
        for _ in range(2):  # no permissions, no flags that weaken WebRTC privacy
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless=new"]
            )
            pages.append(await (await browser.new_context()).new_page())
        for page in pages:
            await page.goto(url)
        for page in pages:
            await page.evaluate("() => window.zmesh.ready.then(() => true)")
        statuses = [await page.evaluate("() => window.zmesh.status()") for page in pages]
        ids = [s["nodeId"][:8] for s in statuses]
        start = time.monotonic()
        while time.monotonic() - start < LINK_TIMEOUT:
            statuses = [await page.evaluate("() => window.zmesh.status()") for page in pages]
            if ids[1] in statuses[0]["peerIds"] and ids[0] in statuses[1]["peerIds"]:
                return ids, time.monotonic() - start
            await asyncio.sleep(0.5)
        pytest.fail(f"the tabs did not link: {statuses[0]['peerIds']} {statuses[1]['peerIds']}")


def test_two_default_privacy_chromiums_on_the_up_page_link_directly(tmp_path: Path) -> None:
    ensure_dist()
    web = f"127.0.0.1:{free_port()}"
    with chunks_fetch._mesh(tmp_path, relays=3, web=web):
        ids, took = asyncio.run(_pair(f"http://{web}/"))
    print(f"browsers {ids[0]} and {ids[1]} linked directly {took:.1f} s after both were ready")
