"""Benchmark and traffic source: zMesh links inside a video track against data channels.

In one process it builds client -> guard -> exit, each link over the transport chosen
(``media``: :mod:`zmesh.runtime.media`, the link inside VP8 frames of an aiortc video
track; ``datachannel``: :mod:`zmesh.runtime.webrtc`, libdatachannel), builds a 2-hop
circuit and, ``--rounds`` times, opens a stream through it to a local TCP server that sends
``--size`` bytes.  It reports:

* **first byte**: stream open to the first data byte (the circuit already built);
* **goodput**: stream bytes over the time from the first byte to the last, in Mbit/s;
* for media: frames sent and bytes resent by the client's and guard's media links.

``--drop P`` loses each media frame with probability P before aiortc sends it (a frame
lost for good, beyond what RTP's NACK and RTX repair), to measure the media link's own
retransmission.

Both transports run in the same invocation, one after the other, so the figures compare.
For a packet capture of the media transport alone (the classifier, bench/classify.py),
``--transport media --seconds 60`` keeps streaming for 60 s instead (and idles between
streams if ``--idle`` is given); the UDP flows are on 127.0.0.1.  The entry point for a
script is :func:`chain` (an async context manager yielding the three drivers) and
:func:`download`::

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/media.py --size 4MB --rounds 3
    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/media.py --transport media --seconds 60

Progress goes to stderr, results to stdout.
"""

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType

from zmesh.exit_policy import ExitPolicy
from zmesh.identity import Flags, Identity
from zmesh.node import Node
from zmesh.runtime import media, webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.daemon import relay_config
from zmesh.runtime.entropy import SystemRng
from zmesh.session.endpoint import StreamData, StreamFinished

TRANSPORTS: dict[str, ModuleType] = {"datachannel": webrtc, "media": media}


@dataclass
class Chain:
    client: AsyncNode
    guard: AsyncNode
    exit: AsyncNode
    cid: int


@contextlib.asynccontextmanager
async def chain(transport: str) -> AsyncIterator[Chain]:
    """client -> guard -> exit in this process, every link over ``transport``, and a
    2-hop circuit built through them."""
    rng = SystemRng()
    rtc = TRANSPORTS[transport]

    def driver(flags: Flags = Flags.NONE) -> AsyncNode:
        node = Node(Identity.generate(rng), rng, wall_clock(), relay_config(flags, private=True))
        policy = ExitPolicy.allow_private() if flags & Flags.EXIT else None
        return AsyncNode(node, rtc=rtc, loopback=True, exit_policy=policy)

    client, guard, exit_ = driver(), driver(), driver(Flags.EXIT)
    try:
        await media.link_nodes(client, guard, rtc)
        await media.link_nodes(guard, exit_, rtc)
        now = wall_clock()
        path = [guard.node.descriptor(now), exit_.node.descriptor(now)]
        cid = await client.build_circuit(path, timeout=20)
        yield Chain(client, guard, exit_, cid)
    finally:
        drivers = (client, guard, exit_)
        transports = [t for d in drivers for t in d._transports.values()]
        for d in drivers:
            await d.close()
        for t in transports:  # let each connection finish closing
            with contextlib.suppress(Exception):
                await t.wait_closed()  # type: ignore[attr-defined]


async def serve_bytes(size: int) -> tuple[asyncio.Server, int]:
    """A TCP server on 127.0.0.1 that sends ``size`` bytes to each connection."""
    block = bytes(range(256)) * 256

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        left = size
        with contextlib.suppress(ConnectionError):
            while left:
                writer.write(block[: min(left, len(block))])
                left -= min(left, len(block))
                await writer.drain()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def download(c: Chain, port: int, timeout: float = 120.0) -> tuple[float, float, int]:
    """One stream through the circuit: (first byte in s, goodput in Mbit/s, bytes)."""
    client = c.client
    session = client.session_for([c.cid])
    start = time.monotonic()
    pipe = client.open_stream(session, f"127.0.0.1:{port}")
    await pipe.wait_connected(timeout)
    first = last = 0.0
    got = 0
    async with asyncio.timeout(timeout):
        while True:
            event = await pipe.receive()
            if isinstance(event, StreamData):
                last = time.monotonic()
                if not got:
                    first = last
                got += len(event.data)
                n = len(event.data)
                client.call(
                    lambda now, n=n: client.node.sessions.consume(session, pipe.sid, n, now)
                )
            elif isinstance(event, StreamFinished):
                break
            else:
                raise RuntimeError(f"the stream ended with {event!r}")
    pipe.release()
    seconds = max(last - first, 1e-9)
    return first - start, got * 8 / seconds / 1e6, got


