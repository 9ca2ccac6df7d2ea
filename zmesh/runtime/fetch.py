"""HTTP/1.1 through a circuit: what the browser node's ``zmesh.fetch`` runs.

:func:`circuit_fetch` takes a session (legs of 3-hop circuits to an exit) from a
:class:`~zmesh.runtime.pool.Pool`, opens a stream to the URL's ``host:port``
(the exit makes the TCP connection under its exit policy), writes one HTTP/1.1 request
and parses the response, both with h11 through :func:`start_exchange`
(a :class:`~zmesh.runtime.http.ClientExchange`).  For an ``https://`` URL the exchange
runs inside a TLS session that this node holds with the server, end to end through the
circuit (:mod:`zmesh.runtime.tls`, D51): the exit connects to ``host:443`` (or the URL's
port) and sees only ciphertext; the server's certificate is checked before the request is
sent, and a failed check is a :class:`FetchError` that says why.

The exchange is sans-I/O (``feed``/``eof``) and bounded: the response head to
:data:`MAX_HEAD` bytes and :data:`~zmesh.runtime.http.MAX_RESPONSE_HEADERS` fields, the
body to the caller's ``max_body``, the request body to :data:`MAX_REQUEST_BODY`.  It reads
bodies delimited by Content-Length, by the chunked transfer coding (RFC 9112, section 7.1)
or by the connection closing (RFC 9112, section 6.3), skips interim 1xx responses, and
knows that HEAD, 204 and 304 responses have no body.  Anything malformed raises
:class:`~zmesh.runtime.http.ResponseError`, which :func:`circuit_fetch` reports as a
:class:`FetchError`.
"""

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ZMeshError
from ..session.endpoint import StreamData, StreamFinished
from .aio import AsyncNode
from .http import ClientExchange, ResponseError
from .pool import Pool
from .streams import RESET_CLOSED, StreamClosedError

if TYPE_CHECKING:
    from .tls import ChainVerifier

MAX_HEAD = 64 * 1024
MAX_BODY = 64 << 20
MAX_REQUEST_BODY = 8 << 20
CONNECT_TIMEOUT = 15.0
IDLE_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 30.0
#: the most ciphertext handed to the TLS client at once (below tls.MAX_PENDING)
TLS_FEED = 64 * 1024
#: bytes of PEM CAs a page may be told to trust (--trust-ca, config.json's trustCa)
MAX_TRUST_CA = 256 * 1024
#: set by circuit_fetch itself; a caller's values are dropped
DEFAULT_PORTS = {"http": 80, "https": 443}
_OWN_HEADERS = frozenset({"host", "connection", "content-length", "transfer-encoding", "te"})


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
    scheme: str = "http"

    @property
    def stream_target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host_header}"


