"""The status endpoint (``--control HOST:PORT``) and ``zmesh status``, after Tor's ControlPort.

``zmesh proxy --control`` and ``zmesh up --control`` serve one resource, ``GET /status``,
a JSON document (version 1)::

    {
      "version": 1,
      "role": "up",                    # or "proxy"
      "uptime_s": 42.1,                # of the process serving it
      "node_id": "9f...",              # the proxy's node id, full hex (null if unknown)
      "links": ["3a...", ...],         # peers it has an open link to, full hex
      "link_health": [                 # each open link's heartbeats (D42), by peer
        {"peer": "3a...", "rtt_ms": 12.5, "loss": 0.0, "phi": 0.3, "age_s": 61.0}, ...],
      "relays_known": 5,               # relays it picks paths from (sample or directory)
      "sample_size": 5,                # relays in its peer sample (0 without the DHT)
      "discovery": {...},              # how it learns relays (below; null if unknown)
      "relayed_circuits": 1,           # circuits of others passing through it
      "streams_waiting": 0,            # SOCKS connections waiting for a circuit
      "guards_per_client": 1,          # distinct first hops of its open client circuits
      "relays": [                      # zmesh up: the relays it started ([] for a proxy)
        {"index": 0, "node_id": "c1...", "pid": 4242, "exit": true,
         "url": "http://127.0.0.1:40001", "alive": true}, ...],
      "circuits": [                    # the proxy's client circuits, legs first
        {"id": 7, "path": ["a...", "b...", "c..."], "state": "open",
         "streams": 1, "rtt_ms": 41.5, "phi": 0.1, "session": 3}, ...],
      "sessions": [...],
      "proxy": {"pid": 4250, "alive": true}   # zmesh up only: its proxy process
    }

In ``link_health``, ``rtt_ms`` is the link's smoothed round-trip time from its PINGs (null
until measured), ``loss`` the fraction of its recent PINGs unanswered in time, ``phi`` the
phi-accrual suspicion of the peer (the link closes past 8 once nothing arrives) and
``age_s`` how long it has been up; a peer linked twice (both sides dialled) appears twice.

``discovery`` says how the node learns relays (issue 9, D46)::

    {"gossip": false,          # descriptors flooded on links (native and browser nodes: no)
     "dht": true,              # relays found through the DHT, paths from the peer sample
     "directory_size": 2,      # descriptors learned by bootstrap (or flooding)
     "sample_slots": 64,       # the sample's bound (0 without the DHT)
     "dht_table": 9,           # contacts in its DHT routing table
     "walks": 3,               # random walks (lookups of random ids) the sample started
     "lookups": 0,             # DHT lookups in flight
     "requests_in": 40, "requests_out": 61, "failed": 2,   # DHT RPCs
     "bytes_in": 90112, "bytes_out": 88064,               # DHT messages
     "bytes_per_s": 1534.2,    # DHT bytes both ways per second of uptime (maintenance)
     "dials": {"http": 9, "mesh": 0, "failed": 1}}        # DialWanted, carried out

Without the DHT, ``relays_known`` counts the directory; with it, the sample.

A circuit's ``path`` runs from the first hop to the final hop (the exit); its ``state``
is ``"open"`` once built.  ``session`` names the session the circuit carries as a leg
(null for a standby circuit, kept to replace a lost leg), ``streams`` counts that
session's streams, ``rtt_ms`` is the leg's smoothed round-trip time (null until
measured) and ``phi`` the phi-accrual suspicion that the leg is dead, from its PONGs
(null for a standby circuit; an idle leg is replaced at 8).  The legs of sessions come
first, by session, then the standby circuits.

``sessions`` lists the proxy's sessions, one object each::

    {"id": 3, "state": "open", "streams": 2, "bytes_in": 1048576, "bytes_out": 512,
     "legs": [7, 9], "failovers": 1, "longest_stall_ms": 212.0}

with ``legs`` the ids of its circuits in ``circuits``; ``state`` is ``"open"`` while it
takes new streams and ``"retired"`` once it only carries the streams it has (it closes
when the last one ends; see :mod:`zmesh.circuit.pool`); ``failovers`` counts the legs it
lost with data in flight, and ``longest_stall_ms`` the longest gap in the data it
received around one.

The server is for tools on this machine, not for web pages: it listens on loopback by
default, answers only ``GET /status`` (404 for other paths, 405 for other methods), sends
no CORS header, and refuses with 403 any request whose ``Host`` does not name this machine's
loopback (or the address it listens on: DNS rebinding) and any request carrying an
``Origin`` other than the control address itself (a page in a browser).  Requests are
framed by h11 through :class:`~zmesh.runtime.http.ServerConnection`, with its bounds
(8 KiB head, phase timeouts); a request may carry no body; at most
:data:`MAX_CONNECTIONS` are served at once (503 beyond).

The documents are built by :func:`status_document` and :func:`up_document`, which do no
I/O; :func:`format_status` renders one as tables for ``zmesh status``.
"""

