"""A small, defensive HTTP/1.1 server and client for signaling (asyncio), framed by h11.

Only what signaling needs: ``GET /zmesh/descriptor`` and ``POST /zmesh/signal`` with a
binary body (and the answer to a CORS preflight, for browser nodes; every response allows
any origin).  h11 parses every message (and writes the client's requests); this module
adds the bounds.
Every request is bounded: the head to 8 KiB (h11's ``max_incomplete_event_size``, 431),
the body to 32 KiB (a Content-Length is required; 413 beyond, 411 for a chunked body),
each phase to a few seconds (slow clients get 408), and the number of concurrent
connections (503 beyond).  Anything malformed gets a 4xx and the connection is closed; a
request never reaches the node unless it is well-formed.  One request per connection:
every response says ``Connection: close``.

:class:`ServerConnection` is the server's side of one connection, shared with the page
server (:mod:`zmesh.runtime.webserver`); :class:`ClientExchange` is one request and its
response as a sans-I/O object, shared with the in-circuit fetch (:mod:`zmesh.runtime.fetch`).
"""

import asyncio
import logging
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from ..errors import ZMeshError

if typing.TYPE_CHECKING:
    import ssl

log = logging.getLogger("zmesh.http")

MAX_HEAD = 8192
MAX_BODY = 32768
#: the most header fields a response may carry (its head is bounded by bytes too)
MAX_RESPONSE_HEADERS = 200
PHASE_TIMEOUT = 5.0
MAX_CONNECTIONS = 256
READ_SIZE = 65536
LINGER = 2.0  # seconds a closing server reads what the client still sends (RFC 9112, 9.6)
LINGER_BYTES = 65536  # ... and at most this much
REASONS = {
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
#: on every signaling response: no caching, readable from any origin (browser nodes)
SIGNALING_HEADERS = (("Cache-Control", "no-store"), ("Access-Control-Allow-Origin", "*"))
#: the answer to a CORS preflight (browsers send none for our requests, whose POST bodies
#: carry no Content-Type, but a page that sets one still gets through)
PREFLIGHT_HEADERS = (
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type"),
    ("Access-Control-Max-Age", "600"),
)


class HttpError(Exception):
    """A request we will not serve; ``status`` is the 4xx (or 5xx) to answer with."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or REASONS.get(status, "error"))
        self.status = status


class ResponseError(ZMeshError):
    """A response was malformed, or over a limit of its :class:`ClientExchange`."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    #: the header fields as h11 gives them (names lower-case), for servers that check them
    headers: tuple[tuple[bytes, bytes], ...] = field(default=(), compare=False)


Handler = Callable[[Request], Awaitable[tuple[str, bytes]]]


def _status_for(exc: h11.RemoteProtocolError) -> int:
    """The 4xx for a request h11 refused: its hint (431 for an oversized head), else 400."""
    hint = exc.error_status_hint
    return hint if 400 <= hint < 500 else 400


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of header ``name`` (lower-case, as h11 gives names), or None."""
    return next((value for key, value in headers if key == name), None)


class ServerConnection:
    """The server's side of one HTTP/1.1 connection: one request, one response, close.

    h11 parses the request and its framing; :meth:`read_request` adds the bounds of the
    module doc and raises :class:`HttpError` with the status to answer.  Responses are
    framed by Content-Length."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_body: int = MAX_BODY,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_body = max_body
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._head_only = False
        self._responded = False
        self._head_room: int | None = MAX_HEAD + 1  # None once the head is parsed

    async def _next_event(self) -> h11.Event:
        """The next request event; HttpError for a malformed request or a lost connection."""
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(_status_for(exc), str(exc)) from None
            if isinstance(event, h11.Event):
                if isinstance(event, h11.Request):
                    self._head_room = None
                return event
            assert event is h11.NEED_DATA  # not PAUSED: we read one request, then answer it
            # h11 checks max_incomplete_event_size only while an event is incomplete: give
            # it at most one byte past the bound until the head is parsed, so that a whole
            # oversized head arriving in one read is refused too (with 431)
            size = READ_SIZE if self._head_room is None else self._head_room
            if size <= 0:  # not reached: h11 raises 431 with MAX_HEAD + 1 bytes incomplete
                raise HttpError(431)
            try:
                data = await self._reader.read(size)
            except ConnectionError:
                raise HttpError(400, "connection lost mid-request") from None
            if self._head_room is not None:
                self._head_room -= len(data)
            self._conn.receive_data(data)  # b"" at EOF: h11 then ends or raises

    async def read_request(self) -> Request:
        """Read one bounded request, each phase within PHASE_TIMEOUT; HttpError otherwise.

        Raises HttpError 400 (malformed, or closed mid-request), 408 (a phase timed out),
        411 (a POST without Content-Length, or a chunked body), 413 (a body over
        ``max_body``) or 431 (a head over MAX_HEAD)."""
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                event = await self._next_event()
        except TimeoutError:
            raise HttpError(408) from None
        if not isinstance(event, h11.Request):  # ConnectionClosed: nothing was sent
            raise HttpError(400, "connection closed before a request")
        if event.http_version not in (b"1.0", b"1.1"):
            raise HttpError(400, "not an HTTP/1.x request")
        method = event.method.decode("ascii")  # h11 checked: a token
        self._head_only = method == "HEAD"
        if _header(event.headers, b"transfer-encoding") is not None:
            raise HttpError(411, "chunked bodies are not accepted")
        length = _header(event.headers, b"content-length")  # h11 checked: digits, one value
        if length is None and method == "POST":
            raise HttpError(411)
        if length is not None and int(length) > self._max_body:
            raise HttpError(413)
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                while not isinstance(body_event := await self._next_event(), h11.EndOfMessage):
                    if isinstance(body_event, h11.Data):
                        chunks.append(body_event.data)
        except TimeoutError:
            raise HttpError(408) from None
        target = event.target.decode("ascii")  # h11 checked: visible ASCII
        path = target.split("?", 1)[0]
        return Request(method, path, b"".join(chunks), tuple(event.headers))

    def start_response(self, status: int, headers: Sequence[tuple[str, str]], length: int) -> None:
        """Write the head of a ``length``-byte response (``Connection: close``).

        Its fields are the server's own, so they are formatted here rather than validated
        by h11 (which costs twice its parse of the request).  The body must follow with
        exactly ``length`` bytes (RFC 9112, section 6.2), or the close cuts it short."""
        self._responded = True
        lines = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {length}",
            "Connection: close",
        ]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send_data(self, data: bytes) -> None:
        """Write part of the body (nothing for a HEAD request: its response has none)."""
        if not self._head_only:
            self._writer.write(data)

    def respond(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        """Write a whole response, if none has been started (else leave the close to say it)."""
        if self._responded:
            return
        self.start_response(status, headers, len(body))
        self.send_data(body)

    async def drain(self, timeout: float) -> None:
        await asyncio.wait_for(self._writer.drain(), timeout)

    async def close(self, timeout: float) -> None:
        """Send what is queued (within ``timeout``), then close in stages (RFC 9112,
        section 9.6): half-close, read and discard what the client still sends (at most
        :data:`LINGER_BYTES`, for at most :data:`LINGER` seconds), close.  Closing at once
        would make the kernel answer bytes we did not read with a reset, which can destroy
        the response before the client reads it.  Never raises."""

        async def discard() -> None:
            left = LINGER_BYTES
            while left > 0 and (chunk := await self._reader.read(min(left, READ_SIZE))):
                left -= len(chunk)

        try:
            await self.drain(timeout)
            if self._writer.can_write_eof():
                self._writer.write_eof()
            await asyncio.wait_for(discard(), LINGER)
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._writer.close()


def _reply(
    conn: ServerConnection,
    status: int,
    body: bytes,
    content_type: str = "text/plain",
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    """A signaling response: no caching, readable from any origin."""
    conn.respond(status, [("Content-Type", content_type), *SIGNALING_HEADERS, *extra], body)


class HttpServer:
    """Serves ``handler`` on ``host:port``; the handler raises HttpError for 4xx."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.requests = 0
        self.rejected = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(reader, writer)
        if self._slots.locked():
            _reply(conn, 503, b"busy\n")
            writer.close()
            return
        async with self._slots:
            self.requests += 1
            try:
                request = await conn.read_request()
                if request.method == "OPTIONS":
                    _reply(conn, 204, b"", extra=PREFLIGHT_HEADERS)
                else:
                    content_type, body = await self._handler(request)
                    _reply(conn, 200, body, content_type)
            except HttpError as exc:
                self.rejected += 1
                log.debug("http event=reject status=%d reason=%r", exc.status, str(exc))
                _reply(conn, exc.status, f"{exc}\n".encode())
            except Exception:  # a bug must not take the relay down: answer 500, log it
                log.exception("http event=handler_error")
                _reply(conn, 500, b"internal error\n")
            await conn.close(PHASE_TIMEOUT)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class ClientExchange:
    """One HTTP/1.1 request and its response, framed by h11 (sans-I/O).

    ``request`` holds the request's bytes (``Connection: close``; the caller gives the
    other header fields, Host and, for a body, Content-Length among them).  Feed the
    response with :meth:`feed` as it arrives and call :meth:`eof` when the server
    closes; ``complete`` turns True at its end.  Bodies may be delimited by
    Content-Length, by the chunked coding or by the close (RFC 9112, section 6.3);
    interim 1xx responses are skipped, and HEAD, 204 and 304 responses have no body.
    Bytes after the response are ignored.  ValueError for an invalid request;
    :class:`ResponseError` for a malformed response, a head over ``max_head`` bytes
    (interim heads included), more than MAX_RESPONSE_HEADERS fields or a body over
    ``max_body``.
    """

    def __init__(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
    ) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.complete = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_fed = 0
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)
        fields = [*headers, (b"Connection", b"close")]
        try:
            head = self._conn.send(h11.Request(method=method, target=target, headers=fields))
            data = self._conn.send(h11.Data(data=body)) if body else b""
            self.request = head + data + self._conn.send(h11.EndOfMessage())
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise ValueError(f"invalid HTTP request: {exc}") from None

    @property
    def body(self) -> bytes:
        return b"".join(self._body)

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the response; ResponseError if it is malformed or too big."""
        while data and not self.complete:
            if self.status:
                piece, data = data, b""
            else:
                # h11 checks max_incomplete_event_size only while an event is incomplete:
                # give it at most one byte past the bound until the response head (with
                # any interim 1xx heads) is parsed, so that a whole oversized head is refused
                room = self.max_head + 1 - self._head_fed
                if room <= 0:
                    raise ResponseError(f"response head over {self.max_head} bytes")
                piece, data = data[:room], data[room:]
                self._head_fed += len(piece)
            self._conn.receive_data(piece)
            self._advance()

    def eof(self) -> None:
        """The server closed the connection; ResponseError if the response is incomplete."""
        if self.complete:
            return
        self._conn.receive_data(b"")
        try:
            self._advance()  # h11 ends a body delimited by the close, or raises
        except ResponseError:
            where = "the end of the body" if self.status else "a complete response head"
            raise ResponseError(f"the server closed the connection before {where}") from None

    def _advance(self) -> None:
        while not self.complete:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    raise ResponseError(f"response head over {self.max_head} bytes") from None
                raise ResponseError(f"malformed HTTP response: {exc}") from None
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Response):
                self._start(event)
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > self.max_body:
                    raise ResponseError(f"response body over {self.max_body} bytes")
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):  # trailers, if any, are dropped
                self.complete = True
            # InformationalResponse (100 Continue, 103 Early Hints): the real one follows

    def _start(self, event: h11.Response) -> None:
        if event.http_version not in (b"1.0", b"1.1"):
            raise ResponseError("not an HTTP/1.x response")
        raw = event.headers.raw_items()
        if len(raw) > MAX_RESPONSE_HEADERS:
            raise ResponseError("too many response headers")
        length = _header(event.headers, b"content-length")  # h11 checked: digits, one value
        if length is not None and int(length) > self.max_body:
            raise ResponseError(f"response body over {self.max_body} bytes")
        self.status = event.status_code
        self.reason = event.reason.decode("latin-1")
        self.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]


