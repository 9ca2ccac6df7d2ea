"""Spike: the browser end of the media transport (D58, "Not done (2)") against the native
end, in headless Chromium (Debian's /usr/bin/chromium, through Playwright).

The page makes a synthetic canvas track (1280x720, no camera), one ``sendrecv``
transceiver limited to VP8, and two ``RTCRtpScriptTransform`` workers: the sender's
replaces each encoded frame's ``data`` with a frame of :class:`~zmesh.shaping.media.
MediaLink` (``next_frame``: the encoder's cadence, the profile's sizes), asked for over a
MessagePort; the receiver's hands each frame over a MessagePort and never enqueues it (no
decoder runs).  The page's SDP goes through the compact SDP of signaling (version 3) both
ways, as a real dial would; the native end is :func:`zmesh.runtime.media.answer` (aiortc).

Here the browser's ``MediaLink`` runs in this process, not in the Pyodide worker: each
frame the sender transform asks for goes page -> Playwright -> here and back (a few ms).
What the Pyodide worker would add instead is a MessagePort round trip from the transform
worker to another worker: the sender transform times one per frame (``port_rtt_ms``), and
the receiver's hop to the page is timed too (``recv_hop_ms``).  Then it measures
goodput one way, then the other: messages of 8,200 bytes (a link frame's size) until
``--size`` bytes arrived.

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/media_browser.py --size 2MB
    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/media_browser.py --size 3MB --baseline

Progress to stderr, results to stdout.
"""

import argparse
import asyncio
import base64
import functools
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from zmesh.rng import DeterministicRng
from zmesh.runtime import media
from zmesh.runtime.entropy import SystemRng
from zmesh.shaping.media import MediaLink, decode_frame
from zmesh.shaping.profile import VideoProfile
from zmesh.signaling.sdp import CompactSdp, local_media_offer

MESSAGE = 8200
MAX_BUFFERED = 1 << 20

PAGE = """<!doctype html><html><body><canvas id=c width=1280 height=720></canvas>
<script>
window.zlog = [];
window.start = async (portsOnly) => {
  const c = document.getElementById("c"), g = c.getContext("2d");
  let n = 0;
  window.paint = setInterval(() => {
    g.fillStyle = `rgb(${(n * 7) % 255},${(n * 3) % 255},90)`; g.fillRect(0, 0, 1280, 720); n++;
  }, 10);
  const track = c.captureStream(30).getVideoTracks()[0];
  const pc = (window.pc = new RTCPeerConnection());
  const tx = pc.addTransceiver(track, { direction: "sendrecv" });
  tx.setCodecPreferences(
    RTCRtpReceiver.getCapabilities("video").codecs.filter((x) => x.mimeType === "video/VP8"));
  const pull = new MessageChannel(), recv = new MessageChannel();
  window.pullMs = []; window.hopMs = [];
  window.probeMs = [];
  pull.port1.onmessage = async (e) => {  // the core's side of the sender transform
    if (e.data.rtt !== undefined) return void window.probeMs.push(e.data.rtt);
    const t0 = performance.now();
    const b64 = await window.zpull(e.data.type);
    const data = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)).buffer;
    window.pullMs.push(performance.now() - t0);
    pull.port1.postMessage({ data }, [data]);
  };
  let batch = [];
  recv.port1.onmessage = (e) => {  // the core's side of the receiver transform
    window.hopMs.push(performance.timeOrigin + performance.now() - e.data.at);
    let s = ""; const b = new Uint8Array(e.data.data);
    for (let i = 0; i < b.length; i += 0x8000)
      s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
    window.zdeliver(btoa(s));
  };
  const w1 = new Worker("transform.js"), w2 = new Worker("transform.js");
  const probe = new MessageChannel();
  new Worker("echo.js").postMessage({ port: probe.port1 }, [probe.port1]);
  tx.sender.transform = new RTCRtpScriptTransform(
    w1, { side: "send", port: pull.port2, probe: probe.port2 }, [pull.port2, probe.port2]);
  tx.receiver.transform = new RTCRtpScriptTransform(
    w2, { side: "recv", port: recv.port2 }, [recv.port2]);
  const p = tx.sender.getParameters();
  p.encodings[0].maxBitrate = 8000000;
  await tx.sender.setParameters(p);
  return (await pc.createOffer()).sdp;
};
window.offer = async (munged) => {
  const pc = window.pc;
  await pc.setLocalDescription({ type: "offer", sdp: munged });
  if (pc.iceGatheringState !== "complete")
    await new Promise((r) => pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && r()));
  return pc.localDescription.sdp;
};
window.stats = async () => {
  const out = {};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" || s.type === "inbound-rtp") out[s.type] = {
      framesEncoded: s.framesEncoded, framesSent: s.framesSent, bytesSent: s.bytesSent,
      bytesReceived: s.bytesReceived, framesDecoded: s.framesDecoded, pli: s.pliCount,
      nack: s.nackCount, lost: s.packetsLost, targetBitrate: s.targetBitrate };
  });
  return out;
};
</script></body></html>
"""

