"""zmesh.runtime.browser on CPython: the browser node's driver with the page played by
libdatachannel.

In a browser, web/src/rtc.js owns the RTCPeerConnections and web/src/worker.js hands
browser.py a host object.  Here :class:`LdcHost` plays both parts with the native WebRTC
stack, so everything browser.py does (signaling over the host, the pending dial and
answer, the transports, the channel binding that native peers must agree on, bootstrap
statuses, zmesh.fetch over a circuit, relaying for others) runs against real native
relays.  tests/browser/test_join_page.py runs the same code in Pyodide and Chromium.
"""

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable
from typing import Any

import pytest
import tlsca
from netmesh import free_port

from zmesh.exit_policy import ExitPolicy
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.node import Node
from zmesh.runtime import webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.browser import (
    BrowserConfig,
    BrowserNode,
    BrowserRng,
    BrowserRtc,
    BrowserTransport,
    browser_config,
    load_identity,
    on_loopback,
    start,
)
from zmesh.runtime.daemon import relay_config
from zmesh.runtime.entropy import SystemRng
from zmesh.runtime.http import http_request
from zmesh.runtime.rtc import PendingConnection
from zmesh.session.endpoint import StreamData, StreamFinished

PAYLOAD = os.urandom(300_000)


class LdcHost:
    """The worker's host object, with libdatachannel standing in for the page."""

    def __init__(self) -> None:
        self.node: BrowserNode | None = None
        self.rtc_backend: BrowserRtc | None = None
        self._pending: dict[int, PendingConnection[webrtc.WebRTCTransport]] = {}
        self._transports: dict[int, webrtc.WebRTCTransport] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.store: dict[str, bytes] = {}
        self.locked: set[str] = set()
        self.status: dict[str, Any] = {}
        self.replies: dict[int, tuple[bool, Any, bytes | None]] = {}
        self.replied = asyncio.Event()
        self.ice: list[list[str]] = []  # each ICE server list the node sent

    def _deliver(self, pc: int, ev: str, data: bytes = b"") -> None:
        if self.node is not None:
            self.node.on_rtc_event(pc, ev, data, 0, 0)
        elif self.rtc_backend is not None:
            self.rtc_backend.on_event(pc, ev, data, 0, 0)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _opened(self, pc: int, opening: Awaitable[webrtc.WebRTCTransport]) -> None:
        try:
            transport = await opening
        except Exception as exc:
            self._deliver(pc, "close", str(exc).encode())
            return
        self._transports[pc] = transport
        transport.onmessage = lambda data: self._deliver(pc, "message", data)

        def closed() -> None:
            if self._transports.pop(pc, None) is not None:
                self._deliver(pc, "close", b"channel closed")

        transport.onclose = closed
        self._deliver(pc, "open")

    async def rtc(self, op: str, pc: int, sdp: str | None) -> str | None:
        if op == "ice":  # the STUN servers for the next connections (D50)
            assert sdp is not None
            self.ice.append(json.loads(sdp))
            return None
        if op == "dial":
            pending, offer = await webrtc.dial(loopback=True)
            self._pending[pc] = pending
            return offer
        if op == "answer":
            assert sdp is not None
            answering, answer = await webrtc.answer(sdp, loopback=True)
            self._spawn(self._opened(pc, answering.connected()))
            return answer
        assert op == "remote" and sdp is not None
        self._spawn(self._opened(pc, self._pending.pop(pc).complete(sdp)))
        return None

    def send(self, pc: int, data: bytes) -> None:
        transport = self._transports.get(pc)
        if transport is not None:
            transport.send(data)

    def close(self, pc: int) -> None:
        transport = self._transports.pop(pc, None)
        if transport is not None:
            transport.close()

    def publish(self, status_json: str) -> None:
        self.status = json.loads(status_json)

    def reply(self, call_id: int, ok: bool, value_json: str, body: bytes | None) -> None:
        self.replies[call_id] = (ok, json.loads(value_json), body)
        self.replied.set()

    async def load(self, key: str) -> bytes | None:
        return self.store.get(key)

    async def save(self, key: str, value: bytes) -> None:
        self.store[key] = value

    async def lock(self, name: str, wait_ms: int) -> bool:
        if name in self.locked:
            return False
        self.locked.add(name)
        return True

    def random(self, n: int) -> bytes:
        return os.urandom(n)

    async def call(self, call_id: int, method: str, args: dict[str, Any]) -> Any:
        assert self.node is not None
        self.node.on_call(call_id, method, json.dumps(args), None)
        while call_id not in self.replies:
            self.replied.clear()
            await asyncio.wait_for(self.replied.wait(), 30)
        return self.replies.pop(call_id)

    async def aclose(self) -> None:
        for pc in list(self._transports):
            self.close(pc)
        for task in list(self._tasks):
            task.cancel()


