"""Measure a real WebRTC video call in headless Chromium: the `video` shaping profile.

Two RTCPeerConnections in one headless Chromium page (loopback ICE) send a synthetic
canvas video track (``canvas.captureStream(30)``: no camera, no permission prompt) one way.
A WebRTC Encoded Transform (``RTCRtpScriptTransform`` in a worker; Chromium's older
``createEncodedStreams`` if that is missing) on the sender sees every encoded frame and
records its size, its time and whether it is a key frame, for ``--seconds`` (default 60).
The canvas draws what a call shows: a still background, a moving head and shoulders,
small motion everywhere (noise), so that the encoder works as in a call rather than on a
static image.

Writes the profile :mod:`zmesh.shaping.profile` loads (``zmesh/shaping/video_profile.json``):
inter-frame intervals and sizes of delta frames (as sorted samples, the empirical
distribution), key frame sizes, the key frame interval seen, the mean bit rate, the codec,
and the command that regenerated it::

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/shaping_profile.py --seconds 60
"""

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import Route, sync_playwright

from zmesh.runtime.harness import CHROMIUM, CHROMIUM_ARGS

OUT = Path(__file__).resolve().parent.parent / "zmesh" / "shaping" / "video_profile.json"
ORIGIN = "http://shaping.invalid"
MAX_SAMPLES = 4096  # samples kept per distribution (evenly spaced quantiles)

WORKER_JS = """
function watch(readable, writable, side) {
  readable.pipeThrough(new TransformStream({
    transform(frame, controller) {
      const kind = frame.type === undefined ? "delta" : frame.type;
      self.postMessage({t: performance.now(), size: frame.data.byteLength, type: kind});
      controller.enqueue(frame);
    }
  })).pipeTo(writable);
}
onrtctransform = (event) => {
  const t = event.transformer;
  watch(t.readable, t.writable, t.options.side);
};
onmessage = (event) => {  // createEncodedStreams: the page posts the streams
  if (event.data && event.data.readable) watch(event.data.readable, event.data.writable, "send");
};
"""

PAGE_HTML = """<!doctype html><html><body><canvas id=c width=1280 height=720></canvas><script>
const frames = [];
let mode = "none";
async function start() {
  const canvas = document.getElementById("c");
  const ctx = canvas.getContext("2d");
  let n = 0;
  const noise = ctx.createImageData(320, 180);
  function draw() {
    n++;
    ctx.fillStyle = "#506070"; ctx.fillRect(0, 0, 1280, 720);
    ctx.fillStyle = "#8a7a60"; ctx.fillRect(0, 420, 1280, 300);  // a desk
    const x = 640 + 60 * Math.sin(n / 37), y = 330 + 20 * Math.sin(n / 23);
    ctx.fillStyle = "#d8b090"; ctx.beginPath(); ctx.arc(x, y, 120, 0, 7); ctx.fill();
    ctx.fillStyle = "#304060"; ctx.fillRect(x - 220, y + 130, 440, 300);  // shoulders
    ctx.fillStyle = "#202020"; ctx.fillRect(x - 50, y - 20 + 8 * Math.sin(n / 5), 100, 12);
    for (let i = 0; i < noise.data.length; i += 4) {  // sensor noise: a real camera's grain
      const v = Math.random() * 24;
      noise.data[i] = noise.data[i + 1] = noise.data[i + 2] = v; noise.data[i + 3] = 40;
    }
    ctx.putImageData(noise, (n * 13) % 960, (n * 7) % 540);
    requestAnimationFrame(draw);
  }
  draw();
  const stream = canvas.captureStream(30);
  const worker = new Worker("/worker.js");
  worker.onmessage = (e) => frames.push(e.data);
  const scripted = "RTCRtpScriptTransform" in window;
  const cfg = scripted ? {} : {encodedInsertableStreams: true};
  const a = new RTCPeerConnection(cfg), b = new RTCPeerConnection(cfg);
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  b.ontrack = (e) => {
    const v = document.createElement("video"); v.muted = true; v.srcObject = e.streams[0];
    v.play();
    if (!scripted) {  // the receiver's streams must be read too, or frames stall
      const s = e.receiver.createEncodedStreams(); s.readable.pipeTo(s.writable);
    }
  };
  const sender = a.addTrack(stream.getVideoTracks()[0], stream);
  if (scripted) {
    sender.transform = new RTCRtpScriptTransform(worker, {side: "send"});
    mode = "RTCRtpScriptTransform";
  } else {
    const s = sender.createEncodedStreams();
    worker.postMessage({readable: s.readable, writable: s.writable}, [s.readable, s.writable]);
    mode = "createEncodedStreams";
  }
  await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  window.sender = sender;
}
window.started = start();
</script></body></html>"""


