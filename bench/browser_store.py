"""The browser content store's costs in headless Chromium (figures in D45, "In the browser").

1. IndexedDB alone, in the page: N pieces of 256 KiB written one readwrite transaction
   each (what the store does for a fetched piece) against all N in one transaction (the
   baseline, same page, interleaved rounds): MB/s and the ratio.
2. ``zmesh.share`` of a SIZE-byte Blob (encode in Pyodide, pin, one IndexedDB
   transaction, awaited), then a reload: the time to load the store back and verify it.

No mesh is needed: ``zmesh web`` serves web/dist with a bootstrap URL that is down (the
node never links; the store works anyway).  Usage: python bench/browser_store.py [MB]
"""

import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import browserpage  # noqa: E402
import netmesh  # noqa: E402

from zmesh.runtime.harness import CHROMIUM_ARGS  # noqa: E402

PIECES = 64
ROUNDS = 5

IDB_JS = """async ([pieces, rounds]) => {
    const open = (name) => new Promise((resolve, reject) => {
        const r = indexedDB.open(name, 1);
        r.onupgradeneeded = () => r.result.createObjectStore("pieces");
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
    });
    const db = await open("bench-" + Math.random());
    const tx = (fn) => new Promise((resolve, reject) => {
        const t = db.transaction("pieces", "readwrite");
        fn(t.objectStore("pieces"));
        t.oncomplete = resolve;
        t.onerror = () => reject(t.error);
    });
    const piece = crypto.getRandomValues(new Uint8Array(65536));
    const data = new Uint8Array(262144);
    for (let i = 0; i < 4; i++) data.set(piece, i * 65536);
    const out = {each: [], batch: []};
    for (let r = 0; r < rounds; r++) {
        let t0 = performance.now();
        for (let i = 0; i < pieces; i++) await tx((s) => s.put(data, [r, "each", i]));
        out.each.push(performance.now() - t0);
        t0 = performance.now();
        await tx((s) => { for (let i = 0; i < pieces; i++) s.put(data, [r, "batch", i]); });
        out.batch.push(performance.now() - t0);
    }
    return out;
}"""

SHARE_JS = """async (size) => {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
    const t0 = performance.now();
    const id = await zmesh.share(new Blob([bytes]));
    return {id, ms: performance.now() - t0};
}"""


async def measure(url: str, size: int) -> None:
    from playwright.async_api import async_playwright  # noqa: PLC0415 - test extras

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
        )
        page = await (await browser.new_context()).new_page()
        await page.goto(url)
        got = await page.evaluate(IDB_JS, [PIECES, ROUNDS])
        mb = PIECES * 262144 / 1e6
        each, batch = statistics.median(got["each"]), statistics.median(got["batch"])
        print(f"IndexedDB, {PIECES} x 256 KiB, median of {ROUNDS}: one transaction per piece "
              f"{mb / each * 1000:.0f} MB/s ({each / PIECES:.1f} ms/piece), all in one "
              f"{mb / batch * 1000:.0f} MB/s; ratio {each / batch:.2f}")  # fmt: skip
        while True:  # the store opens after the identity: wait for its status
            status = await page.evaluate("() => zmesh.status()")
            if "content" in status and "contents" in status["content"]:
                break
            await asyncio.sleep(0.1)
        shared = await page.evaluate(SHARE_JS, size)
        print(f"zmesh.share of {size / 1e6:.0f} MB: {shared['ms']:.0f} ms "
              f"({size / shared['ms'] / 1000:.1f} MB/s: encode, pin, IndexedDB)")  # fmt: skip
        await page.reload()
        while True:
            status = await page.evaluate("() => zmesh.status()")
            note = status.get("content", {}).get("store", "")
            if "loaded" in note:
                break
            await asyncio.sleep(0.1)
        print(f"after a reload: {note}")
        await browser.close()


def main() -> None:
    size = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 32_000_000
    dist = browserpage.ensure_dist()
    with tempfile.TemporaryDirectory() as tmp:
        down = f"http://127.0.0.1:{netmesh.free_port()}"
        args = ["web", "--port", "0", "--dist", str(dist), "--bootstrap", down]
        web = netmesh.start(args, Path(tmp) / "web.log", "web")
        try:
            line = netmesh._read_line(web.popen, r"serving .* on http://", 30)
            url = re.search(r"on (http://\S+)", line).group(1)  # type: ignore[union-attr]
            started = time.monotonic()
            asyncio.run(measure(url, size))
            print(f"({time.monotonic() - started:.1f} s in all)")
        finally:
            netmesh.stop(web)


if __name__ == "__main__":
    main()
