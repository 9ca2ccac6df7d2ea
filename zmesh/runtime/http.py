"""A small, defensive HTTP/1.1 server and client for signaling (asyncio).

Only what signaling needs: ``GET /zmesh/descriptor`` and ``POST /zmesh/signal`` with a
binary body (and the answer to a CORS preflight, for browser nodes; every response allows
any origin).  Every request is bounded: the head to 8 KiB, the body to 32 KiB (with a
Content-Length), each phase to a few seconds (slow clients get 408), and the number of
concurrent connections.  Anything malformed gets a 4xx and the connection is closed; a
request never reaches the node unless it is well-formed.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("zmesh.http")

MAX_HEAD = 8192
MAX_BODY = 32768
PHASE_TIMEOUT = 5.0
MAX_CONNECTIONS = 256
REASONS = {
    200: "OK",
    204: "No Content",
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


class HttpError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or REASONS.get(status, "error"))
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes


Handler = Callable[[Request], Awaitable[tuple[str, bytes]]]


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "non-ASCII request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header")
        key = name.lower()
        if key in headers and key in ("content-length", "transfer-encoding"):
            raise HttpError(400, f"duplicate {name}")
        headers[key] = value.strip()
    return method, target, headers


async def read_request(reader: asyncio.StreamReader) -> Request:
    """Read one bounded request; raise HttpError for anything we will not serve."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PHASE_TIMEOUT)
    except TimeoutError:
        raise HttpError(408) from None
    except asyncio.LimitOverrunError:
        raise HttpError(431) from None
    except asyncio.IncompleteReadError:
        raise HttpError(400, "connection closed mid-request") from None
    method, target, headers = _parse_head(head[:-4])
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked bodies are not accepted")
    body = b""
    if method == "POST":
        raw = headers.get("content-length")
        if raw is None:
            raise HttpError(411)
        if not raw.isdigit() or len(raw) > 9:
            raise HttpError(400, "bad Content-Length")
        length = int(raw)
        if length > MAX_BODY:
            raise HttpError(413)
        try:
            body = await asyncio.wait_for(reader.readexactly(length), PHASE_TIMEOUT)
        except TimeoutError:
            raise HttpError(408) from None
        except asyncio.IncompleteReadError:
            raise HttpError(400, "body shorter than Content-Length") from None
    return Request(method, target.split("?", 1)[0], body)


def _response(status: int, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\nCache-Control: no-store\r\n"
        f"Access-Control-Allow-Origin: *\r\n{extra}\r\n"
    )
    return head.encode() + body


#: the answer to a CORS preflight (browsers send none for our requests, whose POST bodies
#: carry no Content-Type, but a page that sets one still gets through)
PREFLIGHT = _response(
    204,
    b"",
    "text/plain",
    "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
    "Access-Control-Allow-Headers: Content-Type\r\nAccess-Control-Max-Age: 600\r\n",
)


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
        if self._slots.locked():
            writer.write(_response(503, b"busy\n", "text/plain"))
            writer.close()
            return
        async with self._slots:
            self.requests += 1
            try:
                request = await read_request(reader)
                if request.method == "OPTIONS":
                    writer.write(PREFLIGHT)
                else:
                    content_type, body = await self._handler(request)
                    writer.write(_response(200, body, content_type))
            except HttpError as exc:
                self.rejected += 1
                log.debug("http event=reject status=%d reason=%r", exc.status, str(exc))
                writer.write(_response(exc.status, f"{exc}\n".encode(), "text/plain"))
            except Exception:  # a bug must not take the relay down: answer 500, log it
                log.exception("http event=handler_error")
                writer.write(_response(500, b"internal error\n", "text/plain"))
            try:
                await asyncio.wait_for(writer.drain(), PHASE_TIMEOUT)
            except (TimeoutError, ConnectionError):
                pass
            finally:
                writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def http_request(
    url: str, *, method: str = "GET", body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 client (``http://`` only); returns (status, body)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r} (expected http://host:port/...)")
    port = parts.port or 80
    path = parts.path or "/"

    async def exchange() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(parts.hostname, port)
        try:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            chunks: list[bytes] = []
            total = 0
            while chunk := await reader.read(65536):
                total += len(chunk)
                if total > MAX_BODY + MAX_HEAD:
                    raise ValueError("HTTP response too large")
                chunks.append(chunk)
            raw = b"".join(chunks)
        finally:
            writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        fields = status_line.split(b" ")
        if len(fields) < 2 or not fields[1].isdigit():
            raise ValueError("malformed HTTP response")
        _, _, payload = rest.partition(b"\r\n\r\n")
        return int(fields[1]), payload

    return await asyncio.wait_for(exchange(), timeout)


async def serve_fixed(body: bytes, content_type: str) -> tuple[asyncio.Server, str]:
    """A loopback server that answers every request with ``body`` (self-tests, the harness).

    Returns the server and its base URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nAccess-Control-Allow-Origin: *\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