async def http_request(
    url: str, *, method: str = "GET", body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 client (``http://`` only); returns (status, body).

    ValueError for an unsupported URL, ResponseError for a malformed response or one over
    MAX_HEAD + MAX_BODY, OSError if the server cannot be reached, TimeoutError after
    ``timeout`` seconds."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r} (expected http://host:port/...)")
    port = parts.port or 80
    headers = [(b"Host", parts.netloc.encode()), (b"Content-Length", b"%d" % len(body))]
    exchange = ClientExchange(method, parts.path or "/", headers, body)
    await run_exchange(parts.hostname, port, exchange, timeout)
    return exchange.status, exchange.body


async def run_exchange(
    host: str,
    port: int,
    exchange: "ClientExchange",
    timeout: float,
    tls: "ssl.SSLContext | None" = None,
) -> None:
    """Carry out ``exchange`` over a new connection to ``host:port`` (TLS with ``tls``)
    within ``timeout`` seconds.  Raises OSError, TimeoutError or the exchange's
    ResponseError."""

    async def run() -> None:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        try:
            writer.write(exchange.request)
            await writer.drain()
            while not exchange.complete:
                if chunk := await reader.read(READ_SIZE):
                    exchange.feed(chunk)
                else:
                    exchange.eof()
        finally:
            writer.close()

    await asyncio.wait_for(run(), timeout)


async def serve_fixed(body: bytes, content_type: str) -> tuple[asyncio.Server, str]:
    """A loopback server that answers every request with ``body`` (self-tests, the harness).

    Returns the server and its base URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(reader, writer)
        headers = [("Content-Type", content_type), ("Access-Control-Allow-Origin", "*")]
        try:
            await conn.read_request()
            conn.respond(200, headers, body)
        except HttpError as exc:
            conn.respond(exc.status, headers, b"")
        await conn.close(PHASE_TIMEOUT)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
