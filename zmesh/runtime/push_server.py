"""The asyncio glue of ``zmesh push-service``: sockets, h11 and wsproto framing around
:class:`~zmesh.runtime.push_service.PushService` (the rules and the store), connection
caps, timeouts and the command's entry point."""

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from .http import REASONS, HttpError
from .push_service import (
    MAX_PAYLOAD,
    WS_TOO_BIG,
    WS_UNSUPPORTED,
    PushResponse,
    PushService,
    PushStore,
    WsSession,
)

log = logging.getLogger("zmesh.push")

MAX_HEAD = 8192
#: Firefox's WebSocket subprotocol for its push server
SUBPROTOCOL = "push-notification"
PHASE_TIMEOUT = 5.0
#: a connected client that says nothing this long is dropped (Firefox pings every 30 min)
IDLE_TIMEOUT = 2400.0
READ_SIZE = 16384
PURGE_EVERY = 60.0
#: a WebSocket client must say hello this soon (a silent one holds no connection slot)
HELLO_TIMEOUT = 10.0


def _response_bytes(conn: h11.Connection, response: PushResponse) -> bytes:
    headers = [
        *response.headers,
        ("Content-Length", str(len(response.body))),
        ("Connection", "close"),
    ]
    if response.body:
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
    try:
        return (
            conn.send(
                h11.Response(
                    status_code=response.status,
                    headers=headers,
                    reason=REASONS.get(response.status, "Error"),
                )
            )
            + (conn.send(h11.Data(data=response.body)) or b"")
            + (conn.send(h11.EndOfMessage()) or b"")
        )
    except h11.LocalProtocolError:  # h11 is not in a state to respond (garbage): raw close
        reason = REASONS.get(response.status, "Error")
        head = f"HTTP/1.1 {response.status} {reason}\r\nContent-Length: {len(response.body)}"
        return (head + "\r\nConnection: close\r\n\r\n").encode("latin-1") + response.body


def _error(exc: HttpError) -> PushResponse:
    return PushResponse(exc.status, (), f"{exc}\n".encode())