def _media_counters(c: Chain) -> str:
    links = [
        t.link
        for d in (c.client, c.guard, c.exit)
        for t in d._transports.values()
        if isinstance(t, media.MediaTransport) and t.link is not None
    ]
    frames = sum(link.frames_sent for link in links)
    sent = sum(link.data_sent for link in links)
    resent = sum(link.resent for link in links)
    return f"{frames} frames, {sent / 1e6:.1f} MB carried, {resent / 1e3:.0f} KB resent"


async def bench(transport: str, size: int, runs: int, seconds: float) -> dict[str, object]:
    server, port = await serve_bytes(size)
    try:
        t0 = time.monotonic()
        async with chain(transport) as c:
            setup = time.monotonic() - t0
            print(f"{transport}: chain and circuit up in {setup:.1f} s", file=sys.stderr)
            firsts: list[float] = []
            rates: list[float] = []
            end = time.monotonic() + seconds
            while len(rates) < runs or time.monotonic() < end:
                first, rate, got = await download(c, port)
                if got != size:
                    raise RuntimeError(f"{transport}: got {got} of {size} bytes")
                firsts.append(first * 1000)
                rates.append(rate)
                print(
                    f"{transport}: first byte {first * 1000:.0f} ms, {rate:.2f} Mbit/s",
                    file=sys.stderr,
                )
            extra = _media_counters(c) if transport == "media" else ""
    finally:
        server.close()
    return {
        "transport": transport,
        "setup_s": round(setup, 2),
        "first_byte_ms": round(statistics.median(firsts), 1),
        "first_byte_all": [round(f) for f in firsts],
        "goodput_mbit_s": round(statistics.median(rates), 2),
        "goodput_all": [round(r, 2) for r in rates],
        "media_links": extra,
    }


def drop_frames(probability: float) -> None:
    """Lose each media frame with ``probability`` (see the module doc)."""
    put = media._FrameTrack.put
    rng = random.Random(1)

    def lossy(track: media._FrameTrack, frame: bytes, pts: int) -> None:
        if rng.random() >= probability:
            put(track, frame, pts)

    media._FrameTrack.put = lossy  # type: ignore[method-assign]


def parse_size(text: str) -> int:
    units = {"KB": 1000, "MB": 1000**2, "B": 1}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["both", *TRANSPORTS], default="both")
    parser.add_argument("--size", type=parse_size, default=parse_size("2MB"))
    parser.add_argument("--rounds", type=int, default=3, help="streams per transport")
    parser.add_argument("--quick", action="store_true", help="500 KB, one round (a smoke run)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stream at least this long")
    parser.add_argument("--drop", type=float, default=0.0, help="media frames lost (0..1)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.rounds = 500_000, 1
    if args.drop:
        drop_frames(args.drop)
    names = list(TRANSPORTS) if args.transport == "both" else [args.transport]
    results = [asyncio.run(bench(n, args.size, args.rounds, args.seconds)) for n in names]
    print(
        f"size {args.size / 1e6:.1f} MB per stream, 2-hop circuit, rounds {args.rounds}, "
        f"media frames dropped {args.drop:.0%}"
    )
    print(f"{'transport':<12} {'first byte ms':>14} {'Mbit/s':>8}  all")
    for r in results:
        print(
            f"{r['transport']:<12} {r['first_byte_ms']:>14} {r['goodput_mbit_s']:>8}  "
            f"{r['first_byte_all']} ms, {r['goodput_all']} Mbit/s {r['media_links']}"
        )
    if len(results) == 2:
        dc, md = results
        print(
            f"ratio media/datachannel: first byte "
            f"{float(md['first_byte_ms']) / float(dc['first_byte_ms']):.1f}x, goodput "  # type: ignore[arg-type]
            f"{float(md['goodput_mbit_s']) / float(dc['goodput_mbit_s']):.3f}x"  # type: ignore[arg-type]
        )


if __name__ == "__main__":
    main()
