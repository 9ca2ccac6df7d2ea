"""Benchmark: zMesh side by side with Tor, both run as private networks on this machine.

Everything stays on 127.0.0.1.  The script starts:

* a private Tor network in a temporary directory: 3 directory authorities (keys from
  ``tor-gencert``), 4 relays (one of them an exit allowed to reach loopback) and one
  client with a SOCKS port and a control port, with ``TestingTorNetwork 1`` and fast
  voting intervals;
* a threaded HTTP server serving a random file (10 MB by default, SHA-256 known);
* ``zmesh -v up --relays 4`` (a local mesh with an exit and a SOCKS5 proxy).

It measures, for each side, the median of:

* **circuit build**: 3-hop circuits.  Tor: ``EXTENDCIRCUIT`` on the control port until
  ``650 CIRC <id> BUILT``, after one unrecorded build per path (so the TLS channels
  exist).  zMesh: the ``build_ms`` of the proxy's ``event=circuit_built`` log lines for
  the circuits built during the measurements;
* **first byte, fresh circuit**: SOCKS connect with a never-used username (so a circuit is
  built on demand), HTTP GET of a tiny file, until the first response byte.  Tor's
  preemptive circuits are switched off first, so both sides build the circuit in the loop;
* **first byte, open circuit**: the same with a username whose circuits already exist;
* **throughput, one circuit**: the whole file through one stream, from the GET to the
  last byte, SHA-256 checked.  Tor's conflux (multipath) is off on the client;
* **relays' CPU per MB per hop**: over each of those downloads, the CPU time (user +
  system, every thread, from ``/proc``) of the 4 relay processes of each side (the 4 tor
  relays, exit included; ``zmesh up``'s 4 relays; one of each is off the circuit), per MB,
  over the circuit's 3 hops; and the client's (Tor's client, zMesh's SOCKS proxy), per MB.

Every sample starts after ``GAP`` idle seconds.  Tor does not set TCP_NODELAY, so a cell
sent while an earlier one is still unacknowledged waits for loopback's 40 ms delayed ACK;
back-to-back samples would measure that stall.

Tor is measured twice on the same network: stock (the KIST scheduler, whose 10 ms write
tick dominates on loopback), then reloaded with ``Schedulers Vanilla`` (``--no-vanilla``
skips it).  The goals are against stock Tor; the second pass shows how much of Tor's
figure is that tick.  The script also runs ``bench/webrtc_raw.py`` when present (the raw
data-channel throughput between two processes with 8200-byte messages: the transport
ceiling) and prints zMesh's throughput against it.

Goals: zMesh's circuit build <= 0.5x Tor's, its throughput >= 1.0x Tor's.  The exit
status is 0 whether or not the goals are met, and non-zero only on errors (tor missing,
bootstrap timeout, corrupted transfer, ...).  1 MB = 10^6 bytes.  Progress goes to
stderr, the results to stdout.
"""

import argparse
import contextlib
import hashlib
import http.server
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from _harness import note, print_table
from capture import cpu_seconds

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
CIRCUIT_GOAL = 0.5  # zMesh circuit build time <= 0.5x Tor's
THROUGHPUT_GOAL = 1.0  # zMesh single-circuit throughput >= 1.0x Tor's
SMALL = b"zmesh-vs-tor ok\n"  # the body served at /hello for time-to-first-byte
IO_TIMEOUT = 60.0  # seconds any single socket operation may take
READY_LINE = "SOCKS5 proxy ready on"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
HOPS = 3  # a circuit's relays
GAP = 0.2  # idle seconds before each sample, so every one starts on quiet links
WARM_STREAMS = 3  # streams per username before its "open circuit" samples
TOR = "Tor"
TOR_VANILLA = "Tor, Vanilla scheduler"


class BenchError(Exception):
    """A failure that stops the benchmark (as opposed to a missed goal)."""


# --------------------------------------------------------------------------------------
# Child processes: each in its own process group, all stopped on the way out.


