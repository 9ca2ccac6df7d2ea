"""Measure what a Chromium call sends beside its video, for the media transport (D59).

It reads calls captured by ``bench/classify.py --kinds call,... --save FILE.npz`` and
writes ``zmesh/shaping/audio_profile.json``: the UDP payload sizes of the calls' Opus
packets (RTP payload type 111) and of their transport-wide congestion control feedback
(RTCP RTPFB, packet type 205), as sorted samples (at most 4,096 each, evenly spaced
quantiles), and how many feedback packets each direction sends per second::

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/audio_profile.py /tmp/calls.npz

Only flows with at least 1,000 datagrams count (a call's one media flow; the rest are
ICE checks of candidate pairs not chosen).

With ``--video FILE`` it also writes a video profile for the media transport (the format
of ``zmesh/shaping/video_profile.json``) from the calls' VP8 packets, in the directions
whose video runs at ``--min-rate`` or more (the calls with a noisy camera; Chromium's
built-in fake camera sends 0.5 Mbit/s, below what a media link must carry): each frame
(the packets of one RTP timestamp) gives its size, the RTP payloads less Chromium's VP8
payload descriptor, and its gap since the previous frame's first packet.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify import load

OUT = Path(__file__).resolve().parent.parent / "zmesh" / "shaping" / "audio_profile.json"
OPUS = 111
FEEDBACK = 205  # RTCP RTPFB (RFC 4585); Chromium's are transport-cc (FMT 15)
MIN_PACKETS = 1000
SAMPLES = 4096
SRTP_TAG = 10  # Chromium's calls use AES_CM_128_HMAC_SHA1_80 (RTCP datagrams are 14 + 4k)
VP8_DESCRIPTOR = 4  # Chromium's VP8 payload descriptor: X, I with a 15-bit picture id


def quantiles(values: list[int]) -> list[int]:
    data = np.sort(np.array(values))
    if data.size <= SAMPLES:
        return [int(v) for v in data]
    return [int(v) for v in np.quantile(data, np.linspace(0, 1, SAMPLES), method="nearest")]


def rtp_payload(size: int, head: bytes) -> int:
    """An SRTP datagram's RTP payload size, from its header (RFC 3550 5.1, 5.3.1)."""
    header = 12 + 4 * (head[0] & 0x0F)
    if head[0] & 0x10 and len(head) >= header + 4:  # the extension's length, in words
        header += 4 + 4 * int.from_bytes(head[header + 2 : header + 4], "big")
    return size - header - SRTP_TAG


def video_frames(flows: list[Any], min_rate: float) -> list[tuple[list[int], list[float], float]]:
    """Frame sizes, gaps and mean bit rate of each video direction at min_rate or more."""
    out: list[tuple[list[int], list[float], float]] = []
    for flow in flows:
        for port in flow.ports:
            counts: dict[int, int] = {}
            for _, _, src, head in flow.packets:
                if src == port and len(head) >= 2 and 128 <= head[0] <= 191:
                    counts[head[1] & 0x7F] = counts.get(head[1] & 0x7F, 0) + 1
            video = max(counts, key=lambda pt: counts[pt], default=None)  # the busiest
            frames: dict[int, list[float]] = {}  # RTP timestamp -> [first seen, bytes]
            for t, size, src, head in flow.packets:
                if src != port or len(head) < 16 or not 128 <= head[0] <= 191:
                    continue
                if head[1] & 0x7F != video:
                    continue
                frame = frames.setdefault(int.from_bytes(head[4:8], "big"), [t, 0.0])
                frame[1] += rtp_payload(size, head) - VP8_DESCRIPTOR
            duration = flow.end - flow.start
            rate = sum(f[1] for f in frames.values()) * 8 / duration
            if rate < min_rate:
                continue
            starts = sorted(f[0] for f in frames.values())
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            out.append(([int(f[1]) for f in frames.values()], gaps, rate))
    return out


def quantiles_float(values: list[float]) -> list[float]:
    data = np.sort(np.array(values))
    if data.size > SAMPLES:
        data = np.quantile(data, np.linspace(0, 1, SAMPLES), method="nearest")
    return [float(v) for v in data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path, help="a bench/classify.py --save file with calls")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--video", type=Path, help="also write a video profile here")
    parser.add_argument(
        "--min-rate", type=float, default=1.2e6, help="video directions counted, bit/s"
    )
    args = parser.parse_args(argv)
    audio: list[int] = []
    audio_gaps: list[float] = []
    feedback: list[int] = []
    seconds = 0.0
    calls = [f for f in load(args.capture) if f.kind == "call" and len(f.packets) >= MIN_PACKETS]
    if not calls:
        print(f"no call flows in {args.capture}", file=sys.stderr)
        return 1
    for flow in calls:
        seconds += 2 * (flow.end - flow.start)  # both directions
        last: dict[int, float] = {}  # source port -> its last Opus packet's time
        for t, size, src, head in flow.packets:
            if len(head) < 2 or not 128 <= head[0] <= 191:
                continue
            if head[1] == FEEDBACK:
                feedback.append(size)
            elif head[1] & 0x7F == OPUS:
                audio.append(size)
                if src in last:
                    audio_gaps.append(t - last[src])
                last[src] = t
    doc = {
        "source": f"{len(calls)} Chromium calls, bench/classify.py --save ({args.capture.name})",
        "command": "bench/audio_profile.py " + args.capture.name,
        "audio_packets": len(audio),
        "audio_rate": round(len(audio) / seconds, 2),
        "audio_size": quantiles(audio),
        "audio_gap": [round(g, 5) for g in quantiles_float(audio_gaps)],
        "feedback_packets": len(feedback),
        "feedback_rate": round(len(feedback) / seconds, 2),
        "feedback_size": quantiles(feedback),
    }
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(
        f"{len(calls)} calls, {seconds / 2:.0f} s: audio {doc['audio_rate']}/s per direction "
        f"(p10-p90 {np.percentile(audio, 10):.0f}-{np.percentile(audio, 90):.0f} B, gaps "
        f"{np.percentile(audio_gaps, 10) * 1e3:.1f}-{np.percentile(audio_gaps, 90) * 1e3:.1f} ms), "
        f"feedback {doc['feedback_rate']}/s "
        f"(p10-p90 {np.percentile(feedback, 10):.0f}-{np.percentile(feedback, 90):.0f} B)"
    )
    if args.video:
        directions = video_frames(calls, args.min_rate)
        if not directions:
            print(f"no video direction at {args.min_rate:g} bit/s or more", file=sys.stderr)
            return 1
        profiles = [
            {
                "frames": len(sizes),
                "frame_rate": round(len(gaps) / sum(gaps), 3),
                "mean_bitrate": round(rate),
                "key_interval": None,
                "interval": [round(g, 4) for g in quantiles_float(gaps)],
                "delta_size": quantiles(sizes),
                "key_size": [],
            }
            for sizes, gaps, rate in directions
        ]
        video = {
            "source": f"the VP8 frames of each direction of Chromium calls at "
            f"{args.min_rate / 1e6:g} Mbit/s or more, bench/classify.py --save "
            f"({args.capture.name})",
            "command": f"bench/audio_profile.py {args.capture.name} --video",
            "directions": profiles,
        }
        args.video.write_text(json.dumps(video, separators=(",", ":")) + "\n")
        for p in profiles:
            print(
                f"video: {p['frames']} frames, {p['frame_rate']} a second, "
                f"{p['mean_bitrate'] / 1e6:.2f} Mbit/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
