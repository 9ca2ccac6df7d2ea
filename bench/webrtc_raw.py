"""Benchmark: raw WebRTC data-channel throughput between two processes on loopback.

This is the transport ceiling that later end-to-end benchmarks compare against: no
zMesh protocol, no crypto, just :mod:`zmesh.runtime.webrtc` transports (libdatachannel
underneath) carrying opaque messages.

The parent process dials; a child process (started with ``subprocess``, a fresh
interpreter) answers.  Offers and answers travel over the child's stdin/stdout as JSON
lines.  Each run opens a new connection, so every run also gives one setup time: from
``dial()`` to an open channel, including the child's answer and the pipe round trip.
The sender pushes ``--megabytes`` of one message size as fast as the transport takes
them, pausing above 4 MiB buffered until ``onbufferedamountlow`` (threshold 1 MiB); the
receiver counts bytes and answers ``done`` over the channel when it has them all, so the
time covers delivery to the receiver's ``onmessage``.  Figures are medians over
``--rounds`` runs per size, after one warm-up connection; the ratio column compares each
size's median with the first size's (by default 64 KiB, the ceiling).

Sizes: 65536 and 16384 bytes, and 8200 bytes (an 8192-byte cell plus the 8-byte frame
header: what the link carries).
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

from _harness import note, print_table

from zmesh.runtime import webrtc

SIZES = (65536, 16384, 8200)
HIGH_WATER = 4 << 20
LOW_WATER = 1 << 20
DONE = b"done"


# -- the child: answers offers and receives ------------------------------------------------


async def child_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command.get("quit"):
            return
        total = int(command["total"])
        pending, answer_sdp = await webrtc.answer(command["offer"], loopback=True)
        print(json.dumps({"answer": answer_sdp}), flush=True)
        transport = await pending.connected()
        received = 0
        closed = asyncio.Event()

        def on_message(
            data: bytes, transport: webrtc.WebRTCTransport = transport, total: int = total
        ) -> None:
            nonlocal received
            received += len(data)
            if received == total:
                transport.send(DONE)

        transport.onmessage = on_message
        transport.onclose = closed.set
        await closed.wait()
        await transport.wait_closed()


# -- the parent: dials and sends -----------------------------------------------------------


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> "Child":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def request(self, command: dict[str, object]) -> dict[str, str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise SystemExit("the child process died")
        reply: dict[str, str] = json.loads(line)
        return reply

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b'{"quit": true}\n')
        await self.process.stdin.drain()
        self.process.stdin.close()
        await self.process.wait()


async def one_run(child: Child, size: int, total: int) -> tuple[float, float]:
    """Connect, send ``total`` bytes in ``size``-byte messages; (setup s, transfer s)."""
    count = total // size
    total = count * size
    t0 = time.perf_counter()
    pending, offer = await webrtc.dial(loopback=True)
    reply = await child.request({"offer": offer, "total": total})
    transport = await pending.complete(reply["answer"])
    setup = time.perf_counter() - t0

    done = asyncio.Event()
    low = asyncio.Event()
    transport.onmessage = lambda data: done.set() if data == DONE else None
    transport.bufferedAmountLowThreshold = LOW_WATER
    transport.onbufferedamountlow = low.set
    message = bytes(size)
    t1 = time.perf_counter()
    for _ in range(count):
        if transport.bufferedAmount > HIGH_WATER:
            low.clear()
            await low.wait()
        transport.send(message)
    await asyncio.wait_for(done.wait(), 120)
    transfer = time.perf_counter() - t1
    await transport.aclose()
    return setup, transfer


async def parent_main(sizes: list[int], runs: int, megabytes: float) -> None:
    total = int(megabytes * 1e6)
    child = await Child.start()
    try:
        note("warm-up connection")
        await one_run(child, 16384, 1 << 20)
        setups: list[float] = []
        rows = []
        medians: list[float] = []
        for size in sizes:
            rates = []
            for r in range(runs):
                setup, transfer = await one_run(child, size, total)
                setups.append(setup)
                count = total // size
                rates.append(count * size / transfer / 1e6)
                note(
                    f"size {size}: run {r + 1}/{runs}: {rates[-1]:.1f} MB/s, "
                    f"setup {setup * 1e3:.1f} ms"
                )
            median = statistics.median(rates)
            medians.append(median)
            rows.append(
                [
                    str(size),
                    f"{median:.1f}",
                    f"{min(rates):.1f}-{max(rates):.1f}",
                    f"{median * 1e6 / size:,.0f}",
                    f"{median / medians[0]:.2f}",
                ]
            )
    finally:
        await child.stop()

    print(
        f"WebRTC data channel, two processes on loopback (aiolibdatachannel "
        f"{version('aiolibdatachannel')}), {megabytes:g} MB per run, median of {runs} runs"
    )
    print_table(["message bytes", "MB/s", "range", "messages/s", f"ratio to {sizes[0]}"], rows)
    q = statistics.quantiles(setups, n=4) if len(setups) > 1 else [setups[0]] * 3
    print(
        "setup (dial -> open, signaling over a pipe): "
        f"median {statistics.median(setups) * 1e3:.1f} ms, "
        f"quartiles {q[0] * 1e3:.1f}-{q[2] * 1e3:.1f} ms over {len(setups)} connections"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="runs (connections) per message size (default 5)"
    )
    parser.add_argument(
        "--megabytes", type=float, default=64.0, help="data per run, in MB (default 64)"
    )
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(s) for s in text.split(",")],
        default=list(SIZES),
        help="comma-separated message sizes in bytes (default 65536,16384,8200)",
    )
    parser.add_argument("--quick", action="store_true", help="2 runs of 4 MB (smoke test)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(child_main())
        return 0
    if args.quick:
        args.rounds, args.megabytes = 2, 4.0
    if (
        args.rounds < 1
        or args.megabytes <= 0
        or any(not 1 <= s <= webrtc.MAX_MESSAGE_SIZE for s in args.sizes)
    ):
        parser.error("rounds and megabytes must be positive, sizes within 1..262144")
    asyncio.run(parent_main(args.sizes, args.rounds, args.megabytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
