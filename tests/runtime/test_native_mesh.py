"""Real processes on loopback: relays, an exit, the SOCKS5 proxy, curl, and a local server.

Every link is real WebRTC (libdatachannel: ICE, DTLS, SCTP), every circuit three hops.
"""

import asyncio
import hashlib
import os
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netmesh import FileServer, Mesh, curl, file_server, native_mesh

from zmesh.crypto import signing
from zmesh.identity import Identity
from zmesh.rng import DeterministicRng
from zmesh.signaling.messages import Kind, SignalingMessage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    with file_server() as s:
        yield s


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with native_mesh(tmp_path_factory.mktemp("mesh")) as m:
        yield m


def test_curl_fetches_10_mb_through_a_3_hop_circuit(mesh: Mesh, server: FileServer) -> None:
    code, body, _ = curl(mesh.socks_port, server.url)
    assert code == 0
    assert len(body) == server.size
    assert hashlib.sha256(body).hexdigest() == server.sha256
    built = re.findall(r"event=circuit_built build_ms=\S+ path=(\S+)", mesh.proxy.log_text())
    assert built and all(len(p.split(",")) == 3 for p in built)


def test_no_relay_saw_both_the_client_and_the_server(mesh: Mesh, server: FileServer) -> None:
    curl(mesh.socks_port, server.url, user="views")
    port = server.url.split(":")[2].split("/")[0]
    saw_client, saw_server = [], []
    for relay in mesh.relays:
        text = relay.log_text()
        predecessors = re.findall(r"event=hop predecessor=(\w+)", text)
        client = any(mesh.proxy.node_prefix.startswith(p) for p in predecessors)
        srv = f"exit event=connected target=127.0.0.1:{port}" in text
        assert not (client and srv), f"{relay.name} saw both ends"
        saw_client.append(client)
        saw_server.append(srv)
    assert any(saw_client) and any(saw_server)  # the guard saw us, the exit the server


