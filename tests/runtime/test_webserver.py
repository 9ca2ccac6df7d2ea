"""``zmesh web``'s file server: MIME types, config.json, and no way out of the directory."""

import asyncio
import json
from pathlib import Path

import pytest

from zmesh.cli import main
from zmesh.runtime.http import HttpServer, Request
from zmesh.runtime.webserver import (
    MAX_IF_NONE_MATCH,
    REQUIRED,
    DistError,
    WebServer,
    find_dist,
    not_modified,
    resolve_path,
)


def _dist(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    for name in REQUIRED:
        (dist / name).parent.mkdir(parents=True, exist_ok=True)
        (dist / name).write_text(f"content of {name}")
    (dist / "pyodide" / "pyodide.asm.wasm").write_bytes(b"\0asm" + bytes(300_000))
    (dist / "sub").mkdir()
    (dist / "sub" / "index.html").write_text("sub index")
    (dist / ".hidden").write_text("dot file")
    (tmp_path / "secret.txt").write_text("outside")
    (dist / "link-out").symlink_to(tmp_path / "secret.txt")
    return dist


async def _get(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def _request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def test_serves_files_with_browser_mime_types_and_the_config(tmp_path: Path) -> None:
    dist = _dist(tmp_path)

    async def scenario() -> None:
        server = WebServer(dist, ["http://127.0.0.1:9000"])
        port = await server.start("127.0.0.1", 0)
        try:
            cases = {
                "/": ("text/html; charset=utf-8", b"content of index.html"),
                "/index.html?x=1": ("text/html; charset=utf-8", b"content of index.html"),
                "/worker.js": ("text/javascript; charset=utf-8", b"content of worker.js"),
                "/pyodide/pyodide.mjs": ("text/javascript; charset=utf-8", None),
                "/zmesh-lock.json": ("application/json", None),
                "/sub/": ("text/html; charset=utf-8", b"sub index"),
                "/sub": ("text/html; charset=utf-8", b"sub index"),
            }
            for path, (mime, body) in cases.items():
                status, headers, got = await _get(port, _request(path))
                assert (status, headers["content-type"]) == (200, mime), path
                assert body is None or got == body, path
            status, headers, got = await _get(port, _request("/pyodide/pyodide.asm.wasm"))
            assert headers["content-type"] == "application/wasm"
            assert len(got) == int(headers["content-length"]) == 300_004
            status, headers, got = await _get(port, _request("/config.json"))
            assert status == 200 and json.loads(got) == {"bootstrap": ["http://127.0.0.1:9000"]}
            status, headers, got = await _get(port, _request("/index.html", "HEAD"))
            assert status == 200 and got == b"" and int(headers["content-length"]) > 0
            status, headers, _ = await _get(port, _request("/index.html", "DELETE"))
            assert status == 405 and headers["allow"] == "GET, HEAD"
            post = b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            assert (await _get(port, post))[0] == 405
            # RFC 9112, section 3.2: an HTTP/1.1 request without Host gets a 400
            assert (await _get(port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 400
            assert (await _get(port, b"GET / HTTP/1.0\r\n\r\n"))[0] == 200
        finally:
            await server.close()

    asyncio.run(scenario())


def _conditional(path: str, if_none_match: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {if_none_match}\r\n\r\n".encode()


def test_a_warm_cache_revalidates_with_the_etag_and_gets_a_304(tmp_path: Path) -> None:
    dist = _dist(tmp_path)
    wasm = "/pyodide/pyodide.asm.wasm"

    async def scenario() -> None:
        server = WebServer(dist, [])
        port = await server.start("127.0.0.1", 0)
        try:
            status, headers, body = await _get(port, _request(wasm))
            tag = headers["etag"]
            assert status == 200 and len(body) == 300_004 and headers["cache-control"] == "no-cache"
            assert tag.startswith('"') and tag.endswith('"')
            for asked in (tag, f'"other", {tag}', f"W/{tag}", "*"):
                status, headers, body = await _get(port, _conditional(wasm, asked))
                assert (status, body, headers["etag"]) == (304, b"", tag), asked
                assert headers["content-length"] == "300004"  # the file's (RFC 9110, 15.4.5)
            for asked in ('"other"', tag[:-2] + '"', "", '"x", ' * 300 + tag):
                status, _, body = await _get(port, _conditional(wasm, asked))
                assert (status, len(body)) == (200, 300_004), asked[:40]
            # a rebuilt file has another tag: the stale one no longer matches
            (dist / "pyodide" / "pyodide.asm.wasm").write_bytes(b"\0asm" + bytes(300_001))
            status, headers, body = await _get(port, _conditional(wasm, tag))
            assert (status, len(body)) == (200, 300_005) and headers["etag"] != tag
        finally:
            await server.close()

    asyncio.run(scenario())


def test_if_none_match_parsing_attacks() -> None:
    tag = '"1f-abc"'
    assert not not_modified(None, tag)
    assert not not_modified(b"\xff\xfe", tag)
    assert not not_modified(b" " * (MAX_IF_NONE_MATCH - len(tag)) + tag.encode() + b"x", tag)
    assert not_modified(b" " * (MAX_IF_NONE_MATCH - len(tag)) + tag.encode(), tag)
    assert not not_modified(b'"1f-ab"', tag)
    assert not not_modified(b"1f-abc", tag)  # unquoted: not an entity tag
    assert not_modified(b' W/"1f-abc" ', tag)


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub/../../secret.txt",
        "/link-out",
        "/.hidden",
        "/%2ehidden",
        "/index.html%00.js",
        "/..\\secret.txt",
        "/missing.js",
        "//etc/passwd",
        "/%ff%fe",
    ],
)
def test_nothing_outside_the_directory_is_served(tmp_path: Path, path: str) -> None:
    dist = _dist(tmp_path)
    if "%ff" in path:
        with pytest.raises(UnicodeDecodeError):
            resolve_path(dist.resolve(), path)
    else:
        assert resolve_path(dist.resolve(), path) is None

    async def scenario() -> None:
        server = WebServer(dist, [])
        port = await server.start("127.0.0.1", 0)
        try:
            status, _, body = await _get(port, _request(path))
            assert status in (400, 404), (path, status)
            assert b"outside" not in body and b"dot file" not in body
        finally:
            await server.close()

    asyncio.run(scenario())


def test_a_missing_dist_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(DistError, match=r"make web"):
        find_dist(tmp_path / "nowhere")
    assert find_dist(_dist(tmp_path)) == (tmp_path / "dist").resolve()


def test_zmesh_web_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["web", "--help"])
    assert exc.value.code == 0
    assert "--bootstrap" in capsys.readouterr().out
    assert main(["web"]) == 2
    assert "at least one --bootstrap" in capsys.readouterr().err
    missing = str(tmp_path / "nowhere")
    assert main(["web", "--dist", missing, "--bootstrap", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "zmesh web: error:" in err and "make web" in err
    with pytest.raises(SystemExit):
        main(["web", "--port", "http", "--bootstrap", "http://127.0.0.1:1"])
    with pytest.raises(SystemExit):
        main(["web", "--bootstrap", "127.0.0.1:1"])


def test_signaling_answers_a_cors_preflight() -> None:
    async def handler(request: Request) -> tuple[str, bytes]:
        return "text/plain", b"handled"

    async def scenario() -> None:
        server = HttpServer(handler)
        port = await server.start("127.0.0.1", 0)
        try:
            status, headers, body = await _get(port, _request("/zmesh/signal", "OPTIONS"))
            assert status == 204 and body == b""
            assert headers["access-control-allow-origin"] == "*"
            assert "POST" in headers["access-control-allow-methods"]
            status, headers, body = await _get(port, _request("/zmesh/descriptor"))
            assert status == 200 and body == b"handled"
        finally:
            await server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
        (b"GET /index.html HTTP/3\r\nHost: x\r\n\r\n", 400),
        (b"GET /index.html HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ],
)
def test_the_page_server_refuses_what_it_should(tmp_path: Path, raw: bytes, status: int) -> None:
    async def scenario() -> None:
        server = WebServer(_dist(tmp_path), [])
        port = await server.start("127.0.0.1", 0)
        try:
            got, headers, _ = await _get(port, raw)
            assert got == status and headers["connection"] == "close"
            assert headers["x-content-type-options"] == "nosniff"
        finally:
            await server.close()

    asyncio.run(scenario())


def test_the_page_server_times_out_slow_clients_and_caps_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zmesh.runtime import http, webserver

    monkeypatch.setattr(http, "PHASE_TIMEOUT", 0.3)
    monkeypatch.setattr(webserver, "MAX_CONNECTIONS", 2)

    async def scenario() -> None:
        server = WebServer(_dist(tmp_path), [])
        port = await server.start("127.0.0.1", 0)
        try:
            # slow head: a partial request line, then nothing
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /index")
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408 ")
            writer.close()
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            while server.requests < 3:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503 ")
            writer.close()
            for _, w in idle:
                w.close()
        finally:
            await server.close()

    asyncio.run(scenario())
