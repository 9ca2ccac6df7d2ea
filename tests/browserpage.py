"""Test helpers for the browser node: Chromium, a current web/dist, and odd HTTP servers."""

import asyncio
import fcntl
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from zmesh.runtime.harness import CHROMIUM

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
DIST = WEB / "dist"
#: headless Chromium on loopback: WebRTC needs --allow-loopback-in-peer-connection, and the
#: page's origin needs camera/microphone permission (else it offers only mDNS candidates)
PERMISSIONS = ["camera", "microphone"]


def chromium() -> str:
    """Debian's Chromium; installed with apt-get when missing (as root); skip if impossible."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        (ROOT / "build").mkdir(exist_ok=True)
        with (ROOT / "build" / ".chromium-install.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.access(CHROMIUM, os.X_OK):
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
                subprocess.run(
                    ["apt-get", "install", "-y", "-qq", "chromium"],
                    capture_output=True,
                    check=False,
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                )
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    pytest.skip(f"Chromium is not at {CHROMIUM} and `apt-get install chromium` did not work")


def _newest_source() -> float:
    sources = [*ROOT.joinpath("zmesh").rglob("*.py"), *WEB.joinpath("src").glob("*.js")]
    sources += [p for p in WEB.joinpath("static").rglob("*") if p.is_file()]
    sources += [ROOT / "pyproject.toml", WEB / "package-lock.json", ROOT / "build_wasm.py"]
    sources += [WEB / "snapshot.mjs"]
    return max(p.stat().st_mtime for p in sources if p.exists())


def _dist_is_current() -> bool:
    marker = DIST / "zmesh-lock.json"
    needed = ["index.html", "page.js", "worker.js", "zmesh-crypto.js", "pyodide/pyodide.mjs"]
    needed += ["zmesh-snapshot.json"]
    if not marker.is_file() or not all((DIST / n).is_file() for n in needed):
        return False
    return marker.stat().st_mtime >= _newest_source()


def ensure_dist() -> Path:
    """web/dist, rebuilt with build_wasm.py when older than the sources (once across
    xdist workers: the same lock as tests/browser/test_pyodide_core.py)."""
    if _dist_is_current():
        return DIST
    lock_path = ROOT / "build" / ".build_wasm.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _dist_is_current():
            done = subprocess.run(
                [sys.executable, str(ROOT / "build_wasm.py"), "--test-wheels"],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"build_wasm.py failed:\n{done.stdout}\n{done.stderr}")
    return DIST


@contextmanager
def garbage_server() -> Iterator[str]:
    """An HTTP server answering every GET with 200 and random bytes (CORS allowed, so the
    page sees the garbage itself, not a CORS failure).  Yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = os.urandom(3000)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815 (http.server names)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


#: how long a page may take to become ready (join the mesh)
READY_TIMEOUT = 30.0


async def wait_ready(page: Any, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Wait for the page's ``zmesh.ready``; its status.  Fails the test with the status if
    the page is not ready within ``timeout`` seconds."""
    try:
        await asyncio.wait_for(page.evaluate("() => zmesh.ready"), timeout)
    except TimeoutError:
        status = await page.evaluate("() => zmesh.status()")
        pytest.fail(f"zmesh.ready did not resolve in {timeout} s: {json.dumps(status)}")
    status_: dict[str, Any] = await page.evaluate("() => zmesh.status()")
    return status_
