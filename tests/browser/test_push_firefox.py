"""A real Firefox (Debian's firefox-esr, headless, driven over WebDriver BiDi by
puppeteer-core) subscribes through `zmesh push-service` and receives a native push.

Firefox's ``dom.push.serverURL`` points at the service's WebSocket; a page on
http://localhost registers a service worker and subscribes with a node's VAPID key; the
node sends with :func:`zmesh.runtime.push.send_push` (RFC 8291, padded); the service
worker hands the decrypted payload to the page.  Also: garbage sent to the service
meanwhile does not stop the delivery."""

import asyncio
import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pushgarbage import malformed_requests, send_raw

from zmesh.runtime.push import NodeVapidKey, PushSubscription, send_push, unpad_payload
from zmesh.runtime.push_server import PushServer
from zmesh.runtime.push_service import PushLimits, PushService, PushStore

ROOT = Path(__file__).resolve().parent.parent.parent
WEB = ROOT / "web"
PAGE = Path(__file__).resolve().parent / "push_page"
DRIVER = Path(__file__).resolve().parent / "push_firefox.mjs"
FIREFOX = "/usr/bin/firefox-esr"

pytestmark = pytest.mark.slow


def firefox() -> str:
    """Debian's Firefox ESR; installed with apt-get when missing (as root); skip otherwise."""
    if not os.access(FIREFOX, os.X_OK) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "firefox-esr"],
                       capture_output=True, check=False, env=env)  # fmt: skip
    if not os.access(FIREFOX, os.X_OK):
        pytest.skip(f"Firefox ESR is not at {FIREFOX} and apt-get could not install it")
    if not (WEB / "node_modules" / "puppeteer-core").is_dir() or not shutil.which("node"):
        pytest.skip("needs node and puppeteer-core (`npm ci` in web/)")
    return FIREFOX


@contextmanager
def page_server() -> Iterator[int]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAGE))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_firefox_subscribes_and_its_service_worker_gets_a_native_push() -> None:
    browser = firefox()

    async def main(page_port: int) -> None:
        store = PushStore(None)
        # every request comes from 127.0.0.1 here: no per-address budget in the way
        service = PushService(store, "http://placeholder", PushLimits(rate=1e6, burst=1e6))
        server = PushServer(service)
        port = await server.start("127.0.0.1", 0)
        service.origin = f"http://127.0.0.1:{port}"
        key = NodeVapidKey.generate()
        page = f"http://localhost:{page_port}/index.html?key={key.application_server_key}"
        driver = await asyncio.create_subprocess_exec(
            "node", str(DRIVER), str(WEB), browser, f"ws://127.0.0.1:{port}/", page,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert driver.stdin is not None and driver.stdout is not None
        try:

            async def step() -> dict[str, object]:
                assert driver.stdout is not None
                line = await asyncio.wait_for(driver.stdout.readline(), 120)
                reply: dict[str, object] = json.loads(line or b'{"error": "driver ended"}')
                assert "error" not in reply, reply["error"]
                return reply

            record = (await step())["subscription"]
            assert isinstance(record, dict)
            subscription = PushSubscription.from_json(record)
            assert subscription.endpoint.startswith(service.origin + "/wpush/")
            garbage = malformed_requests(1000)
            for i, payload in enumerate([b"wake up, browser node", os.urandom(3000)]):
                # 500 malformed requests to the service in between: it answers and goes on
                for case in garbage[i * 500 : (i + 1) * 500]:
                    await send_raw(port, case)
                await send_push(subscription, payload, key, ttl=60)
                driver.stdin.write(b"expect\n")
                received = base64.b64decode(str((await step())["received"]))
                assert unpad_payload(received) == payload
            driver.stdin.write(b"done\n")
            driver.stdin.close()
            await asyncio.wait_for(driver.wait(), 60)
            assert server.errors == 0
            assert service.stats["delivered"] >= 2  # Firefox acknowledged both
        finally:
            if driver.returncode is None:
                driver.kill()
                await driver.wait()
            await server.close()
            store.close()

    with page_server() as page_port:
        asyncio.run(main(page_port))
