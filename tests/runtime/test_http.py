"""The signaling server and client (zmesh.runtime.http, framed by h11): every bound attacked.

Timeouts are shortened (PHASE_TIMEOUT is patched) so a slow client costs a fraction of a
second; nothing here sleeps to wait for the server.
"""

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zmesh.runtime import http
from zmesh.runtime.http import (
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    HttpServer,
    Request,
    ResponseError,
    http_request,
    serve_fixed,
)

GET = b"GET /zmesh/descriptor HTTP/1.1\r\nHost: x\r\n\r\n"


def post(body: bytes, path: str = "/zmesh/signal") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.fixture(autouse=True)
def short_phases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(http, "PHASE_TIMEOUT", 0.3)
    yield


class Recorder:
    """A handler that records what reached it and answers like the signaling endpoint."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> tuple[str, bytes]:
        self.seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("a bug in the handler")
        if request.path == "/teapot":
            raise HttpError(403, "refused")
        return "application/octet-stream", request.method.encode() + b" " + request.body


async def exchange(port: int, pieces: list[bytes], *, half_close: bool = True) -> bytes:
    """Send ``pieces`` (a write each), half-close, and read everything the server sends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        return b""
    finally:
        writer.close()


def status_of(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
    return int(match.group(1)) if match else 0


def headers_of(reply: bytes) -> dict[str, str]:
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in head)}


def with_server(
    scenario: Callable[[int, Recorder, HttpServer], Awaitable[None]],
) -> None:
    async def run() -> None:
        recorder = Recorder()
        server = HttpServer(recorder)
        port = await server.start("127.0.0.1", 0)
        try:
            await scenario(port, recorder, server)
        finally:
            await server.close()

    asyncio.run(run())


@pytest.mark.parametrize("split", [0, 1, 5])
def test_requests_round_trip_whole_and_split(split: int) -> None:
    async def scenario(port: int, recorder: Recorder, _: HttpServer) -> None:
        raw = post(b"\x00offer\xff")
        pieces = [raw] if not split else [raw[i : i + split] for i in range(0, len(raw), split)]
        reply = await exchange(port, pieces)
        assert status_of(reply) == 200 and reply.endswith(b"\r\n\r\nPOST \x00offer\xff")
        headers = headers_of(reply)
        assert headers["access-control-allow-origin"] == "*"
        assert headers["connection"] == "close" and headers["cache-control"] == "no-store"
        assert recorder.seen == [Request("POST", "/zmesh/signal", b"\x00offer\xff")]
        # a query string is not part of the path; bytes after the request are ignored
        reply = await exchange(port, [GET.replace(b"descriptor", b"descriptor?x=1") + b"junk"])
        assert status_of(reply) == 200 and recorder.seen[-1].path == "/zmesh/descriptor"

    with_server(scenario)


def test_the_client_round_trips_with_the_server() -> None:
    async def scenario(port: int, recorder: Recorder, _: HttpServer) -> None:
        base = f"http://127.0.0.1:{port}"
        assert await http_request(base + "/zmesh/descriptor") == (200, b"GET ")
        body = bytes(range(256)) * 100
        assert await http_request(base + "/zmesh/signal", method="POST", body=body) == (
            200,
            b"POST " + body,
        )
        status, text = await http_request(base + "/teapot")
        assert (status, text) == (403, b"refused\n")
        with pytest.raises(ValueError, match="unsupported URL"):
            await http_request(f"https://127.0.0.1:{port}/")

    with_server(scenario)


