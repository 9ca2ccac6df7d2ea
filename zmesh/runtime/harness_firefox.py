"""The harness's Firefox: Debian's Firefox ESR driven over WebDriver BiDi by puppeteer-core,
and the push service its ``dom.push.serverURL`` points at (D48, D54).

Playwright cannot drive a stock Firefox and geckodriver is not packaged here, so a small
Node script (:data:`DRIVER_JS`, written to a temporary file and run with ``node``, which
finds puppeteer-core in ``web/node_modules``) holds the browser and answers one JSON line
per command on stdin: ``{"id", "op": "open", "url"}`` opens a page (its index back),
``{"id", "op": "eval", "page", "fn", "args"}`` evaluates a function source in it, awaiting
a promise.  :class:`FirefoxPage` offers ``evaluate(fn, *args)`` as Playwright's pages do,
so the harness's scenarios use either.
"""

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import ZMeshError

FIREFOX_PREFS: Final[dict[str, object]] = {
    "dom.push.enabled": True,
    "dom.push.connection.enabled": True,
    "dom.push.testing.allowInsecureServerURL": True,
    "dom.push.testing.ignorePermission": True,
    "dom.serviceWorkers.enabled": True,
    "permissions.default.desktop-notification": 1,
    # the relays of a loopback mesh: offer host addresses, not mDNS names
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
}
COMMAND_TIMEOUT: Final = 120.0

DRIVER_JS: Final = r"""
import { createRequire } from "node:module";
import readline from "node:readline";
const [web, executablePath, prefsJson] = process.argv.slice(2);
const puppeteer = createRequire(`${web}/package.json`)("puppeteer-core");
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const browser = await puppeteer.launch({
  browser: "firefox", executablePath, headless: true, extraPrefsFirefox: JSON.parse(prefsJson),
});
const pages = [];
out({ ready: true });
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = JSON.parse(line);
  try {
    if (cmd.op === "open") {
      const page = await browser.newPage();
      await page.goto(cmd.url);
      pages.push(page);
      out({ id: cmd.id, value: pages.length - 1 });
    } else if (cmd.op === "eval") {
      const expr = `(${cmd.fn})(...${JSON.stringify(cmd.args)})`;
      out({ id: cmd.id, value: await pages[cmd.page].evaluate(expr) });
    } else {
      break;
    }
  } catch (err) {
    out({ id: cmd.id, error: String(err && err.message || err) });
  }
}
await browser.close();
process.exit(0);
"""


def ensure_firefox(path: str) -> None:
    """Debian's Firefox ESR at ``path``, installed with apt-get when missing (as root, as
    the tests do); ZMeshError if it is still missing."""
    apt = shutil.which("apt-get")
    if not os.access(path, os.X_OK) and os.geteuid() == 0 and apt:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update", "-qq"], capture_output=True, check=False)  # noqa: S603
        install = [apt, "install", "-y", "-qq", "firefox-esr"]
        subprocess.run(install, capture_output=True, check=False, env=env)  # noqa: S603
    if not os.access(path, os.X_OK):
        raise ZMeshError(f"{path} not found: apt-get install firefox-esr")


class FirefoxDriver:
    """One Firefox ESR process behind the Node driver script (see the module doc)."""

    def __init__(self, process: asyncio.subprocess.Process, script: Path) -> None:
        self._process = process
        self._script = script
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @classmethod
    async def launch(cls, web: Path, firefox: str, prefs: dict[str, object]) -> "FirefoxDriver":
        """Start Firefox; ZMeshError if node or puppeteer-core (``npm ci`` in web/) is
        missing or the browser does not start."""
        if not shutil.which("node") or not (web / "node_modules" / "puppeteer-core").is_dir():
            raise ZMeshError(
                f"the Firefox harness needs node and {web}/node_modules/puppeteer-core"
            )
        fd, name = tempfile.mkstemp(prefix="zmesh-firefox-", suffix=".mjs")
        with os.fdopen(fd, "w") as out:
            out.write(DRIVER_JS)
        process = await asyncio.create_subprocess_exec(
            "node", name, str(web), firefox, json.dumps(prefs),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=16 * 1024 * 1024,
        )  # fmt: skip
        driver = cls(process, Path(name))
        try:
            await driver._read()
        except BaseException:
            await driver.close()
            raise
        return driver

    async def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), COMMAND_TIMEOUT)
        if not line:
            raise ZMeshError("the Firefox driver ended")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def command(self, **cmd: Any) -> Any:
        """Send one command and return its value; ZMeshError with the page's error."""
        async with self._lock:
            assert self._process.stdin is not None
            cmd["id"] = next(self._ids)
            self._process.stdin.write(json.dumps(cmd).encode() + b"\n")
            reply = await self._read()
        if "error" in reply:
            raise ZMeshError(f"in Firefox: {reply['error']}")
        return reply.get("value")

    async def open(self, url: str) -> "FirefoxPage":
        return FirefoxPage(self, int(await self.command(op="open", url=url)))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self._process.stdin is not None
            self._process.stdin.write(b'{"op": "quit"}\n')
            await asyncio.wait_for(self._process.wait(), 20)
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._script.unlink(missing_ok=True)


@dataclass
class FirefoxPage:
    """A page in the harness's Firefox, with Playwright's ``evaluate`` shape."""

    driver: FirefoxDriver
    index: int

    async def evaluate(self, fn: str, *args: Any) -> Any:
        return await self.driver.command(op="eval", page=self.index, fn=fn, args=list(args))


__all__ = [
    "FIREFOX_PREFS",
    "FirefoxDriver",
    "FirefoxPage",
    "ensure_firefox",
]