async def _relay(exit_: bool, bootstrap: list[str]) -> tuple[AsyncNode, str]:
    """A native relay as ``zmesh relay`` runs it on loopback: DHT on, gossip off (D46)."""
    rng = SystemRng()
    url = f"http://127.0.0.1:{free_port()}"
    config = relay_config(Flags.EXIT if exit_ else Flags.NONE, (url,), private=True)
    node = Node(Identity.generate(rng), rng, wall_clock(), config)
    policy = ExitPolicy.allow_private() if exit_ else None
    driver = AsyncNode(node, rtc=webrtc, loopback=True, exit_policy=policy)
    await driver.serve_http("127.0.0.1", int(url.rsplit(":", 1)[1]))
    for boot in bootstrap:
        await driver.bootstrap(boot)
    return driver, url


def _describe(driver: AsyncNode, node_id: bytes) -> Descriptor:
    """A descriptor ``driver``'s node knows: from its directory, else the node record its
    DHT holds (a linked peer's: gossip is off)."""
    desc = driver.node.directory.get(node_id)
    if desc is None and driver.node.dht is not None:
        record = driver.node.dht.node_record(node_id)
        desc = None if record is None else record.descriptor
    assert desc is not None, "an unknown node"
    return desc


async def _file_server() -> tuple[asyncio.Server, int]:
    """``/file`` with a Content-Length, ``/chunked`` in the chunked coding, ``/close``
    delimited by the connection closing."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1]
        if path == b"/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(PAYLOAD), 70_000):
                piece = PAYLOAD[i : i + 70_000]
                writer.write(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
            writer.write(b"0\r\nX-Trailer: 1\r\n\r\n")
        elif path == b"/close":
            writer.write(b"HTTP/1.0 200 OK\r\nX-Mode: close\r\n\r\n" + PAYLOAD)
        else:
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(PAYLOAD)}\r\n\r\n".encode() + PAYLOAD
            )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def _garbage_server() -> tuple[asyncio.Server, str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = os.urandom(2000)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _until(predicate: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    assert predicate(), what


async def _browser_node_scenario() -> None:
    exit_, exit_url = await _relay(True, [])
    relay1, url1 = await _relay(False, [exit_url])
    relay2, url2 = await _relay(False, [exit_url])
    natives = [exit_, relay1, relay2]
    files, files_port = await _file_server()
    garbage, garbage_url = await _garbage_server()
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    host = LdcHost()
    node: BrowserNode | None = None
    try:
        tls_ca = tlsca.make_ca()
        config = BrowserConfig([down, garbage_url, url1, url2, exit_url], trust_ca=tls_ca.pem)
        node = await start(config, host, http_client=http_request)
        host.node = node
        await _until(node.is_ready, 30, "the browser node to become ready")
        await _until(lambda: host.status.get("ready"), 5, "a published ready status")
        status = host.status
        assert status["peers"] >= 1 and status["relaysKnown"] >= 3, status
        # it found the relays through the DHT: nothing was flooded to it
        assert node.node.dht is not None and not node.node.config.gossip
        assert node.node.sample is not None and len(node.node.sample) >= 3
        entries = {e["url"]: e for e in status["bootstrap"]}
        assert entries[down]["state"] == "failed", entries[down]
        assert "unreachable" in entries[down]["error"], entries[down]
        assert entries[garbage_url]["state"] == "failed", entries[garbage_url]
        assert "garbage" in entries[garbage_url]["error"], entries[garbage_url]
        assert entries[url1]["state"] == "linked", entries[url1]

        # every link's channel binding agreed with the native end, or it would not be up
        # (links only: a connection still being set up may be open before its binding is)
        links = list(node.driver._transports.values())
        assert links and all(t.channel_binding for t in links)

        # zmesh.fetch: three framings of the body, each through a 3-hop circuit
        for call_id, path in enumerate(["/file", "/chunked", "/close"], start=1):
            url = f"http://127.0.0.1:{files_port}{path}"
            ok, value, body = await host.call(call_id, "fetch", {"url": url})
            assert ok, value
            assert value["status"] == 200 and body == PAYLOAD, (path, value)
        # https, end to end through the circuit: a CA the config trusts (--trust-ca), then a
        # certificate from a CA it does not, then one that names another host (D51)
        for call_id, (issued, path, error) in enumerate(
            [
                (tls_ca.issue("127.0.0.1"), "/1mb", None),
                (tlsca.make_ca("other").issue("127.0.0.1"), "/", "certificate rejected"),
                (tls_ca.issue("127.0.0.2"), "/", "subjectAltName"),
            ],
            start=20,
        ):
            async with tlsca.https_server(issued.context()) as port:
                url = f"https://127.0.0.1:{port}{path}"
                ok, value, body = await host.call(call_id, "fetch", {"url": url})
            if error is None:
                assert ok and body == tlsca.body_for(path), value
            else:
                assert not ok and error in value["error"], value
        ok, value, _ = await host.call(10, "nonsense", {})
        assert not ok

        # the browser node relays: a native relay linked to it builds [browser, exit]
        browser_id = node.node.node_id
        await _until(
            lambda: any(n.node.link_to(browser_id) for n in (relay1, relay2)), 15, "a link"
        )
        client = next(n for n in (relay1, relay2) if n.node.link_to(browser_id) is not None)
        path = [_describe(client, browser_id), _describe(client, exit_.node.node_id)]
        cid = await client.build_circuit(path)
        session = client.session_for([cid])
        pipe = client.open_stream(session, f"127.0.0.1:{files_port}")
        await pipe.wait_connected(10)
        request = b"GET /file HTTP/1.0\r\n\r\n"
        client.call(lambda now: client.node.sessions.send(session, pipe.sid, request, now))
        received = b""
        while True:
            event = await pipe.receive(10)
            if isinstance(event, StreamData):
                received += event.data
                client.call(
                    lambda now, e=event: client.node.sessions.consume(
                        session, pipe.sid, len(e.data), now
                    )
                )  # type: ignore[misc]
            elif isinstance(event, StreamFinished) or event is None:
                break
        assert (
            hashlib.sha256(received.partition(b"\r\n\r\n")[2]).digest()
            == hashlib.sha256(PAYLOAD).digest()
        )
        assert len(node.node.relay) >= 1
        assert node.node.relay.cells_relayed > 0
        assert node.status()["bytesRelayed"] > 0
    finally:
        if node is not None:
            await node.close()
        await host.aclose()
        for native in natives:
            await native.close()
        files.close()
        garbage.close()


def test_browser_node_joins_fetches_and_relays_with_native_peers() -> None:
    asyncio.run(asyncio.wait_for(_browser_node_scenario(), 90))


def test_identity_survives_a_reload_and_tabs_do_not_share_it() -> None:
    async def scenario() -> None:
        host = LdcHost()
        rng = BrowserRng(host)
        first, note = await load_identity(host, rng)
        assert "new" in note and "identity-0" in host.store
        host.locked.clear()  # the tab reloads: its lock is released
        again, note = await load_identity(host, rng)
        assert again.node_id == first.node_id and "restored" in note
        other, note = await load_identity(host, rng)  # a second tab, slot 0 still held
        assert other.node_id != first.node_id and "slot 1" in note
        host.locked.clear()
        host.store["identity-0"] = b"junk"
        temporary, note = await load_identity(host, rng)
        assert "unreadable" in note and host.store["identity-0"] == b"junk"  # kept as is
        assert temporary.node_id != first.node_id

        class Broken(LdcHost):
            async def load(self, key: str) -> bytes | None:
                raise RuntimeError("IndexedDB is disabled")

        broken = Broken()
        _, note = await load_identity(broken, BrowserRng(broken))
        assert "temporary" in note and "IndexedDB is disabled" in note

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"bootstrap": "http://x"}', "list of URLs"),
        ('{"bootstrap": [1]}', "list of URLs"),
        ('{"bootstrap": [], "shape": "loud"}', "shape.*off, constant, video"),
        ('{"bootstrap": [], "shape": 3}', "shape"),
    ],
)
def test_bad_configs_are_refused_clearly(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        BrowserConfig.parse(text)


def test_config_keeps_http_urls_once_and_the_boot_times() -> None:
    config = BrowserConfig.parse(
        json.dumps(
            {
                "bootstrap": ["http://a:1", "http://a:1", "ftp://b", "https://c"],
                "boot": {"pageStart": 1.5, "bogus": "x"},
            }
        )
    )
    assert config.bootstrap == ["http://a:1", "https://c"]
    assert config.boot == {"pageStart": 1.5}
    assert config.shape == "off" and browser_config(True).shape.mode == "off"


def test_the_page_s_shape_setting_shapes_every_link() -> None:
    config = BrowserConfig.parse(json.dumps({"bootstrap": ["http://a:1"], "shape": "video"}))
    assert config.shape == "video"
    assert browser_config(False, config.shape).shape.mode == "video"


def test_transport_buffers_until_attached_and_closes_once() -> None:
    async def scenario() -> None:
        host = LdcHost()
        rtc = BrowserRtc(host)
        host.rtc_backend = rtc
        transport = rtc._new()
        assert isinstance(transport, BrowserTransport)
        rtc.on_event(transport.pc, "message", b"early", 0, 0)  # not open: dropped
        rtc.on_event(transport.pc, "open", b"", 0, 0)
        rtc.on_event(transport.pc, "message", b"one", 0, 0)
        rtc.on_event(transport.pc, "message", b"two", 0, 0)
        got: list[bytes] = []
        closes: list[int] = []
        transport.onmessage = got.append
        transport.onclose = lambda: closes.append(1)
        await asyncio.sleep(0)
        assert got == [b"one", b"two"]
        transport.send(b"x" * 100)
        assert transport.bufferedAmount == 100  # not yet reported by the page
        rtc.on_event(transport.pc, "buffered", b"", 100, 40)
        assert transport.bufferedAmount == 40
        rtc.on_event(transport.pc, "close", b"peer went away", 0, 0)
        rtc.on_event(transport.pc, "close", b"again", 0, 0)
        await asyncio.sleep(0)
        assert transport.readyState == "closed" and transport.error == "peer went away"
        assert closes == [1]
        transport.close()
        await asyncio.sleep(0)
        assert closes == [1]

    asyncio.run(scenario())


def test_the_browser_node_runs_the_dht_without_gossip() -> None:
    """As native nodes (D46): DHT on, flooding off, a relay; the subnet caps are waived
    only for a mesh on loopback."""
    for loopback in (True, False):
        config = browser_config(loopback)
        assert config.dht and not config.gossip and config.flags == Flags.RELAY
        assert config.private is loopback
    assert on_loopback(["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:2"])
    assert not on_loopback(["http://127.0.0.1:8000", "https://relay.example"])
    assert not on_loopback(["http://10.0.0.1:1"])
    assert not on_loopback([])