def test_cors_preflight_and_head() -> None:
    async def scenario(port: int, recorder: Recorder, _: HttpServer) -> None:
        reply = await exchange(port, [b"OPTIONS /zmesh/signal HTTP/1.1\r\nHost: x\r\n\r\n"])
        assert status_of(reply) == 204 and reply.endswith(b"\r\n\r\n")
        headers = headers_of(reply)
        assert headers["access-control-allow-origin"] == "*"
        assert headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
        assert headers["access-control-allow-headers"] == "Content-Type"
        assert headers["access-control-max-age"] == "600"
        assert recorder.seen == []  # a preflight never reaches the handler
        reply = await exchange(port, [b"HEAD /zmesh/descriptor HTTP/1.1\r\nHost: x\r\n\r\n"])
        assert status_of(reply) == 200 and reply.endswith(b"\r\n\r\n")
        assert headers_of(reply)["content-length"] == "5"  # "HEAD ", not sent

    with_server(scenario)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * (MAX_HEAD // 6), 431),
        (b"POST /zmesh/signal HTTP/1.1\r\nHost: x\r\nContent-Length: 32769\r\n\r\n", 413),
        (b"POST /zmesh/signal HTTP/1.1\r\nHost: x\r\nContent-Length: 1" + b"0" * 30, 400),
        (b"POST /zmesh/signal HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        (b"POST /zmesh/signal HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # RFC 9112, section 3.2: Host is mandatory
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"\x00\xff garbage \r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", 400),  # closed mid-head
        (b"GET /teapot HTTP/1.1\r\nHost: x\r\n\r\n", 403),
        (b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n", 500),
    ],
)
def test_bad_requests_get_their_status_and_a_close(raw: bytes, status: int) -> None:
    async def scenario(port: int, recorder: Recorder, server: HttpServer) -> None:
        reply = await exchange(port, [raw])
        assert status_of(reply) == status, reply[:200]
        assert headers_of(reply)["access-control-allow-origin"] == "*"
        assert headers_of(reply)["connection"] == "close"
        if status not in (403, 500):
            assert recorder.seen == [] and server.rejected == 1
        assert status_of(await exchange(port, [GET])) == 200  # the server goes on

    with_server(scenario)


def test_limits_hold_at_their_edge() -> None:
    async def scenario(port: int, recorder: Recorder, _: HttpServer) -> None:
        assert status_of(await exchange(port, [post(bytes(MAX_BODY))])) == 200
        assert recorder.seen[-1].body == bytes(MAX_BODY)
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX: "
        at_limit = head + b"a" * (MAX_HEAD - len(head) - 4) + b"\r\n\r\n"
        assert len(at_limit) == MAX_HEAD
        assert status_of(await exchange(port, [at_limit])) == 200
        # the head is bounded however it arrives, and whatever follows it
        assert status_of(await exchange(port, [at_limit[:-4] + b"a" * 200])) == 431

    with_server(scenario)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /zmesh/descr",  # slow head
        b"POST /zmesh/signal HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # slow body
        b"",  # connects and says nothing
    ],
)
def test_slow_clients_get_408(raw: bytes) -> None:
    async def scenario(port: int, recorder: Recorder, server: HttpServer) -> None:
        reply = await exchange(port, [raw], half_close=False)  # the server must time it out
        assert status_of(reply) == 408 and recorder.seen == []

    with_server(scenario)


def test_a_slowloris_trickle_still_gets_408() -> None:
    """Bytes that keep coming do not extend a phase: it has one deadline."""

    async def scenario(port: int, recorder: Recorder, _: HttpServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answered = asyncio.ensure_future(reader.read())
        trickle = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100  # 2.6 s at this pace
        sent = 0
        try:
            while sent < len(trickle) and not answered.done():
                writer.write(trickle[sent : sent + 1])
                sent += 1
                await asyncio.sleep(0.02)  # the attacker's pace, not a wait for the server
            try:
                reply = await asyncio.wait_for(answered, 5)
            except ConnectionResetError:  # our byte crossed the server's close: no reply
                reply = None
        finally:
            writer.close()
        assert sent < len(trickle) // 2  # the server ended it long before the trickle did
        assert reply is None or status_of(reply) == 408
        assert recorder.seen == []

    with_server(scenario)


def test_connections_over_the_cap_get_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 3)
    monkeypatch.setattr(http, "PHASE_TIMEOUT", 5.0)

    async def scenario(port: int, recorder: Recorder, server: HttpServer) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        try:
            while server.requests < 3:  # the server has taken all three
                await asyncio.sleep(0.01)
            # (a client that had sent its request may see a reset instead: the server does
            # not read it, and the kernel resets a socket closed with unread data)
            reply = await exchange(port, [], half_close=False)
            assert status_of(reply) == 503 and reply.endswith(b"busy\n")
            assert headers_of(reply)["access-control-allow-origin"] == "*"
            assert recorder.seen == []
        finally:
            for _, writer in idle:
                writer.close()
        for _ in range(500):  # the closed connections free their slots
            if status_of(reply := await exchange(port, [GET])) == 200:
                break
            await asyncio.sleep(0.01)  # 503, or the reset of a 503 (see above)
        assert status_of(reply) == 200

    with_server(scenario)


