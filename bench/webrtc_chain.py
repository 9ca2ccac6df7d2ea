"""Benchmark: a 3-hop zMesh circuit against a bare WebRTC chain of the same shape.

The chain is the transport's ceiling for a circuit: four WebRTC data-channel links
through three forwarding processes with no zMesh in them, client -> F1 -> F2 -> F3 ->
sink, each link one :mod:`zmesh.runtime.webrtc` transport (libdatachannel, through the
Python binding zMesh uses), each message the largest both ends allow (the negotiated
``max-message-size``, 256 KiB between two libdatachannel ends).  A forwarder hands every
message it receives to its other link, unchanged.  The client keeps at most ``WINDOW``
bytes unacknowledged: the sink returns the count it has received every ``ACK_EVERY``
bytes, back through the chain, so no forwarder's send buffer grows without bound (zMesh
bounds its own by link credit, D15).  Every process is a fresh interpreter started with
``subprocess``; offers and answers travel over their stdin/stdout as JSON lines.

The zMesh side is ``zmesh up --relays 4`` with a SOCKS5 proxy and a local HTTP server,
as ``bench/vs_tor.py`` runs it: one stream downloads the same number of bytes through a
3-hop circuit built before the clock starts (SHA-256 checked).

Each round times both, in an order that alternates from round to round, and reads the
CPU time (user + system, every thread) of the forwarding processes from ``/proc``: the
chain's three forwarders, and zMesh's relay processes (all four; the one off the circuit
only sends keepalives).  CPU per MB per hop is that CPU over the megabytes moved, over 3.
Latency, after each round's transfers: a cell-sized (8,200-byte) message echoed by the sink
(8 link crossings) against zMesh's first byte on an open circuit (SOCKS connect and a tiny GET:
two round trips over 3 links, 12 crossings, plus the exit's TCP connect and the server),
alternating, ``vs_tor.GAP`` idle before each sample; the transport's floor for that first
byte is 12 crossings at the chain's latency per crossing.
The figures are medians over ``--rounds``; the ratio is the median of the per-round
ratios (zMesh / chain).  1 MB = 10^6 bytes.  Progress goes to stderr, results to stdout.
Needs Linux (``/proc``).
"""

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import vs_tor
from _harness import note, print_table

from zmesh.runtime import webrtc

HOPS = vs_tor.HOPS
WINDOW = 8 << 20  # bytes the chain's client keeps unacknowledged
ACK_EVERY = 1 << 20  # the sink acknowledges every this many bytes (and the last one)
ACK = b"A"  # an acknowledgement: ACK | u64 bytes received, 9 bytes (data is larger)
ECHO = b"E"  # a message the sink sends back as it is (the latency probe)
CELL = 8200  # an echo message: one zMesh cell on the wire (8,192 bytes + the frame header)
LINKS = HOPS + 1  # client -> F1 -> F2 -> F3 -> sink
OPEN_CROSSINGS = 2 * 2 * HOPS  # first byte on an open circuit: 2 round trips over 3 links
TICK = os.sysconf("SC_CLK_TCK")
LATENCY_SAMPLES = 10  # per round and side


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time of process ``pid``, all its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15)


# -- the children: a forwarder or the sink ---------------------------------------------------


