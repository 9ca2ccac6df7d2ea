"""Test helpers: real zMesh processes on loopback (relays, a proxy) and a local HTTP server."""

import hashlib
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT = 60.0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    node_prefix: str = ""
    url: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Mesh:
    relays: list[Proc]
    proxy: Proc
    socks_port: int
    procs: list[Proc] = field(default_factory=list)

    def relay_by_short_id(self, short: str) -> Proc:
        return next(r for r in self.relays if r.node_prefix.startswith(short))


def _read_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    assert proc.stdout is not None
    result: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if re.search(pattern, line):
                result.append(line)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        raise RuntimeError(f"process did not print {pattern!r} within {timeout} s")
    return result[0]


def start(
    args: list[str],
    log: Path,
    name: str,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> Proc:
    """``python -m zmesh -vv ARGS`` in its own session, stderr to ``log``."""
    cmd = [python, "-m", "zmesh", "-vv", *args]
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, start_new_session=True, env=env, cwd=log.parent
        )
    return Proc(name, popen, log)


def start_relay(
    tmp: Path,
    name: str,
    bootstrap: list[str],
    *,
    exit_: bool = False,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    transport: str | None = None,
) -> Proc:
    args = ["relay", "--listen", "127.0.0.1:0", "--data", str(tmp / name), "--log-hops"]
    if transport is not None:
        args += ["--transport", transport]
    if exit_:
        args += ["--exit", "--allow-private-exits"]
    for url in bootstrap:
        args += ["--bootstrap", url]
    proc = start(args, tmp / f"{name}.log", name, python, env)
    line = _read_line(proc.popen, r"listening on http://", READY_TIMEOUT)
    proc.node_prefix = line.split()[3 if exit_ else 2]
    proc.url = line.rsplit(" ", 1)[-1]
    return proc


def stop(proc: Proc) -> None:
    if proc.popen.poll() is None:
        os.killpg(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(5)
    if proc.popen.stdout is not None:
        proc.popen.stdout.close()


@contextmanager
def native_mesh(tmp: Path, relays: int = 4) -> Iterator[Mesh]:
    started: list[Proc] = []
    try:
        first = start_relay(tmp, "relay0", [], exit_=True)
        started.append(first)
        for i in range(1, relays):
            started.append(start_relay(tmp, f"relay{i}", [first.url]))
        port = free_port()
        args = ["proxy", "--socks", f"127.0.0.1:{port}"]
        for r in started:
            args += ["--bootstrap", r.url]
        proxy = start(args, tmp / "proxy.log", "proxy")
        started.append(proxy)
        line = _read_line(proxy.popen, r"SOCKS5 proxy ready", READY_TIMEOUT)
        proxy.node_prefix = line.split()[2].rstrip(":")
        yield Mesh(started[:relays], proxy, port, started)
    finally:
        for proc in reversed(started):
            stop(proc)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FileServer:
    url: str
    sha256: str
    size: int
    server: http.server.ThreadingHTTPServer


@contextmanager
def file_server(size: int = 10_000_000) -> Iterator[FileServer]:
    payload = os.urandom(size)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                if self.path.startswith("/slow"):  # about 1.3 MB/s: a download that lasts
                    for i in range(0, len(payload), 65536):
                        self.wfile.write(payload[i : i + 65536])
                        time.sleep(0.05)
                else:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield FileServer(
            f"http://127.0.0.1:{port}/file.bin",
            hashlib.sha256(payload).hexdigest(),
            size,
            server,
        )
    finally:
        server.shutdown()
        server.server_close()


def curl(
    socks_port: int,
    url: str,
    *,
    user: str = "",
    timeout: float = 120,
    extra: list[str] | None = None,
) -> tuple[int, bytes, float]:
    """Fetch ``url`` through the SOCKS5 proxy with curl; (exit code, body, seconds)."""
    auth = f"{user}:x@" if user else ""
    cmd = [
        "curl",
        "-s",
        "--max-time",
        str(timeout),
        "--socks5-hostname",
        f"{auth}127.0.0.1:{socks_port}",
    ]
    start_t = time.monotonic()
    proc = subprocess.run(
        [*cmd, *(extra or []), url], capture_output=True, timeout=timeout + 10, check=False
    )
    return proc.returncode, proc.stdout, time.monotonic() - start_t
