"""Issue 10's Done-when runs with real processes: seeders capped at a rate, a fetch, a kill.

``zmesh up --relays 6``; N ``zmesh share`` seeders of one random file, each with
``--rate R``; ``zmesh get --json`` fetches it; optionally one seeder is killed with
SIGKILL once the fetch's progress passes a fraction.  Prints the fetch's JSON figures and
checks the file (the same bytes, SHA-256).

    python bench/chunks_fetch.py               # both Done-when items at full size
    python bench/chunks_fetch.py --size 8MB --rate 2MB --kill 0.4
    python bench/chunks_fetch.py --compare --size 16MB --rate 2MB

``--compare`` runs the issue's baselines in one run: three seeders at R against one
seeder at R (aggregate throughput), and an uncapped fetch through circuits from three
seeders against a direct download of the same bytes without circuits (plain HTTP from a
server on loopback: the floor of moving the bytes at all).
"""

import argparse
import contextlib
import functools
import hashlib
import http.server
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

UP_TIMEOUT = 180.0
SHARE_TIMEOUT = 60.0
GET_TIMEOUT = 300.0


def _zmesh(*args: str) -> list[str]:
    return [sys.executable, "-m", "zmesh", *args]


@contextlib.contextmanager
def _mesh(work: Path, relays: int = 6, web: str = "off") -> Iterator[list[str]]:
    """``zmesh up --relays N`` (serving the page on ``web``): yields its bootstrap URLs."""
    out, err = work / "up.out", work / "up.err"
    cmd = _zmesh("up", "--relays", str(relays), "--web", web, "--control", "off")
    cmd += ["--socks", "127.0.0.1:0", "--data", str(work / "mesh")]
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, start_new_session=True)
    try:
        deadline = time.monotonic() + UP_TIMEOUT
        while "Press Ctrl-C" not in out.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("zmesh up failed: " + out.read_text() + err.read_text()[-3000:])
            time.sleep(0.2)
        line = next(x for x in out.read_text().splitlines() if x.startswith("For zmesh share"))
        yield [w for w in line.split() if w.startswith("http")]
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fetch_run(
    work: Path, size: int, rate: str | None, seeders: int = 3, kill_at: float | None = None
) -> dict[str, Any]:
    """One run; returns the fetch's JSON plus ``intact``, ``killed_at`` and ``progress``
    (the number of JSON progress lines)."""
    payload = os.urandom(size)
    source = work / "file"
    source.write_bytes(payload)
    with _mesh(work) as urls:
        boot = [a for u in urls for a in ("--bootstrap", u)]
        shares: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(seeders):
                cmd = _zmesh("share", str(source), *boot, "--data", str(work / f"seed{i}"))
                cmd += ["--rate", rate] if rate else []
                with (work / f"seed{i}.out").open("w") as o, (work / f"seed{i}.err").open("w") as e:
                    shares.append(subprocess.Popen(cmd, stdout=o, stderr=e, start_new_session=True))
            deadline = time.monotonic() + SHARE_TIMEOUT
            printed = [""]
            while "" in printed or any(
                "listening" not in (work / f"seed{i}.err").read_text() for i in range(seeders)
            ):
                printed = [(work / f"seed{i}.out").read_text().strip() for i in range(seeders)]
                if time.monotonic() > deadline:
                    raise RuntimeError("the seeders did not start")
                time.sleep(0.2)
            assert len(set(printed)) == 1, printed  # one file, one id, on stdout alone
            cid = printed[0]
            time.sleep(5.0)  # the seeders publish their provider records
            out = work / "got"
            cmd = _zmesh("get", cid, "-o", str(out), *boot, "--json", "--data", str(work / "get"))
            killed_at, lines = None, 0
            with subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ) as get:
                assert get.stderr is not None and get.stdout is not None
                for line in get.stderr:
                    if not line.startswith("{"):
                        sys.stderr.write(f"get: {line}")  # an error says why
                        continue
                    lines += 1
                    progress = json.loads(line)
                    fraction = progress["bytes"] / max(progress["total"], 1)
                    if kill_at is not None and killed_at is None and fraction >= kill_at:
                        os.killpg(shares[0].pid, signal.SIGKILL)
                        killed_at = fraction
                result: dict[str, Any] = json.loads(get.stdout.read())
                assert get.wait(GET_TIMEOUT) == 0
            got = out.read_bytes()
            result["intact"] = (
                got == payload and result["sha256"] == hashlib.sha256(got).hexdigest()
            )
            result["killed_at"] = killed_at
            result["progress"] = lines
            return result
        finally:
            for proc in shares:
                _stop(proc)


