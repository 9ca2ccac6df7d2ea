"""HTTP/1.1 for zmesh.fetch: URL checks, request building and the bounded response parser
(h11, through zmesh.runtime.http.ClientExchange)."""

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.runtime.fetch import (
    MAX_HEAD,
    MAX_REQUEST_BODY,
    FetchError,
    Target,
    parse_url,
    start_exchange,
)
from zmesh.runtime.http import MAX_RESPONSE_HEADERS, ClientExchange, ResponseError

TARGET = Target("example.com", 80, "/")


def _exchange(method: str = "GET", max_body: int = 1 << 20) -> ClientExchange:
    return start_exchange(method, TARGET, [], b"", max_body)


def _parse(raw: bytes, method: str = "GET", *, split: int = 0, eof: bool = False) -> ClientExchange:
    """Feed ``raw`` whole (split=0) or in pieces of ``split`` bytes."""
    parser = _exchange(method)
    pieces = [raw] if not split else [raw[i : i + split] for i in range(0, len(raw), split)]
    for piece in pieces:
        parser.feed(piece)
    if eof:
        parser.eof()
    return parser


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
    b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n"
)


@pytest.mark.parametrize("split", [0, 1, 7])
def test_bodies_by_length_chunks_and_close(split: int) -> None:
    p = _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", split=split)
    assert p.complete and p.status == 200 and p.reason == "OK" and p.body == b"hello"
    p = _parse(CHUNKED, split=split)
    assert p.complete and p.body == b"hello world" and ("X-A", "b") in p.headers
    p = _parse(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", split=split)
    assert not p.complete
    p.eof()
    assert p.complete and p.body == b"until the end"


def test_interim_responses_and_bodiless_ones() -> None:
    p = _parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX: y\r\n\r\n")
    assert p.complete and p.status == 204 and p.body == b""
    p = _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", method="HEAD")
    assert p.complete and p.body == b""
    p = _parse(b"HTTP/1.1 304 Not Modified\r\n\r\n")
    assert p.complete
    p = _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert p.complete and p.body == b""


def test_bytes_after_the_response_are_ignored() -> None:
    p = _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert p.complete and p.body == b"ok"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 099 OK\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "over"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab", "malformed"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "malformed"),  # we asked no upgrade
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD, "head over"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", "head over"),  # whole
        (b"HTTP/1.1 103 Early Hints\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", "head over"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_HEAD // 25 + 1), "head over"),  # in all
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_RESPONSE_HEADERS + 1) + b"\r\n", "too many"),
    ],
)
def test_malformed_responses_raise_response_error(raw: bytes, error: str) -> None:
    with pytest.raises(ResponseError, match=error):
        _parse(raw)
    with pytest.raises(ResponseError, match=error):
        _parse(raw, split=1)


def test_a_head_at_the_limit_parses() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: "
    raw = head + b"a" * (MAX_HEAD - len(head) - 4) + b"\r\n\r\n"
    assert len(raw) == MAX_HEAD
    assert _parse(raw, split=4096).complete


def test_truncated_responses_raise_at_eof() -> None:
    with pytest.raises(ResponseError, match="before the end of the body"):
        _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", eof=True)
    with pytest.raises(ResponseError, match="response head"):
        _parse(b"HTTP/1.1 200 O", eof=True)
    with pytest.raises(ResponseError, match="response head"):
        _parse(b"", eof=True)
    with pytest.raises(ResponseError, match="before the end of the body"):
        _parse(CHUNKED[:-10], eof=True)


def test_the_body_limit_holds_for_every_framing() -> None:
    big = b"x" * 2000
    for raw in (
        b"HTTP/1.0 200 OK\r\n\r\n" + big,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + big + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + big,
    ):
        for split in (0, 100):
            parser = _exchange(max_body=1000)
            with pytest.raises(ResponseError, match="over 1000 bytes"):
                for i in range(0, len(raw), split or len(raw)):
                    parser.feed(raw[i : i + (split or len(raw))])


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_input_parses_or_raises_response_error(data: bytes, split: int) -> None:
    try:
        _parse(b"HTTP/1.1 200 OK\r\n" + data, split=split, eof=True)
    except ResponseError:
        pass


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_bytes_parse_or_raise_response_error(data: bytes, split: int) -> None:
    try:
        _parse(data, split=split, eof=True)
    except ResponseError:
        pass


def test_urls() -> None:
    assert parse_url("http://example.com") == Target("example.com", 80, "/")
    target = parse_url("http://[::1]:8080/a/b?c=d#frag")
    assert target == Target("::1", 8080, "/a/b?c=d")
    assert target.stream_target == "[::1]:8080" and target.host_header == "[::1]:8080"
    https = parse_url("https://example.com/x")
    assert https == Target("example.com", 443, "/x", "https")
    assert https.stream_target == "example.com:443" and https.host_header == "example.com"
    assert https.origin == "https://example.com" != parse_url("http://example.com:443/").origin
    assert parse_url("https://example.com:8443/").host_header == "example.com:8443"
    for bad in ("ftp://x/", "http://", "http://u:p@host/", "http://host:99999/", "/relative"):
        with pytest.raises(FetchError):
            parse_url(bad)


def test_requests_set_their_own_framing_headers() -> None:
    target = parse_url("http://example.com:8000/path?q=1")
    raw = start_exchange(
        "POST", target, [("X-Test", "1"), ("Host", "evil"), ("Content-Length", "9")], b"body"
    ).request
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /path?q=1 HTTP/1.1"
    assert "Host: example.com:8000" in lines and "Host: evil" not in lines
    assert "Content-Length: 4" in lines and "Content-Length: 9" not in lines
    assert "Connection: close" in lines and "X-Test: 1" in lines
    assert "Accept-Encoding: identity" in lines
    assert body == b"body"
    assert b"Content-Length" not in start_exchange("GET", target, [], b"").request
    for method, headers in (
        ("GET /x", []),
        ("CONNECT", []),
        ("GËT", []),
        ("GET", [("Bad Name", "v")]),
        ("GET", [("X", "a\r\nInjected: 1")]),
        ("GET", [("X", "a\x00")]),
        ("GET", [("X", "\u2603")]),
    ):
        with pytest.raises(FetchError):
            start_exchange(method, target, headers, b"")
    with pytest.raises(FetchError, match="request body over"):
        start_exchange("POST", target, [], bytes(MAX_REQUEST_BODY + 1))
    with pytest.raises(FetchError, match="invalid HTTP request"):
        start_exchange("GET", parse_url("http://example.com/\u00e9"), [], b"")


def test_a_request_round_trips_through_h11() -> None:
    """What start_exchange writes, an h11 server reads back: method, target, fields, body."""
    target = parse_url("http://example.com:8000/p?q=1")
    raw = start_exchange("PUT", target, [("X-A", " b ")], b"payload").request
    server = h11.Connection(h11.SERVER)
    server.receive_data(raw)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (b"PUT", b"/p?q=1")
    fields = dict(request.headers)
    assert fields[b"host"] == b"example.com:8000" and fields[b"x-a"] == b"b"
    assert fields[b"connection"] == b"close" and fields[b"content-length"] == b"7"
    data = server.next_event()
    assert isinstance(data, h11.Data) and data.data == b"payload"
    assert isinstance(server.next_event(), h11.EndOfMessage)
