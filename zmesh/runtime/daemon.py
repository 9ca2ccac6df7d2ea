"""Long-running native processes: ``zmesh relay``, ``zmesh proxy`` and ``zmesh up``."""

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError, ZMeshError
from ..exit_policy import ExitPolicy
from ..identity import Flags, short_id
from ..node import Event, HopOpened, Node, NodeConfig
from ..shaping import Mode, ShapeConfig
from ..signaling.backoff import Backoff
from . import run_command
from .aio import AsyncNode, wall_clock
from .content import Seeder
from .control import (
    DEFAULT_CONTROL,
    ControlServer,
    Document,
    RelayInfo,
    fetch_status,
    start_control,
    up_document,
)
from .entropy import SystemRng
from .http import HttpServer, Request, serve_fixed
from .lookups import LookupServer
from .processes import MAX_RELAYS, MIN_RELAYS, LocalProcesses, Process, free_port
from .push import NodeVapidKey
from .rtc import rtc_backend
from .store import Store, usable_directory
from .stun import StunServer, start_stun, stun_uri
from .wake import WakeService, wake_address

if TYPE_CHECKING:
    from .webserver import WebServer

log = logging.getLogger("zmesh.daemon")


def split_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[V6]:PORT``); ValueError with a clear message otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        host, port = text, str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 0-65535, got {text!r}")
    return host, int(port)