class PushServer:
    """Serves a :class:`PushService` on ``host:port``: HTTP pushes and WebSocket clients."""

    def __init__(self, service: PushService, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        task = asyncio.create_task(self._purge_loop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY)
            self.service.purge(self._clock())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else "local"
        if self._connections >= self.service.limits.connections:
            writer.close()
            return
        self._connections += 1
        try:
            await self._serve_one(reader, writer, peer)
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception:  # a bug must not take the service down: log it, drop the client
            self.errors += 1
            log.exception("push event=connection_error")
        finally:
            self._connections -= 1
            writer.close()

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        raw = bytearray()
        if not self.service.budget.take(peer, self._clock()):
            writer.write(_response_bytes(conn, _error(HttpError(429, "over the budget"))))
            await writer.drain()
            return
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                request = await self._read_head(reader, conn, raw)
        except HttpError as exc:
            writer.write(_response_bytes(conn, _error(exc)))
            await writer.drain()
            return
        except TimeoutError:
            writer.write(_response_bytes(conn, _error(HttpError(408))))
            await writer.drain()
            return
        headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in request.headers}
        if "websocket" in headers.get("upgrade", "").lower():
            await self._serve_websocket(reader, writer, bytes(raw), peer)
            return
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                body = await self._read_body(reader, conn, headers)
            target = request.target.decode("ascii").split("?", 1)[0]
            response = self.service.handle_http(
                request.method.decode("ascii"), target, headers, body, self._clock()
            )
        except HttpError as exc:
            log.debug("push event=reject status=%d reason=%s", exc.status, exc)
            response = _error(exc)
        except TimeoutError:
            response = _error(HttpError(408))
        writer.write(_response_bytes(conn, response))
        await writer.drain()

    async def _read_head(
        self, reader: asyncio.StreamReader, conn: h11.Connection, raw: bytearray
    ) -> h11.Request:
        """Read until h11 has a request head (``raw`` keeps the bytes, for wsproto)."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                hint = exc.error_status_hint
                raise HttpError(hint if 400 <= hint < 500 else 400, str(exc)) from None
            if isinstance(event, h11.Request):
                if event.http_version not in (b"1.0", b"1.1"):
                    raise HttpError(400, "not HTTP/1.x")
                return event
            if event is not h11.NEED_DATA:
                raise HttpError(400, "no request")
            room = MAX_HEAD + 1 - len(raw)
            if room <= 0:
                raise HttpError(431)
            data = await reader.read(min(room, READ_SIZE))
            raw += data
            conn.receive_data(data)

    async def _read_body(
        self, reader: asyncio.StreamReader, conn: h11.Connection, headers: Mapping[str, str]
    ) -> bytes:
        """The request's body, at most MAX_PAYLOAD bytes (413 beyond, before reading it)."""
        length = headers.get("content-length")
        if length is not None and int(length) > MAX_PAYLOAD:
            raise HttpError(413, "push message over 4096 bytes (RFC 8030 section 7.2)")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(400, str(exc)) from None
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_PAYLOAD:
                    raise HttpError(413, "push message over 4096 bytes")
                chunks.append(bytes(event.data))
            elif event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
            else:
                raise HttpError(400, "unexpected request event")

    async def _serve_websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes, peer: str
    ) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        session = WsSession(self.service, peer)
        wake = asyncio.Event()
        session.wakeup = wake.set
        parts: list[str] = []
        data: bytes | None = raw
        read_task: asyncio.Task[bytes] | None = None
        try:
            while True:
                if data and not self._receive(ws, writer, session, data, parts):
                    return
                if not await self._flush(ws, writer, session):
                    return
                wake.clear()
                if read_task is None:
                    read_task = asyncio.ensure_future(reader.read(READ_SIZE))
                wake_task = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait(
                    {read_task, wake_task},
                    timeout=IDLE_TIMEOUT if session.uaid else HELLO_TIMEOUT,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wake_task.cancel()
                if not done:
                    session.fail(1001, "idle")
                    await self._flush(ws, writer, session)
                    return
                data = None
                if read_task in done:
                    data = read_task.result()
                    read_task = None
                    if not data:  # the peer closed without a close frame (1006)
                        return
        finally:
            if read_task is not None:
                read_task.cancel()
            self.service.detach(session)

    def _receive(
        self,
        ws: WSConnection,
        writer: asyncio.StreamWriter,
        session: WsSession,
        data: bytes,
        parts: list[str],
    ) -> bool:
        """Feed ``data`` to wsproto and handle its events (``parts`` holds a fragmented
        text message).  False if the connection is to end at once (a failed handshake)."""
        try:
            ws.receive_data(data)
        except (WsRemoteProtocolError, WsLocalProtocolError):
            return self._reject_handshake(ws, writer)
        while session.close is None:
            try:
                events = list(ws.events())
            except (WsRemoteProtocolError, WsLocalProtocolError):
                return self._reject_handshake(ws, writer)
            if not events:
                break
            for event in events:
                if isinstance(event, WsRequest):
                    if event.target.split("?", 1)[0] != "/":
                        writer.write(ws.send(RejectConnection(status_code=404)))
                        return False
                    proto = SUBPROTOCOL if SUBPROTOCOL in event.subprotocols else None
                    writer.write(ws.send(AcceptConnection(subprotocol=proto)))
                elif isinstance(event, TextMessage):
                    parts.append(event.data)
                    if sum(map(len, parts)) > self.service.limits.max_ws_message:
                        session.fail(WS_TOO_BIG, "message too big")
                    elif event.message_finished:
                        session.receive_text("".join(parts), self._clock())
                        parts.clear()
                elif isinstance(event, BytesMessage):
                    session.fail(WS_UNSUPPORTED, "binary messages are not part of it")
                elif isinstance(event, Ping):
                    writer.write(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    code = event.code if event.code not in (1005, 1006) else 1000
                    session.fail(code, "closed by the client")
                if session.close is not None:
                    break
        return True

    @staticmethod
    def _reject_handshake(ws: WSConnection, writer: asyncio.StreamWriter) -> bool:
        if ws.state is ConnectionState.CONNECTING:
            writer.write(_response_bytes(h11.Connection(h11.SERVER), _error(HttpError(400))))
        return False

    async def _flush(
        self, ws: WSConnection, writer: asyncio.StreamWriter, session: WsSession
    ) -> bool:
        """Send the session's queued messages, or its close; False once it is closed."""
        if ws.state is ConnectionState.OPEN:
            for text in session.outbox:
                writer.write(ws.send(TextMessage(data=text)))
        session.outbox.clear()
        if session.close is not None:
            if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                code, reason = session.close
                writer.write(ws.send(CloseConnection(code=code, reason=reason[:120])))
            await writer.drain()
            return False
        await writer.drain()
        return True


@dataclass(frozen=True)
class PushServiceOptions:
    host: str
    port: int
    data: Path | None
    origin: str | None = None


async def run_push_service(opts: PushServiceOptions, ready: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM (or cancelled); ``ready`` gets the origin once the
    port is bound.  The signals set an event rather than cancel the task mid-step, and the
    store is closed either way."""
    from .daemon import stop_requested  # noqa: PLC0415 (keeps this module light)

    stop = stop_requested()
    store = PushStore(opts.data / "push.sqlite3" if opts.data else None)
    service = PushService(store, opts.origin or "http://placeholder")
    server = PushServer(service)
    try:
        port = await server.start(opts.host, opts.port)
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        service.origin = (opts.origin or f"http://{host}:{port}").rstrip("/")
        ready(service.origin)
        await stop.wait()
    finally:
        await server.close()
        store.close()


def main_push_service(opts: PushServiceOptions) -> int:
    """``zmesh push-service``: serve until interrupted; 0 on Ctrl-C or SIGTERM, 1 if it
    cannot listen."""

    def ready(origin: str) -> None:
        ws = "ws" + origin.removeprefix("http")
        print(f"zmesh push-service: Firefox's dom.push.serverURL = {ws}/", flush=True)
        print(f"zmesh push-service: push endpoints under {origin}/wpush/", flush=True)
        where = opts.data / "push.sqlite3" if opts.data else "memory (lost on exit)"
        print(f"zmesh push-service: storage {where}", flush=True)

    try:
        asyncio.run(run_push_service(opts, ready))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"zmesh push-service: error: {exc}", file=sys.stderr)
        return 1
    return 0
