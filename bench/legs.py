"""Benchmark: a session over two legs against one over a single circuit (issue 8).

Starts ``zmesh up --relays N`` (its SOCKS proxy runs sessions of two legs, the default)
and, on the same relays, a second proxy ``zmesh proxy --legs 1``.  Then, round by round,
downloads the same body from a local HTTP server through each proxy in turn (the order
alternates), over a fresh SOCKS username each time so that every download gets a new
session.  Prints the median throughput of each, and the median of the per-round ratios
two legs / one leg (the goal: no worse than 0.9x).  1 MB = 10^6 bytes.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from heal import LIVE, Mesh, free_ports, log, payload

import zmesh
from zmesh.runtime.http import serve_fixed

MB = 1_000_000
READ_SIZE = 65536
TIMEOUT = 120.0


async def socks_get(socks_port: int, port: int, user: bytes, size: int) -> float:
    """GET http://127.0.0.1:``port``/ through the SOCKS5 proxy with username ``user``;
    returns the seconds it took; RuntimeError if the body is short."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", socks_port)
    try:
        writer.write(b"\x05\x01\x02")  # username/password (RFC 1929): the isolation key
        if await reader.readexactly(2) != b"\x05\x02":
            raise RuntimeError("the proxy refused username authentication")
        writer.write(b"\x01" + bytes([len(user)]) + user + b"\x01x")
        if (await reader.readexactly(2))[1] != 0:
            raise RuntimeError("the proxy refused the username")
        writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
        head = await asyncio.wait_for(reader.readexactly(10), TIMEOUT)
        if head[1] != 0:
            raise RuntimeError(f"the proxy answered SOCKS code {head[1]}")
        writer.write(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        received = 0
        while chunk := await asyncio.wait_for(reader.read(READ_SIZE), TIMEOUT):
            received += len(chunk)
        if received < size:
            raise RuntimeError(f"got {received} bytes of {size}")
        return time.monotonic() - start
    finally:
        writer.close()


async def second_proxy(mesh: Mesh, legs: int) -> tuple[subprocess.Popen[bytes], int]:
    """``zmesh proxy --legs LEGS`` bootstrapped from the mesh's relays; (process, port)."""
    doc = await mesh.status()
    (port,) = free_ports(1)
    cmd = [sys.executable, "-m", "zmesh", "proxy", "--legs", str(legs)]
    cmd += ["--socks", f"127.0.0.1:{port}"]
    for relay in doc["relays"]:
        cmd += ["--bootstrap", relay["url"]]
    env = dict(os.environ)
    source = str(Path(zmesh.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            raise RuntimeError("zmesh proxy --legs 1 exited before it was ready")
        if b"SOCKS5 proxy ready" in line:
            return proc, port
    raise TimeoutError("zmesh proxy --legs 1 was not ready in time")


async def run(size: int, rounds: int, relays: int) -> int:
    body = payload(size, 1)
    server, url = await serve_fixed(body, "application/octet-stream")
    http_port = int(url.rsplit(":", 1)[1])
    mesh = Mesh(relays)
    proc = None
    try:
        await mesh.start()
        proc, one_port = await second_proxy(mesh, 1)
        subjects = {"two legs": mesh.socks_port, "one leg": one_port}
        mbps: dict[str, list[float]] = {name: [] for name in subjects}
        ratios = []
        for r in range(rounds + 1):  # round 0 warms both up and is not counted
            order = list(subjects) if r % 2 else list(reversed(subjects))
            took = {}
            for name in order:
                user = f"{name[:3]}-{r}".encode()
                took[name] = await socks_get(subjects[name], http_port, user, size)
            if r == 0:
                continue
            for name, seconds in took.items():
                mbps[name].append(size / seconds / MB)
            ratios.append(took["one leg"] / took["two legs"])
            log(
                f"round {r}: " + ", ".join(f"{n} {size / t / MB:.2f} MB/s" for n, t in took.items())
            )
        print(f"{size / MB:.0f} MB downloads through `zmesh up --relays {relays}`, {rounds} rounds")
        for name, values in mbps.items():
            print(f"  {name:9s} median {statistics.median(values):6.2f} MB/s")
        print(f"  ratio two legs / one leg: median {statistics.median(ratios):.2f}x")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.to_thread(proc.wait)
        await mesh.close()
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50, help="MB per download (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--relays", type=int, default=6, help="relays (default 6)")
    args = parser.parse_args()
    if args.size < 1 or args.rounds < 1 or not 3 <= args.relays <= 12:
        parser.error("size and rounds must be positive, relays 3 to 12")
    try:
        return asyncio.run(run(args.size * MB, args.rounds, args.relays))
    finally:
        for mesh in list(LIVE):
            mesh.kill_now()


if __name__ == "__main__":
    sys.exit(main())