def _raw_request(port: int, data: bytes, *, slow: bool = False) -> int:
    """Send raw bytes to the signaling endpoint; return the HTTP status."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        if slow:
            s.sendall(data[:10])
            time.sleep(6)  # slower than the server's per-phase limit
            try:
                s.sendall(data[10:])
            except OSError:
                pass
        else:
            try:
                s.sendall(data)
            except OSError:
                pass
        try:
            reply = s.recv(256)
        except OSError:
            return 0
    match = re.match(rb"HTTP/1.1 (\d{3})", reply)
    return int(match.group(1)) if match else 0


def _malformed_requests(n: int) -> list[bytes]:
    rng = random.Random(1234)
    ident = Identity.generate(DeterministicRng(77))
    forged = SignalingMessage(
        kind=Kind.OFFER,
        sender=ident.node_id,
        target=bytes(32),
        timestamp_ms=int(time.time() * 1000),
        nonce=bytes(16),
        fingerprint=bytes(32),
        session=b"\x01\x01" + bytes(40),
        descriptor=b"",
        signature=bytes(signing.SIGNATURE_SIZE),
    ).encode()

    def post(body: bytes, path: str = "/zmesh/signal") -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    makers = [
        lambda: post(rng.randbytes(rng.randrange(0, 3000))),
        lambda: post(b'{"type": "offer", "sdp": "v=0"}'),
        lambda: post(forged),
        lambda: post(forged[:-7] + rng.randbytes(7)),
        lambda: b"POST /zmesh/signal HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        lambda: b"POST /zmesh/signal HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        lambda: b"POST /zmesh/signal HTTP/1.1\r\n\r\n",
        lambda: b"GET /nope HTTP/1.1\r\n\r\n",
        lambda: b"DELETE /zmesh/signal HTTP/1.1\r\n\r\n",
        lambda: b"\x00\xff garbage \r\n\r\n",
        lambda: b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n",
        lambda: post(rng.randbytes(100), "/zmesh/descriptor"),
    ]
    return [rng.choice(makers)() for _ in range(n)]


def test_1000_malformed_signaling_requests_get_4xx_while_a_transfer_completes(
    mesh: Mesh, server: FileServer
) -> None:
    relay = mesh.relays[1]
    port = int(relay.url.rsplit(":", 1)[1])
    result: list[tuple[int, bytes, float]] = []
    transfer = threading.Thread(
        target=lambda: result.append(curl(mesh.socks_port, server.url, user="during-abuse"))
    )
    transfer.start()
    statuses = [_raw_request(port, req) for req in _malformed_requests(1000)]
    slow = []
    threads = [
        threading.Thread(
            target=lambda: slow.append(
                _raw_request(port, b"POST /zmesh/signal HTTP/1.1\r\n\r\n", slow=True)
            )
        )
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    transfer.join()
    assert all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert all(400 <= s < 500 for s in slow), slow
    code, body, _ = result[0]
    assert code == 0 and hashlib.sha256(body).hexdigest() == server.sha256
    assert relay.popen.poll() is None  # still running
    status = _raw_request(port, b"GET /zmesh/descriptor HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200


def test_garbage_on_a_data_channel_is_dropped(mesh: Mesh, server: FileServer) -> None:
    """A peer that completes signaling and then sends random bytes, or forged cells after
    a real handshake, loses its link; the relay keeps serving everyone else."""
    from zmesh.link import frames as lf
    from zmesh.node import Node
    from zmesh.runtime import webrtc
    from zmesh.runtime.aio import AsyncNode, wall_clock
    from zmesh.runtime.entropy import SystemRng

    relay = mesh.relays[2]

    async def attack() -> tuple[bool, bool]:
        rng = SystemRng()
        node = Node(Identity.generate(rng), rng, wall_clock())
        driver = AsyncNode(node, rtc=webrtc, loopback=True)
        try:
            # 1. a real link, then forged cells and random frames on it
            peer = await driver.bootstrap(relay.url)
            link = node.link_to(peer)
            assert link is not None
            transport = driver._transports[link]
            for _ in range(50):
                transport.send(
                    lf.encode_cell(random.getrandbits(32), os.urandom(node.geometry.cell_size))
                )
            transport.send(os.urandom(3000))
            await asyncio.sleep(1.0)
            closed_after_garbage = node.link_to(peer) is None
            return True, closed_after_garbage
        finally:
            await driver.close()

    handshake_ok, closed = asyncio.run(attack())
    assert handshake_ok and closed
    assert relay.popen.poll() is None
    code, body, _ = curl(mesh.socks_port, server.url, user="after-garbage")
    assert code == 0 and hashlib.sha256(body).hexdigest() == server.sha256


def test_killing_a_middle_relay_mid_download_loses_nothing(
    tmp_path: Path, server: FileServer
) -> None:
    """The download's session runs over two legs; killing the middle relay of one of them
    mid-way (SIGKILL) neither ends nor corrupts it (issue 8; figures: bench/heal.py)."""
    with native_mesh(tmp_path) as m:
        done: list[tuple[int, bytes, float]] = []
        download = threading.Thread(
            target=lambda: done.append(
                curl(m.socks_port, server.url.replace("/file.bin", "/slow.bin"), user="victim")
            )
        )
        download.start()
        deadline = time.monotonic() + 20
        path: list[str] = []
        while time.monotonic() < deadline and not path:
            found = re.findall(r"event=circuit_built build_ms=\S+ path=(\S+)", m.proxy.log_text())
            path = found[0].split(",") if found else []  # the session's first leg
            time.sleep(0.1)
        assert path, "no circuit was built"
        time.sleep(1.0)
        middle = m.relay_by_short_id(path[1])
        os.killpg(middle.popen.pid, signal.SIGKILL)
        download.join(60)
        assert not download.is_alive(), "the stream hung after its middle relay died"
        code, body, _ = done[0]
        assert code == 0
        assert hashlib.sha256(body).hexdigest() == server.sha256
        # and a new request works too
        code, body, _ = curl(m.socks_port, server.url, user="next", timeout=30)
        assert code == 0 and hashlib.sha256(body).hexdigest() == server.sha256


def test_a_restarted_relay_keeps_its_node_id(tmp_path: Path) -> None:
    from netmesh import start_relay, stop

    first = start_relay(tmp_path, "r", [])
    stop(first)
    again = start_relay(tmp_path, "r", [])
    stop(again)
    assert first.node_prefix == again.node_prefix
    assert (tmp_path / "r" / "zmesh.sqlite3").stat().st_mode & 0o077 == 0  # owner only


def test_zmesh_up_self_tests_and_stops_on_ctrl_c() -> None:
    import subprocess
    import sys

    from netmesh import _read_line, free_port

    port = free_port()
    cmd = [sys.executable, "-m", "zmesh", "up", "--relays", "3", "--socks", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = _read_line(proc, r"self-test:", 90)
        assert "SHA-256 verified" in line
        _read_line(proc, r"Press Ctrl-C", 10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
