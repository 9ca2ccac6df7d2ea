"""HTTP/1.1 through a circuit: what the browser node's ``zmesh.fetch`` runs.

:func:`circuit_fetch` takes a 3-hop circuit to an exit from a
:class:`~zmesh.runtime.circuits.CircuitPool`, opens a stream to the URL's ``host:port``
(the exit makes the TCP connection under its exit policy), writes one HTTP/1.1 request
and parses the response with :class:`ResponseParser`.  ``http://`` only: an ``https://``
URL would need TLS inside the page, end to end through the circuit, which is not built.

The parser is sans-I/O (``feed``/``eof``) and bounded: the head to :data:`MAX_HEAD`
bytes, the body to the caller's ``max_body``.  It reads bodies delimited by
Content-Length, by the chunked transfer coding (RFC 9112, section 7.1) or by the
connection closing (RFC 9112, section 6.3), skips interim 1xx responses, and knows that
HEAD, 204 and 304 responses have no body.  Anything malformed raises :class:`FetchError`.
"""

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import ZMeshError
from ..session.endpoint import StreamData, StreamFinished, StreamReset
from .aio import RESET_CLOSED, AsyncNode, StreamClosedError
from .circuits import CircuitPool

MAX_HEAD = 64 * 1024
MAX_HEADERS = 200
MAX_BODY = 64 << 20
MAX_REQUEST_BODY = 8 << 20
CONNECT_TIMEOUT = 15.0
IDLE_TIMEOUT = 30.0
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
#: set by circuit_fetch itself; a caller's values are dropped
_OWN_HEADERS = frozenset({"host", "connection", "content-length", "transfer-encoding", "te"})
#: statuses that never have a body (RFC 9110, sections 15.3.5 and 15.4.5)
_NO_BODY = frozenset({204, 304})


class FetchError(ZMeshError):
    """A request could not be carried, or its response was malformed or too large."""


@dataclass
class FetchResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str  # origin-form: path and query

    @property
    def stream_target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"http://{self.host_header}"


