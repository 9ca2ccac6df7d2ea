"""Benchmark: a download through ``zmesh up`` survives two relays dying (or freezing) mid-way.

For each run and each signal, the script starts a fresh ``zmesh up --relays N --web off``
(a temporary data directory, free loopback ports for SOCKS and the status endpoint), serves
a random body of ``--size`` MB from a local HTTP server in this process, and downloads it
through the mesh's SOCKS5 proxy twice:

* the **baseline**: no fault;
* the **faulted** download: at about 25% of the bytes it reads the status document
  (``GET /status``), finds the legs of the session carrying the download, picks a relay
  on a leg's path that is neither the exit (relay 0) nor the proxy, and sends it SIGKILL
  (``kill``) or SIGSTOP (``stop``: silent, nothing closed); at about 60% it does the same
  to another relay on a current leg.

Every read is timed.  The figures: SHA-256 intact or not, the longest gap between
successive reads (and the longest after each fault, within :data:`FAULT_WINDOW` seconds
and before the next fault),
time and throughput, and the session's failovers and longest stall as the proxy reports
them (the proxy's side of the session: it counts legs lost with what the *proxy* sent
unconfirmed, the request and control frames; a download's data is resent by the exit,
whose count no status shows.  The stall is the gap in what the proxy received).  A status
poller records when the session's legs or standby circuits change.  The acceptance bounds:
intact, and the longest gap under 1 s (kill) or 2 s (stop).  The exit status is 1 if a
faulted download misses them (or a baseline is not intact, or a fault could not be
injected), else 0.

Stopped relays get SIGCONT before the mesh is stopped; the ``zmesh up`` process group and
every process started for its data directory are killed at exit, even on Ctrl-C or an
error.  1 MB = 10^6 bytes.  Progress goes to stderr, the results to stdout.  ``-v`` runs
``zmesh -v up`` and keeps its log (stderr of the mesh) in the file ``--log`` names.
"""

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import zmesh
from zmesh.runtime.control import fetch_status
from zmesh.runtime.http import serve_fixed

