"""Measure what a Chromium call sends beside its video, for the media transport (D59).

It reads calls captured by ``bench/classify.py --kinds call,... --save FILE.npz`` and
writes ``zmesh/shaping/audio_profile.json``: the UDP payload sizes of the calls' Opus
packets (RTP payload type 111) and of their transport-wide congestion control feedback
(RTCP RTPFB, packet type 205), as sorted samples (at most 4,096 each, evenly spaced
quantiles), and how many feedback packets each direction sends per second::

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/audio_profile.py /tmp/calls.npz

Only flows with at least 1,000 datagrams count (a call's one media flow; the rest are
ICE checks of candidate pairs not chosen).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify import load

OUT = Path(__file__).resolve().parent.parent / "zmesh" / "shaping" / "audio_profile.json"
OPUS = 111
FEEDBACK = 205  # RTCP RTPFB (RFC 4585); Chromium's are transport-cc (FMT 15)
MIN_PACKETS = 1000
SAMPLES = 4096


def quantiles(values: list[int]) -> list[int]:
    data = np.sort(np.array(values))
    if data.size <= SAMPLES:
        return [int(v) for v in data]
    return [int(v) for v in np.quantile(data, np.linspace(0, 1, SAMPLES), method="nearest")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path, help="a bench/classify.py --save file with calls")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    audio: list[int] = []
    feedback: list[int] = []
    seconds = 0.0
    calls = [f for f in load(args.capture) if f.kind == "call" and len(f.packets) >= MIN_PACKETS]
    if not calls:
        print(f"no call flows in {args.capture}", file=sys.stderr)
        return 1
    for flow in calls:
        seconds += 2 * (flow.end - flow.start)  # both directions
        for _, size, _, head in flow.packets:
            if len(head) < 2 or not 128 <= head[0] <= 191:
                continue
            if head[1] == FEEDBACK:
                feedback.append(size)
            elif head[1] & 0x7F == OPUS:
                audio.append(size)
    doc = {
        "source": f"{len(calls)} Chromium calls, bench/classify.py --save ({args.capture.name})",
        "command": "bench/audio_profile.py " + args.capture.name,
        "audio_packets": len(audio),
        "audio_rate": round(len(audio) / seconds, 2),
        "audio_size": quantiles(audio),
        "feedback_packets": len(feedback),
        "feedback_rate": round(len(feedback) / seconds, 2),
        "feedback_size": quantiles(feedback),
    }
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(
        f"{len(calls)} calls, {seconds / 2:.0f} s: audio {doc['audio_rate']}/s per direction "
        f"(p10-p90 {np.percentile(audio, 10):.0f}-{np.percentile(audio, 90):.0f} B), "
        f"feedback {doc['feedback_rate']}/s "
        f"(p10-p90 {np.percentile(feedback, 10):.0f}-{np.percentile(feedback, 90):.0f} B)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
