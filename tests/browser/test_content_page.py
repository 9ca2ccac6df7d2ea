"""Content in the browser (issue 10, item 7) in headless Chromium: zmesh.share, zmesh.get,
the tab seeding what it holds, and IndexedDB behind it.

Three native relays (processes), ``zmesh share`` of a 1,500,000-byte file, ``zmesh web``.
Two tabs in two browser contexts (each its own IndexedDB and node id):

* tab A gets the file shared natively with ``zmesh.get`` (progress events, sources) and
  its SHA-256, computed in the page, is the file's;
* the native seeder stops; tab B gets the file, and its only source is tab A (a circuit
  whose final hop is a browser node);
* tab B shares a file with ``zmesh.share``, tab A gets it from B (tab to tab, both ways);
* hostile input from the page: a bad id and an id nobody has get a clear rejection;
* tab A reloads: its content store comes back from IndexedDB (the shared id is served
  without a fetch);
* the page's "Share a file" / "Get" boxes work (file input, id with a copy button,
  progress, download link).
"""

import asyncio
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import browserpage
import netmesh
import pytest

from zmesh.runtime.harness import CHROMIUM_ARGS

pytestmark = pytest.mark.slow

FILE_SIZE = 1_500_000
GET_TIMEOUT = 120  # seconds, passed to zmesh.get

GET_JS = """async ([id, timeout]) => {
    const events = [];
    const blob = await zmesh.get(id, {timeout, onprogress: (p) => events.push(p)});
    const body = await blob.arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
    return {
        size: blob.size,
        isBlob: blob instanceof Blob,
        sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
        events,
    };
}"""

REJECTION_JS = """async ([id, timeout]) => {
    try { await zmesh.get(id, {timeout}); return null; }
    catch (err) { return String(err && err.message); }
}"""

SHARE_JS = """async (size) => {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const id = await zmesh.share(new Blob([bytes]));
    return {id, sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join("")};
}"""


async def _content(page: Any) -> dict[str, Any]:
    status = await page.evaluate("() => zmesh.status()")
    content: dict[str, Any] = status["content"]
    return content