def is_loopback_host(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def stop_requested() -> asyncio.Event:
    """An event set on SIGINT or SIGTERM.  Call it first thing, so that a signal that
    arrives during start-up also shuts down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@dataclass
class BootstrapStatus:
    """How each bootstrap URL fared: consecutive outright refusals and the last error."""

    refusals: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def all_refused(self, times: int) -> bool:
        """Every URL refused outright (nothing listening) at least ``times`` in a row."""
        return bool(self.refusals) and all(n >= times for n in self.refusals.values())

    def describe(self) -> str:
        return "; ".join(f"{url} ({self.errors.get(url, '?')})" for url in self.refusals)


async def keep_bootstrapping(
    driver: AsyncNode, urls: list[str], status: BootstrapStatus | None = None
) -> None:
    """Link to each bootstrap URL, retrying with backoff until it works once; a round
    that links any URL resets the backoff.  ``status`` records refusals as they come."""
    pending = list(dict.fromkeys(urls))
    status = status or BootstrapStatus()
    status.refusals = dict.fromkeys(pending, 0)
    backoff = Backoff(driver.rng)
    while pending:
        for url in list(pending):
            try:
                peer = await driver.bootstrap(url)
                log.info("bootstrap event=linked url=%s peer=%s", url, short_id(peer))
                pending.remove(url)
                del status.refusals[url]
                backoff.reset()
            except (OSError, TimeoutError, ValueError, ZMeshError) as exc:
                log.warning("bootstrap event=failed url=%s error=%r", url, str(exc))
                if isinstance(exc, ConnectionRefusedError):
                    reason = "connection refused: nothing listens there"
                elif isinstance(exc, socket.gaierror):
                    reason = f"unknown host ({exc.strerror})"
                else:
                    reason = str(exc) or type(exc).__name__
                refused = isinstance(exc, ConnectionRefusedError | socket.gaierror)
                status.refusals[url] = status.refusals[url] + 1 if refused else 0
                status.errors[url] = reason
        if pending:
            await asyncio.sleep(backoff.next_delay())


@dataclass
class RelayOptions:
    listen: str
    data: Path
    exit: bool = False
    allow_private: bool = False
    bootstrap: list[str] = field(default_factory=list)
    loopback: bool | None = None
    log_hops: bool = False  # tests only: production relays keep no record of circuits
    rate: float | None = None  # payload bytes per second given (content; None: no cap)
    share: list[Path] = field(default_factory=list)  # `zmesh share`: pin, print ids
    stun_port: int = 0  # the STUN responder's UDP port (0: ephemeral; -1: none), D50
    shape: Mode = "off"  # how links' messages go on the wire (--shape, zmesh/shaping)
    transport: str = "datachannel"  # what links are dialled over (--transport, D58)


MAX_LINKS = 64  # relays a native node links to on its own (NodeConfig.max_links)


def relay_config(
    flags: Flags = Flags.NONE,
    addresses: tuple[str, ...] = (),
    *,
    hop_events: bool = False,
    private: bool = False,
    shape: Mode = "off",
) -> NodeConfig:
    """The :class:`NodeConfig` of every native node, ``zmesh relay`` and ``zmesh proxy``
    alike: it publishes ``Flags.RELAY`` (plus ``flags``), accepts inbound links and CREATEs
    under the same caps (``max_inbound_links``, the relay table's limits), forwards cells
    and answers signaling, so that a first hop cannot tell a client from a relay (D22).
    It discovers relays through the DHT and picks paths from its peer sample (issue 9,
    D46), as browser nodes do; descriptors are not flooded.  Its circuits start at
    persistent guards, except in a ``private`` mesh (on loopback, as ``zmesh up`` runs),
    which also waives the one-relay-per-subnet rule: one operator holds every relay
    there, and with a guard set of two, legs that heal shared one guard and a session
    stalled for 2.6 s when it died (D43).  ``shape`` shapes what it sends on every link
    (zmesh/shaping, D53)."""
    return NodeConfig(
        flags=Flags.RELAY | flags,
        addresses=addresses,
        auto_consume=False,
        max_links=MAX_LINKS,
        hop_events=hop_events,
        guards=not private,
        private=private,
        dht=True,
        gossip=False,
        shape=ShapeConfig(shape),
    )


def log_hop(event: Event) -> None:
    """Log what a hop learns of a circuit (``--log-hops``)."""
    if isinstance(event, HopOpened):
        successor = short_id(event.successor) if event.successor else "none"
        log.warning(
            "circuit event=hop predecessor=%s successor=%s", short_id(event.predecessor), successor
        )


async def run_relay(opts: RelayOptions) -> int:
    stop = stop_requested()
    host, port = split_hostport(opts.listen)
    store = Store(opts.data)
    rng = SystemRng()
    identity = store.load_or_create_identity(rng)
    driver_box: list[AsyncNode] = []

    async def handler(request: Request) -> tuple[str, bytes]:
        return await driver_box[0].handle_http(request)

    server = HttpServer(handler)
    bound = await server.start(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
    addresses: tuple[str, ...] = (url,)
    stun: StunServer | None = None
    if opts.stun_port >= 0:  # browsers learn their reflexive addresses here (D50)
        stun, stun_port = await start_stun(host, opts.stun_port)
        addresses += (stun_uri(host, stun_port),)
    vapid = NodeVapidKey.load_or_create(opts.data)  # browsers subscribe with it (D48, D54)
    addresses += (wake_address(vapid),)
    flags = Flags.EXIT if opts.exit else Flags.NONE
    loopback = is_loopback_host(host) if opts.loopback is None else opts.loopback
    config = relay_config(
        flags, addresses, hop_events=opts.log_hops, private=loopback, shape=opts.shape
    )
    node = Node(identity, rng, wall_clock(), config)
    policy = None
    if opts.exit:
        policy = ExitPolicy.allow_private() if opts.allow_private else ExitPolicy.default()
    rtc = rtc_backend(opts.transport)
    driver = AsyncNode(node, rtc=rtc, store=store, loopback=loopback, exit_policy=policy)
    driver.http = server
    if opts.log_hops:
        driver.on_event = log_hop
    driver_box.append(driver)
    wake = WakeService(driver, vapid)  # wakes browsers that gave it a wake record (D54)
    seeder = Seeder(driver, opts.data, opts.rate)  # serves and announces what the store holds
    LookupServer(driver)  # runs provider lookups for others, through their circuits
    for cid in seeder.share(opts.share):  # `zmesh share`: only the ids go to stdout
        print(cid, flush=True)
    info = sys.stderr if opts.share else sys.stdout
    seeder.start()
    cached = [
        a
        for d in store.peers(wall_clock())
        for a in d.addresses
        if a != url and a.startswith(("http://", "https://"))  # not their stun: URIs
    ]
    boot = asyncio.ensure_future(keep_bootstrapping(driver, opts.bootstrap + cached[:8]))
    role = "exit relay" if opts.exit else "relay"
    print(f"zmesh {role} {node.node_id.hex()} listening on {url}", file=info, flush=True)
    if stun is not None:
        print(f"STUN responder on {addresses[1]}", file=info, flush=True)
    if policy is not None:
        print(f"exit policy: {policy.summary()}", file=info, flush=True)
    try:
        await stop.wait()
    finally:
        boot.cancel()
        if stun is not None:
            stun.close()
        await seeder.close()
        await wake.close()
        await driver.close()
    print("zmesh relay stopped", file=info, flush=True)
    return 0


def main_relay(opts: RelayOptions) -> int:
    return run_command("relay", run_relay(opts))


# -- zmesh up ----------------------------------------------------------------------------
@dataclass
class UpOptions:
    relays: int
    socks: str
    data: Path | None
    verbose: int = 0
    web: str | None = "127.0.0.1:8080"  # serve the browser node's page here (None: don't)
    control: str | None = DEFAULT_CONTROL  # serve GET /status here (None: don't)
    trust_ca: str = ""  # PEM CAs the page's https fetches trust (--trust-ca, D51)
    shape: Mode = "off"  # every relay's and the proxy's links (--shape, D53)
    transport: str = "datachannel"  # every relay's and the proxy's (--transport, D58)


async def _start_web(
    address: str, urls: list[str], trust_ca: str = ""
) -> tuple["WebServer | None", str]:
    """Serve the browser page for ``zmesh up``; never fatal: (server or None, what to print)."""
    from .webserver import DistError, WebServer, find_dist, page_url  # noqa: PLC0415

    try:
        host, port = split_hostport(address)
        server = WebServer(find_dist(), urls, trust_ca)
        bound = await server.start(host, port)
    except DistError:
        return None, "Browser node: no bundle here (`make web` builds it in a source tree)."
    except (OSError, ValueError) as exc:
        return None, f"Browser node: not served ({address}: {exc})."
    url = page_url(host, bound)
    return server, f"Open {url} in a browser to make it a zMesh node (it relays, too)."


def check_relay_count(relays: int) -> None:
    """UsageError unless ``zmesh up`` can run ``relays`` relays (3 to 12)."""
    if not MIN_RELAYS <= relays <= MAX_RELAYS:
        raise UsageError(
            f"--relays must be between {MIN_RELAYS} and {MAX_RELAYS}, not {relays}: a 3-hop "
            f"circuit needs {MIN_RELAYS}, and each relay is a process on this machine"
        )


#: how long `zmesh up`'s status waits for its proxy's (within control.FETCH_TIMEOUT)
PROXY_STATUS_TIMEOUT = 3.0
PROXY_BOOTSTRAPS = 2  # relays `zmesh up` names to its proxy (the exit first)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


async def run_up(opts: UpOptions) -> int:
    stop = stop_requested()
    check_relay_count(opts.relays)
    socks_host, socks_port = split_hostport(opts.socks)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        base = (
            usable_directory(opts.data)
            if opts.data
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zmesh-up-")))
        )
        children = LocalProcesses(
            opts.verbose, relay_args=["--shape", opts.shape, "--transport", opts.transport]
        )
        web: WebServer | None = None
        control: ControlServer | None = None
        proxy: Process | None = None
        proxy_control = ("127.0.0.1", free_port()) if opts.control is not None else None
        proxy_died = asyncio.Event()
        up = 0

        def relay_ready(index: int, url: str) -> None:
            nonlocal up
            up += 1
            role = "exit relay" if index == 0 else "relay"
            print(f"  relay {index}: {role} listening on {url} ({up}/{opts.relays} up)", flush=True)

        async def snapshot() -> Document:
            proxy_doc = None
            if proxy is not None and proxy.returncode is None and proxy_control is not None:
                with contextlib.suppress(OSError, TimeoutError, ZMeshError):
                    proxy_doc = await fetch_status(*proxy_control, timeout=PROXY_STATUS_TIMEOUT)
            relays = [
                RelayInfo(r.index, r.node_id, r.process.pid, r.exit, r.url, r.alive)
                for r in children.relays
            ]
            return up_document(
                uptime=time.monotonic() - started,
                relays=relays,
                proxy_pid=None if proxy is None else proxy.pid,
                proxy_alive=proxy is not None and proxy.returncode is None,
                proxy_doc=proxy_doc,
            )

        def exited(process: Process) -> None:
            if process is proxy:
                proxy_died.set()
                return
            index = next((r.index for r in children.relays if r.process is process), None)
            print(
                f"zmesh up: relay {index} (pid {process.pid}) exited "
                f"({_exit_text(process.returncode)}); the mesh keeps running without it",
                file=sys.stderr,
                flush=True,
            )

        watcher: asyncio.Future[None] | None = None
        try:
            control_note = ""
            if opts.control is not None:
                control, control_note = await start_control(opts.control, snapshot)
                control_note = "\n" + control_note
            # every node, browsers included, finds relays through the DHT: no flooding (D46)
            urls = await children.start_relays(opts.relays, base, relay_ready)
            proxy_args = ["proxy", "--socks", f"{socks_host}:{socks_port}"]
            proxy_args += ["--data", str(base / "proxy"), "--shape", opts.shape]
            proxy_args += ["--transport", opts.transport]
            if proxy_control is not None:
                proxy_args += ["--control", f"{proxy_control[0]}:{proxy_control[1]}"]
            for url in urls[:PROXY_BOOTSTRAPS]:  # the DHT finds the others (D46)
                proxy_args += ["--bootstrap", url]
            proxy, ready = await children.start_process(proxy_args, "SOCKS5 proxy ready on")
            print(ready, flush=True)
            socks_port = split_hostport(ready.split(" ready on ", 1)[1].split()[0])[1]
            print(await self_test(socks_host, socks_port), flush=True)
            web_note = ""
            if opts.web is not None:
                web, web_note = await _start_web(opts.web, urls, opts.trust_ca)
                web_note = "\n" + web_note
            host_text = f"[{socks_host}]" if ":" in socks_host else socks_host
            boot = " ".join(f"--bootstrap {u}" for u in urls[:PROXY_BOOTSTRAPS])
            print(f"For zmesh share / zmesh get / zmesh relay: {boot}", flush=True)
            print(
                f"\nYour local zMesh is up: {opts.relays} relays (relay 0 is the exit and "
                "may reach loopback) and a SOCKS5 proxy, which relays too.\n"
                f"  curl --socks5-hostname {host_text}:{socks_port} http://example.com/\n"
                f"Every request goes through a 3-hop onion circuit.{web_note}{control_note}\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            # a relay that dies is reported (and shown dead in the status); the mesh runs on
            watcher = asyncio.ensure_future(children.watch(exited))
            stopper = asyncio.ensure_future(stop.wait())
            died = asyncio.ensure_future(proxy_died.wait())
            await asyncio.wait([stopper, died], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            died.cancel()
            if not stop.is_set():
                code = _exit_text(proxy.returncode)
                print(f"zmesh up: the proxy exited ({code}); stopping the mesh", file=sys.stderr)
                return 1
            return 0
        finally:
            if watcher is not None:
                watcher.cancel()
            if control is not None:
                await control.close()
            if web is not None:
                await web.close()
            await children.stop()
            print("zmesh up: stopped", flush=True)


SELF_TEST_SIZE = 1_000_000


async def self_test(socks_host: str, socks_port: int) -> str:
    """Fetch a random megabyte from a throwaway local server through the new mesh's
    SOCKS5 proxy (a 3-hop circuit to the exit) and check its SHA-256."""
    payload = os.urandom(SELF_TEST_SIZE)
    server, url = await serve_fixed(payload, "application/octet-stream")
    port = int(url.rsplit(":", 1)[1])
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(socks_host, socks_port)
        writer.write(b"\x05\x01\x00")  # RFC 1928: version 5, one method, no auth
        await reader.readexactly(2)
        request = b"\x05\x01\x00\x03\x09127.0.0.1" + port.to_bytes(2, "big")
        writer.write(request + b"GET / HTTP/1.0\r\n\r\n")
        reply = await asyncio.wait_for(reader.readexactly(10), 30)
        if reply[1] != 0:
            raise ZMeshError(f"self-test: the proxy answered SOCKS code {reply[1]}")
        body = (await asyncio.wait_for(reader.read(), 60)).partition(b"\r\n\r\n")[2]
        writer.close()
    finally:
        server.close()
    if hashlib.sha256(body).digest() != hashlib.sha256(payload).digest():
        raise ZMeshError(f"self-test: received {len(body)} bytes that do not match")
    took = time.perf_counter() - start
    return (
        f"self-test: fetched {len(body) / 1e6:.1f} MB from a local server through a 3-hop "
        f"circuit in {took:.2f} s, SHA-256 verified"
    )


def main_up(opts: UpOptions) -> int:
    return run_command("up", run_up(opts))