TRANSFORM = """onrtctransform = (event) => {
  const { side, port, probe } = event.transformer.options;
  const t = event.transformer;
  if (side === "send") {
    let waiter = null;
    port.onmessage = (e) => { const w = waiter; waiter = null; w(e.data.data); };
    probe.onmessage = (e) => port.postMessage({ rtt: performance.now() - e.data });
    t.readable.pipeThrough(new TransformStream({
      async transform(frame, ctl) {
        probe.postMessage(performance.now());  // a MessagePort round trip, timed alone
        frame.data = await new Promise((res) => {
          waiter = res; port.postMessage({ type: frame.type });
        });
        ctl.enqueue(frame);
      },
    })).pipeTo(t.writable);
  } else {
    t.readable.pipeTo(new WritableStream({
      write(frame) {  // never enqueued: no decoder
        const data = frame.data;
        port.postMessage({ data, at: performance.timeOrigin + performance.now() }, [data]);
      },
    }));
  }
};
"""


ECHO = """onmessage = (e) => {
  const port = e.data.port;
  port.onmessage = (m) => port.postMessage(m.data);
};
"""


def _serve(root: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


async def one_way(
    results: dict[str, Any], name: str, size: int, *, send: Any, buffered: Any, got: list[int]
) -> None:
    """Send ``size`` bytes in messages of MESSAGE bytes, at most MAX_BUFFERED waiting;
    record the goodput once ``got`` (message sizes, appended by the receiver) has them."""
    payload = bytes(MESSAGE)
    start, first, sent = time.monotonic(), None, 0
    deadline = start + 120
    while sum(got) < size and time.monotonic() < deadline:
        while sent < size and buffered() < MAX_BUFFERED:
            send(payload)
            sent += MESSAGE
        if first is None and got:
            first = time.monotonic() - start
        await asyncio.sleep(0.01)
    took = time.monotonic() - start
    results[name] = {
        "bytes": sum(got),
        "seconds": round(took, 2),
        "mbit_s": round(sum(got) * 8 / took / 1e6, 3),
        "first_message_ms": round(first * 1000) if first is not None else None,
    }
    print(name, results[name], file=sys.stderr)


async def native_pair(size: int) -> dict[str, Any]:
    """The baseline: two native ends (aiortc, loopback), one way then the other."""
    results: dict[str, Any] = {}
    pending, offer = await media.dial(loopback=True)
    pending_answer, answer = await media.answer(offer, loopback=True)
    a, b = await asyncio.gather(pending.complete(answer), pending_answer.connected())
    got_a: list[int] = []
    got_b: list[int] = []
    a.onmessage = lambda m: got_a.append(len(m))
    b.onmessage = lambda m: got_b.append(len(m))
    await one_way(
        results, "native_a_to_b", size, send=a.send, buffered=lambda: a.bufferedAmount, got=got_b
    )
    await one_way(
        results, "native_b_to_a", size, send=b.send, buffered=lambda: b.bufferedAmount, got=got_a
    )
    await asyncio.gather(a.aclose(), b.aclose())
    return results


async def run(size: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright  # noqa: PLC0415 (the tests' extra)

    loop = asyncio.get_running_loop()
    profile = VideoProfile.measured()
    link = MediaLink(profile, DeterministicRng(SystemRng().bytes(32), b"browser"), loop.time())
    got_browser: list[int] = []  # message sizes the browser's link received
    state: dict[str, Any] = {"frames_in": 0, "frames_out": 0, "keys_out": 0, "errors": []}

    async def zpull(_source: Any, _encoder_type: str) -> str:
        frame = link.next_frame(loop.time())
        state["frames_out"] += 1
        state["keys_out"] += decode_frame(frame)[0]
        return base64.b64encode(frame).decode()

    async def zdeliver(_source: Any, b64: str) -> None:
        state["frames_in"] += 1
        try:
            got_browser.extend(len(m) for m in link.receive(base64.b64decode(b64), loop.time()))
        except Exception as exc:  # the spike records what broke
            state["errors"].append(repr(exc))

    root = Path(tempfile.mkdtemp(prefix="zmesh-media-browser-"))
    (root / "index.html").write_text(PAGE)
    (root / "transform.js").write_text(TRANSFORM)
    (root / "echo.js").write_text(ECHO)
    server = _serve(root)
    results: dict[str, Any] = {}
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                # aiortc cannot resolve mDNS host names: the page shows its host addresses
                args=["--headless=new", "--disable-features=WebRtcHideLocalIpsWithMdns"],
            )
            page = await browser.new_page()
            page.on("console", lambda m: print("console:", m.text, file=sys.stderr))
            await page.expose_binding("zpull", zpull)
            await page.expose_binding("zdeliver", zdeliver)
            await page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            created = await page.evaluate("() => window.start()")
            # payload type 97 and version 3's extension ids, as the native end will answer
            munged = local_media_offer(created)
            offer = await page.evaluate("(sdp) => window.offer(sdp)", munged)
            compact_offer = CompactSdp.from_sdp(offer)
            print(f"offer: compact v3 {len(compact_offer.encode())} B", file=sys.stderr)
            pending, answer = await media.answer(
                CompactSdp.decode(compact_offer.encode()).to_sdp("offer")
            )
            answer_sdp = CompactSdp.decode(CompactSdp.from_sdp(answer).encode()).to_sdp("answer")
            started = time.monotonic()
            await page.evaluate(
                "(sdp) => window.pc.setRemoteDescription({type: 'answer', sdp})", answer_sdp
            )
            native = await pending.connected()
            results["connect_s"] = round(time.monotonic() - started, 3)
            got_native: list[int] = []
            native.onmessage = lambda m: got_native.append(len(m))

            await one_way(
                results,
                "browser_to_native",
                size,
                send=link.send,
                buffered=lambda: link.buffered,
                got=got_native,
            )
            nlink = native.link
            assert nlink is not None
            await one_way(
                results,
                "native_to_browser",
                size,
                send=native.send,
                buffered=lambda: native.bufferedAmount,
                got=got_browser,
            )
            pull_ms = await page.evaluate("() => window.pullMs")
            hop_ms = await page.evaluate("() => window.hopMs")
            probe_ms = await page.evaluate("() => window.probeMs")
            results["port_rtt_ms_median_p95"] = [
                round(_pct(probe_ms, 0.5), 2),
                round(_pct(probe_ms, 0.95), 2),
            ]
            results["pull_ms_median_p95"] = [
                round(_pct(pull_ms, 0.5), 2),
                round(_pct(pull_ms, 0.95), 2),
            ]
            results["recv_hop_ms_median_p95"] = [
                round(_pct(hop_ms, 0.5), 2),
                round(_pct(hop_ms, 0.95), 2),
            ]
            results["browser_link"] = {
                "frames_sent": link.frames_sent,
                "resent": link.resent,
                "data_sent": link.data_sent,
            }
            results["native_link"] = {
                "frames_sent": nlink.frames_sent,
                "resent": nlink.resent,
                "data_sent": nlink.data_sent,
            }
            results["page_stats"] = await page.evaluate("() => window.stats()")
            results.update(state)
            await native.aclose()
            await browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="2MB", help="bytes each way (e.g. 2MB)")
    parser.add_argument(
        "--baseline", action="store_true", help="then two native ends, the same way"
    )
    args = parser.parse_args()
    text = args.size.upper().removesuffix("B")
    scale = {"K": 1000, "M": 1000_000}.get(text[-1:], 1)
    size = int(float(text.rstrip("KM")) * scale)
    out = {"browser": asyncio.run(run(size))}
    if args.baseline:
        out["native"] = asyncio.run(native_pair(size))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
