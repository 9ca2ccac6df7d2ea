"""The browser node boots from the build's Pyodide memory snapshot (D52).

In Node (tests/pyodide/snapshot_restore.mjs restores web/dist's snapshot twice, as
web/src/worker.js does):

* the snapshot holds zmesh imported and no secret: no Identity, Node or RNG object alive;
* Python's ``random`` state is the same in both restores until the worker's reseed, and
  differs after it; ``os.urandom`` differs;
* a zmesh module the snapshot did not import still imports (from the wheel the page
  writes back at restore).

In headless Chromium:

* Two pages restored from the one snapshot (separate contexts: separate IndexedDB) come up
  as two nodes with their own identities: keys are drawn after the restore.
* A snapshot that does not match falls back to a normal boot with the reason in
  ``status().snapshot``, never a broken page: bytes that fail the manifest's sha256
  (subresource integrity), a manifest made from another wheel than the lock names, and no
  manifest at all.

No relay runs: config.json names one that is down, so each page starts its node (which
publishes its status and id) and keeps retrying the bootstrap.  The pages are served by
an in-process :class:`~zmesh.runtime.webserver.WebServer`.
"""

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import browserpage
import netmesh
import pytest

from zmesh.runtime.harness import CHROMIUM_ARGS
from zmesh.runtime.webserver import WebServer

TIMEOUT = 120.0
MANIFEST = "zmesh-snapshot.json"
RESTORE = Path(__file__).resolve().parents[1] / "pyodide" / "snapshot_restore.mjs"


@pytest.mark.slow
def test_the_snapshot_holds_no_secret_and_each_restore_reseeds() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    browserpage.ensure_dist()
    done = subprocess.run(
        [node, str(RESTORE)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = json.loads(done.stdout.strip().splitlines()[-1])["restores"]
    for restore in (first, second):
        assert restore["zmeshImported"]
        assert (restore["identities"], restore["nodes"], restore["rngs"]) == (0, 0, 0), restore
        assert restore["lazyImport"] == "imported"
    # the snapshot's own state is shared; what the worker reseeds is not
    assert first["randomBefore"] == second["randomBefore"]
    assert first["randomAfter"] != second["randomAfter"]
    assert first["urandom"] != second["urandom"]


async def _node_status(browser: Any, url: str) -> dict[str, Any]:
    """Open ``url`` in a fresh context; the status once the node has an id (or a failure)."""
    context = await browser.new_context(permissions=browserpage.PERMISSIONS)
    try:
        page = await context.new_page()
        await page.goto(url)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            status: dict[str, Any] = await page.evaluate("() => zmesh.status()")
            if status.get("nodeId") or status.get("error"):
                return status
            await asyncio.sleep(0.25)
        pytest.fail(f"no node id after {TIMEOUT} s: {json.dumps(status)[:500]}")
    finally:
        await context.close()


async def _statuses(dist: Path, loads: int) -> list[dict[str, Any]]:
    from playwright.async_api import async_playwright

    down = f"http://127.0.0.1:{netmesh.free_port()}"  # nothing listens there
    server = WebServer(dist, [down])
    port = await server.start("127.0.0.1", 0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
            )
            try:
                url = f"http://127.0.0.1:{port}/index.html"
                return [await _node_status(browser, url) for _ in range(loads)]
            finally:
                await browser.close()
    finally:
        await server.close()


@pytest.mark.slow
def test_two_pages_restored_from_one_snapshot_are_two_nodes() -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    dist = browserpage.ensure_dist()
    first, second = asyncio.run(_statuses(dist, 2))
    for status in (first, second):
        assert status.get("error") is None, status["error"]
        assert status["snapshot"] == "used", status["snapshot"]
        assert status["timings"]["packageLoadMs"] < 1000  # nothing left to import
    assert first["nodeId"] != second["nodeId"]


def _copy_dist(tmp_path: Path) -> Path:
    copy = tmp_path / "dist"
    shutil.copytree(browserpage.ensure_dist(), copy)
    return copy


@pytest.mark.slow
def test_a_snapshot_that_does_not_match_falls_back_to_a_normal_boot(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    dist = _copy_dist(tmp_path)
    manifest_path = dist / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    snapshot = dist / manifest["file"]

    # 1. the bytes are not the ones the manifest hashed: the fetch fails its integrity check
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    (tampered,) = asyncio.run(_statuses(dist, 1))
    assert tampered.get("error") is None and tampered["nodeId"], tampered
    assert tampered["snapshot"].startswith("failed: "), tampered["snapshot"]

    # 2. made from another wheel than the lock's: not even downloaded
    manifest["wheels"]["zmesh"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    (other_wheel,) = asyncio.run(_statuses(dist, 1))
    assert other_wheel.get("error") is None and other_wheel["nodeId"], other_wheel
    assert other_wheel["snapshot"] == "not used: made from another zmesh wheel than the lock's"

    # 3. no manifest (a dist built before D52, or a partial copy)
    manifest_path.unlink()
    (missing,) = asyncio.run(_statuses(dist, 1))
    assert missing.get("error") is None and missing["nodeId"], missing
    assert missing["snapshot"] == f"not used: {MANIFEST}: HTTP 404"
