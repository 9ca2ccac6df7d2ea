"""HTTP/1.1 for zmesh.fetch: URL checks, request building and the bounded response parser."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmesh.runtime.fetch import (
    MAX_HEAD,
    FetchError,
    ResponseParser,
    Target,
    build_request,
    parse_url,
)


def _parse(raw: bytes, method: str = "GET", *, split: int = 0, eof: bool = False) -> ResponseParser:
    """Feed ``raw`` whole (split=0) or in pieces of ``split`` bytes."""
    parser = ResponseParser(method, max_body=1 << 20)
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
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x response"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "over"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab", "CRLF"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * MAX_HEAD, "head over"),
    ],
)
def test_malformed_responses_raise_fetch_error(raw: bytes, error: str) -> None:
    with pytest.raises(FetchError, match=error):
        _parse(raw)


def test_truncated_responses_raise_at_eof() -> None:
    with pytest.raises(FetchError, match="before the end of the body"):
        _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", eof=True)
    with pytest.raises(FetchError, match="response head"):
        _parse(b"HTTP/1.1 200 O", eof=True)
    with pytest.raises(FetchError, match="before the end of the body"):
        _parse(CHUNKED[:-10], eof=True)


def test_the_body_limit_holds_for_every_framing() -> None:
    big = b"x" * 2000
    for raw in (
        b"HTTP/1.0 200 OK\r\n\r\n" + big,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + big + b"\r\n0\r\n\r\n",
    ):
        parser = ResponseParser("GET", max_body=1000)
        with pytest.raises(FetchError, match="over 1000 bytes"):
            parser.feed(raw)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_input_parses_or_raises_fetch_error(data: bytes, split: int) -> None:
    try:
        _parse(b"HTTP/1.1 200 OK\r\n" + data, split=split, eof=True)
    except FetchError:
        pass


def test_urls() -> None:
    assert parse_url("http://example.com") == Target("example.com", 80, "/")
    target = parse_url("http://[::1]:8080/a/b?c=d#frag")
    assert target == Target("::1", 8080, "/a/b?c=d")
    assert target.stream_target == "[::1]:8080" and target.host_header == "[::1]:8080"
    with pytest.raises(FetchError, match="http:// URLs only"):
        parse_url("https://example.com/")
    for bad in ("ftp://x/", "http://", "http://u:p@host/", "http://host:99999/", "/relative"):
        with pytest.raises(FetchError):
            parse_url(bad)


def test_requests_set_their_own_framing_headers() -> None:
    target = parse_url("http://example.com:8000/path?q=1")
    raw = build_request(
        "POST", target, [("X-Test", "1"), ("Host", "evil"), ("Content-Length", "9")], b"body"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /path?q=1 HTTP/1.1"
    assert "Host: example.com:8000" in lines and "Host: evil" not in lines
    assert "Content-Length: 4" in lines and "Content-Length: 9" not in lines
    assert "Connection: close" in lines and "X-Test: 1" in lines
    assert "Accept-Encoding: identity" in lines
    assert body == b"body"
    for method, headers in (
        ("GET /x", []),
        ("CONNECT", []),
        ("GET", [("Bad Name", "v")]),
        ("GET", [("X", "a\r\nInjected: 1")]),
    ):
        with pytest.raises(FetchError):
            build_request(method, target, headers, b"")
