"""``zmesh web``: serve the browser node's page (web/dist) and its ``config.json``.

A small static file server on asyncio, with the defences of :mod:`zmesh.runtime.http`
(whose h11 server connection it reuses): GET and HEAD only, the request head bounded to
8 KiB and read within a few seconds (408 beyond), anything malformed answered with a 4xx,
a cap on concurrent connections (503 beyond), one request per connection.  A path can
never leave the served directory: it is percent-decoded, any ``..``, dot-file, backslash
or NUL segment is refused, and the resolved file (symlinks followed) must still lie under
the directory.  Files are streamed in chunks with the MIME
types browsers insist on (``application/wasm`` for streaming compilation, JavaScript
for module scripts).  Every file carries ``Cache-Control: no-cache`` and an ``ETag`` (its
size and modification time), and a request whose ``If-None-Match`` names the current ETag
gets a 304: a browser with a warm cache revalidates each file in one round trip and keeps
what it derived from it (Chromium's compiled WebAssembly, D52), while a rebuilt web/dist is
seen at once.

``/config.json`` is generated: ``{"bootstrap": [URL, ...]}``, the signaling endpoints the
page joins through, and ``"trustCa"``: the PEM of ``--trust-ca``, CAs the page's https
fetches trust beyond certifi's (D51), when one was given.
"""

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from ..errors import UsageError
from . import run_command
from .fetch import MAX_TRUST_CA
from .http import MAX_HEAD, PHASE_TIMEOUT, HttpError, ServerConnection
from .tls import pem_blocks

log = logging.getLogger("zmesh.web")

MAX_CONNECTIONS = 64
CHUNK = 256 * 1024
WRITE_TIMEOUT = 30.0
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
    ".zip": "application/zip",
    ".whl": "application/zip",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
#: what a usable web/dist contains (build_wasm.py's output)
REQUIRED = ("index.html", "page.js", "worker.js", "zmesh-lock.json", "pyodide/pyodide.mjs")


class DistError(UsageError):
    """The page's files are missing or incomplete."""


PACKAGED = Path(__file__).resolve().parents[1] / "web"  # in an installed wheel
CHECKOUT = Path(__file__).resolve().parents[2] / "web" / "dist"  # in a source tree


def find_dist(explicit: Path | None = None) -> Path:
    """The directory to serve: ``explicit``, else the bundle the installed wheel carries,
    else the source tree's web/dist.  DistError says how to build it."""
    candidates = [explicit] if explicit is not None else [PACKAGED, CHECKOUT]
    for candidate in candidates:
        missing = [name for name in REQUIRED if not (candidate / name).is_file()]
        if not missing:
            return candidate.resolve()
    where = candidates[-1]
    raise DistError(
        f"the browser node's files are not built: {where} is missing or incomplete "
        f"(no {', '.join(missing)}). Install a zmesh wheel (it carries them), build them "
        "with `make web` in the zMesh source tree, or point --dist at a built bundle."
    )


def resolve_path(root: Path, target: str) -> Path | None:
    """The file under ``root`` that request-target ``target`` names, or None (404)."""
    path = unquote(target.split("?", 1)[0].split("#", 1)[0], errors="strict")
    if not path.startswith("/") or "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p.startswith(".") for p in parts):  # "..", and dot-files (.git, .env, ...)
        return None
    candidate = root.joinpath(*parts)
    try:
        if path.endswith("/") or candidate.is_dir():
            candidate = candidate / "index.html"
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


#: the If-None-Match header this server looks at (a longer one is not a match: a 200)
MAX_IF_NONE_MATCH = 1024


def etag(stat: os.stat_result) -> str:
    """The strong entity tag of a file as it is now: its size and modification time, which
    change whenever build_wasm.py rewrites it."""
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'


def not_modified(if_none_match: bytes | None, tag: str) -> bool:
    """True if an ``If-None-Match`` value (RFC 9110, section 13.1.2: ``*`` or a list of
    entity tags, weak ones compared weakly) matches ``tag``.  A missing, oversized or
    undecodable value is no match."""
    if if_none_match is None or len(if_none_match) > MAX_IF_NONE_MATCH:
        return False
    try:
        value = if_none_match.decode("ascii")
    except UnicodeDecodeError:
        return False
    if value.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in value.split(","))