class Lines:
    """JSON lines over this process's stdin and stdout."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    @classmethod
    async def open(cls) -> "Lines":
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return cls(reader)

    async def read(self) -> dict[str, str] | None:
        line = await self.reader.readline()
        if not line:
            return None
        command: dict[str, str] = json.loads(line)
        return command

    @staticmethod
    def write(reply: dict[str, object]) -> None:
        print(json.dumps(reply), flush=True)


class Sink:
    """The end of the chain: counts bytes and acknowledges them upstream."""

    def __init__(self, transport: webrtc.WebRTCTransport) -> None:
        self.transport = transport
        self.total = self.received = self.acked = 0
        transport.onmessage = self.on_data

    def expect(self, total: int) -> None:
        self.total, self.received, self.acked = total, 0, 0

    def on_data(self, data: bytes) -> None:
        if data[:1] == ECHO:
            self.transport.send(data)
            return
        self.received += len(data)
        if self.received - self.acked >= ACK_EVERY or self.received >= self.total:
            self.acked = self.received
            self.transport.send(ACK + self.received.to_bytes(8, "big"))


async def child_main() -> None:
    """A forwarder (an upstream then a downstream link) or the sink (upstream only)."""
    lines = await Lines.open()
    up: webrtc.WebRTCTransport | None = None
    down: webrtc.WebRTCTransport | None = None
    pending_down: webrtc.PendingConnection[webrtc.WebRTCTransport] | None = None
    connected: asyncio.Task[webrtc.WebRTCTransport] | None = None
    sink: Sink | None = None
    while (command := await lines.read()) is not None:
        op = command["op"]
        if op == "answer":  # the upstream link, offered by the previous process
            pending, sdp = await webrtc.answer(command["sdp"], loopback=True)
            connected = asyncio.ensure_future(pending.connected())
            lines.write({"sdp": sdp})
        elif op == "dial":  # the downstream link (a forwarder's)
            pending_down, sdp = await webrtc.dial(loopback=True)
            lines.write({"sdp": sdp})
        elif op == "complete":
            assert pending_down is not None and connected is not None
            down = await pending_down.complete(command["sdp"])
            up = await connected
            forward(up, down)
            lines.write({"ok": True})
        elif op == "open":  # the sink's upstream link
            assert connected is not None
            up = await connected
            sink = Sink(up)
            lines.write({"max_message_size": up.max_message_size})
        elif op == "expect":  # the sink: a new transfer of this many bytes
            assert sink is not None
            sink.expect(int(command["total"]))
            lines.write({"ok": True})
        elif op == "cpu":
            lines.write({"cpu": cpu_seconds(os.getpid())})
        elif op == "quit":
            break
    for transport in (up, down):
        if transport is not None:
            await transport.aclose()


def forward(up: webrtc.WebRTCTransport, down: webrtc.WebRTCTransport) -> None:
    """Every message from one link goes out on the other, unchanged."""
    up.onmessage = down.send
    down.onmessage = up.send


# -- the parent: the client ------------------------------------------------------------------


class Child:
    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process

    @classmethod
    async def start(cls, name: str) -> "Child":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(name, process)

    async def request(self, **command: object) -> dict[str, object]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} process died")
        reply: dict[str, object] = json.loads(line)
        return reply

    async def stop(self) -> None:
        assert self.process.stdin is not None
        with_pipe = self.process.returncode is None
        if with_pipe:
            self.process.stdin.write(b'{"op": "quit"}\n')
            await self.process.stdin.drain()
            self.process.stdin.close()
        await self.process.wait()


class Chain:
    """The client's end of client -> F1 -> F2 -> F3 -> sink."""

    def __init__(self, children: list[Child], first: webrtc.WebRTCTransport, size: int) -> None:
        self.forwarders = children[:HOPS]
        self.sink = children[HOPS]
        self.first = first
        self.size = size
        self.acked = 0
        self.moved = asyncio.Event()
        self.echoed: asyncio.Future[None] | None = None
        first.onmessage = self._on_ack

    @classmethod
    async def build(cls) -> "Chain":
        children = [await Child.start(f"forwarder {i + 1}") for i in range(HOPS)]
        children.append(await Child.start("sink"))
        pending, offer = await webrtc.dial(loopback=True)
        answer = await children[0].request(op="answer", sdp=offer)
        first = await pending.complete(str(answer["sdp"]))
        for upstream, downstream in itertools.pairwise(children):
            offer = (await upstream.request(op="dial"))["sdp"]
            answer = await downstream.request(op="answer", sdp=offer)
            await upstream.request(op="complete", sdp=answer["sdp"])  # both its links open
        opened = await children[HOPS].request(op="open")
        size = min(int(str(opened["max_message_size"])), first.max_message_size)
        return cls(children, first, size)

    def _on_ack(self, data: bytes) -> None:
        if data[:1] == ECHO and self.echoed is not None and not self.echoed.done():
            self.echoed.set_result(None)
        elif data[:1] == ACK and len(data) == 9:
            self.acked = int.from_bytes(data[1:], "big")
            self.moved.set()

    async def transfer(self, total: int) -> float:
        """Push ``total`` bytes to the sink; seconds until it has acknowledged all."""
        await self.sink.request(op="expect", total=total)
        self.acked = 0
        message = bytes(self.size)
        sent = 0
        t0 = time.perf_counter()
        while sent < total:
            while sent - self.acked >= WINDOW:
                self.moved.clear()
                await self.moved.wait()
            chunk = message if total - sent >= self.size else message[: total - sent]
            self.first.send(chunk)
            sent += len(chunk)
        while self.acked < total:
            self.moved.clear()
            await asyncio.wait_for(self.moved.wait(), 120)
        return time.perf_counter() - t0

    async def echo_ms(self) -> float:
        """One cell-sized message to the sink and back (2 x 4 link crossings), in ms."""
        self.echoed = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        self.first.send(ECHO + bytes(CELL - 1))
        await asyncio.wait_for(self.echoed, 10)
        return (time.perf_counter() - t0) * 1e3

    async def cpu(self) -> float:
        """The forwarders' CPU seconds so far."""
        replies = [await f.request(op="cpu") for f in self.forwarders]
        return sum(float(str(reply["cpu"])) for reply in replies)

    async def close(self) -> None:
        await self.first.aclose()
        for child in (*self.forwarders, self.sink):
            await child.stop()