def parse_url(url: str) -> Target:
    """The target of an ``http://`` or ``https://`` URL; FetchError for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError as exc:
        raise FetchError(f"invalid URL {url[:200]!r}: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise FetchError(f"unsupported URL {url[:200]!r} (expected http(s)://host[:port]/path)")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with credentials are not supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(c in path for c in " \r\n\t\x00"):
        raise FetchError("the URL path contains whitespace or control characters")
    return Target(parts.hostname, port, path, parts.scheme)


def start_exchange(
    method: str,
    target: Target,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    max_body: int = MAX_BODY,
) -> ClientExchange:
    """One HTTP/1.1 request (``Connection: close``) ready to send, and the parser of its
    response.  FetchError for a bad method (CONNECT among them), header or body size."""
    if method.upper() == "CONNECT":
        raise FetchError("unsupported method CONNECT")
    if len(body) > MAX_REQUEST_BODY:
        raise FetchError(f"request body over {MAX_REQUEST_BODY} bytes")
    try:
        fields = [(b"Host", target.host_header.encode("ascii"))]
        fields += [
            (name.encode("latin-1"), value.strip().encode("latin-1"))
            for name, value in headers
            if name.lower() not in _OWN_HEADERS
        ]
        if not any(name.lower() == b"accept-encoding" for name, _ in fields):
            fields.append((b"Accept-Encoding", b"identity"))  # the page gets the bytes as sent
        if body or method.upper() in ("POST", "PUT", "PATCH"):
            fields.append((b"Content-Length", b"%d" % len(body)))
    except UnicodeEncodeError:
        raise FetchError("header fields must be Latin-1 text, the host name ASCII") from None
    try:
        return ClientExchange(
            method, target.path, fields, body, max_head=MAX_HEAD, max_body=max_body
        )
    except ValueError as exc:
        raise FetchError(str(exc)) from None


async def circuit_fetch(
    driver: AsyncNode,
    pool: Pool,
    url: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    max_body: int = MAX_BODY,
    isolation_key: bytes | None = None,
    verifier: "ChainVerifier | None" = None,
) -> FetchResponse:
    """Carry one HTTP request through a 3-hop circuit to an exit; FetchError on failure.

    Requests to the same origin share circuits (``isolation_key`` defaults to it).  For
    ``https://`` the TLS session runs here, end to end (:mod:`zmesh.runtime.tls`), and
    ``verifier`` (default: certifi's CAs, :func:`~zmesh.runtime.tls.make_verifier`) checks
    the server's certificate before the request is sent."""
    target = parse_url(url)
    exchange = start_exchange(method, target, headers, body, max_body)
    key = isolation_key if isolation_key is not None else target.origin.encode()
    try:
        session = pool.session_for(key)
    except ZMeshError as exc:
        raise FetchError(f"no session: {exc}") from None
    try:
        pipe = driver.open_stream(session.session_id, target.stream_target)
    except ZMeshError as exc:
        pool.forget(session)
        raise FetchError(f"the session failed: {exc}") from None
    node, session_id, sid = driver.node, pipe.session_id, pipe.sid
    finished = False

    def send(data: bytes) -> None:
        if data:
            driver.call(lambda now: node.sessions.send(session_id, sid, data, now))

    async def receive() -> bytes | None:
        """The next bytes from the stream, None once the server finished it."""
        nonlocal finished
        try:
            event = await pipe.receive(IDLE_TIMEOUT)
        except TimeoutError:
            raise FetchError(f"the response stalled for {IDLE_TIMEOUT:g} s") from None
        if isinstance(event, StreamData):
            taken = len(event.data)
            with contextlib.suppress(ZMeshError):
                driver.call(lambda now: node.sessions.consume(session_id, sid, taken, now))
            return event.data
        if isinstance(event, StreamFinished):
            finished = True
            return None
        raise FetchError("the stream was reset or its session closed")

    try:
        try:
            await pipe.wait_connected(CONNECT_TIMEOUT)
        except TimeoutError:
            pool.forget(session)
            raise FetchError(f"no answer from the exit within {CONNECT_TIMEOUT:g} s") from None
        except StreamClosedError as exc:
            raise FetchError(
                f"the exit could not connect to {target.stream_target}: {exc}"
            ) from None
        try:
            if target.scheme == "https":
                await _exchange_tls(target, exchange, verifier, send, receive)
            else:
                send(exchange.request)
                while not exchange.complete:
                    data = await receive()
                    if data is None:
                        exchange.eof()
                    else:
                        exchange.feed(data)
        except ResponseError as exc:
            raise FetchError(str(exc)) from None
        except ZMeshError as exc:  # TlsError, CertificateError
            raise FetchError(f"{target.host_header}: {exc}") from None
        return FetchResponse(exchange.status, exchange.reason, exchange.headers, exchange.body)
    finally:
        if finished:
            pipe.finish()
        else:
            pipe.reset(RESET_CLOSED)
        pool.stream_closed(session)


async def _exchange_tls(
    target: Target,
    exchange: ClientExchange,
    verifier: "ChainVerifier | None",
    send: Callable[[bytes], None],
    receive: Callable[[], Awaitable[bytes | None]],
) -> None:
    """Run ``exchange`` inside a TLS session over the stream: the handshake (within
    :data:`HANDSHAKE_TIMEOUT`), the certificate check, then the request and its response.
    Raises TlsError, ResponseError or FetchError."""
    from .tls import TlsClient  # noqa: PLC0415 (tlslite-ng loads on the first https fetch)

    tls = TlsClient(target.host)
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            while not tls.handshake():
                send(tls.data_to_send())
                data = await receive()
                if data is None:
                    tls.receive_eof()
                else:
                    tls.receive_data(data)
    except TimeoutError:
        raise FetchError(f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s") from None
    send(tls.data_to_send())  # the client's Finished
    await (verifier or _default_verifier()).verify(tls.peer_chain, target.host, time.time())
    tls.send(exchange.request)
    send(tls.data_to_send())
    # a stream event carries up to the stream's window (a gap that multipath fills releases
    # everything behind it at once), more than TlsClient lets wait: feed it in slices,
    # decrypting between them
    backlog = memoryview(b"")
    while not exchange.complete:
        plain = tls.read()
        send(tls.data_to_send())  # alerts, key updates
        if plain:
            exchange.feed(plain)
        elif tls.closed:
            exchange.eof()
        elif backlog:
            tls.receive_data(bytes(backlog[:TLS_FEED]))
            backlog = backlog[TLS_FEED:]
        elif (data := await receive()) is None:
            tls.receive_eof()
        else:
            backlog = memoryview(data)


@functools.cache
def _default_verifier() -> "ChainVerifier":
    from .tls import make_verifier  # noqa: PLC0415

    return make_verifier()
