"""The embed card says "failed", with the reason, when its relay cannot join: every
bootstrap relay is down (issue 14, item 3).  (Joining and linked are shown by the
harness's ``embed`` scenario, tests/browser/test_harness.py.)"""

import asyncio
import re
import time
from pathlib import Path

import browserpage
import netmesh
import pytest

from zmesh.runtime.harness import CHROMIUM_ARGS, host_page_html
from zmesh.runtime.http import serve_fixed

TIMEOUT = 90.0


async def _card_text(web_url: str) -> str:
    from playwright.async_api import async_playwright

    host, host_url = await serve_fixed(host_page_html(web_url), "text/html")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
            )
            try:
                context = await browser.new_context(permissions=browserpage.PERMISSIONS)
                page = await context.new_page()
                await page.goto(host_url + "/")
                await page.get_by_role("button", name="Run relay").click(timeout=TIMEOUT * 1000)
                card = page.get_by_role("dialog", name="zMesh relay consent")
                deadline = time.monotonic() + TIMEOUT
                text = ""
                while "failed" not in text and time.monotonic() < deadline:
                    text = await card.inner_text()
                    await asyncio.sleep(0.2)
                return text
            finally:
                await browser.close()
    finally:
        host.close()


@pytest.mark.slow
def test_the_card_says_failed_with_the_reason(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    browserpage.chromium()
    dist = browserpage.ensure_dist()
    down = f"http://127.0.0.1:{netmesh.free_port()}"  # nothing listens there
    web = netmesh.start(
        ["web", "--port", "0", "--dist", str(dist), "--bootstrap", down],
        tmp_path / "web.log",
        "web",
    )
    try:
        line = netmesh._read_line(web.popen, r"serving .* on http://", 30)
        match = re.search(r"on (http://[^/\s]+)", line)
        assert match is not None, line
        text = asyncio.run(_card_text(match[1]))
    finally:
        netmesh.stop(web)
    first = text.splitlines()[0] if text else ""
    assert first.startswith("zMesh relay failed: no bootstrap relay reachable"), text
    assert down in first and "retrying" in first, text