# -- zMesh: zmesh up, a SOCKS5 stream through a 3-hop circuit --------------------------------


@dataclass
class Zmesh:
    supervisor: vs_tor.Supervisor
    proc: vs_tor.ZmeshProc
    socks: int
    http_port: int
    payload: vs_tor.Payload
    relays: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, root: Path, payload: vs_tor.Payload, http_port: int) -> "Zmesh":
        """``zmesh up --relays 4`` with a SOCKS5 proxy; BenchError if it does not come up."""
        supervisor = vs_tor.Supervisor()
        (socks,) = vs_tor.free_ports(1)
        argv = [*vs_tor.zmesh_argv(), "up", "--relays", "4"]
        argv += ["--socks", f"{vs_tor.HOST}:{socks}", "--data", str(root)]
        note(f"zMesh: starting {' '.join(argv[1:])} ...")
        proc = vs_tor.ZmeshProc(supervisor.start("zmesh up", argv, None, pipe=True), root / "log")
        threading.Thread(target=proc.pump, name="zmesh-log", daemon=True).start()
        zmesh = cls(supervisor, proc, socks, http_port, payload)
        deadline = time.monotonic() + 120
        while not any(vs_tor.READY_LINE in line for _, line in proc.snapshot()):
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                supervisor.stop_all()
                raise vs_tor.BenchError(f"zmesh up did not come up:\n{vs_tor.tail(root / 'log')}")
            time.sleep(0.1)
        zmesh.relays = vs_tor.relay_pids(proc.proc.pid)
        note(f"zMesh: proxy ready; relay processes {zmesh.relays}")
        vs_tor.retry_until(
            "fetching through the zMesh exit",
            lambda: vs_tor.fetch_small(socks, vs_tor.unique_user("probe"), http_port),
            60.0,
        )
        return zmesh

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.relays)

    def first_byte_ms(self, user: str) -> float:
        """SOCKS connect and a tiny GET on ``user``'s open circuit, to the first byte."""
        return vs_tor.first_byte_ms(self.socks, user, self.http_port)

    def transfer(self) -> float:
        """One download through a circuit built beforehand; its seconds."""
        user = vs_tor.unique_user("bulk")
        vs_tor.warm_up(self.socks, user, self.http_port)
        rate = vs_tor.download_mb_s(self.socks, user, self.http_port, self.payload)
        return len(self.payload.data) / 1e6 / rate

    def stop(self) -> None:
        self.supervisor.stop_all()


# -- the rounds ------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    rates: list[float] = field(default_factory=list)  # MB/s
    cpu: list[float] = field(default_factory=list)  # ms per MB per hop
    latency: list[float] = field(default_factory=list)  # ms: chain echo, zMesh first byte


async def timed(
    side: Side, megabytes: float, run: Callable[[], object], cpu: Callable[[], object]
) -> None:
    """Record one transfer of ``side``: its rate and the forwarders' CPU per MB per hop."""

    async def value(call: Callable[[], object]) -> float:
        result = call()
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, float)
        return result

    before = await value(cpu)
    seconds = await value(run)
    used = await value(cpu) - before
    side.rates.append(megabytes / seconds)
    side.cpu.append(used * 1e3 / megabytes / HOPS)
    note(f"  {side.name}: {side.rates[-1]:.1f} MB/s, {side.cpu[-1]:.1f} ms CPU per MB per hop")