def _quantiles(values: list[float], digits: int) -> list[float]:
    """At most MAX_SAMPLES evenly spaced order statistics of ``values`` (sorted)."""
    ordered = sorted(values)
    if len(ordered) <= MAX_SAMPLES:
        return [round(v, digits) for v in ordered]
    step = (len(ordered) - 1) / (MAX_SAMPLES - 1)
    return [round(ordered[round(i * step)], digits) for i in range(MAX_SAMPLES)]


def measure(seconds: float, warmup: float) -> dict[str, Any]:
    """Run the call; returns the raw frames ``[{t (ms), size, type}]`` and context."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, "--disable-features=WebRtcHideLocalIpsWithMdns"],
            headless=True,
        )
        page = browser.new_page()

        def serve(route: Route) -> None:
            if route.request.url.endswith("/worker.js"):
                route.fulfill(body=WORKER_JS, content_type="text/javascript")
            else:
                route.fulfill(body=PAGE_HTML, content_type="text/html")

        page.route(f"{ORIGIN}/**", serve)
        page.goto(f"{ORIGIN}/")
        page.evaluate("window.started")
        page.wait_for_timeout(warmup * 1000)
        page.evaluate("frames.length = 0")
        page.wait_for_timeout(seconds * 1000)
        frames = page.evaluate("frames.splice(0)")
        mode = page.evaluate("mode")
        stats = page.evaluate(
            """(async () => {
              const out = {};
              (await window.sender.getStats()).forEach((r) => {
                if (r.type === "outbound-rtp") {
                  out.framesEncoded = r.framesEncoded; out.keyFramesEncoded = r.keyFramesEncoded;
                  out.frameWidth = r.frameWidth; out.frameHeight = r.frameHeight;
                  out.encoderImplementation = r.encoderImplementation;
                  out.codecId = r.codecId;
                }
                if (r.type === "codec") out["codec:" + r.id] = r.mimeType;
              });
              return out;
            })()"""
        )
        version = browser.version
        browser.close()
    codec = stats.get(f"codec:{stats.get('codecId')}", "?")
    return {"frames": frames, "mode": mode, "stats": stats, "codec": codec, "version": version}


def profile(run: dict[str, Any], seconds: float, command: str) -> dict[str, Any]:
    """The profile document from one run's frames."""
    frames = sorted(run["frames"], key=lambda f: f["t"])
    if len(frames) < 100:
        raise SystemExit(f"only {len(frames)} encoded frames seen: no profile")
    gaps = [(b["t"] - a["t"]) / 1000 for a, b in itertools.pairwise(frames)]
    key_at = [f["t"] / 1000 for f in frames if f["type"] == "key"]
    key_sizes = [f["size"] for f in frames if f["type"] == "key"]
    delta_sizes = [f["size"] for f in frames if f["type"] != "key"]
    span = (frames[-1]["t"] - frames[0]["t"]) / 1000
    total = sum(f["size"] for f in frames)
    key_gaps = [b - a for a, b in itertools.pairwise(key_at)]
    return {
        "source": (
            f"Chromium {run['version']}, headless, two RTCPeerConnections on loopback, a "
            f"1280x720 canvas track at 30 frames/s, {run['codec']}, encoded frames seen "
            f"through {run['mode']}"
        ),
        "command": command,
        "seconds": round(span, 3),
        "frames": len(frames),
        "frame_rate": round((len(frames) - 1) / span, 3),
        "mean_bitrate": round(total * 8 / span),
        "resolution": [run["stats"].get("frameWidth"), run["stats"].get("frameHeight")],
        "encoder": run["stats"].get("encoderImplementation"),
        "key_frames": len(key_sizes),
        # seconds between key frames (None: at most one seen in the run)
        "key_interval": round(statistics.median(key_gaps), 3) if key_gaps else None,
        "interval": _quantiles(gaps, 5),  # seconds between consecutive frames, sorted
        "delta_size": _quantiles(delta_sizes, 0),  # bytes, sorted
        "key_size": _quantiles(key_sizes, 0),  # bytes, sorted
        "requested_seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="recording time")
    parser.add_argument("--warmup", type=float, default=8.0, help="ramp-up time not recorded")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write ({OUT})")
    parser.add_argument("--raw", type=Path, help="also write the raw frames here")
    args = parser.parse_args()
    run = measure(args.seconds, args.warmup)
    if args.raw:
        args.raw.write_text(json.dumps(run))
    command = f"bench/shaping_profile.py --seconds {args.seconds:g} --warmup {args.warmup:g}"
    doc = profile(run, args.seconds, command)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    summary = {k: v for k, v in doc.items() if k not in ("interval", "delta_size", "key_size")}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