def parse_url(url: str) -> Target:
    """The target of an ``http://`` URL; FetchError for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:
        raise FetchError(f"invalid URL {url[:200]!r}: {exc}") from None
    if parts.scheme == "https":
        raise FetchError("zmesh.fetch carries http:// URLs only (no TLS through circuits yet)")
    if parts.scheme != "http" or not parts.hostname:
        raise FetchError(f"unsupported URL {url[:200]!r} (expected http://host[:port]/path)")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with credentials are not supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(c in path for c in " \r\n\t\x00"):
        raise FetchError("the URL path contains whitespace or control characters")
    return Target(parts.hostname, port, path)


def build_request(
    method: str, target: Target, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    """One HTTP/1.1 request, ``Connection: close``; FetchError for a bad method or header."""
    if not _TOKEN.fullmatch(method) or method.upper() == "CONNECT":
        raise FetchError(f"unsupported method {method[:40]!r}")
    if len(body) > MAX_REQUEST_BODY:
        raise FetchError(f"request body over {MAX_REQUEST_BODY} bytes")
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
    names = set()
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise FetchError(f"invalid header name {name[:40]!r}")
        if any(c in value for c in "\r\n\x00"):
            raise FetchError(f"invalid value for header {name!r}")
        if name.lower() in _OWN_HEADERS:
            continue
        names.add(name.lower())
        lines.append(f"{name}: {value.strip()}")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity")  # the page gets the bytes as sent
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise FetchError("header values must be Latin-1 text") from None
    return head + body


@dataclass
class ResponseParser:
    """Parses one HTTP/1.1 response fed in pieces (see the module doc)."""

    method: str = "GET"
    max_body: int = MAX_BODY
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False
    _buf: bytearray = field(default_factory=bytearray)
    _body: list[bytes] = field(default_factory=list)
    _body_size: int = 0
    _mode: str = "head"  # head, length, chunk-size, chunk-data, chunk-crlf, trailers, close
    _remaining: int = 0

    @property
    def body(self) -> bytes:
        return b"".join(self._body)

    def feed(self, data: bytes) -> None:
        if self.complete:
            return  # bytes after the response (a misbehaving server): ignored
        self._buf += data
        self._advance()

    def eof(self) -> None:
        """The server closed the stream."""
        if self.complete:
            return
        if self._mode == "close":
            self.complete = True
            return
        if self._mode == "head":
            raise FetchError("the server closed the connection before a complete response head")
        raise FetchError("the server closed the connection before the end of the body")

    def _take_body(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > self.max_body:
            raise FetchError(f"response body over {self.max_body} bytes")
        if data:
            self._body.append(data)

    def _line(self, limit: int = 4096) -> bytes | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > limit:
                raise FetchError("a line of the response is too long")
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _advance(self) -> None:
        while not self.complete:
            mode = self._mode
            if mode == "head":
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEAD:
                        raise FetchError(f"response head over {MAX_HEAD} bytes")
                    return
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                self._parse_head(head)
            elif mode == "length":
                take = bytes(self._buf[: self._remaining])
                del self._buf[: len(take)]
                self._take_body(take)
                self._remaining -= len(take)
                if self._remaining == 0:
                    self.complete = True
                return
            elif mode == "close":
                self._take_body(bytes(self._buf))
                self._buf.clear()
                return
            elif mode == "chunk-size":
                line = self._line()
                if line is None:
                    return
                size_text = line.split(b";", 1)[0].strip()
                if not _CHUNK_SIZE.fullmatch(size_text):
                    raise FetchError("malformed chunk size")
                self._remaining = int(size_text, 16)
                self._mode = "chunk-data" if self._remaining else "trailers"
            elif mode == "chunk-data":
                take = bytes(self._buf[: self._remaining])
                del self._buf[: len(take)]
                self._take_body(take)
                self._remaining -= len(take)
                if self._remaining:
                    return
                self._mode = "chunk-crlf"
            elif mode == "chunk-crlf":
                if self._buf[:2] != b"\r\n"[: len(self._buf)]:
                    raise FetchError("chunk data not followed by CRLF")
                if len(self._buf) < 2:
                    return
                del self._buf[:2]
                self._mode = "chunk-size"
            else:  # trailers: ignored, up to the empty line
                line = self._line()
                if line is None:
                    return
                if not line:
                    self.complete = True

    def _parse_head(self, head: bytes) -> None:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
            raise FetchError("undecodable response head") from None
        lines = text.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise FetchError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        status = int(code)
        if status < 100:
            raise FetchError(f"invalid status {status}")
        if len(lines) - 1 > MAX_HEADERS:
            raise FetchError("too many response headers")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name):
                raise FetchError(f"malformed response header {line[:80]!r}")
            headers.append((name, value.strip(" \t")))
        if 100 <= status < 200:
            if status == 101:
                raise FetchError("the server switched protocols (upgrades are not supported)")
            return  # interim response (100 Continue, 103 Early Hints): the real one follows
        self.status, self.reason, self.headers = status, reason, headers
        lowered = [(n.lower(), v) for n, v in headers]
        codings = [v for n, v in lowered if n == "transfer-encoding"]
        lengths = {v.strip() for n, v in lowered if n == "content-length"}
        if self.method.upper() == "HEAD" or status in _NO_BODY:
            self.complete = True
        elif codings:
            last = ",".join(codings).split(",")[-1].strip().lower()
            self._mode = "chunk-size" if last == "chunked" else "close"
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise FetchError("invalid Content-Length")
            self._remaining = int(next(iter(lengths)))
            if self._remaining > self.max_body:
                raise FetchError(f"response body over {self.max_body} bytes")
            self._mode = "length"
            self.complete = self._remaining == 0
        else:
            self._mode = "close"


async def circuit_fetch(
    driver: AsyncNode,
    pool: CircuitPool,
    url: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    max_body: int = MAX_BODY,
    isolation_key: bytes | None = None,
) -> FetchResponse:
    """Carry one HTTP request through a 3-hop circuit to an exit; FetchError on failure.

    Requests to the same origin share circuits (``isolation_key`` defaults to it)."""
    target = parse_url(url)
    request = build_request(method, target, headers, body)
    key = isolation_key if isolation_key is not None else target.origin.encode()
    try:
        circuit = await pool.circuit_for(key)
    except ZMeshError as exc:
        raise FetchError(f"no circuit: {exc}") from None
    try:
        pipe = driver.open_stream(circuit.cid, target.stream_target)
    except ZMeshError as exc:
        pool.forget(circuit, failed=True)
        raise FetchError(f"the circuit failed: {exc}") from None
    node, cid, sid = driver.node, pipe.cid, pipe.sid
    finished = False
    try:
        try:
            await pipe.wait_connected(CONNECT_TIMEOUT)
        except TimeoutError:
            pool.forget(circuit, failed=True)
            raise FetchError(f"no answer from the exit within {CONNECT_TIMEOUT:g} s") from None
        except StreamClosedError as exc:
            raise FetchError(
                f"the exit could not connect to {target.stream_target}: {exc}"
            ) from None
        driver.call(lambda now: node.streams.send(cid, sid, request, now))
        parser = ResponseParser(method, max_body)
        while not parser.complete:
            try:
                event = await pipe.receive(IDLE_TIMEOUT)
            except TimeoutError:
                raise FetchError(f"the response stalled for {IDLE_TIMEOUT:g} s") from None
            if isinstance(event, StreamData):
                parser.feed(event.data)
                taken = len(event.data)
                with contextlib.suppress(ZMeshError):
                    driver.call(lambda now: node.streams.consume(cid, sid, taken, now))  # noqa: B023
            elif isinstance(event, StreamFinished):
                finished = True
                parser.eof()
            elif event is None or isinstance(event, StreamReset):
                raise FetchError("the stream was reset or its circuit closed")
        return FetchResponse(parser.status, parser.reason, parser.headers, parser.body)
    finally:
        if finished:
            pipe.finish()
        else:
            pipe.reset(RESET_CLOSED)
        pool.stream_closed(circuit)