async def latencies(chain: Chain, zmesh: Zmesh, chain_side: Side, zmesh_side: Side) -> None:
    """Alternate samples: the chain's cell echo and zMesh's first byte on an open circuit."""
    user = vs_tor.unique_user("open")
    await asyncio.to_thread(vs_tor.warm_up, zmesh.socks, user, zmesh.http_port)
    for _ in range(LATENCY_SAMPLES):
        await asyncio.sleep(vs_tor.GAP)
        chain_side.latency.append(await chain.echo_ms())
        await asyncio.sleep(vs_tor.GAP)
        zmesh_side.latency.append(await asyncio.to_thread(zmesh.first_byte_ms, user))
    note(
        f"  latency: chain echo {statistics.median(chain_side.latency):.2f} ms, zMesh first "
        f"byte {statistics.median(zmesh_side.latency):.2f} ms (medians)"
    )


async def bench(rounds: int, megabytes: float, root: Path) -> None:
    total = int(megabytes * 1e6)
    payload = vs_tor.Payload(total)
    server, http_port = vs_tor.start_http_server(payload)
    chain_side, zmesh_side = Side("WebRTC chain"), Side("zMesh circuit")
    zmesh: Zmesh | None = None
    chain = await Chain.build()
    try:
        note(f"chain: up, {chain.size}-byte messages; warm-up transfer")
        await chain.transfer(min(total, 4_000_000))
        zmesh = await asyncio.to_thread(Zmesh.start, root, payload, http_port)
        z = zmesh
        for r in range(rounds):
            note(f"round {r + 1}/{rounds}")
            order = [chain_side, zmesh_side] if r % 2 == 0 else [zmesh_side, chain_side]
            for side in order:
                await asyncio.sleep(vs_tor.GAP)
                if side is chain_side:
                    await timed(side, total / 1e6, lambda: chain.transfer(total), chain.cpu)
                else:
                    await timed(
                        side,
                        total / 1e6,
                        lambda: asyncio.to_thread(z.transfer),
                        z.cpu,
                    )
            await latencies(chain, z, chain_side, zmesh_side)
    finally:
        await chain.close()
        if zmesh is not None:
            zmesh.stop()
        server.shutdown()
        server.server_close()

    rows = [
        [
            side.name,
            f"{statistics.median(side.rates):.1f}",
            f"{min(side.rates):.1f}-{max(side.rates):.1f}",
            f"{statistics.median(side.cpu):.1f}",
            f"{min(side.cpu):.1f}-{max(side.cpu):.1f}",
        ]
        for side in (chain_side, zmesh_side)
    ]
    rate_ratio = statistics.median(
        z / c for z, c in zip(zmesh_side.rates, chain_side.rates, strict=True)
    )
    cpu_ratio = statistics.median(
        z / c for z, c in zip(zmesh_side.cpu, chain_side.cpu, strict=True)
    )
    print(
        f"3 hops on loopback (aiolibdatachannel {version('aiolibdatachannel')}), "
        f"{megabytes:g} MB per transfer, median of {rounds} rounds; chain messages "
        f"{chain.size} bytes"
    )
    print_table(["path", "MB/s", "range", "CPU ms/MB/hop", "range"], rows)
    print(f"zMesh / chain: throughput {rate_ratio:.2f}x, CPU per MB per hop {cpu_ratio:.2f}x")
    echo = statistics.median(chain_side.latency)
    crossing = echo / (2 * LINKS)
    first = statistics.median(zmesh_side.latency)
    print(
        f"latency, medians of {len(chain_side.latency)}: chain echo of a {CELL}-byte message "
        f"{echo:.2f} ms ({2 * LINKS} link crossings, {crossing:.3f} ms each); zMesh first byte "
        f"on an open circuit {first:.2f} ms, against the transport's floor for its "
        f"{OPEN_CROSSINGS} crossings {OPEN_CROSSINGS * crossing:.2f} ms "
        f"({first / (OPEN_CROSSINGS * crossing):.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--megabytes", type=float, default=100.0, help="data per transfer, in MB (default 100)"
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 10 MB (smoke test)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(child_main())
        return 0
    if args.quick:
        args.rounds, args.megabytes = 1, 10.0
    if args.rounds < 1 or args.megabytes <= 0:
        parser.error("rounds and megabytes must be positive")
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="zmesh-chain-") as root:
        try:
            asyncio.run(bench(args.rounds, args.megabytes, Path(root)))
        except vs_tor.BenchError as exc:
            note(f"error: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
