"""Benchmark: what each shaping profile costs, and what the wire shows with it.

For each ``--shape`` mode (off, constant, video) it starts ``zmesh -v up --relays 4
--shape MODE`` on loopback and a threaded HTTP server (``bench/vs_tor.py``'s), then:

* **first byte, open circuit** and **fresh circuit** (a SOCKS username never used: the
  proxy builds circuits first), as ``bench/vs_tor.py`` measures them;
* **throughput**: ``--size`` bytes through one stream, SHA-256 checked;
* **the wire**: a raw packet socket on ``lo`` (AF_PACKET, as root; no tcpdump needed)
  records every UDP datagram of the mesh's own processes (their sockets found in
  ``/proc``), in three windows: idle (``--idle`` seconds with no stream), circuit setup
  (the fresh-circuit samples) and the transfer.  It reports the bytes on the wire per
  window (all links, both directions, DTLS and SCTP included), and the datagram sizes:
  each window's distinct sizes, and those seen during setup or transfer but never while
  idle (a size that shows only when circuits are built or data moves tells an observer
  so).

Overhead is wire bytes against the ``off`` run of the same task: idle rate (bytes/s of
cover), and the transfer's wire bytes over the ``off`` run's.  Run as root::

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/shaping.py --size 4MB

The exit status is non-zero only on errors.  Progress goes to stderr, results to stdout.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from _harness import note, print_table
from capture import Capture, cpu_seconds, descendants, ks, watch_ports
from vs_tor import (
    HOST,
    BenchError,
    Payload,
    Supervisor,
    ZmeshProc,
    download_mb_s,
    fetch_small,
    first_byte_ms,
    free_ports,
    parse_size,
    retry_until,
    start_http_server,
    tail,
    unique_user,
    warm_up,
    zmesh_argv,
)


@dataclass
class Run:
    mode: str
    ttfb_open_ms: list[float] = field(default_factory=list)
    ttfb_fresh_ms: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)  # MB/s
    idle: list[int] = field(default_factory=list)  # datagram sizes
    idle_s: float = 0.0
    idle_cpu: float = 0.0  # CPU seconds per second of the mesh's processes while idle
    setup: list[int] = field(default_factory=list)
    transfer: list[int] = field(default_factory=list)
    transfer_s: float = 0.0


def run_mode(mode: str, args: argparse.Namespace, payload: Payload, http_port: int) -> Run:
    run = Run(mode)
    supervisor = Supervisor()
    root = Path(tempfile.mkdtemp(prefix=f"zmesh-shaping-{mode}-"))
    (socks,) = free_ports(1)
    argv = [*zmesh_argv(), "-v", "up", "--relays", "4", "--socks", f"{HOST}:{socks}"]
    argv += ["--data", str(root), "--web", "off", "--control", "off", "--shape", mode]
    note(f"{mode}: starting {' '.join(argv[1:])} ...")
    capture = Capture()
    try:
        zp = ZmeshProc(supervisor.start("zmesh up", argv, None, pipe=True), root / "zmesh.log")
        threading.Thread(target=zp.pump, name="zmesh-log", daemon=True).start()
        started = time.monotonic()
        while not any(line.startswith("self-test") for _, line in zp.snapshot()):
            if zp.proc.poll() is not None or time.monotonic() - started > 180:
                raise BenchError(f"zmesh up did not get ready:\n{tail(zp.log)}")
            time.sleep(0.2)
        retry_until("a first fetch", lambda: fetch_small(socks, unique_user("p"), http_port), 60)
        capture.start()
        watch_ports(capture, zp.proc.pid)
        time.sleep(1.0)
        pids = descendants(zp.proc.pid)
        t0, cpu0 = time.monotonic(), cpu_seconds(pids)
        time.sleep(args.idle)
        run.idle_s = time.monotonic() - t0
        run.idle_cpu = (cpu_seconds(pids) - cpu0) / run.idle_s
        t_idle = (t0, t0 + run.idle_s)
        t0 = time.monotonic()
        for i in range(args.n):
            ms = first_byte_ms(socks, unique_user("fresh"), http_port)
            run.ttfb_fresh_ms.append(ms)
            note(f"  {mode} first byte, fresh circuit {i + 1}/{args.n}: {ms:.1f} ms")
        t_setup = (t0, time.monotonic())
        user = unique_user("open")
        warm_up(socks, user, http_port)
        for i in range(args.n):
            time.sleep(0.2)
            ms = first_byte_ms(socks, user, http_port)
            run.ttfb_open_ms.append(ms)
            note(f"  {mode} first byte, open circuit {i + 1}/{args.n}: {ms:.1f} ms")
        transfers: list[tuple[float, float]] = []
        for i in range(args.runs):
            user = unique_user("bulk")
            warm_up(socks, user, http_port)
            t0 = time.monotonic()
            rate = download_mb_s(socks, user, http_port, payload)
            transfers.append((t0, time.monotonic()))
            run.throughput.append(rate)
            note(f"  {mode} throughput {i + 1}/{args.runs}: {rate:.2f} MB/s, sha256 ok")
        time.sleep(0.5)
        capture.stop.set()
        run.idle = capture.window(*t_idle)
        run.setup = capture.window(*t_setup)
        run.transfer = capture.window(*transfers[0])  # the first transfer's window
        run.transfer_s = transfers[0][1] - transfers[0][0]
        note(f"  {mode}: {len(capture.ports)} mesh UDP ports, {len(capture.packets)} datagrams")
        if zp.proc.poll() is not None:
            raise BenchError(f"zmesh up exited during the run:\n{tail(zp.log)}")
    finally:
        capture.stop.set()
        supervisor.stop_all()
    return run


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "n/a"


def size_summary(sizes: list[int], top: int = 8) -> str:
    counts = Counter(sizes)
    common = ", ".join(f"{s}x{n}" for s, n in counts.most_common(top))
    return f"{len(counts)} sizes: {common}"


def report(runs: list[Run], size: int) -> dict[str, object]:
    off = next((r for r in runs if r.mode == "off"), None)
    rows = []
    doc: dict[str, object] = {}
    for r in runs:
        idle_rate = sum(r.idle) / r.idle_s if r.idle_s else 0.0
        wire = sum(r.transfer)
        over = f"{wire / sum(off.transfer):.2f}x" if off and off.transfer else "n/a"
        rows.append(
            [
                r.mode,
                med(r.ttfb_open_ms),
                med(r.ttfb_fresh_ms),
                med(r.throughput) if len(r.throughput) else "n/a",
                f"{idle_rate / 1e3:.0f}",
                f"{r.idle_cpu * 100:.0f}%",
                f"{wire / 1e6:.1f}",
                over,
            ]
        )
        idle_sizes = set(r.idle)
        doc[r.mode] = {
            "ttfb_open_ms": r.ttfb_open_ms,
            "ttfb_fresh_ms": r.ttfb_fresh_ms,
            "throughput_mb_s": r.throughput,
            "idle_bytes_per_s": round(idle_rate),
            "idle_cpu": round(r.idle_cpu, 3),
            "transfer_wire_bytes": wire,
            "transfer_s": round(r.transfer_s, 3),
            "sizes_idle": sorted(idle_sizes),
            "sizes_setup_not_idle": sorted(set(r.setup) - idle_sizes),
            "sizes_transfer_not_idle": sorted(set(r.transfer) - idle_sizes),
            "ks_idle_setup": ks(r.idle, r.setup),
            "ks_idle_transfer": ks(r.idle, r.transfer),
            "datagrams": {"idle": len(r.idle), "setup": len(r.setup), "transfer": len(r.transfer)},
        }
    print(f"\nCost of each profile ({size / 1e6:.1f} MB transfers; wire = UDP payload on lo,")
    print("all links, both directions; overhead = this mode's transfer wire bytes / off's):\n")
    print_table(
        [
            "mode",
            "first byte open ms",
            "first byte fresh ms",
            "MB/s",
            "idle wire KB/s",
            "idle CPU",
            "transfer wire MB",
            "vs off",
        ],
        rows,
    )
    print("\nDatagram sizes (UDP payload bytes): idle, how setup and transfer differ from idle,")
    print("and the sizes seen during setup or transfer but never while idle:")
    for r in runs:
        idle_sizes = set(r.idle)
        setup_new = sorted(set(r.setup) - idle_sizes)
        transfer_new = sorted(set(r.transfer) - idle_sizes)
        d_setup, d_transfer = ks(r.idle, r.setup), ks(r.idle, r.transfer)
        print(f"  {r.mode}: idle {size_summary(r.idle)}")
        print(
            f"  {r.mode}: size distribution vs idle (KS statistic, 0 = same): setup "
            f"{'n/a' if d_setup is None else f'{d_setup:.3f}'}, transfer "
            f"{'n/a' if d_transfer is None else f'{d_transfer:.3f}'}"
        )
        print(f"  {r.mode}: setup-only sizes {len(setup_new)}: {setup_new[:20]}")
        print(f"  {r.mode}: transfer-only sizes {len(transfer_new)}: {transfer_new[:20]}")
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="off,constant,video", help="comma-separated")
    parser.add_argument("--size", type=parse_size, default=4_000_000, help="transfer size")
    parser.add_argument("--n", type=int, default=5, help="first-byte samples of each kind")
    parser.add_argument("--runs", type=int, default=2, help="transfers per mode")
    parser.add_argument("--idle", type=float, default=5.0, help="idle window, seconds")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/shaping.py needs root (a packet socket on lo)", file=sys.stderr)
        return 2
    payload = Payload(args.size)
    server, http_port = start_http_server(payload)
    try:
        runs = [run_mode(mode, args, payload, http_port) for mode in args.modes.split(",")]
    except BenchError as exc:
        print(f"bench/shaping.py: {exc}", file=sys.stderr)
        return 1
    finally:
        server.shutdown()
    doc = report(runs, args.size)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
