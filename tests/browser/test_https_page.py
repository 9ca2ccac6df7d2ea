"""https through circuits from the page (D51), in headless Chromium.

Three native relays (one an exit allowed to reach loopback) run as processes, none of them
told about the test CA; ``zmesh web --trust-ca ca.pem`` serves the page.  The page's
``zmesh.fetch`` then:

* brings 5 MB intact from an HTTPS server whose certificate (an IP SAN for 127.0.0.1) the
  test CA issued: TLS runs in the page, the exit only pipes ciphertext;
* is refused, with a clear error, by a server whose certificate another CA issued, one
  whose certificate names another host, and one that answers garbage instead of TLS;
* prints the throughput of https against plain http through the same mesh.
"""

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import browserpage
import netmesh
import pytest
import tlsca

from zmesh.runtime.harness import CHROMIUM_ARGS

SIZE = 5 << 20

FETCH_JS = """async (url) => {
    const started = performance.now();
    try {
        const response = await zmesh.fetch(url);
        const body = await response.arrayBuffer();
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
        return {
            ok: true,
            status: response.status,
            size: body.byteLength,
            ms: performance.now() - started,
            sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
        };
    } catch (err) {
        return { ok: false, error: String(err && err.message || err) };
    }
}"""


@contextlib.asynccontextmanager
async def _garbage_tls() -> AsyncIterator[int]:
    """A server that answers a ClientHello with bytes that are not TLS (yields its port)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x16\x03\x03\x00\x10" + bytes(range(16)) + b"garbage" * 100)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _scenario(url: str, ca: tlsca.TestCa) -> None:
    from playwright.async_api import async_playwright

    good = ca.issue("127.0.0.1").context()
    untrusted = tlsca.make_ca("not trusted").issue("127.0.0.1").context()
    other_host = ca.issue("127.0.0.2").context()
    expected = hashlib.sha256(tlsca.body_for("/5mb")).hexdigest()
    with netmesh.file_server(SIZE) as plain:
        async with (
            async_playwright() as pw,
            tlsca.https_server(good) as good_port,
            tlsca.https_server(untrusted) as untrusted_port,
            tlsca.https_server(other_host) as other_port,
            _garbage_tls() as garbage_port,
        ):
            browser = await pw.chromium.launch(
                executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
            )
            page = await (await browser.new_context(permissions=browserpage.PERMISSIONS)).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)
            await browserpage.wait_ready(page)

            result: dict[str, Any] = await page.evaluate(
                FETCH_JS, f"https://127.0.0.1:{good_port}/5mb"
            )
            assert result.get("ok"), result
            assert (result["status"], result["size"]) == (200, SIZE), result
            assert result["sha256"] == expected, result
            tls_ms = result["ms"]

            plain_result = await page.evaluate(FETCH_JS, plain.url)
            assert plain_result.get("ok") and plain_result["sha256"] == plain.sha256, plain_result
            again = await page.evaluate(FETCH_JS, f"https://127.0.0.1:{good_port}/5mb")
            assert again.get("ok") and again["sha256"] == expected, again
            tls_ms = min(tls_ms, again["ms"])
            print(
                f"\nhttps in the page: 5 MiB in {tls_ms / 1000:.2f} s "
                f"({SIZE / tls_ms / 1000:.2f} MB/s) vs plain http {plain_result['size'] >> 20} MiB "
                f"in {plain_result['ms'] / 1000:.2f} s "
                f"({plain_result['size'] / plain_result['ms'] / 1000:.2f} MB/s), "
                "same mesh"
            )

            refusals = {
                untrusted_port: "no chain|does not validate|not trusted|No valid certificate",
                other_port: "not 127.0.0.1|subjectAltName",
                garbage_port: "TLS failed",
            }
            for port, error in refusals.items():
                started = time.monotonic()
                refused = await page.evaluate(FETCH_JS, f"https://127.0.0.1:{port}/")
                assert not refused.get("ok"), refused
                assert re.search(error, refused["error"]), refused
                assert time.monotonic() - started < 30, refused
            status = await page.evaluate("() => zmesh.status()")
            assert status["ready"], status
            assert not errors, errors
            await browser.close()


@pytest.mark.slow
def test_https_through_circuits_from_the_page(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    browserpage.chromium()
    dist = browserpage.ensure_dist()
    ca = tlsca.make_ca()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(ca.pem)
    procs: list[netmesh.Proc] = []
    try:
        first = netmesh.start_relay(tmp_path, "relay0", [], exit_=True)
        procs.append(first)
        for i in (1, 2):
            procs.append(netmesh.start_relay(tmp_path, f"relay{i}", [first.url]))
        args = ["web", "--port", "0", "--dist", str(dist), "--trust-ca", str(ca_file)]
        for relay in procs:
            args += ["--bootstrap", relay.url]
        web = netmesh.start(args, tmp_path / "web.log", "web")
        procs.append(web)
        line = netmesh._read_line(web.popen, r"serving .* on http://", 30)
        url = re.search(r"on (http://\S+)", line).group(1)  # type: ignore[union-attr]
        asyncio.run(asyncio.wait_for(_scenario(url, ca), 240))
    finally:
        for proc in reversed(procs):
            netmesh.stop(proc)