MB = 1_000_000
UP_TIMEOUT = 180.0  # `zmesh up` prints its ready line within this (about 5 s when idle)
READY_LINE = "Press Ctrl-C"
READ_SIZE = 65536
HANG_TIMEOUT = 30.0  # no byte for this long: the download hung
CONNECT_TIMEOUT = 60.0  # SOCKS reply and response head
FAULT_AT = (0.25, 0.60)  # fractions of the bytes at which a relay is faulted
FAULT_WINDOW = 5.0  # seconds after a fault in which its gap is measured
POLL_INTERVAL = 0.5  # status poller
STATUS_TIMEOUT = 5.0
STOP_GRACE = 20.0  # seconds `zmesh up` gets to stop its children after SIGTERM
BOUNDS = {"kill": 1.0, "stop": 2.0}  # longest gap allowed, seconds
SIGNALS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (bound together, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def pids_mentioning(marker: str) -> list[int]:
    """Pids of processes whose command line contains ``marker`` (a mesh's data dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


LIVE: "set[Mesh]" = set()  # meshes not yet closed, killed at exit whatever happens


# -- the mesh ------------------------------------------------------------------------------
class Mesh:
    """``zmesh up`` as a child in its own process group, with its status endpoint."""

    def __init__(self, relays: int, verbose: bool = False, log_file: TextIO | None = None):
        self.relays = relays
        self.verbose = verbose
        self.log_file = log_file
        self.data = tempfile.mkdtemp(prefix="zmesh-heal-")
        self.socks_port, self.control_port = free_ports(2)
        self.proc: asyncio.subprocess.Process | None = None
        self.stopped: set[int] = set()  # pids sent SIGSTOP (SIGCONT before teardown)
        self.lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None
        LIVE.add(self)

    async def start(self) -> None:
        """Start ``zmesh up`` and wait for its ready line; ZMeshError-free: RuntimeError if
        it exits first, TimeoutError after :data:`UP_TIMEOUT`."""
        flags = ["-v"] if self.verbose else []
        cmd = [sys.executable, "-m", "zmesh", *flags, "up", "--relays", str(self.relays)]
        cmd += ["--socks", f"127.0.0.1:{self.socks_port}", "--web", "off"]
        cmd += ["--control", f"127.0.0.1:{self.control_port}", "--data", self.data]
        env = dict(os.environ)
        source = str(Path(zmesh.__file__).resolve().parent.parent)  # the zmesh we import
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        stderr = self.log_file if self.log_file is not None else subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            env=env,
            cwd=self.data,
        )
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        async def ready() -> None:
            while line := await stdout.readline():
                self.lines.append(line.decode(errors="replace").rstrip())
                if READY_LINE in self.lines[-1]:
                    return
            tail = "\n".join(self.lines[-10:])
            raise RuntimeError(f"`zmesh up` exited before it was ready:\n{tail}")

        await asyncio.wait_for(ready(), UP_TIMEOUT)

        async def drain() -> None:
            while line := await stdout.readline():
                if len(self.lines) < 1000:
                    self.lines.append(line.decode(errors="replace").rstrip())

        self._drain = asyncio.ensure_future(drain())

    async def status(self) -> dict[str, Any]:
        return await fetch_status("127.0.0.1", self.control_port, timeout=STATUS_TIMEOUT)

    def fault(self, pid: int, name: str) -> None:
        """Send SIGKILL (``kill``) or SIGSTOP (``stop``) to ``pid``."""
        if name == "stop":
            self.stopped.add(pid)
        os.kill(pid, SIGNALS[name])

    def kill_now(self) -> None:
        """Synchronously: SIGCONT the stopped relays, SIGKILL the ``zmesh up`` process
        group and every process group started for this mesh's data directory."""
        for pid in self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        groups = set(pids_mentioning(self.data))
        if self.proc is not None and self.proc.returncode is None:
            groups.add(self.proc.pid)
        for pid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def close(self) -> None:
        """SIGCONT the stopped relays, SIGTERM ``zmesh up`` (it stops its children), and
        SIGKILL whatever is left after :data:`STOP_GRACE`; remove the data directory."""
        try:
            for pid in self.stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), STOP_GRACE)
        finally:
            self.kill_now()
            if self.proc is not None:
                with contextlib.suppress(TimeoutError, ProcessLookupError):
                    await asyncio.wait_for(self.proc.wait(), 5.0)
            if self._drain is not None:
                self._drain.cancel()
            shutil.rmtree(self.data, ignore_errors=True)
            LIVE.discard(self)