class Supervisor:
    """Starts child processes in their own sessions and stops every one of them."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], log: Path | None, *, pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        if pipe:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        else:
            with open(log if log is not None else os.devnull, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after ``grace``."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
        # Leftovers in the group (the leader exited but a child did not).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()

    def stop_all(self) -> None:
        live = [(n, p) for n, p in self.procs if p.poll() is None]
        for _, proc in live:  # signal them all first, so they shut down in parallel
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited early with status {proc.returncode}")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (held together, so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"  ({path} unreadable)"
    return "\n".join("  " + line for line in text[-lines:])


# --------------------------------------------------------------------------------------
# The HTTP server that both networks fetch from.


class Payload:
    def __init__(self, size: int) -> None:
        self.data = os.urandom(size)
        self.sha256 = hashlib.sha256(self.data).hexdigest()


def start_http_server(payload: Payload) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            body = (
                payload.data if self.path == "/file" else SMALL if self.path == "/hello" else None
            )
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may hang up after the first byte
                self.wfile.write(body)

        def handle(self) -> None:
            with contextlib.suppress(OSError):
                super().handle()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server, server.server_address[1]


# --------------------------------------------------------------------------------------
# A tiny SOCKS5 client (RFC 1928 + RFC 1929 username/password, which gives isolation).

SOCKS_ERRORS = {
    1: "general failure",
    2: "not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise BenchError("SOCKS proxy closed the connection")
        buf += chunk
    return bytes(buf)


def socks_open(proxy: int, user: str, port: int, timeout: float = IO_TIMEOUT) -> socket.socket:
    """A stream to ``127.0.0.1:port`` through the SOCKS5 proxy on ``127.0.0.1:proxy``."""
    sock = socket.create_connection((HOST, proxy), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"\x05\x01\x02")  # one method offered: username/password
        if recv_exact(sock, 2) != b"\x05\x02":
            raise BenchError("the SOCKS proxy refused username/password authentication")
        name, password = user.encode(), b"x"
        sock.sendall(bytes([1, len(name)]) + name + bytes([len(password)]) + password)
        if recv_exact(sock, 2)[1] != 0:
            raise BenchError("the SOCKS proxy rejected the username/password")
        sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(HOST) + port.to_bytes(2, "big"))
        head = recv_exact(sock, 4)
        if head[1] != 0:
            reason = SOCKS_ERRORS.get(head[1], f"code {head[1]}")
            raise BenchError(f"SOCKS CONNECT to {HOST}:{port} failed: {reason}")
        atyp = head[3]
        if atyp == 1:
            recv_exact(sock, 4 + 2)
        elif atyp == 4:
            recv_exact(sock, 16 + 2)
        elif atyp == 3:
            recv_exact(sock, recv_exact(sock, 1)[0] + 2)
        else:
            raise BenchError(f"SOCKS reply with unknown address type {atyp}")
    except BaseException:
        sock.close()
        raise
    return sock


def http_get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\n\r\n".encode()


def first_byte_ms(proxy: int, user: str, http_port: int) -> float:
    """SOCKS connect + GET /hello until the first response byte, in ms."""
    t0 = time.perf_counter()
    with socks_open(proxy, user, http_port) as sock:
        sock.sendall(http_get("/hello", http_port))
        if not sock.recv(1):
            raise BenchError("the stream closed before the first byte")
        t1 = time.perf_counter()
        drain(sock)
    return (t1 - t0) * 1000.0


def drain(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


def fetch_small(proxy: int, user: str, http_port: int) -> None:
    """GET /hello through the proxy and check the body."""
    with socks_open(proxy, user, http_port) as sock:
        sock.sendall(http_get("/hello", http_port))
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    if not bytes(data).endswith(SMALL):
        raise BenchError(f"unexpected reply through the proxy: {bytes(data[:80])!r}")


def download_mb_s(proxy: int, user: str, http_port: int, payload: Payload) -> float:
    """The whole file through one stream: MB/s from the GET to the last byte, hash checked."""
    with socks_open(proxy, user, http_port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        t0 = time.perf_counter()
        sock.sendall(http_get("/file", http_port))
        buf = bytearray(1 << 18)
        view = memoryview(buf)
        head = bytearray()  # the response header, until its blank line has arrived
        in_body = False
        digest = hashlib.sha256()
        body = 0
        while n := sock.recv_into(buf):
            if in_body:
                digest.update(view[:n])
                body += n
                continue
            head += view[:n]
            if b"\r\n\r\n" in head:
                header, _, rest = bytes(head).partition(b"\r\n\r\n")
                if not header.startswith(b"HTTP/1.0 200"):
                    raise BenchError(f"HTTP error: {header[:60]!r}")
                digest.update(rest)
                body += len(rest)
                in_body = True
        t1 = time.perf_counter()
    if body != len(payload.data) or digest.hexdigest() != payload.sha256:
        raise BenchError(
            f"corrupted transfer: {body} bytes, sha256 {digest.hexdigest()[:16]}..., "
            f"expected {len(payload.data)} bytes, {payload.sha256[:16]}..."
        )
    return body / (t1 - t0) / 1e6


def unique_user(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def retry_until(what: str, action: Callable[[], None], timeout: float) -> float:
    """Call ``action`` until it succeeds; return how long that took; raise at ``timeout``."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < timeout:
        try:
            action()
            return time.monotonic() - start
        except (OSError, BenchError) as exc:
            last = exc
            time.sleep(1.0)
    raise BenchError(f"{what} did not work within {timeout:.0f} s (last error: {last})")


# --------------------------------------------------------------------------------------
# Tor: the control port.