async def _content_when(page: Any, check: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The tab's content status once ``check`` holds (it is republished every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while not check(content := await _content(page)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return content


async def _published(page: Any, at_least: int, timeout: float = 30.0) -> None:
    """Wait until the tab has published ``at_least`` provider records."""
    deadline = time.monotonic() + timeout
    while (await _content(page)).get("published", 0) < at_least:
        if time.monotonic() > deadline:
            pytest.fail(f"the tab published no provider record: {await _content(page)}")
        await asyncio.sleep(0.25)


async def _open_tab(browser: Any, url: str, errors: list[str]) -> tuple[Any, Any, dict[str, Any]]:
    context = await browser.new_context(permissions=browserpage.PERMISSIONS)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    return context, page, await _ready_with_store(page)


async def _ready_with_store(page: Any) -> dict[str, Any]:
    """The status once the tab is ready and its content store has opened (just after)."""
    await browserpage.wait_ready(page)
    await _content_when(page, lambda c: not c["store"].startswith("opening"), timeout=10.0)
    status: dict[str, Any] = await page.evaluate("() => zmesh.status()")
    return status


async def _scenario(url: str, cid: str, sha256: str, sharer: netmesh.Proc) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
        )
        errors: list[str] = []
        _, page_a, status_a = await _open_tab(browser, url, errors)
        assert status_a["content"]["store"].startswith("IndexedDB"), status_a["content"]

        # (a) tab A gets the natively shared file
        started = time.monotonic()
        got = await page_a.evaluate(GET_JS, [cid, GET_TIMEOUT])
        print(f"\ntab A got {got['size']} bytes in {time.monotonic() - started:.1f} s")
        assert got["isBlob"] and got["size"] == FILE_SIZE and got["sha256"] == sha256
        last = got["events"][-1]
        assert last["done"] and last["bytes"] == last["total"] == FILE_SIZE, last
        assert len(last["sources"]) >= 1, last  # the native seeder's node id
        content_a = await _content_when(page_a, lambda c: c["cachedBytes"] >= FILE_SIZE)
        assert content_a["contents"] == 1 and content_a["cachedBytes"] >= FILE_SIZE, content_a
        assert content_a["writeFailures"] == 0 and content_a["writes"] >= 1, content_a

        # (b) the native seeder stops; tab B gets the file from tab A
        await _published(page_a, 1)
        netmesh.stop(sharer)
        _, page_b, status_b = await _open_tab(browser, url, errors)
        assert status_b["nodeId"] != status_a["nodeId"]
        started = time.monotonic()
        got = await page_b.evaluate(GET_JS, [cid, GET_TIMEOUT])
        print(f"tab B got {got['size']} bytes from tab A in {time.monotonic() - started:.1f} s")
        assert got["size"] == FILE_SIZE and got["sha256"] == sha256
        assert list(got["events"][-1]["sources"]) == [status_a["nodeId"]], got["events"][-1]
        served = await _content_when(page_a, lambda c: c["bytesServed"] >= FILE_SIZE)
        assert served["streamsServed"] >= 1 and served["bytesServed"] >= FILE_SIZE, served

        # tab B shares a file of its own; tab A gets it from tab B
        shared = await page_b.evaluate(SHARE_JS, 300_000)
        assert re.fullmatch(r"zm1[a-z2-7]{52}", shared["id"]), shared
        await _published(page_b, 2)
        got = await page_a.evaluate(GET_JS, [shared["id"], GET_TIMEOUT])
        assert got["sha256"] == shared["sha256"] and got["size"] == 300_000
        assert list(got["events"][-1]["sources"]) == [status_b["nodeId"]], got["events"][-1]

        # (c) hostile input: clear rejections
        bad = await page_b.evaluate(REJECTION_JS, ["zm1notanid", 5])
        assert bad is not None and "not a content id" in bad, bad
        nobody = "zm1" + "a" * 52
        lost = await page_b.evaluate(REJECTION_JS, [nobody, 4])
        assert lost is not None and "timed out after 4 s (no provider found)" in lost, lost
        wrong = await page_b.evaluate("() => zmesh.get(42).then(() => null, (e) => e.message)")
        assert wrong is not None and "content id" in wrong, wrong

        # tab A reloads: the store comes back from IndexedDB, the shared id is served at once
        await page_a.reload()
        again = await _ready_with_store(page_a)
        assert again["nodeId"] == status_a["nodeId"]
        assert again["content"]["contents"] == 2, again["content"]
        started = time.monotonic()
        got = await page_a.evaluate(GET_JS, [cid, 10])
        assert got["sha256"] == sha256 and time.monotonic() - started < 5

        # the page's boxes: share with the file input, copy button, get with the link
        await page_a.set_input_files(
            "#share-file",
            files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"hello mesh " * 5000}],
        )
        await page_a.wait_for_selector("#share-copy:not([hidden])", timeout=30_000)
        page_id = await page_a.text_content("#share-id")
        assert page_id is not None and page_id.startswith("zm1")
        await page_b.fill("#get-id", page_id)
        await page_b.click("#get-form button")
        await page_b.wait_for_selector("#get-link:not([hidden])", timeout=GET_TIMEOUT * 1000)
        text = await page_b.text_content("#get-status")
        expect = hashlib.sha256(b"hello mesh " * 5000).hexdigest()
        assert text is not None and expect in text, text
        assert await page_b.get_attribute("#get-link", "download") == page_id
        assert not errors, errors
        await browser.close()


def test_tabs_get_share_and_seed_content(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    browserpage.chromium()
    dist = browserpage.ensure_dist()
    payload = os.urandom(FILE_SIZE)
    source = tmp_path / "file"
    source.write_bytes(payload)
    procs: list[netmesh.Proc] = []
    try:
        first = netmesh.start_relay(tmp_path, "relay0", [], exit_=True)
        procs.append(first)
        for i in (1, 2, 3):
            procs.append(netmesh.start_relay(tmp_path, f"relay{i}", [first.url]))
        boot = [a for r in procs for a in ("--bootstrap", r.url)]
        sharer = netmesh.start(
            ["share", str(source), *boot[:2], "--data", str(tmp_path / "sharer")],
            tmp_path / "sharer.log",
            "sharer",
        )
        procs.append(sharer)
        cid = netmesh._read_line(sharer.popen, r"^zm1", 30).strip()
        web = netmesh.start(
            ["web", "--port", "0", "--dist", str(dist), *boot], tmp_path / "web.log", "web"
        )
        procs.append(web)
        line = netmesh._read_line(web.popen, r"serving .* on http://", 30)
        url = re.search(r"on (http://\S+)", line).group(1)  # type: ignore[union-attr]
        sha256 = hashlib.sha256(payload).hexdigest()
        asyncio.run(asyncio.wait_for(_scenario(url, cid, sha256, sharer), 400))
    finally:
        for proc in reversed(procs):
            netmesh.stop(proc)