# -- the status document -------------------------------------------------------------------
def download_session(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The session carrying the download: one with streams, the most bytes in first."""
    busy = [s for s in doc.get("sessions", []) if s.get("streams", 0) > 0]
    return max(busy, key=lambda s: s.get("bytes_in", 0), default=None)


@dataclass(frozen=True)
class Victim:
    """A relay on a leg of the download's session, to fault."""

    index: int
    node_id: str
    pid: int
    leg: int  # the circuit id
    hop: int  # 0: the leg's first hop (guard), 1: its middle
    session: int


def pick_victim(doc: dict[str, Any], spared: set[str], rng: random.Random) -> Victim | None:
    """A relay on a current leg of the download's session that is neither an exit, nor
    the proxy, nor dead, nor in ``spared`` (the ones faulted before); None if none."""
    session = download_session(doc)
    if session is None:
        return None
    relays = {r["node_id"]: r for r in doc.get("relays", []) if r.get("node_id")}
    circuits = {c["id"]: c for c in doc.get("circuits", [])}
    candidates = []
    for leg in session.get("legs", []):
        path = circuits.get(leg, {}).get("path", [])
        for hop, node_id in enumerate(path[:-1]):  # the last hop is the exit
            relay = relays.get(node_id)
            if (
                relay is None  # the proxy is not among the relays, nor is a stranger
                or relay["exit"]
                or not relay["alive"]
                or node_id == doc.get("node_id")
                or node_id in spared
            ):
                continue
            candidates.append(
                Victim(relay["index"], node_id, relay["pid"], leg, hop, session["id"])
            )
    return rng.choice(candidates) if candidates else None


def legs_text(doc: dict[str, Any], session_id: int | None) -> str:
    """``session S legs [c1 (r2>r5>r0), ...] failovers F`` for the status log."""
    session = next((s for s in doc.get("sessions", []) if s["id"] == session_id), None)
    if session is None:
        return f"session {session_id} not listed"
    index = {r["node_id"]: str(r["index"]) for r in doc.get("relays", []) if r.get("node_id")}
    circuits = {c["id"]: c for c in doc.get("circuits", [])}

    def hops(cid: int) -> str:
        return ">".join(index.get(h, h[:6]) for h in circuits.get(cid, {}).get("path", []))

    legs = [
        f"c{leg}({hops(leg)}, rtt {circuits.get(leg, {}).get('rtt_ms')} ms)"
        for leg in session.get("legs", [])
    ]
    standby = [f"c{c['id']}({hops(c['id'])})" for c in circuits.values() if c["session"] is None]
    return (
        f"session {session_id} legs [{', '.join(legs)}] standby [{', '.join(standby)}] "
        f"failovers {session.get('failovers')} stall {session.get('longest_stall_ms')} ms"
    )


# -- the download --------------------------------------------------------------------------
@dataclass
class Fault:
    fraction: float
    signal: str
    victim: Victim | None = None
    at: float | None = None  # monotonic time of the signal
    at_bytes: int = 0
    gap: float | None = None  # longest gap after it (FAULT_WINDOW, or to the next fault)
    error: str | None = None


@dataclass
class Transfer:
    label: str
    size: int
    received: int = 0
    intact: bool = False
    started: float = 0.0
    finished: float = 0.0
    times: list[float] = field(default_factory=list)  # monotonic time of every body read
    faults: list[Fault] = field(default_factory=list)
    failovers: int | None = None
    session_stall_ms: float | None = None
    timeline: list[str] = field(default_factory=list)  # the status poller's records
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def throughput(self) -> float:
        """MB/s from the request to the last byte."""
        return self.received / MB / self.seconds if self.seconds > 0 else 0.0

    @property
    def longest_gap(self) -> float:
        """Seconds: the longest time between successive reads of the body (and from the
        last read to the end, if it hung)."""
        marks = [*self.times, self.finished] if self.error else self.times
        return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)

    def gap_after(self, t: float, until: float) -> float:
        """The longest gap between reads that overlaps ``[t, until]``."""
        marks = [*self.times, self.finished] if self.error else self.times
        gaps = [b - a for a, b in itertools.pairwise(marks) if b > t and a < until]
        return max(gaps, default=0.0)

    def verdict(self, bound: float | None) -> bool:
        """Intact, every fault injected, and (with a bound) the longest gap under it."""
        ok = self.intact and self.error is None and all(f.at is not None for f in self.faults)
        return ok and (bound is None or self.longest_gap < bound)


