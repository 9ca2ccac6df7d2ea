"""``zmesh proxy``: a SOCKS5 server whose connections ride sessions of 3-hop circuits.

Each connection is a stream of a session from a :class:`~zmesh.runtime.pool.Pool` keyed
by the SOCKS username (as Tor's IsolateSOCKSAuth): see that module for the reuse rules.
A session runs over two circuits to one exit and replaces a circuit that dies, without
losing a byte (:mod:`zmesh.circuit.sessions`).

The proxy is also a relay (D22): it publishes ``Flags.RELAY`` and accepts links, CREATEs,
cells and signaling exactly as ``zmesh relay`` does (:func:`~zmesh.runtime.daemon.relay_config`),
so no first hop can tell it is a client's.  It serves no HTTP signaling endpoint: peers
reach it by signaling relayed through the mesh over the links it opened.  It is never an
exit (its driver has no exit policy, so streams opened to it are refused).

With ``--control HOST:PORT`` it serves its status (:mod:`zmesh.runtime.control`): its
node, links, circuits and sessions.
"""

import asyncio
import contextlib
import functools
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..circuit.sessions import DEFAULT_LEGS
from ..errors import ZMeshError
from ..identity import Identity, short_id
from ..node import Node
from ..shaping import Mode
from ..socks5 import BadRequest, ConnectRequest, Data, ReplyCode, Socks5Server
from . import run_command
from .aio import AsyncNode, wall_clock
from .control import (
    ControlServer,
    Document,
    circuit_infos,
    discovery,
    guards_per_client,
    relays_known,
    session_entry,
    start_control,
    status_document,
)
from .daemon import (
    BootstrapStatus,
    keep_bootstrapping,
    log_hop,
    relay_config,
    split_hostport,
    stop_requested,
)
from .entropy import SystemRng
from .pool import Pool, PooledSession
from .rtc import rtc_backend
from .store import Store
from .streams import StreamClosedError, StreamPipe

log = logging.getLogger("zmesh.proxy")

CONNECT_TIMEOUT = 15.0

__all__ = ["CONNECT_TIMEOUT", "ProxyOptions", "SocksProxy", "main_proxy", "run_proxy"]