VALID = [GET, post(b"offer"), b"OPTIONS /zmesh/signal HTTP/1.1\r\nHost: x\r\n\r\n"]


@st.composite
def hostile_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid request truncated, spliced or with bytes flipped."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    raw = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        match draw(st.sampled_from(["cut", "insert", "flip"])):
            case "cut":
                del raw[at : at + draw(st.integers(1, 20))]
            case "insert":
                raw[at:at] = draw(st.binary(min_size=1, max_size=20))
            case _:
                if at < len(raw):
                    raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_bytes(), st.integers(min_value=1, max_value=64))
@example(b"", 1)
@example(b"\r\n" * 100, 3)
@example(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 7)
@example(post(b"\x00" * 5) + b"offer", 2)  # bytes after the body: the close must not reset
def test_any_bytes_get_a_4xx_or_a_close_and_never_an_escaping_exception(
    data: bytes, split: int
) -> None:
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("zmesh.http").addHandler(handler)
    loop_errors: list[dict[str, object]] = []

    async def scenario(port: int, recorder: Recorder, _: HttpServer) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        pieces = [data[i : i + split] for i in range(0, len(data), split)]
        reply = await exchange(port, pieces)
        status = status_of(reply)
        if recorder.seen:  # the mutation happened to leave a well-formed request
            assert status == 200, reply[:200]
        elif reply:
            assert 400 <= status < 500 or (status == 204 and data.startswith(b"OPTIONS")), reply
        await asyncio.sleep(0)  # let the server's task finish

    try:
        with_server(scenario)
    finally:
        logging.getLogger("zmesh.http").removeHandler(handler)
    assert errors == [] and loop_errors == []


def test_serve_fixed_answers_every_well_formed_request() -> None:
    async def scenario() -> None:
        server, base = await serve_fixed(b"payload", "application/octet-stream")
        try:
            assert await http_request(base + "/anything") == (200, b"payload")
            port = int(base.rsplit(":", 1)[1])
            assert status_of(await exchange(port, [b"\x00garbage\r\n\r\n"])) == 400
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


async def _fixed_reply(reply: bytes) -> tuple[asyncio.Server, str]:
    """A server that reads a request head and answers with ``reply`` verbatim."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", (200, b"ok")),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            (200, b"ok"),
        ),
        (b"HTTP/1.0 404 Not Found\r\n\r\nuntil the close", (404, b"until the close")),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", (200, b"")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 32769\r\n\r\n", "body over"),
        (b"HTTP/1.0 200 OK\r\n\r\n" + bytes(MAX_BODY + 1), "body over"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", "head over"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed"),
        (b"SSH-2.0-OpenSSH\r\n", "response head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "end of the body"),
        (b"", "response head"),
    ],
)
def test_the_client_bounds_and_checks_responses(reply: bytes, outcome: object) -> None:
    async def scenario() -> None:
        server, url = await _fixed_reply(reply)
        try:
            if isinstance(outcome, str):
                with pytest.raises(ResponseError, match=outcome):
                    await http_request(url)
            else:
                assert await http_request(url) == outcome
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_the_client_times_out() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(TimeoutError):
                await http_request(f"http://127.0.0.1:{port}/", timeout=0.2)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