class TorControl:
    """A minimal Tor control-port client: commands, replies and asynchronous events."""

    def __init__(self, port: int, cookie: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((HOST, port), timeout=5.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"the Tor control port {port} did not open") from None
                time.sleep(0.2)
        self.buf = bytearray()
        self.events: list[str] = []
        while not cookie.exists():
            if time.monotonic() > deadline:
                raise BenchError("Tor wrote no control auth cookie")
            time.sleep(0.1)
        self.command(f"AUTHENTICATE {cookie.read_bytes().hex()}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _readline(self, deadline: float) -> str:
        while b"\r\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError from None
            if not chunk:
                raise BenchError("the Tor control connection closed")
            self.buf += chunk
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf = bytearray(rest)
        return line.decode(errors="replace")

    def _read_message(self, deadline: float) -> tuple[str, list[str]]:
        lines: list[str] = []
        for _ in range(100_000):
            line = self._readline(deadline)
            code, sep, rest = line[:3], line[3:4], line[4:]
            if sep == "+":  # a data block, ended by a line holding a single "."
                data: list[str] = []
                for _ in range(1_000_000):
                    dline = self._readline(deadline)
                    if dline == ".":
                        break
                    data.append(dline[1:] if dline.startswith("..") else dline)
                lines.append(rest + "\n" + "\n".join(data))
            else:
                lines.append(rest)
            if sep == " ":
                return code, lines
        raise BenchError("overlong reply on the Tor control port")

    def command(self, cmd: str, timeout: float = 30.0) -> list[str]:
        self.sock.sendall(cmd.encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        while True:
            code, lines = self._read_message(deadline)
            if code == "650":
                self.events.append(" ".join(lines))
                continue
            if not code.startswith("2"):
                raise BenchError(
                    f"Tor control {cmd.split(maxsplit=1)[0]}: {code} {' '.join(lines)}"
                )
            return lines

    def wait_event(self, match: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if match(event):
                    del self.events[: i + 1]
                    return event
            self.events.clear()
            code, lines = self._read_message(deadline)
            if code == "650":
                self.events.append(" ".join(lines))

    def getinfo(self, key: str) -> str:
        line = self.command(f"GETINFO {key}")[0]
        return line.partition("=")[2]


# --------------------------------------------------------------------------------------
# Tor: the private network.


@dataclass
class TorNode:
    nick: str
    role: str  # "auth", "relay", "exit" or "client"
    datadir: Path
    or_port: int = 0
    dir_port: int = 0
    fingerprint: str = ""
    v3ident: str = ""


@dataclass
class TorNetwork:
    root: Path
    http_port: int
    supervisor: Supervisor
    nodes: list[TorNode] = field(default_factory=list)
    socks_port: int = 0
    control_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def node(self, role: str) -> list[TorNode]:
        return [n for n in self.nodes if n.role == role]

    def prepare(self) -> None:
        """Keys, fingerprints and torrc files for 3 authorities, 4 relays and a client."""
        roles = ["auth"] * 3 + ["relay"] * 3 + ["exit"]
        ports = free_ports(len(roles) + 3 + 2)
        self.socks_port, self.control_port = ports[-2:]
        dir_ports = iter(ports[len(roles) : len(roles) + 3])
        empty = self.root / "empty-defaults"
        empty.write_text("")
        counts: dict[str, int] = {}
        for role, port in zip(roles, ports, strict=False):
            k = counts.get(role, 0)
            counts[role] = k + 1
            nick = f"{role}{k}"
            node = TorNode(nick, role, self.root / nick, or_port=port)
            node.datadir.mkdir(mode=0o700)
            if role == "auth":
                node.dir_port = next(dir_ports)
                self._gencert(node)
            node.fingerprint = self._fingerprint(node, empty)
            self.nodes.append(node)
        client = TorNode("client", "client", self.root / "client")
        client.datadir.mkdir(mode=0o700)
        self.nodes.append(client)
        for node in self.nodes:
            (node.datadir / "torrc").write_text(self._torrc(node))

    def _gencert(self, node: TorNode) -> None:
        keys = node.datadir / "keys"
        keys.mkdir(mode=0o700)
        done = subprocess.run(
            [
                tool("tor-gencert"),
                "--create-identity-key",
                "-m",
                "12",
                "-a",
                f"{HOST}:{node.dir_port}",
                "-i",
                str(keys / "authority_identity_key"),
                "-s",
                str(keys / "authority_signing_key"),
                "-c",
                str(keys / "authority_certificate"),
                "--passphrase-fd",
                "0",
            ],
            input=b"\n",
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"tor-gencert failed: {done.stderr.decode(errors='replace')}")
        cert = (keys / "authority_certificate").read_text()
        match = re.search(r"^fingerprint ([0-9A-F]{40})$", cert, re.M)
        if match is None:
            raise BenchError("no fingerprint in the authority certificate")
        node.v3ident = match.group(1)

    def _fingerprint(self, node: TorNode, defaults: Path) -> str:
        torrc = node.datadir / "torrc-keys"
        torrc.write_text(
            f"DataDirectory {node.datadir}\nORPort {HOST}:{node.or_port}\n"
            f"Address {HOST}\nNickname {node.nick}\nLog err stderr\n"
        )
        done = subprocess.run(
            [
                tool("tor"),
                "-f",
                str(torrc),
                "--defaults-torrc",
                str(defaults),
                "--list-fingerprint",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        try:
            text = (node.datadir / "fingerprint").read_text()
        except OSError:
            err = done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace")
            raise BenchError(f"tor --list-fingerprint failed for {node.nick}:\n{err}") from None
        return text.split()[1]

    def _torrc(self, node: TorNode) -> str:
        auths = self.node("auth")
        exit_fp = self.node("exit")[0].fingerprint
        lines = [
            "TestingTorNetwork 1",
            f"DataDirectory {node.datadir}",
            "RunAsDaemon 0",
            f"Nickname {node.nick}",
            "ShutdownWaitLength 0",
            f"Log notice file {node.datadir / 'notice.log'}",
            "SafeLogging 0",
            "LogTimeGranularity 1",
            f"__OwningControllerProcess {os.getpid()}",  # tor exits if this script dies
            "PathsNeededToBuildCircuits 0.67",
            "ConnLimit 60",
        ]
        lines += [
            f"DirAuthority {a.nick} orport={a.or_port} no-v2 v3ident={a.v3ident} "
            f"{HOST}:{a.dir_port} {a.fingerprint}"
            for a in auths
        ]
        if node.role == "client":
            lines += [
                f"SocksPort {HOST}:{self.socks_port} IsolateSOCKSAuth",
                f"ControlPort {HOST}:{self.control_port}",
                "CookieAuthentication 1",
                "ConfluxEnabled 0",  # one circuit per stream: measure a single circuit
            ]
            return "\n".join(lines) + "\n"
        lines += [
            "SocksPort 0",
            f"ORPort {HOST}:{node.or_port}",
            f"Address {HOST}",
            "AssumeReachable 1",
            f"ContactInfo {node.nick}@zmesh-bench.invalid",
        ]
        if node.role == "auth":
            lines += [
                f"DirPort {HOST}:{node.dir_port}",
                "AuthoritativeDirectory 1",
                "V3AuthoritativeDirectory 1",
                "TestingV3AuthInitialVotingInterval 10",
                "TestingV3AuthInitialVoteDelay 2",
                "TestingV3AuthInitialDistDelay 2",
                "V3AuthVotingInterval 10",
                "V3AuthVoteDelay 2",
                "V3AuthDistDelay 2",
                "V3AuthNIntervalsValid 2",
                "TestingV3AuthVotingStartOffset 0",
                "TestingDirAuthVoteGuard *",
                "TestingDirAuthVoteHSDir *",
                f"TestingDirAuthVoteExit ${exit_fp}",
                "TestingMinExitFlagThreshold 0",
            ]
        if node.role == "exit":
            # A policy summary only counts accept rules for every address (maskbits 0),
            # so "accept 127.0.0.0/8:*" alone summarises to "reject all" and clients never
            # pick this exit.  Accepting the HTTP port for any address fixes the summary;
            # nothing on this network talks to anything but loopback.
            lines += [
                "ExitRelay 1",
                "ExitPolicyRejectPrivate 0",
                "ExitPolicyRejectLocalInterfaces 0",
                "ExitPolicy accept 127.0.0.0/8:*",
                f"ExitPolicy accept *:{self.http_port}",
                "ExitPolicy reject *:*",
            ]
        else:
            lines += ["ExitRelay 0", "ExitPolicy reject *:*"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        empty = self.root / "empty-defaults"
        for node in self.nodes:
            self.procs[node.nick] = self.supervisor.start(
                f"tor {node.nick}",
                [tool("tor"), "-f", str(node.datadir / "torrc"), "--defaults-torrc", str(empty)],
                node.datadir / "stdout.log",
            )

    def reload_with(self, option: str, timeout: float = 20.0) -> None:
        """Append ``option`` to every torrc and SIGHUP every tor; wait until all reloaded."""
        for node in self.nodes:
            torrc = node.datadir / "torrc"
            torrc.write_text(torrc.read_text() + option + "\n")
            self.procs[node.nick].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            log = node.datadir / "notice.log"
            while "Received reload signal" not in log.read_text(errors="replace"):
                self.supervisor.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"tor {node.nick} did not reload its configuration")
                time.sleep(0.1)

    def logs_hint(self) -> str:
        parts = []
        for node in self.nodes:
            log = node.datadir / "notice.log"
            if not log.exists():
                log = node.datadir / "stdout.log"
            parts.append(f"{node.nick} ({log}):\n{tail(log, 6)}")
        return "\n".join(parts)

    def wait_bootstrap(self, ctl: TorControl, timeout: float, started: float) -> float:
        """Poll the client's bootstrap phase until 100%; return the seconds since ``started``."""
        last_report = -1.0
        last_progress = -1
        while True:
            elapsed = time.monotonic() - started
            self.supervisor.check_alive()
            phase = ctl.getinfo("status/bootstrap-phase")
            progress_m = re.search(r"PROGRESS=(\d+)", phase)
            summary_m = re.search(r'SUMMARY="([^"]*)"', phase)
            progress = int(progress_m.group(1)) if progress_m else 0
            summary = summary_m.group(1) if summary_m else phase
            if progress != last_progress or elapsed - last_report >= 10:
                note(f"  [{elapsed:5.1f} s] Tor client bootstrapped {progress}%: {summary}")
                last_progress, last_report = progress, elapsed
            if progress >= 100:
                return elapsed
            if elapsed > timeout:
                raise BenchError(
                    f"the private Tor network did not bootstrap within {timeout:.0f} s "
                    f"(stuck at {progress}%: {summary}).  Log tails:\n{self.logs_hint()}"
                )
            time.sleep(0.5)


# --------------------------------------------------------------------------------------
# Measurements.


@dataclass
class Figures:
    circuit_ms: list[float] = field(default_factory=list)
    ttfb_fresh_ms: list[float] = field(default_factory=list)
    ttfb_open_ms: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)  # MB/s
    cpu_per_mb_hop: list[float] = field(default_factory=list)  # ms, the relays over 3 hops
    client_cpu_per_mb: list[float] = field(default_factory=list)  # ms, the SOCKS side
    setup_s: float | None = None  # bootstrap (Tor) or start-up (zMesh)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class Bench:
    """What both sides share: the temp dir, the children, the HTTP server and the counts."""

    root: Path
    supervisor: Supervisor
    payload: Payload
    http_port: int
    args: argparse.Namespace
    n: int  # circuit and first-byte samples
    runs: int  # throughput downloads


def warm_up(proxy: int, user: str, http_port: int) -> None:
    """Build the circuits a username's next streams will use.

    Tor puts every stream of a username on one circuit; zMesh spreads them over up to
    ``circuits_per_key`` (2) circuits, so its second stream still builds one.  WARM_STREAMS
    streams first make sure no timed stream includes a circuit build on either side.
    """
    for _ in range(WARM_STREAMS):
        fetch_small(proxy, user, http_port)


def measure_streams(
    label: str,
    proxy: int,
    bench: Bench,
    figures: Figures,
    *,
    relays: Sequence[int],
    client: int,
) -> None:
    """First byte on fresh and on open circuits, and single-circuit throughput with the CPU
    time (user + system, every thread) of the ``relays`` processes over it (both sides run
    4 relays, one off the circuit, so it is their CPU per MB over the circuit's 3 hops) and
    of the ``client`` process (Tor's client, zMesh's SOCKS proxy), per MB."""
    http_port, payload, n, runs = bench.http_port, bench.payload, bench.n, bench.runs
    for i in range(n):
        time.sleep(GAP)
        ms = first_byte_ms(proxy, unique_user("fresh"), http_port)
        figures.ttfb_fresh_ms.append(ms)
        note(f"  {label} first byte, fresh circuit {i + 1}/{n}: {ms:.1f} ms")
    user = unique_user("open")
    warm_up(proxy, user, http_port)
    for i in range(n):
        time.sleep(GAP)
        ms = first_byte_ms(proxy, user, http_port)
        figures.ttfb_open_ms.append(ms)
        note(f"  {label} first byte, open circuit {i + 1}/{n}: {ms:.1f} ms")
    size_mb = len(payload.data) / 1e6
    for i in range(runs):
        time.sleep(GAP)
        user = unique_user("bulk")
        warm_up(proxy, user, http_port)  # the circuits exist before the clock starts
        cpu, client_cpu = cpu_seconds(list(relays)), cpu_seconds([client])
        rate = download_mb_s(proxy, user, http_port, payload)
        cpu_ms = (cpu_seconds(list(relays)) - cpu) * 1e3 / size_mb / HOPS
        client_ms = (cpu_seconds([client]) - client_cpu) * 1e3 / size_mb
        figures.throughput.append(rate)
        figures.cpu_per_mb_hop.append(cpu_ms)
        figures.client_cpu_per_mb.append(client_ms)
        note(
            f"  {label} throughput {i + 1}/{runs}: {size_mb:.1f} MB at {rate:.2f} MB/s, "
            f"sha256 ok, CPU per MB: {cpu_ms:.1f} ms per relay hop, {client_ms:.1f} ms client"
        )


def tor_circuit_builds(net: TorNetwork, ctl: TorControl, n: int, label: str) -> list[float]:
    """3-hop EXTENDCIRCUIT builds, ms until ``650 CIRC <id> BUILT``; closed once built.

    Each build starts on idle links (``GAP`` after the previous circuit was closed): a
    DESTROY still unacknowledged holds the next CREATE2 back under Nagle's algorithm until
    loopback's 40 ms delayed ACK fires, which would add ~40 ms to every build.
    """
    relays = [r.fingerprint for r in net.node("relay")]
    exit_fp = net.node("exit")[0].fingerprint
    # Every (guard, middle) pair of the non-exit relays: the ~40 ms stalls below hit some
    # channels every time and others never, so each sample set covers all of them.
    paths = [f"${a},${b},${exit_fp}" for a in relays for b in relays if a != b]
    ctl.command("SETEVENTS CIRC")
    samples: list[float] = []
    failures = 0
    warm = len(paths)  # one unrecorded build per path first: the TLS channels then exist
    i = 0
    while len(samples) < n:
        if failures > 2 * n + 5:
            raise BenchError(f"too many failed Tor circuit builds ({failures})")
        path = paths[i % len(paths)]
        i += 1
        time.sleep(GAP)
        ctl.events.clear()
        t0 = time.perf_counter()
        reply = ctl.command(f"EXTENDCIRCUIT 0 {path} purpose=general")
        circ_id = reply[0].split()[1]

        def done(event: str, circ_id: str = circ_id) -> bool:
            parts = event.split()
            return parts[:2] == ["CIRC", circ_id] and parts[2] in ("BUILT", "FAILED", "CLOSED")

        event = ctl.wait_event(done, timeout=30.0)
        ms = (time.perf_counter() - t0) * 1000.0
        status = event.split()[2]
        if status == "BUILT":
            with contextlib.suppress(BenchError):
                ctl.command(f"CLOSECIRCUIT {circ_id}")
            if warm > 0:
                warm -= 1
                continue
            samples.append(ms)
            note(f"  {label} circuit build {len(samples)}/{n}: {ms:.1f} ms")
        else:
            failures += 1
            note(f"  {label} circuit {circ_id} {status}: {event[:160]}")
    ctl.command("SETEVENTS")
    return samples


def close_all_circuits(ctl: TorControl) -> None:
    status = ctl.command("GETINFO circuit-status")[0]
    for line in status.split("\n")[1:]:
        if line.strip():
            with contextlib.suppress(BenchError):
                ctl.command(f"CLOSECIRCUIT {line.split()[0]}")


def tor_pass(label: str, net: TorNetwork, ctl: TorControl, bench: Bench) -> Figures:
    """Circuit builds, then first bytes and throughput through the client's SOCKS port."""
    figures = Figures()
    close_all_circuits(ctl)
    relays = len(net.node("relay"))
    note(f"{label}: {bench.n} circuit builds, after {relays * (relays - 1)} warm-up builds ...")
    figures.circuit_ms = tor_circuit_builds(net, ctl, bench.n, label)
    close_all_circuits(ctl)
    relays = [p.pid for nick, p in net.procs.items() if nick.startswith(("relay", "exit"))]
    measure_streams(
        label, net.socks_port, bench, figures, relays=relays, client=net.procs["client"].pid
    )
    return figures


def run_tor(bench: Bench) -> dict[str, Figures]:
    """Stock Tor, then (unless --no-vanilla) the same network with ``Schedulers Vanilla``."""
    args, http_port = bench.args, bench.http_port
    net = TorNetwork(bench.root / "tor", http_port, bench.supervisor)
    net.root.mkdir()
    note("Tor: generating keys for 3 authorities, 4 relays (1 exit) and a client ...")
    net.prepare()
    started = time.monotonic()
    net.start()
    note(f"Tor: 8 tor processes started in {net.root}; waiting for bootstrap ...")
    ctl = TorControl(net.control_port, net.node("client")[0].datadir / "control_auth_cookie", 30)
    results: dict[str, Figures] = {}
    try:
        setup_s = net.wait_bootstrap(ctl, args.bootstrap_timeout, started)
        note(f"Tor: bootstrapped in {setup_s:.1f} s; checking the exit reaches loopback ...")
        remaining = max(30.0, args.bootstrap_timeout - setup_s)
        waited = retry_until(
            "fetching through the Tor exit",
            lambda: fetch_small(net.socks_port, unique_user("probe"), http_port),
            remaining,
        )
        note(f"Tor: exit works ({waited:.1f} s after bootstrap)")
        # From here on, a fresh circuit is built on demand, as zMesh does: no preemptive ones.
        ctl.command("SETCONF __DisablePredictedCircuits=1")
        results[TOR] = tor_pass(TOR, net, ctl, bench)
        results[TOR].setup_s = setup_s
        if not args.no_vanilla:
            note(f"{TOR_VANILLA}: reloading every tor with 'Schedulers Vanilla' ...")
            net.reload_with("Schedulers Vanilla")
            got = ctl.getinfo("config-text")
            if "Schedulers Vanilla" not in got:
                raise BenchError("the Tor client did not take 'Schedulers Vanilla'")
            results[TOR_VANILLA] = tor_pass(TOR_VANILLA, net, ctl, bench)
    finally:
        ctl.close()
    return results


CIRCUIT_LINE = re.compile(r"event=circuit_built\b.*?\bbuild_ms=([0-9.]+)")


@dataclass
class ZmeshProc:
    proc: subprocess.Popen[bytes]
    log: Path
    lines: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pump(self) -> None:
        """Reader thread: keep every output line (with its arrival time) and log it."""
        assert self.proc.stdout is not None
        with open(self.log, "ab") as out, contextlib.suppress(ValueError, OSError):
            for raw in self.proc.stdout:  # ends at EOF, or when stop() closes the pipe
                out.write(raw)
                out.flush()
                with self.lock:
                    self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def snapshot(self) -> list[tuple[float, str]]:
        with self.lock:
            return list(self.lines)


def zmesh_argv() -> list[str]:
    return [sys.executable, "-m", "zmesh"]


def zmesh_available() -> str | None:
    """None if ``zmesh up`` exists, else why not."""
    try:
        done = subprocess.run(
            [*zmesh_argv(), "up", "--help"], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        err = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return err[-1] if err else f"exit status {done.returncode}"
    return None


def relay_pids(parent: int) -> list[int]:
    """The ``zmesh relay`` children of process ``parent`` (``zmesh up``)."""
    return child_pids(parent, b"relay")


def child_pids(parent: int, command: bytes) -> list[int]:
    """The children of process ``parent`` whose arguments include ``command``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and command in argv:
            pids.append(int(entry.name))
    return sorted(pids)


def run_zmesh(bench: Bench) -> Figures:
    figures = Figures()
    args, http_port, supervisor = bench.args, bench.http_port, bench.supervisor
    data = bench.root / "zmesh"
    data.mkdir()
    (socks_port,) = free_ports(1)
    argv = [
        *zmesh_argv(),
        "-v",
        "up",
        "--relays",
        "4",
        "--socks",
        f"{HOST}:{socks_port}",
        "--data",
        str(data),
    ]
    note(f"zMesh: starting {' '.join(argv[1:])} ...")
    started = time.monotonic()
    zp = ZmeshProc(supervisor.start("zmesh up", argv, None, pipe=True), data / "zmesh.log")
    threading.Thread(target=zp.pump, name="zmesh-log", daemon=True).start()
    ready_at: float | None = None
    while ready_at is None:
        ready_at = next((t for t, line in zp.snapshot() if READY_LINE in line), None)
        if ready_at is not None:
            break
        if zp.proc.poll() is not None:
            time.sleep(0.2)  # let the reader thread catch the last lines
            raise BenchError(
                f"zmesh up exited with status {zp.proc.returncode} before it was ready:\n"
                + tail(zp.log)
            )
        if time.monotonic() - started > args.bootstrap_timeout:
            raise BenchError(
                f"zmesh up printed no '{READY_LINE}' within {args.bootstrap_timeout:.0f} s:\n"
                + tail(zp.log)
            )
        time.sleep(0.1)
    figures.setup_s = ready_at - started
    note(f"zMesh: proxy ready in {figures.setup_s:.1f} s; checking the exit reaches loopback ...")
    retry_until(
        "fetching through the zMesh exit",
        lambda: fetch_small(socks_port, unique_user("probe"), http_port),
        60.0,
    )
    mark = time.monotonic()
    (proxy,) = child_pids(zp.proc.pid, b"proxy")
    measure_streams(
        "zMesh", socks_port, bench, figures, relays=relay_pids(zp.proc.pid), client=proxy
    )
    time.sleep(0.3)  # the last log lines
    for t, line in zp.snapshot():
        match = CIRCUIT_LINE.search(line)
        if match and t >= mark:
            figures.circuit_ms.append(float(match.group(1)))
    if figures.circuit_ms:
        note(
            f"zMesh: {len(figures.circuit_ms)} circuits built during the measurements, "
            f"median {statistics.median(figures.circuit_ms):.1f} ms"
        )
    else:
        note("zMesh: no 'event=circuit_built ... build_ms=' lines in the -v log; build time n/a")
    if zp.proc.poll() is not None:
        raise BenchError(f"zmesh up exited during the measurements:\n{tail(zp.log)}")
    supervisor.stop(zp.proc)
    return figures


RAW_SIZE = "8200"  # an 8192-byte cell plus the 8-byte frame header


def parse_raw(stdout: str) -> float | None:
    """The MB/s cell of the 8200-byte row in webrtc_raw.py's table."""
    column: int | None = None
    for line in stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if "MB/s" in cells:
            column = cells.index("MB/s")
        elif column is not None and cells[0] == RAW_SIZE and len(cells) > column:
            with contextlib.suppress(ValueError):
                return float(cells[column])
    return None


def run_webrtc_raw(args: argparse.Namespace) -> tuple[float | None, str]:
    """The raw data-channel MB/s with 8200-byte messages, if bench/webrtc_raw.py exists."""
    script = BENCH / "webrtc_raw.py"
    if not script.exists():
        return None, "bench/webrtc_raw.py not present"
    argv = [sys.executable, str(script)]
    helped = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    if "--sizes" in helped:
        argv += ["--sizes", RAW_SIZE]
    if args.quick and "--quick" in helped:
        argv.append("--quick")
    note(f"raw transport: running {' '.join(argv[1:])} ...")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=900, check=False, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        return None, "bench/webrtc_raw.py timed out"
    if done.returncode != 0:
        err = done.stderr.strip().splitlines()
        return None, f"bench/webrtc_raw.py failed: {err[-1] if err else done.returncode}"
    rate = parse_raw(done.stdout)
    if rate is None:
        return None, f"no {RAW_SIZE}-byte MB/s figure in bench/webrtc_raw.py's output"
    note(f"raw transport: {rate:.1f} MB/s with {RAW_SIZE}-byte messages")
    return rate, ""


# --------------------------------------------------------------------------------------
# Report.


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


@dataclass
class Metric:
    name: str
    pick: Callable[[Figures], list[float]]
    goal: str = "-"
    ok: Callable[[float], bool] | None = None  # is the zMesh/Tor ratio within the goal?


def metrics(size: int) -> list[Metric]:
    return [
        Metric("circuit build, 3 hops (ms)", lambda f: f.circuit_ms, "<= 0.5x",
               lambda r: r <= CIRCUIT_GOAL),
        Metric("first byte, fresh circuit (ms)", lambda f: f.ttfb_fresh_ms),
        Metric("first byte, open circuit (ms)", lambda f: f.ttfb_open_ms),
        Metric(f"throughput, one circuit, {size / 1e6:g} MB (MB/s)", lambda f: f.throughput,
               ">= 1.0x", lambda r: r >= THROUGHPUT_GOAL),
        Metric("relays' CPU per MB per hop (ms)", lambda f: f.cpu_per_mb_hop),
        Metric("client's CPU per MB (ms)", lambda f: f.client_cpu_per_mb),
    ]  # fmt: skip


def ratio_of(zm: Figures | None, tor: Figures | None, metric: Metric) -> float | None:
    z = median(metric.pick(zm)) if zm else None
    t = median(metric.pick(tor)) if tor else None
    return z / t if z is not None and t else None


def report(
    tors: dict[str, Figures], zm: Figures | None, raw: float | None, raw_note: str, size: int
) -> None:
    stock, vanilla = tors.get(TOR), tors.get(TOR_VANILLA)
    rows = []
    for m in metrics(size):
        r = ratio_of(zm, stock, m)
        met = "-" if r is None or m.ok is None else ("yes" if m.ok(r) else "NO")
        row = [m.name, fmt(median(m.pick(stock)) if stock else None)]
        if vanilla is not None:
            row.append(fmt(median(m.pick(vanilla))))
        row += [fmt(median(m.pick(zm)) if zm else None), fmt(r, 2, "x"), m.goal, met]
        if vanilla is not None:
            row.append(fmt(ratio_of(zm, vanilla, m), 2, "x"))
        rows.append(row)
    headers = ["metric", "Tor"]
    if vanilla is not None:
        headers.append("Tor vanilla")
    headers += ["zMesh", "zMesh/Tor ratio", "goal", "met"]
    if vanilla is not None:
        headers.append("zMesh/Tor-vanilla")
    if zm is None:  # Tor alone: its columns only
        keep = [i for i, h in enumerate(headers) if h in ("metric", "Tor", "Tor vanilla")]
        headers = [headers[i] for i in keep]
        rows = [[row[i] for i in keep] for row in rows]
    print()
    print("zMesh vs Tor on 127.0.0.1 (medians; goals are against stock Tor)")
    print_table(headers, rows)
    spreads = [
        f"{name} {spread(f.circuit_ms)}"
        for name, f in ((TOR, stock), ("Tor vanilla", vanilla), ("zMesh", zm))
        if f is not None and f.circuit_ms
    ]
    if spreads:
        print("circuit build spread (ms):", "; ".join(spreads))
        print(
            "  (a stall is Nagle's algorithm waiting for loopback's 40 ms delayed ACK; "
            "tor sets no TCP_NODELAY)"
        )
    if stock is not None:
        print(
            f"Tor: stock tor {tor_version()}, conflux off; private network bootstrap "
            f"{fmt(stock.setup_s)} s"
        )
    if vanilla is not None:
        print(
            "Tor vanilla: the same network reloaded with 'Schedulers Vanilla'.  Stock Tor's "
            "KIST scheduler\n  writes on a 10 ms tick, which dominates on loopback."
        )
    if zm is not None:
        print(f"zMesh: mesh start-up until the proxy was ready {fmt(zm.setup_s)} s")
        zt = median(zm.throughput)
        if raw is not None:
            ratio = fmt(zt / raw if zt is not None else None, 2, "x")
            print(f"raw WebRTC data channel, 8200-byte messages: {raw:.1f} MB/s")
            print(f"zMesh throughput / raw transport ratio: {ratio}")
        else:
            print(f"raw transport: n/a ({raw_note})")


STALL_MS = 30.0  # a build this much slower than the fastest one waited for a delayed ACK


def spread(samples: Sequence[float]) -> str:
    """min-max, and how many samples sat out a ~40 ms delayed-ACK stall."""
    low = min(samples)
    stalled = sum(1 for x in samples if x >= low + STALL_MS)
    return f"{low:.1f}-{max(samples):.1f}, {stalled}/{len(samples)} stalled ~40 ms"


def tor_version() -> str:
    try:
        out = subprocess.run(
            [tool("tor"), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(r"Tor version ([^\s]+?)\.?\s", out)
    return match.group(1) if match else "?"


# --------------------------------------------------------------------------------------
# Main.


def which(name: str) -> str | None:
    """``name`` on PATH, or in the sbin directories (Debian puts tor in /usr/sbin)."""
    return shutil.which(name) or shutil.which(name, path=SBIN)


def tool(name: str) -> str:
    path = which(name)
    if path is None:
        raise BenchError(f"{name} not found (Debian: apt-get install tor)")
    return path


def ensure_tor(install: bool) -> None:
    missing = [t for t in ("tor", "tor-gencert") if which(t) is None]
    if not missing:
        return
    if not install:
        raise BenchError(
            f"{' and '.join(missing)} not found.  Install Tor first: "
            "sudo apt-get install tor   (or run this script with --install)"
        )
    if os.geteuid() != 0:
        raise BenchError("--install needs root (it runs apt-get install -y tor)")
    apt = which("apt-get")
    if apt is None:
        raise BenchError("--install needs apt-get; install tor with your package manager")
    note("tor is missing; running apt-get install -y tor ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_get(*words: str) -> bool:
        # apt's chatter goes to stderr: stdout holds only the results
        done = subprocess.run([apt, *words], env=env, stdout=sys.stderr, timeout=900, check=False)
        return done.returncode == 0

    if not apt_get("install", "-y", "tor"):
        note("apt-get install failed; refreshing the package lists and trying again ...")
        apt_get("update")
        if not apt_get("install", "-y", "tor"):
            raise BenchError("apt-get install -y tor failed")
    if any(which(t) is None for t in ("tor", "tor-gencert")):
        raise BenchError("tor or tor-gencert still missing after apt-get install")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(MB|M|KB|K|B)?\s*", text, re.I)
    if match is None:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (try 10MB)")
    unit = (match.group(2) or "B").upper()
    value = int(float(match.group(1)) * {"B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6}[unit])
    if not 1 <= value <= 1_000_000_000:
        raise argparse.ArgumentTypeError("size must be between 1 byte and 1000 MB")
    return value


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C does, so every cleanup block runs."""
    old = {s: signal.signal(s, _raise_exit) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Needs tor and tor-gencert (Debian: apt-get install tor).",
    )
    parser.add_argument("--quick", action="store_true", help="3 samples instead of 10")
    parser.add_argument(
        "-n", "--samples", type=int, default=10, help="circuit and first-byte samples"
    )
    parser.add_argument("--runs", type=int, default=3, help="throughput downloads (default 3)")
    parser.add_argument("--size", type=parse_size, default=10_000_000, help="file size (10MB)")
    parser.add_argument("--tor-only", action="store_true", help="measure Tor alone")
    parser.add_argument("--zmesh-only", action="store_true", help="measure zMesh alone")
    parser.add_argument("--no-raw", action="store_true", help="skip bench/webrtc_raw.py")
    parser.add_argument(
        "--no-vanilla",
        action="store_true",
        help="skip the second Tor pass with 'Schedulers Vanilla' instead of KIST",
    )
    parser.add_argument(
        "--install", action="store_true", help="apt-get install -y tor if tor is missing (root)"
    )
    parser.add_argument(
        "--bootstrap-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for Tor's bootstrap and for zmesh up (default 120)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, torrc)")
    args = parser.parse_args(argv)
    if args.tor_only and args.zmesh_only:
        parser.error("--tor-only and --zmesh-only exclude each other")
    n = 3 if args.quick else max(1, args.samples)
    runs = 1 if args.quick else max(1, args.runs)

    supervisor = Supervisor()
    server: http.server.ThreadingHTTPServer | None = None
    root = Path(tempfile.mkdtemp(prefix="zmesh-vs-tor-"))
    tors: dict[str, Figures] = {}
    zm: Figures | None = None
    raw: float | None = None
    raw_note = "skipped"
    try:
        with signals_exit():
            if not args.zmesh_only:
                ensure_tor(args.install)
            zmesh_missing = None if args.tor_only else zmesh_available()
            if zmesh_missing is not None:
                if args.zmesh_only:
                    raise BenchError(f"zmesh up is not available: {zmesh_missing}")
                note(f"warning: zmesh up is not available ({zmesh_missing}); measuring Tor only")
            payload = Payload(args.size)
            server, http_port = start_http_server(payload)
            note(
                f"HTTP server on {HOST}:{http_port}: {args.size / 1e6:g} MB, "
                f"sha256 {payload.sha256[:16]}..."
            )
            bench = Bench(root, supervisor, payload, http_port, args, n, runs)
            if not args.zmesh_only:
                tors = run_tor(bench)
                supervisor.stop_all()
            if not args.tor_only and zmesh_missing is None:
                zm = run_zmesh(bench)
                supervisor.stop_all()
                if not args.no_raw:
                    raw, raw_note = run_webrtc_raw(args)
            report(tors, zm, raw, raw_note, args.size)
        return 0
    except BenchError as exc:
        note(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        note("interrupted")
        return 130
    finally:
        supervisor.stop_all()
        if server is not None:
            server.shutdown()
            server.server_close()
        if args.keep:
            note(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