def _headers(content_type: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    """The header fields of every response (Content-Length and Connection are added)."""
    return [
        ("Content-Type", content_type),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        *extra,
    ]


@dataclass
class WebServer:
    """Serves ``dist`` and a generated ``/config.json`` (see the module doc)."""

    dist: Path
    bootstrap: list[str]
    trust_ca: str = ""
    requests: int = 0
    _server: asyncio.Server | None = None
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONNECTIONS))

    def __post_init__(self) -> None:
        self.dist = self.dist.resolve()
        config: dict[str, object] = {"bootstrap": self.bootstrap}
        if self.trust_ca:
            config["trustCa"] = self.trust_ca
        self._config = json.dumps(config, indent=1).encode() + b"\n"

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(reader, writer)
        if self._slots.locked():
            conn.respond(503, _headers("text/plain"), b"busy\n")
            writer.close()
            return
        async with self._slots:
            self.requests += 1
            try:
                await self._respond(conn)
            except (ConnectionError, TimeoutError):
                pass
            except Exception:  # a bug must not stop the server: log it, drop the connection
                log.exception("web event=handler_error")
            finally:
                await conn.close(WRITE_TIMEOUT)

    async def _respond(self, conn: ServerConnection) -> None:
        try:
            request = await conn.read_request()
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405)
            if request.path == "/config.json":
                conn.respond(200, _headers(MIME_TYPES[".json"]), self._config)
                await conn.drain(WRITE_TIMEOUT)
                return
            try:
                path = resolve_path(self.dist, request.path)
            except UnicodeDecodeError:
                raise HttpError(400, "bad percent-encoding") from None
            if path is None:
                raise HttpError(404)
        except HttpError as exc:
            extra = [("Allow", "GET, HEAD")] if exc.status == 405 else []
            headers = _headers("text/plain; charset=utf-8", *extra)
            conn.respond(exc.status, headers, f"{exc}\n".encode())
            await conn.drain(PHASE_TIMEOUT)
            return
        content_type = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
        with path.open("rb") as f:
            stat = os.fstat(f.fileno())
            size, tag = stat.st_size, etag(stat)
            headers = _headers(content_type, ("ETag", tag))
            asked = next((v for k, v in request.headers if k == b"if-none-match"), None)
            if not_modified(asked, tag):
                # no body; Content-Length is the file's, as RFC 9110 (section 15.4.5) allows
                conn.start_response(304, headers, size)
                await conn.drain(WRITE_TIMEOUT)
                return
            conn.start_response(200, headers, size)
            if request.method == "GET":
                while chunk := f.read(min(CHUNK, size)):
                    conn.send_data(chunk)
                    size -= len(chunk)
                    await conn.drain(WRITE_TIMEOUT)
            await conn.drain(WRITE_TIMEOUT)


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (display only)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


@dataclass
class WebOptions:
    host: str
    port: int
    dist: Path | None
    bootstrap: list[str]
    trust_ca: str = ""


def load_trust_ca(path: Path) -> str:
    """The CA certificates in PEM file ``path``, checked (each must parse, and be a CA);
    ValueError with a clear message otherwise."""
    from cryptography import x509  # noqa: PLC0415

    try:
        if path.stat().st_size > MAX_TRUST_CA:
            raise ValueError(f"{path}: over {MAX_TRUST_CA} bytes")
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except ValueError as exc:
        raise ValueError(f"{path}: not PEM certificates ({exc})") from None
    for cert in certs:
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if not ca:
            raise ValueError(f"{path}: {cert.subject.rfc4514_string()} is not a CA certificate")
    return "".join(pem_blocks(text))


async def run_web(opts: WebOptions) -> int:
    from .daemon import stop_requested  # noqa: PLC0415 (keeps this module light)

    stop = stop_requested()
    dist = find_dist(opts.dist)
    server = WebServer(dist, opts.bootstrap, opts.trust_ca)
    port = await server.start(opts.host, opts.port)
    url = page_url(opts.host, port)
    print(f"zmesh web: serving {dist} on {url}", flush=True)
    print(f"bootstrap relays: {', '.join(opts.bootstrap)}", flush=True)
    if opts.trust_ca:
        print(f"https: the page also trusts {opts.trust_ca.count('BEGIN CERT')} CA(s) given")
    print(f"Open {url} in a browser to run a zMesh node there. Ctrl-C stops.", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


def main_web(opts: WebOptions) -> int:
    return run_command("web", run_web(opts))