def direct_seconds(work: Path, size: int) -> float:
    """Seconds to download ``size`` random bytes over plain HTTP on loopback (no circuit)."""
    root = work / "direct"
    root.mkdir()
    (root / "file").write_bytes(os.urandom(size))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

    handler = functools.partial(Quiet, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        start = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/file") as r:
            got = len(r.read())
        took = time.monotonic() - start
        server.shutdown()
    assert got == size
    return took


def compare(size: int, rate: str, rounds: int) -> None:
    """The issue's two baselines, ``rounds`` times each, medians and ratios."""
    rows: dict[str, list[float]] = {"three": [], "one": [], "circuits": [], "direct": []}
    for _ in range(rounds):
        for name, seeders, cap in (("three", 3, rate), ("one", 1, rate), ("circuits", 3, None)):
            with tempfile.TemporaryDirectory(prefix="zm-bench-") as tmp:
                result = fetch_run(Path(tmp), size, cap, seeders=seeders)
            assert result["intact"], result
            rows[name].append(result["seconds"])
            print(
                f"{name}: {result['seconds']} s from {len(result['sources'])} sources", flush=True
            )
        with tempfile.TemporaryDirectory(prefix="zm-bench-") as tmp:
            rows["direct"].append(direct_seconds(Path(tmp), size))
    med = {k: statistics.median(v) for k, v in rows.items()}
    mb = size / 1e6
    print(f"{size:,} bytes, medians of {rounds}:")
    print(f"  3 seeders at {rate}/s: {med['three']:.2f} s ({mb / med['three']:.2f} MB/s); "
          f"1 seeder at {rate}/s: {med['one']:.2f} s ({mb / med['one']:.2f} MB/s); "
          f"aggregate {med['one'] / med['three']:.2f}x")  # fmt: skip
    print(f"  uncapped through circuits (3 seeders): {med['circuits']:.2f} s "
          f"({mb / med['circuits']:.1f} MB/s); direct HTTP without circuits: "
          f"{med['direct']:.3f} s ({mb / med['direct']:.0f} MB/s); "
          f"ratio {med['direct'] / med['circuits']:.3f}x")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", help="bytes (default: both Done-when items)")
    parser.add_argument("--rate", default="2MB")
    parser.add_argument("--kill", type=float, default=None)
    parser.add_argument("--compare", action="store_true", help="the baselines (see above)")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare (default 3)")
    args = parser.parse_args()
    runs = [(64_000_000, "4MB", 0.4), (48_000_000, "2MB", None)]
    if args.size:
        size = int(float(args.size.upper().rstrip("B").replace("M", "e6").replace("K", "e3")))
        runs = [(size, args.rate, args.kill)]
    if args.compare:
        compare(runs[-1][0] if args.size else 16_000_000, args.rate, args.rounds)
        return 0
    for size, rate, kill in runs:
        with tempfile.TemporaryDirectory(prefix="zm-bench-") as tmp:
            start = time.monotonic()
            result = fetch_run(Path(tmp), size, rate, kill_at=kill)
            took = time.monotonic() - start
        print(
            f"{size:,} bytes, 3 seeders at {rate}/s, kill at {kill}: seconds {result['seconds']}, "
            f"sources {len(result['sources'])}, circuits {result['circuits']}, intact "
            f"{result['intact']}, killed at {result['killed_at']}, run {took:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