class SocksProxy:
    def __init__(self, driver: AsyncNode, legs: int = DEFAULT_LEGS) -> None:
        self.driver = driver
        self.pool = Pool(driver, legs=legs)
        self._server: asyncio.Server | None = None
        self._started = time.monotonic()
        self._waiting = 0  # connections waiting for their stream to connect

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        socks = Socks5Server()
        try:
            request = await self._negotiate(socks, reader, writer)
        except (ConnectionError, TimeoutError, ZMeshError) as exc:
            log.info("socks event=rejected reason=%r", str(exc))
            with contextlib.suppress(ConnectionError):
                writer.write(socks.data_to_send())
            writer.close()
            return
        target = (
            f"[{request.host}]:{request.port}"
            if ":" in request.host
            else f"{request.host}:{request.port}"
        )
        opened = self._open(request.isolation_key, target)
        if opened is None:
            writer.write(socks.reply(ReplyCode.GENERAL_FAILURE))
            writer.close()
            return
        pipe, session = opened
        try:
            self._waiting += 1
            try:
                await pipe.wait_connected(CONNECT_TIMEOUT)
            except (StreamClosedError, TimeoutError) as exc:
                log.info("socks event=connect_failed reason=%r", str(exc))
                code = (
                    ReplyCode.CONNECTION_REFUSED
                    if isinstance(exc, StreamClosedError)
                    else ReplyCode.TTL_EXPIRED
                )
                if isinstance(exc, TimeoutError):
                    self.pool.forget(session)
                writer.write(socks.reply(code))
                writer.close()
                return
            finally:
                self._waiting -= 1
            writer.write(socks.reply(ReplyCode.SUCCEEDED))
            sessions = self.driver.node.sessions
            for data in [e.data for e in _drain_events(socks)]:  # bytes sent with the request
                self.driver.call(functools.partial(sessions.send, pipe.session_id, pipe.sid, data))
            await pipe.run(reader, writer)
        finally:
            self.pool.stream_closed(session)

    async def _negotiate(
        self, socks: Socks5Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ConnectRequest:
        """Run the SOCKS5 handshake up to the CONNECT request.

        Raises ZMeshError (RemoteProtocolError included) when the client is refused; the
        refusal bytes, if any, are left in ``socks.data_to_send()``."""
        while True:
            data = await asyncio.wait_for(reader.read(4096), 30.0)
            if not data:
                raise ConnectionError("client closed during the SOCKS handshake")
            socks.receive_data(data)
            writer.write(socks.data_to_send())
            while (event := socks.next_event()) is not None:
                if isinstance(event, ConnectRequest):
                    return event
                if isinstance(event, BadRequest):
                    writer.write(socks.reply(event.code))
                    raise ZMeshError(f"SOCKS request refused: {event.reason}")
            if socks.failed:
                raise ZMeshError("SOCKS handshake refused")

    def _open(self, key: bytes, target: str) -> tuple[StreamPipe, PooledSession] | None:
        """A stream to ``target`` on the session for ``key``; None if none can be had."""
        for _ in range(2):  # a session may have failed since the pool handed it out
            try:
                session = self.pool.session_for(key)
            except ZMeshError as exc:
                log.info("socks event=no_session reason=%r", str(exc))
                return None
            try:
                return self.driver.open_stream(session.session_id, target), session
            except ZMeshError:
                self.pool.forget(session)
        return None

    def status(self) -> Document:
        """The proxy's status document (see :mod:`zmesh.runtime.control`)."""
        node = self.driver.node
        retired = {s.session_id: s.retired for s in self.pool.core.sessions()}
        now = wall_clock()
        infos = [node.sessions.info(sid, now) for sid in node.sessions.ids() if sid in retired]
        uptime = time.monotonic() - self._started
        return status_document(
            role="proxy",
            uptime=uptime,
            node_id=node.node_id,
            links=node.peers(),
            link_health=node.link_health(wall_clock()),
            relays_known=relays_known(node),
            sample_size=0 if node.sample is None else len(node.sample),
            discovery=discovery(node, uptime, self.driver.dials),
            relayed_circuits=len(node.relay),
            streams_waiting=self._waiting,
            circuits=circuit_infos(node, infos),
            sessions=[session_entry(info, retired[info.session_id]) for info in infos],
            guards_per_client=guards_per_client(node),
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _drain_events(socks: Socks5Server) -> list[Data]:
    out = []
    while (event := socks.next_event()) is not None:
        if isinstance(event, Data):
            out.append(event)
    return out


@dataclass
class ProxyOptions:
    socks: str
    bootstrap: list[str]
    data: Path | None = None
    loopback: bool | None = None
    keep_trying: bool = False  # when every bootstrap relay refuses: warn and keep trying
    log_hops: bool = False  # tests only, as for ``zmesh relay --log-hops``
    control: str | None = None  # serve GET /status here (None: don't)
    legs: int = DEFAULT_LEGS  # circuits per session
    shape: Mode = "off"  # how links' messages go on the wire (--shape, D53)
    transport: str = "datachannel"  # what links are dialled over (--transport, D58)


REFUSED_ROUNDS = 3  # outright refusals of every bootstrap URL before we say so
READY_TIMEOUT = 120.0


async def run_proxy(opts: ProxyOptions) -> int:
    stop = stop_requested()
    host, port = split_hostport(opts.socks, 1080)
    rng = SystemRng()
    store = Store(opts.data) if opts.data is not None else None
    identity = store.load_or_create_identity(rng) if store else Identity.generate(rng)
    loopback = (
        opts.loopback
        if opts.loopback is not None
        else all("127.0.0.1" in u or "localhost" in u for u in opts.bootstrap)
    )
    config = relay_config(hop_events=opts.log_hops, private=loopback, shape=opts.shape)
    node = Node(identity, rng, wall_clock(), config)
    driver = AsyncNode(node, rtc=rtc_backend(opts.transport), store=store, loopback=loopback)
    if opts.log_hops:
        driver.on_event = log_hop
    proxy = SocksProxy(driver, opts.legs)
    control: ControlServer | None = None
    if opts.control is not None:

        async def snapshot() -> Document:
            return proxy.status()

        control, note = await start_control(opts.control, snapshot)
        print(note, file=sys.stdout if control is not None else sys.stderr, flush=True)
    status = BootstrapStatus()
    boot = asyncio.ensure_future(keep_bootstrapping(driver, opts.bootstrap, status))
    try:
        deadline, warned = time.monotonic() + READY_TIMEOUT, False
        while not proxy.pool.usable():
            if stop.is_set():
                return 0
            if status.all_refused(REFUSED_ROUNDS) and not warned:
                refused = f"every bootstrap relay refused the connection: {status.describe()}"
                if not opts.keep_trying:
                    raise ZMeshError(f"{refused} (--keep-trying to wait for them)")
                print(f"zmesh proxy: warning: {refused}; still trying", file=sys.stderr)
                warned = True
            if time.monotonic() > deadline and not opts.keep_trying:
                raise ZMeshError(
                    f"no usable path after {READY_TIMEOUT:g} s: are the bootstrap relays up?"
                    f" ({status.describe() or 'linked, but too few relays known'})"
                )
            await asyncio.sleep(0.1)
        bound = await proxy.start(host, port)
        print(
            f"zmesh proxy {short_id(node.node_id)}: SOCKS5 proxy ready on {host}:{bound} "
            f"({relays_known(node)} relays known)",
            flush=True,
        )
        await stop.wait()
    finally:
        boot.cancel()
        if control is not None:
            await control.close()
        await proxy.close()
        await driver.close()
    return 0


def main_proxy(opts: ProxyOptions) -> int:
    return run_command("proxy", run_proxy(opts))