async def socks_connect(
    socks_port: int, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A SOCKS5 CONNECT (RFC 1928, no authentication) to 127.0.0.1:``port``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", socks_port)
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise RuntimeError("the proxy refused the no-authentication method")
    writer.write(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + port.to_bytes(2, "big"))
    head = await asyncio.wait_for(reader.readexactly(4), CONNECT_TIMEOUT)
    if head[1] != 0:
        raise RuntimeError(f"the proxy answered SOCKS code {head[1]}")
    rest = {1: 4, 4: 16}.get(head[3])
    if rest is None:  # a domain name: one length byte first
        rest = (await reader.readexactly(1))[0]
    await reader.readexactly(rest + 2)
    return reader, writer


async def download(
    mesh: Mesh,
    port: int,
    size: int,
    digest: bytes,
    label: str,
    *,
    faults: Sequence[Fault] = (),
    rng: random.Random | None = None,
    progress: Callable[[str], None] = log,
) -> Transfer:
    """GET http://127.0.0.1:``port``/ through the mesh's SOCKS5 proxy, timing every read
    and faulting a relay at each of ``faults``' fractions.  Never raises for a failed
    transfer: its ``error`` says what went wrong."""
    rng = rng or random.Random(0)
    result = Transfer(label, size, faults=list(faults))
    hasher = hashlib.sha256()
    spared: set[str] = set()
    tasks: list[asyncio.Task[None]] = []
    session_seen: list[int] = []

    async def inject(fault: Fault, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await before
        for _ in range(3):
            try:
                doc = await mesh.status()
            except Exception as exc:
                fault.error = f"status: {exc!r}"
                continue
            victim = pick_victim(doc, spared, rng)
            if victim is None:
                fault.error = "no relay to fault on the session's legs"
                await asyncio.sleep(0.2)
                continue
            fault.error = None
            fault.victim = victim
            spared.add(victim.node_id)
            session_seen.append(victim.session)
            fault.at = time.monotonic()
            fault.at_bytes = result.received
            mesh.fault(victim.pid, fault.signal)
            role = "guard" if victim.hop == 0 else "middle"
            result.timeline.append(
                f"{fault.at - result.started:7.2f} s  SIG{fault.signal.upper()} relay "
                f"{victim.index} (pid {victim.pid}, {role} of leg c{victim.leg}) at "
                f"{result.received / size:.0%}; before: {legs_text(doc, victim.session)}"
            )
            progress(f"  {label}: {result.timeline[-1].strip()}")
            return

    async def poll() -> None:
        last = ""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                doc = await mesh.status()
            except Exception as exc:
                text = f"status failed: {exc!r}"
            else:
                session = download_session(doc)
                sid = session_seen[-1] if session_seen else (session or {}).get("id")
                text = legs_text(doc, sid)
            shape = str([sorted(re.findall(r"c\d+\(", part)) for part in text.split("standby")])
            shape += re.sub(r".*failovers", "", text)  # an entry when legs or figures change
            if shape != last:
                last = shape
                result.timeline.append(f"{time.monotonic() - result.started:7.2f} s  {text}")

    poller = asyncio.ensure_future(poll())
    writer = None
    result.started = time.monotonic()
    try:
        reader, writer = await socks_connect(mesh.socks_port, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200"):
            raise RuntimeError(f"the server answered {lines[0]!r}")
        length = next(
            int(v)
            for k, _, v in (x.partition(":") for x in lines[1:])
            if k.lower() == "content-length"
        )
        if length != size:
            raise RuntimeError(f"Content-Length {length}, expected {size}")
        pending = list(result.faults)
        tenth = 1
        while result.received < size:
            chunk = await asyncio.wait_for(
                reader.read(min(READ_SIZE, size - result.received)), HANG_TIMEOUT
            )
            now = time.monotonic()
            if not chunk:
                raise RuntimeError(f"the stream ended after {result.received} bytes")
            result.times.append(now)
            result.received += len(chunk)
            hasher.update(chunk)
            while pending and result.received >= pending[0].fraction * size:
                fault = pending.pop(0)
                tasks.append(asyncio.ensure_future(inject(fault, tasks[-1] if tasks else None)))
            while result.received >= tenth * size / 10:
                progress(f"  {label}: {tenth * 10}% ({now - result.started:.1f} s)")
                tenth += 1
        result.finished = time.monotonic()
        result.intact = hasher.digest() == digest
        try:
            doc = await mesh.status()
        except Exception as exc:
            result.timeline.append(f"final status failed: {exc!r}")
        else:
            sid = session_seen[-1] if session_seen else None
            session = next((s for s in doc.get("sessions", []) if s["id"] == sid), None)
            session = session or download_session(doc)
            if session is not None:
                result.failovers = session.get("failovers")
                result.session_stall_ms = session.get("longest_stall_ms")
                sid = session["id"]
            result.timeline.append(
                f"{time.monotonic() - result.started:7.2f} s  end: {legs_text(doc, sid)}"
            )
    except TimeoutError:
        result.finished = time.monotonic()
        result.error = f"hung: no byte for {HANG_TIMEOUT:.0f} s after {result.received} bytes"
    except (OSError, RuntimeError, asyncio.IncompleteReadError, StopIteration) as exc:
        result.finished = time.monotonic()
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        poller.cancel()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(poller, *tasks, return_exceptions=True)
        if writer is not None:
            writer.close()
    injected = [f.at for f in result.faults if f.at is not None]
    for fault in result.faults:
        if fault.at is not None:  # until the next fault, within FAULT_WINDOW
            later = [t for t in injected if t > fault.at]
            fault.gap = result.gap_after(fault.at, min([fault.at + FAULT_WINDOW, *later]))
        elif fault.error is None:
            fault.error = "not reached"
    return result


# -- a trial: one mesh, a baseline and a faulted download ----------------------------------
@dataclass
class Trial:
    run: int
    signal: str
    relays: int
    baseline: Transfer | None
    faulted: Transfer

    @property
    def bound(self) -> float:
        return BOUNDS[self.signal]

    @property
    def passed(self) -> bool:
        base_ok = self.baseline is None or self.baseline.verdict(None)
        return base_ok and self.faulted.verdict(self.bound)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


async def trial(
    body: bytes,
    signal_name: str,
    relays: int,
    *,
    baseline: bool = True,
    run: int = 0,
    seed: int = 0,
    verbose: bool = False,
    log_file: TextIO | None = None,
) -> Trial:
    """Start a fresh ``zmesh up --relays RELAYS``; download ``body`` through it without a
    fault (if ``baseline``) and then with two relays faulted by ``signal_name``; stop the
    mesh.  Raises what starting the mesh raises (RuntimeError, TimeoutError)."""
    digest = hashlib.sha256(body).digest()
    server, url = await serve_fixed(body, "application/octet-stream")
    port = int(url.rsplit(":", 1)[1])
    mesh = Mesh(relays, verbose, log_file)
    try:
        t0 = time.monotonic()
        await mesh.start()
        log(f"zmesh up --relays {relays}: ready in {time.monotonic() - t0:.1f} s")
        base = None
        if baseline:
            base = await download(mesh, port, len(body), digest, "baseline")
        faults = [Fault(at, signal_name) for at in FAULT_AT]
        faulted = await download(
            mesh, port, len(body), digest, signal_name, faults=faults, rng=random.Random(seed)
        )
        return Trial(run, signal_name, relays, base, faulted)
    finally:
        await mesh.close()
        server.close()


# -- the report ----------------------------------------------------------------------------
def fault_text(fault: Fault) -> str:
    if fault.victim is None or fault.gap is None:
        return f"- ({fault.error})"
    role = "g" if fault.victim.hop == 0 else "m"
    return f"r{fault.victim.index}{role} {fault.gap:.2f}"


def row(run: int, name: str, t: Transfer, bound: float | None) -> list[str]:
    faults = [fault_text(f) for f in t.faults] + ["", ""]
    return [
        str(run),
        name,
        "yes" if t.intact else "NO",
        f"{t.received / MB:.1f}",
        f"{t.seconds:.1f}",
        f"{t.throughput:.2f}",
        f"{t.longest_gap:.3f}",
        faults[0],
        faults[1],
        "-" if t.failovers is None else str(t.failovers),
        "-" if t.session_stall_ms is None else f"{t.session_stall_ms:.0f}",
        ("PASS" if t.verdict(bound) else "FAIL") if bound is not None or t.error else "",
    ]


def report(trials: Sequence[Trial], out: TextIO = sys.stdout) -> None:
    header = [
        "run", "download", "intact", "MB", "s", "MB/s", "max gap s",
        "fault 25% (relay, gap s)", "fault 60%", "failovers", "stall ms", "verdict",
    ]  # fmt: skip
    rows = [header]
    for t in trials:
        if t.baseline is not None:
            rows.append(row(t.run, "baseline", t.baseline, None))
        rows.append(row(t.run, t.signal, t.faulted, t.bound))
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    for r in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip(), file=out
        )
    legend = (
        "(relay: rN = relay index, g = guard, m = middle of the leg; gap: the longest gap "
        f"after the fault, within {FAULT_WINDOW:.0f} s and before the next fault)"
    )
    print(legend, file=out)
    for name in dict.fromkeys(t.signal for t in trials):
        mine = [t for t in trials if t.signal == name]
        bases = [t.baseline for t in mine if t.baseline is not None]
        gap = statistics.median(t.faulted.longest_gap for t in mine)
        speed = statistics.median(t.faulted.throughput for t in mine)
        line = f"{name}: median max gap {gap:.3f} s (bound {BOUNDS[name]:.0f} s), {speed:.2f} MB/s"
        if bases:
            gap = statistics.median(b.longest_gap for b in bases)
            speed = statistics.median(b.throughput for b in bases)
            line += f"; baseline median max gap {gap:.3f} s, {speed:.2f} MB/s"
        passed = sum(t.passed for t in mine)
        print(f"{line}; {passed}/{len(mine)} passed", file=out)
    for t in trials:
        for transfer in (t.baseline, t.faulted):
            if transfer is None:
                continue
            print(f"\nrun {t.run}, {transfer.label}, timeline:", file=out)
            if transfer.error:
                print(f"  error: {transfer.error}", file=out)
            for fault in transfer.faults:
                if fault.error:
                    print(f"  fault at {fault.fraction:.0%}: {fault.error}", file=out)
            for entry in transfer.timeline:
                print(f"  {entry}", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        epilog="Exit status 1 if a download is not intact or a gap bound is exceeded.",
    )
    parser.add_argument("--size", type=int, default=200, help="MB to download (default 200)")
    parser.add_argument(
        "--signal",
        choices=["kill", "stop", "both"],
        default="both",
        help="SIGKILL or SIGSTOP the two relays, or a trial of each (default both)",
    )
    parser.add_argument("--relays", type=int, default=8, help="relays of `zmesh up` (default 8)")
    parser.add_argument("--runs", type=int, default=1, help="trials per signal (default 1)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the download without faults"
    )
    parser.add_argument("--seed", type=int, default=0, help="body and relay choice (default 0)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="run `zmesh -v up` and keep its log"
    )
    parser.add_argument(
        "--log", type=Path, help="write the mesh's stderr here (default: discard it)"
    )
    args = parser.parse_args(argv)
    if args.size <= 0 or args.runs <= 0:
        parser.error("--size and --runs must be positive")
    signals = ["kill", "stop"] if args.signal == "both" else [args.signal]
    body = payload(args.size * MB, args.seed)
    trials: list[Trial] = []
    log_file = open(args.log, "a") if args.log else None  # noqa: SIM115
    try:
        for run in range(args.runs):
            for name in signals:
                log(f"run {run}, {name}: {args.size} MB through zmesh up --relays {args.relays}")
                trials.append(
                    asyncio.run(
                        trial(
                            body,
                            name,
                            args.relays,
                            baseline=not args.no_baseline,
                            run=run,
                            seed=args.seed + run,
                            verbose=args.verbose,
                            log_file=log_file,
                        )
                    )
                )
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for mesh in list(LIVE):  # only after an interrupt or an error
            mesh.kill_now()
            shutil.rmtree(mesh.data, ignore_errors=True)
        if log_file is not None:
            log_file.close()
        if trials:
            report(trials)
    return 0 if all(t.passed for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