import asyncio
import contextlib
import ipaddress
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..circuit.sessions import SessionInfo
from ..errors import ZMeshError
from ..link.connection import LinkStatus
from ..node import Node
from . import run_command
from .http import (
    MAX_HEAD,
    PHASE_TIMEOUT,
    ClientExchange,
    HttpError,
    Request,
    ResponseError,
    ServerConnection,
    run_exchange,
)

log = logging.getLogger("zmesh.control")

VERSION = 1
DEFAULT_CONTROL = "127.0.0.1:9051"  # Tor's ControlPort number; free of zmesh's other defaults
MAX_CONNECTIONS = 16
MAX_LISTED = 1024  # circuits or sessions listed in one document (the counts say the rest)
MAX_DOCUMENT = 4 * 1024 * 1024  # what `zmesh status` reads of a response body
FETCH_TIMEOUT = 5.0
RESPONSE_HEADERS = (
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """A relay ``zmesh up`` started (``node_id`` as its ready line printed it, or None)."""

    index: int
    node_id: str | None
    pid: int
    exit: bool
    url: str
    alive: bool


@dataclass(frozen=True, slots=True)
class CircuitInfo:
    """One of the proxy's client circuits (``path``: node ids, first hop first)."""

    cid: int
    path: tuple[bytes, ...]
    state: str
    streams: int
    rtt_ms: float | None = None
    session: int | None = None
    phi: float | None = None


def status_document(
    *,
    role: str,
    uptime: float,
    node_id: bytes | None,
    links: Iterable[bytes] = (),
    link_health: Iterable[LinkStatus] = (),
    relays_known: int = 0,
    relayed_circuits: int = 0,
    streams_waiting: int = 0,
    circuits: Iterable[CircuitInfo] = (),
    relays: Iterable[RelayInfo] = (),
    sessions: Sequence[Mapping[str, Any]] = (),
    guards_per_client: int = 0,
    sample_size: int = 0,
    discovery: Mapping[str, Any] | None = None,
) -> Document:
    """The status document (see the module doc) of a node with these figures.

    Circuits are listed legs first (by session, then id), at most MAX_LISTED of them
    (``circuits_total`` counts them all); links are sorted, each peer once.  No I/O."""
    listed = sorted(circuits, key=lambda c: (c.session is None, c.session or 0, c.cid))
    return {
        "version": VERSION,
        "role": role,
        "uptime_s": round(uptime, 1),
        "node_id": None if node_id is None else node_id.hex(),
        "links": sorted({peer.hex() for peer in links}),  # both sides may have dialled
        "link_health": [
            {
                "peer": s.peer_id.hex(),
                "rtt_ms": None if s.rtt is None else round(s.rtt * 1000, 1),
                "loss": round(s.loss, 3),
                "phi": round(s.phi, 2),
                "age_s": round(s.age, 1),
            }
            for s in sorted(link_health, key=lambda s: (s.peer_id, s.age))[:MAX_LISTED]
        ],
        "relays_known": relays_known,
        "sample_size": sample_size,
        "discovery": None if discovery is None else dict(discovery),
        "relayed_circuits": relayed_circuits,
        "streams_waiting": streams_waiting,
        "guards_per_client": guards_per_client,
        "relays": [
            {
                "index": r.index,
                "node_id": r.node_id,
                "pid": r.pid,
                "exit": r.exit,
                "url": r.url,
                "alive": r.alive,
            }
            for r in sorted(relays, key=lambda r: r.index)
        ],
        "circuits": [
            {
                "id": c.cid,
                "path": [hop.hex() for hop in c.path],
                "state": c.state,
                "streams": c.streams,
                "rtt_ms": c.rtt_ms,
                "phi": c.phi,
                "session": c.session,
            }
            for c in listed[:MAX_LISTED]
        ],
        "circuits_total": len(listed),
        "sessions": [dict(s) for s in sessions[:MAX_LISTED]],
    }


def discovery(node: Node, uptime: float, dials: Mapping[str, int]) -> Document:
    """How ``node`` learns relays, for the document's ``discovery`` (see the module doc);
    ``dials`` are its driver's dial counts.  No I/O."""
    sample, dht = node.sample, node.dht
    doc: Document = {
        "gossip": node.config.gossip,
        "dht": dht is not None,
        "directory_size": len(node.directory),
        "sample_slots": 0 if sample is None else sample.config.size,
    }
    if dht is not None:
        stats = dht.stats
        moved = stats.bytes_in + stats.bytes_out
        doc |= {
            "dht_table": len(dht.table),
            "walks": 0 if sample is None else sample.walks,
            "lookups": dht.lookups,
            "requests_in": stats.requests_in,
            "requests_out": stats.requests_out,
            "failed": stats.failed,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "bytes_per_s": round(moved / uptime, 1) if uptime > 0 else 0.0,
        }
    doc["dials"] = dict(dials)
    return doc


def relays_known(node: Node) -> int:
    """The relays ``node`` picks paths from: its peer sample with the DHT, else its
    directory."""
    return len(node.directory) if node.sample is None else len(node.sample)


def guards_per_client(node: Node) -> int:
    """The distinct first hops of the node's open client circuits: with guards, at most
    two (issue 9); without, as many as its circuits."""
    builder = node.builder
    return len({path[0] for cid in builder.built() if (path := builder.path(cid))})


def circuit_infos(node: Node, sessions: Iterable[SessionInfo]) -> list[CircuitInfo]:
    """The node's built client circuits, with the session, stream count and RTT of those
    that are legs of ``sessions``.  No I/O."""
    legs = {leg.leg_id: (info, leg) for info in sessions for leg in info.legs}
    out = []
    for cid in node.builder.built():
        info, leg = legs.get(cid, (None, None))
        rtt = None if leg is None or leg.srtt is None else round(leg.srtt * 1000, 1)
        streams = 0 if info is None else info.streams
        session = None if info is None else info.session_id
        phi = None if leg is None else round(leg.phi, 2)
        out.append(CircuitInfo(cid, node.builder.path(cid), "open", streams, rtt, session, phi))
    return out


def session_entry(info: SessionInfo, retired: bool) -> dict[str, Any]:
    """One session as the document lists it."""
    return {
        "id": info.session_id,
        "state": "retired" if retired else "open",
        "streams": info.streams,
        "bytes_in": info.bytes_received,
        "bytes_out": info.bytes_sent,
        "legs": [leg.leg_id for leg in info.legs],
        "failovers": info.failovers,
        "longest_stall_ms": round(info.longest_stall * 1000, 1),
    }


#: the fields of a proxy's document that ``zmesh up`` passes on as its own
PROXY_FIELDS = (
    "node_id",
    "links",
    "link_health",
    "relays_known",
    "sample_size",
    "discovery",
    "relayed_circuits",
    "streams_waiting",
    "guards_per_client",
    "circuits",
    "circuits_total",
    "sessions",
)


def up_document(
    *,
    uptime: float,
    relays: Iterable[RelayInfo],
    proxy_pid: int | None,
    proxy_alive: bool,
    proxy_doc: Mapping[str, Any] | None,
) -> Document:
    """``zmesh up``'s document: its relays, and its proxy's node and circuits as the
    proxy's own document (``proxy_doc``, None if it did not answer) gives them.  No I/O."""
    doc = status_document(role="up", uptime=uptime, node_id=None, relays=relays)
    if proxy_doc is not None:
        doc.update({key: proxy_doc[key] for key in PROXY_FIELDS if key in proxy_doc})
    doc["proxy"] = {"pid": proxy_pid, "alive": proxy_alive, "answered": proxy_doc is not None}
    return doc


# -- the server ---------------------------------------------------------------------------
def _host_name(value: str) -> str:
    """The host of a ``Host`` field or an origin's authority, without port or brackets."""
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() else value


def is_local_name(name: str, own_host: str) -> bool:
    """Whether ``name`` (from a Host field or an Origin) names this machine's loopback or
    ``own_host``, the address the control server listens on."""
    name = name.lower().rstrip(".")
    if name in ("localhost", own_host.lower()):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_request(request: Request, own_host: str, port: int) -> None:
    """Raise HttpError unless ``request`` is ``GET /status`` from a tool on this machine.

    403 for a ``Host`` that names no local address (or none at all) and for an ``Origin``
    other than the control address; then 405 for a method other than GET and 404 for a
    path other than ``/status``."""
    fields = dict(request.headers)  # a repeated field keeps its last value
    host = fields.get(b"host", b"").decode("latin-1")
    if not host or not is_local_name(_host_name(host), own_host):
        raise HttpError(403, "the Host must name this machine (loopback)")
    origin = fields.get(b"origin")
    if origin is not None:
        scheme, _, authority = origin.decode("latin-1").partition("://")
        name = _host_name(authority)
        own_port = authority == f"{name}:{port}" or authority.endswith(f"]:{port}")
        if scheme != "http" or not own_port or not is_local_name(name, own_host):
            raise HttpError(403, "web pages may not read the status")
    if request.method != "GET":
        raise HttpError(405)
    if request.path != "/status":
        raise HttpError(404)


Snapshot = Callable[[], Awaitable[Document]]


class ControlServer:
    """Serves ``GET /status`` with the document ``snapshot`` returns (see the module doc)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._host = ""
        self.port = 0
        self.requests = 0
        self.refused = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0: any); returns the port.  OSError if taken."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        self._host = host
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(reader, writer, max_body=0)
        if self._slots.locked():
            conn.respond(503, RESPONSE_HEADERS, b'{"error": "busy"}\n')
            writer.close()
            return
        async with self._slots:
            self.requests += 1
            try:
                request = await conn.read_request()
                check_request(request, self._host, self.port)
                body = json.dumps(await self._snapshot(), indent=1).encode() + b"\n"
                conn.respond(200, RESPONSE_HEADERS, body)
            except HttpError as exc:
                self.refused += 1
                log.debug("control event=refused status=%d reason=%r", exc.status, str(exc))
                extra = [("Allow", "GET")] if exc.status == 405 else []
                error = json.dumps({"error": str(exc)}).encode() + b"\n"
                conn.respond(exc.status, [*RESPONSE_HEADERS, *extra], error)
            except Exception:  # a bug must not stop the node: answer 500, log it
                log.exception("control event=snapshot_error")
                conn.respond(500, RESPONSE_HEADERS, b'{"error": "internal error"}\n')
            await conn.close(PHASE_TIMEOUT)


async def start_control(address: str, snapshot: Snapshot) -> tuple[ControlServer | None, str]:
    """Serve the status on ``address`` (HOST:PORT); never fatal: (server or None, a line
    saying where it is served or why not)."""
    from .daemon import split_hostport  # noqa: PLC0415 (daemon imports this module)

    server = ControlServer(snapshot)
    try:
        host, port = split_hostport(address)
        bound = await server.start(host, port)
    except (OSError, ValueError) as exc:
        return None, f"Status: not served ({address}: {exc})."
    shown = f"[{host}]" if ":" in host else host
    hint = "" if address == DEFAULT_CONTROL else f" --control {shown}:{bound}"
    return server, f"Status: `zmesh status{hint}` (GET http://{shown}:{bound}/status)."


# -- the client ---------------------------------------------------------------------------
async def fetch_status(host: str, port: int, timeout: float = FETCH_TIMEOUT) -> Document:
    """GET /status from a control server; its document.

    OSError if nothing listens there, TimeoutError after ``timeout`` seconds, ZMeshError
    (ResponseError included) for an error status, a malformed response, one over
    MAX_DOCUMENT or a body that is not a JSON object."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = [(b"Host", authority.encode()), (b"Accept", b"application/json")]
    exchange = ClientExchange("GET", "/status", headers, max_body=MAX_DOCUMENT)
    await run_exchange(host, port, exchange, timeout)
    if exchange.status != 200:
        raise ResponseError(f"the control server answered {exchange.status} {exchange.reason}")
    try:
        doc = json.loads(exchange.body)
    except ValueError:
        raise ResponseError("the status is not JSON") from None
    if not isinstance(doc, dict):
        raise ResponseError("the status is not a JSON object")
    return doc


def _short(node_id: object) -> str:
    return node_id[:16] if isinstance(node_id, str) and node_id else "?"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def _yes(value: object) -> str:
    return "yes" if value is True else "no" if value is False else "?"


def format_status(doc: Mapping[str, Any]) -> str:
    """``doc`` as readable tables: the node, its relays, circuits and sessions.

    Node ids are shown by their first 16 hex digits (``--json`` has them whole).
    ZMeshError if the document does not have the shape of the module doc."""
    try:
        return "\n".join(_format(doc)) + "\n"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ZMeshError(
            f"the status document is malformed ({type(exc).__name__}: {exc})"
        ) from None


def _format(doc: Mapping[str, Any]) -> list[str]:
    links = doc.get("links", [])
    head = f"zmesh {doc['role']}: node {_short(doc.get('node_id'))}"
    head += f", up {_duration(float(doc['uptime_s']))}, {len(links)} links"
    head += f", {doc.get('relays_known', 0)} relays known"
    found = doc.get("discovery")
    if isinstance(found, Mapping):
        how = "DHT sample" if found.get("dht") else "directory"
        how += ", gossip" if found.get("gossip") else ", no gossip"
        head += f" ({how})"
    head += f", relaying {doc.get('relayed_circuits', 0)} circuits for others"
    head += f", {doc.get('guards_per_client', 0)} guards in use"
    out = [head]
    proxy = doc.get("proxy")
    if isinstance(proxy, Mapping):
        state = "running" if proxy.get("alive") else "EXITED"
        if proxy.get("alive") and not proxy.get("answered"):
            state += ", not answering"
        out.append(f"proxy: pid {proxy.get('pid')}, {state}")
    relays = doc.get("relays", [])
    if doc["role"] == "up" or relays:
        alive = sum(1 for r in relays if r["alive"] is True)
        out += ["", f"Relays: {len(relays)} ({alive} alive)"]
        rows = [
            [
                str(r["index"]),
                _short(r["node_id"]),
                str(r["pid"]),
                _yes(r["exit"]),
                _yes(r["alive"]),
                str(r["url"]),
            ]
            for r in relays
        ]
        out += _table(["#", "node", "pid", "exit", "alive", "url"], rows) if rows else []
    health = doc.get("link_health", [])
    if health:
        out += ["", f"Links: {len(health)}"]
        rows = [
            [
                _short(h["peer"]),
                "-" if h.get("rtt_ms") is None else f"{float(h['rtt_ms']):.0f} ms",
                f"{float(h['loss']):.0%}",
                f"{float(h['phi']):.1f}",
                _duration(float(h["age_s"])),
            ]
            for h in health
        ]
        out += _table(["peer", "rtt", "loss", "phi", "up"], rows)
    circuits = doc.get("circuits", [])
    total = doc.get("circuits_total", len(circuits))
    waiting = doc.get("streams_waiting", 0)
    title = f"Circuits: {total}" + (f" ({waiting} streams waiting for one)" if waiting else "")
    out += ["", title]
    rows = [
        [
            str(c["id"]),
            str(c["state"]),
            str(c.get("streams", "?")),
            "-" if c.get("rtt_ms") is None else f"{float(c['rtt_ms']):.0f} ms",
            "-" if c.get("phi") is None else f"{float(c['phi']):.1f}",
            "-" if c.get("session") is None else str(c["session"]),
            " > ".join(_short(hop)[:8] for hop in c["path"]),
        ]
        for c in circuits
    ]
    out += _table(["id", "state", "streams", "rtt", "phi", "session", "path"], rows) if rows else []
    sessions = doc.get("sessions", [])
    out += ["", f"Sessions: {len(sessions)}"]
    rows = [
        [
            str(s["id"]),
            str(s["streams"]),
            str(s["bytes_in"]),
            str(s["bytes_out"]),
            ",".join(str(leg) for leg in s["legs"]),
            str(s["failovers"]),
            f"{float(s['longest_stall_ms']):.0f} ms",
        ]
        for s in sessions
    ]
    header = ["id", "streams", "bytes in", "bytes out", "legs", "failovers", "longest stall"]
    out += _table(header, rows) if rows else []
    return out


async def run_status(address: str, as_json: bool) -> int:
    """``zmesh status``: print the document at ``address`` (tables, or JSON); 1 if nothing
    answers there."""
    from .daemon import split_hostport  # noqa: PLC0415

    host, port = split_hostport(address)
    try:
        doc = await fetch_status(host, port)
    except (OSError, TimeoutError) as exc:
        reason = "nothing answers" if isinstance(exc, OSError) else "no answer in time"
        raise ZMeshError(
            f"{reason} on {address} (is `zmesh up` or `zmesh proxy --control {address}` running?)"
        ) from None
    if as_json:
        print(json.dumps(doc, indent=1))
    else:
        sys.stdout.write(format_status(doc))
    return 0


def main_status(address: str, as_json: bool) -> int:
    return run_command("status", run_status(address, as_json))
