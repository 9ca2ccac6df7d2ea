"""``zmesh push-service``: a Web Push service that anyone can self-host.

Three faces on one port:

- **RFC 8030 on HTTP** (h11 frames every message): ``POST /wpush/<token>`` is a push
  message to the subscription the token names (``TTL`` required, ``Urgency``, ``Topic``
  replacing a pending message of the same topic), answered ``201 Created`` with the
  message's ``Location``; ``DELETE`` of that location withdraws an undelivered message
  (section 6.1).  Every rule violation is a 4xx before anything is stored.
- **RFC 8292 VAPID**: ``Authorization: vapid t=JWT, k=KEY`` (ES256 over P-256, checked by
  py-vapid with pyca cryptography): ``aud`` is this service's origin, ``exp`` within 24 h,
  ``sub`` present.  A subscription made with an application server key takes only pushes
  signed by that key (401 without a valid token, 403 for another key).
- **autopush's WebSocket protocol**, as Firefox speaks it to its push server
  (``dom.push.serverURL``): ``hello`` (uaid, channelIDs), ``register`` (channelID, key),
  ``unregister``, ``notification`` (channelID, version, data, headers) and ``ack``; ``{}``
  is a ping.  wsproto frames it.

Storage is SQLite (a file under ``--data``, else in memory) and bounded: subscriptions per
client and in all, pending messages per subscription and in all, tombstones of deleted
subscriptions (for 410).  A message is kept until its client acknowledges it or its TTL
passes.  Requests and WebSocket messages have a budget per client address; connections
are capped.  Nothing secret (tokens, uaids, payloads, keys) is logged.

Push message receipts (RFC 8030 section 5.1) are not offered: they need HTTP/2 server
push; a ``Prefer: respond-async`` request is answered like any other (201).

:class:`PushService` holds the rules and the store and takes ``now`` as an argument
(tests drive it without sockets); :class:`PushServer` is its asyncio glue.
"""

import asyncio
import json
import logging
import re
import secrets
import sqlite3
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
from cryptography.exceptions import InvalidSignature
from py_vapid import jwt as vapid_jwt
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from .http import REASONS, HttpError
from .push import b64url_decode, b64url_encode, p256_public_key

log = logging.getLogger("zmesh.push")

#: RFC 8030 section 7.2: a push service must accept at least 4096 bytes of payload
MAX_PAYLOAD = 4096
MAX_HEAD = 8192
#: RFC 8030 section 5.4 ("Topic"): at most 32 characters of the base64url alphabet
MAX_TOPIC = 32
TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]+$")
#: RFC 8030 section 5.3
URGENCIES = ("very-low", "low", "normal", "high")
#: RFC 8292 section 2: "exp" no further than 24 hours from the request
VAPID_MAX_LIFETIME = 86400
#: the longest TTL kept; a longer one is reduced and the reduced value answered (5.2)
MAX_TTL = 7 * 86400
#: how long a deleted subscription answers 410 rather than 404
GONE_KEEP = 7 * 86400
#: RFC 6455 close codes used here
WS_PROTOCOL_ERROR = 1002
WS_UNSUPPORTED = 1003
WS_INVALID_DATA = 1007
WS_POLICY = 1008
WS_TOO_BIG = 1009
WS_TRY_AGAIN = 1013
#: Firefox's WebSocket subprotocol for its push server
SUBPROTOCOL = "push-notification"
PHASE_TIMEOUT = 5.0
#: a connected client that says nothing this long is dropped (Firefox pings every 30 min)
IDLE_TIMEOUT = 2400.0
READ_SIZE = 16384
PURGE_EVERY = 60.0
#: a WebSocket client must say hello this soon (a silent one holds no connection slot)
HELLO_TIMEOUT = 10.0


@dataclass(frozen=True)
class PushLimits:
    """The bounds of one push service (module doc); tests shrink them to attack each."""

    subscriptions_per_client: int = 32
    subscriptions: int = 100_000
    messages_per_subscription: int = 64
    messages: int = 100_000
    tombstones: int = 100_000
    connections: int = 1024
    #: requests (HTTP) or messages (WebSocket) per second per client address, and burst
    rate: float = 20.0
    burst: float = 200.0
    #: addresses whose budget is remembered (least recently seen forgotten first)
    peers: int = 4096
    max_ws_message: int = 8192


class TokenBuckets:
    """A token bucket per key (client address), bounded to ``size`` keys (LRU)."""

    def __init__(self, rate: float, burst: float, size: int) -> None:
        self._rate = rate
        self._burst = burst
        self._size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        """Spend one token of ``key``'s budget; False if it has none left."""
        tokens, stamp = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - stamp) * self._rate)
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self._size:
            self._buckets.popitem(last=False)
        return ok


def verify_vapid(authorization: str, origin: str, now: float) -> bytes:
    """Check an RFC 8292 ``vapid t=..., k=...`` credential; return the signer's key.

    The JWT must be ES256 (section 2), signed by ``k``, with ``aud`` equal to ``origin``,
    ``exp`` after ``now`` and at most 24 hours ahead, and a ``sub``.  Raises HttpError 401
    with the reason otherwise."""
    scheme, _, params = authorization.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise HttpError(401, "Authorization is not a vapid credential (RFC 8292 section 3)")
    fields: dict[str, str] = {}
    for item in params.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name.lower() in fields:
            raise HttpError(401, "malformed vapid credential")
        fields[name.lower()] = value.strip().strip('"')
    token, key_text = fields.get("t"), fields.get("k")
    if not token or not key_text:
        raise HttpError(401, "vapid credential without t= or k=")
    try:
        key = p256_public_key(b64url_decode(key_text))
    except ValueError:
        raise HttpError(401, "vapid k= is not a P-256 public key") from None
    parts = token.split(".")
    if len(parts) != 3:
        raise HttpError(401, "vapid t= is not a JWS compact serialization")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except ValueError:
        raise HttpError(401, "vapid JWT header is not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise HttpError(401, "vapid JWT is not ES256 (RFC 8292 section 2)")
    try:
        claims = vapid_jwt.decode(token, b64url_encode(key))
    except InvalidSignature:
        raise HttpError(401, "vapid JWT signature does not verify") from None
    if not isinstance(claims, dict):
        raise HttpError(401, "vapid JWT claims are not an object")
    if claims.get("aud") != origin:
        raise HttpError(401, "vapid JWT aud is not this push service's origin")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise HttpError(401, "vapid JWT without a numeric exp")
    if exp <= now:
        raise HttpError(401, "vapid JWT expired")
    if exp > now + VAPID_MAX_LIFETIME:
        raise HttpError(401, "vapid JWT exp more than 24 hours ahead (RFC 8292 section 2)")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise HttpError(401, "vapid JWT without sub")
    return key


@dataclass(frozen=True)
class Message:
    """A push message held for delivery."""

    id: str
    token: str
    channel_id: str
    ttl: int
    data: bytes
    encoding: str | None


@dataclass(frozen=True)
class PushResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    token TEXT PRIMARY KEY,
    uaid TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    key BLOB,
    gone_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS subscriptions_channel ON subscriptions (uaid, channel_id);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL,
    topic TEXT,
    ttl INTEGER NOT NULL,
    expires REAL NOT NULL,
    urgency TEXT NOT NULL,
    data BLOB NOT NULL,
    encoding TEXT
);
CREATE INDEX IF NOT EXISTS messages_token ON messages (token);
"""


class PushStore:
    """The service's SQLite tables: subscriptions (with tombstones) and pending messages."""

    def __init__(self, path: Path | None) -> None:
        """Open ``path`` (created 0600 if missing), or an in-memory store for None."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
        self.db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def count(self, sql: str, *args: object) -> int:
        row = self.db.execute(sql, args).fetchone()
        return int(row[0])


class WsSession:
    """One WebSocket client of the push service, sans-I/O.

    :meth:`receive_text` takes each text message; replies and notifications queue in
    ``outbox`` (JSON texts) and ``wakeup`` is called when one is queued from outside (a
    push).  ``close`` turns to (code, reason) when the session must end: the glue then
    closes the WebSocket with that code."""

    def __init__(self, service: "PushService", peer: str) -> None:
        self.service = service
        self.peer = peer
        self.uaid: str | None = None
        self.outbox: list[str] = []
        self.close: tuple[int, str] | None = None
        self.wakeup: Callable[[], None] = lambda: None

    def send(self, message: Mapping[str, object]) -> None:
        self.outbox.append(json.dumps(message, separators=(",", ":")))

    def fail(self, code: int, reason: str) -> None:
        if self.close is None:
            self.close = (code, reason)
            log.debug("push event=ws_close code=%d reason=%s", code, reason)

    def receive_text(self, text: str, now: float) -> None:
        """Handle one client message; garbage closes the session (``close`` is set)."""
        if self.close is not None:
            return
        if not self.service.budget.take(self.peer, now):
            self.fail(WS_TRY_AGAIN, "over the message budget")
            return
        try:
            message = json.loads(text)
        except ValueError:
            self.fail(WS_INVALID_DATA, "not JSON")
            return
        if not isinstance(message, dict):
            self.fail(WS_PROTOCOL_ERROR, "not a JSON object")
            return
        kind = message.get("messageType", "ping" if not message else None)
        handler = _WS_HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self.fail(WS_PROTOCOL_ERROR, "unknown messageType")
            return
        if (kind == "hello") != (self.uaid is None):
            self.fail(WS_PROTOCOL_ERROR, "hello must come first, and once")
            return
        try:
            handler(self, message, now)
        except (KeyError, TypeError, ValueError) as exc:
            self.fail(WS_PROTOCOL_ERROR, f"malformed {kind}: {type(exc).__name__}")

    def notify(self, message: Message) -> None:
        """Queue ``message`` as a notification (from a push) and wake the glue."""
        body: dict[str, object] = {
            "messageType": "notification",
            "channelID": message.channel_id,
            "version": message.id,
            "ttl": message.ttl,
        }
        if message.data:
            body["data"] = b64url_encode(message.data)
            body["headers"] = {"encoding": message.encoding or "aes128gcm"}
        self.send(body)
        self.wakeup()

    def _hello(self, message: Mapping[str, Any], now: float) -> None:
        uaid = message.get("uaid")
        if uaid is not None and not isinstance(uaid, str):
            raise TypeError("uaid")
        channels = message.get("channelIDs", [])
        if not isinstance(channels, list):
            raise TypeError("channelIDs")
        self.uaid = self.service.attach(self, uaid, now)
        self.send(
            {
                "messageType": "hello",
                "uaid": self.uaid,
                "status": 200,
                "use_webpush": True,
                "broadcasts": {},
            }
        )
        for pending in self.service.pending(self.uaid, now):
            self.notify(pending)

    def _register(self, message: Mapping[str, Any], now: float) -> None:
        channel_id = _channel_id(message["channelID"])
        key_text = message.get("key")
        reply: dict[str, object] = {"messageType": "register", "channelID": channel_id}
        key: bytes | None = None
        if key_text is not None:
            if not isinstance(key_text, str):
                raise TypeError("key")
            try:
                key = p256_public_key(b64url_decode(key_text))
            except ValueError:
                self.send({**reply, "status": 400})  # Firefox rejects the subscribe()
                return
        assert self.uaid is not None
        status, endpoint = self.service.register(self.uaid, channel_id, key, now)
        self.send({**reply, "status": status, **({"pushEndpoint": endpoint} if endpoint else {})})

    def _unregister(self, message: Mapping[str, Any], now: float) -> None:
        channel_id = _channel_id(message["channelID"])
        assert self.uaid is not None
        self.service.unregister(self.uaid, channel_id, now)
        self.send({"messageType": "unregister", "channelID": channel_id, "status": 200})

    def _ack(self, message: Mapping[str, Any], now: float) -> None:
        updates = message["updates"]
        if not isinstance(updates, list) or len(updates) > 1000:
            raise TypeError("updates")
        for update in updates:
            if not isinstance(update, dict):
                raise TypeError("update")
            channel_id, version = _channel_id(update["channelID"]), update["version"]
            if not isinstance(version, str):
                raise TypeError("version")
            assert self.uaid is not None
            self.service.acknowledge(self.uaid, channel_id, version)

    def _nack(self, message: Mapping[str, Any], now: float) -> None:
        version = message["version"]
        if not isinstance(version, str):
            raise TypeError("version")
        assert self.uaid is not None
        self.service.acknowledge(self.uaid, None, version)  # not deliverable: drop it

    def _ping(self, message: Mapping[str, Any], now: float) -> None:
        self.outbox.append("{}")

    def _broadcast_subscribe(self, message: Mapping[str, Any], now: float) -> None:
        if not isinstance(message["broadcasts"], dict):
            raise TypeError("broadcasts")  # no broadcasts are offered: nothing to answer


def _channel_id(value: object) -> str:
    """A channelID: a UUID in its canonical text form (lower case); ValueError otherwise."""
    if not isinstance(value, str) or len(value) != 36:
        raise ValueError("channelID")
    return str(uuid.UUID(value))


_WS_HANDLERS: dict[str, Callable[[WsSession, Mapping[str, Any], float], None]] = {
    "hello": WsSession._hello,
    "register": WsSession._register,
    "unregister": WsSession._unregister,
    "ack": WsSession._ack,
    "nack": WsSession._nack,
    "ping": WsSession._ping,
    "broadcast_subscribe": WsSession._broadcast_subscribe,
}


def _new_id() -> str:
    return secrets.token_urlsafe(16)


class PushService:
    """The rules of the service over its store; every entry point takes ``now``.

    ``origin`` is the service's public origin (``http://host:port``): push endpoints are
    under it and VAPID ``aud`` must equal it."""

    def __init__(self, store: PushStore, origin: str, limits: PushLimits | None = None) -> None:
        self.store = store
        self.origin = origin.rstrip("/")
        self.limits = limits or PushLimits()
        self.budget = TokenBuckets(self.limits.rate, self.limits.burst, self.limits.peers)
        self._online: dict[str, WsSession] = {}
        self.stats = {"pushed": 0, "delivered": 0, "refused": 0}

    # -- the WebSocket side ------------------------------------------------------------

    def attach(self, session: WsSession, uaid: str | None, now: float) -> str:
        """Bind ``session`` to ``uaid`` if the store knows it (with a live subscription),
        else to a new uaid; an older session of that uaid is closed."""
        known = (
            uaid is not None
            and len(uaid) <= 64
            and self.store.count(
                "SELECT COUNT(*) FROM subscriptions WHERE uaid = ? AND gone_at IS NULL", uaid
            )
            > 0
        )
        chosen = uaid if known and uaid is not None else uuid.uuid4().hex
        old = self._online.get(chosen)
        if old is not None and old is not session:
            old.fail(4000, "another connection said hello with this uaid")
            old.wakeup()
        self._online[chosen] = session
        return chosen

    def detach(self, session: WsSession) -> None:
        if session.uaid is not None and self._online.get(session.uaid) is session:
            del self._online[session.uaid]

    def register(
        self, uaid: str, channel_id: str, key: bytes | None, now: float
    ) -> tuple[int, str | None]:
        """Create the subscription (uaid, channel_id); returns (status, push endpoint).

        The same channel registered again with the same key gets its endpoint again; with
        another key, 409.  Over a cap: 429 (this client's) or 503 (the service's)."""
        db = self.store.db
        row = db.execute(
            "SELECT token, key, gone_at FROM subscriptions WHERE uaid = ? AND channel_id = ?",
            (uaid, channel_id),
        ).fetchone()
        if row is not None:
            if row[2] is None and row[1] == key:
                return 200, self._endpoint(row[0])
            return 409, None
        live = "SELECT COUNT(*) FROM subscriptions WHERE gone_at IS NULL"
        if self.store.count(live + " AND uaid = ?", uaid) >= self.limits.subscriptions_per_client:
            return 429, None
        if self.store.count(live) >= self.limits.subscriptions:
            return 503, None
        token = _new_id()
        db.execute(
            "INSERT INTO subscriptions (token, uaid, channel_id, key) VALUES (?, ?, ?, ?)",
            (token, uaid, channel_id, key),
        )
        log.info("push event=register restricted=%s", key is not None)
        return 200, self._endpoint(token)

    def unregister(self, uaid: str, channel_id: str, now: float) -> None:
        """End a subscription: its messages go, its endpoint answers 410 for a while."""
        db = self.store.db
        row = db.execute(
            "SELECT token FROM subscriptions WHERE uaid = ? AND channel_id = ? AND gone_at IS NULL",
            (uaid, channel_id),
        ).fetchone()
        if row is None:
            return  # a race (or nothing to do): not an error
        db.execute("DELETE FROM messages WHERE token = ?", (row[0],))
        db.execute("UPDATE subscriptions SET gone_at = ? WHERE token = ?", (now, row[0]))
        self._trim_tombstones(now)

    def _trim_tombstones(self, now: float) -> None:
        db = self.store.db
        db.execute("DELETE FROM subscriptions WHERE gone_at < ?", (now - GONE_KEEP,))
        excess = (
            self.store.count("SELECT COUNT(*) FROM subscriptions WHERE gone_at IS NOT NULL")
            - self.limits.tombstones
        )
        if excess > 0:
            db.execute(
                "DELETE FROM subscriptions WHERE token IN (SELECT token FROM subscriptions "
                "WHERE gone_at IS NOT NULL ORDER BY gone_at LIMIT ?)",
                (excess,),
            )

    def acknowledge(self, uaid: str, channel_id: str | None, version: str) -> None:
        """Forget a delivered message of one of ``uaid``'s subscriptions (unknown: ignored)."""
        sql = (
            "DELETE FROM messages WHERE id = ? AND token IN "
            "(SELECT token FROM subscriptions WHERE uaid = ?"
        )
        args: tuple[object, ...] = (version, uaid)
        if channel_id is not None:
            sql += " AND channel_id = ?"
            args += (channel_id,)
        if self.store.db.execute(sql + ")", args).rowcount:
            self.stats["delivered"] += 1

    def pending(self, uaid: str, now: float) -> list[Message]:
        """The unexpired messages waiting for ``uaid``, oldest first."""
        self.purge(now)
        rows = self.store.db.execute(
            "SELECT m.id, m.token, s.channel_id, m.ttl, m.data, m.encoding FROM messages m "
            "JOIN subscriptions s ON s.token = m.token WHERE s.uaid = ? ORDER BY m.seq",
            (uaid,),
        ).fetchall()
        return [Message(*row) for row in rows]

    def purge(self, now: float) -> None:
        """Drop the messages past their TTL."""
        self.store.db.execute("DELETE FROM messages WHERE expires <= ?", (now,))

    # -- the HTTP side (RFC 8030) ----------------------------------------------------------

    def _endpoint(self, token: str) -> str:
        return f"{self.origin}/wpush/{token}"

    def handle_http(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
    ) -> PushResponse:
        """Answer one HTTP request (header names lower-case).  Raises HttpError with the
        4xx of the first rule the request breaks."""
        if path.startswith("/wpush/"):
            if method != "POST":
                raise HttpError(405, "push resources take POST (RFC 8030 section 5)")
            return self.push(path[len("/wpush/") :], headers, body, now)
        if path.startswith("/m/"):
            if method != "DELETE":
                raise HttpError(405, "message resources take DELETE (RFC 8030 section 6.1)")
            return self.delete_message(path[len("/m/") :])
        raise HttpError(404)

    def push(self, token: str, headers: Mapping[str, str], body: bytes, now: float) -> PushResponse:
        """RFC 8030 section 5: store (and deliver) a push message; HttpError otherwise."""
        row = self.store.db.execute(
            "SELECT uaid, channel_id, key, gone_at FROM subscriptions WHERE token = ?",
            (token,),
        ).fetchone()
        if row is None:
            raise HttpError(404, "no such push subscription")
        uaid, channel_id, key, gone_at = row
        if gone_at is not None:
            raise HttpError(410, "the push subscription has ended")
        self._authorize(headers.get("authorization"), key, now)
        ttl_text = headers.get("ttl")
        if ttl_text is None:
            raise HttpError(400, "TTL header required (RFC 8030 section 5.2)")
        if not ttl_text.isdigit() or len(ttl_text) > 10:
            raise HttpError(400, "TTL must be a non-negative integer of seconds")
        ttl = min(int(ttl_text), MAX_TTL)
        urgency = headers.get("urgency", "normal")
        if urgency not in URGENCIES:
            raise HttpError(400, "Urgency must be very-low, low, normal or high (5.3)")
        topic = headers.get("topic")
        if topic is not None and (len(topic) > MAX_TOPIC or not TOPIC_RE.match(topic)):
            raise HttpError(400, "Topic must be at most 32 base64url characters (5.4)")
        if len(body) > MAX_PAYLOAD:
            raise HttpError(413, "push message over 4096 bytes (RFC 8030 section 7.2)")
        encoding = headers.get("content-encoding")
        if body and encoding != "aes128gcm":
            raise HttpError(415, "a payload must be Content-Encoding: aes128gcm (RFC 8291)")
        return self._store_message(
            uaid=uaid,
            token=token,
            channel_id=channel_id,
            ttl=ttl,
            urgency=urgency,
            topic=topic,
            body=body,
            now=now,
        )

    def _authorize(self, authorization: str | None, key: bytes | None, now: float) -> None:
        """RFC 8292 section 4.2: a restricted subscription needs a valid token from its key."""
        if authorization is None:
            if key is not None:
                raise HttpError(401, "this subscription takes only VAPID-signed pushes")
            return
        signer = verify_vapid(authorization, self.origin, now)
        if key is not None and signer != key:
            raise HttpError(403, "signed by another key than the subscription's")

    def _store_message(
        self,
        *,
        uaid: str,
        token: str,
        channel_id: str,
        ttl: int,
        urgency: str,
        topic: str | None,
        body: bytes,
        now: float,
    ) -> PushResponse:
        db = self.store.db
        self.purge(now)
        if topic is not None:  # RFC 8030 section 5.4: replace the pending one
            db.execute("DELETE FROM messages WHERE token = ? AND topic = ?", (token, topic))
        per_sub = self.store.count("SELECT COUNT(*) FROM messages WHERE token = ?", token)
        if per_sub >= self.limits.messages_per_subscription:
            self.stats["refused"] += 1
            raise HttpError(429, "too many pending messages for this subscription")
        if self.store.count("SELECT COUNT(*) FROM messages") >= self.limits.messages:
            self.stats["refused"] += 1
            raise HttpError(503, "the push service is full")
        message = Message(_new_id(), token, channel_id, ttl, body, "aes128gcm" if body else None)
        session = self._online.get(uaid)
        if ttl > 0 or session is not None:  # TTL 0: deliver now or never (section 5.2)
            db.execute(
                "INSERT INTO messages (id, token, topic, ttl, expires, urgency, data, encoding) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (message.id, token, topic, ttl, now + max(ttl, 1), urgency, body, message.encoding),
            )
        if session is not None:
            session.notify(message)
        self.stats["pushed"] += 1
        return PushResponse(201, (("Location", f"{self.origin}/m/{message.id}"), ("TTL", str(ttl))))

    def delete_message(self, message_id: str) -> PushResponse:
        """RFC 8030 section 6.1: withdraw an undelivered message; 404 if none."""
        if not self.store.db.execute("DELETE FROM messages WHERE id = ?", (message_id,)).rowcount:
            raise HttpError(404, "no such pending push message")
        return PushResponse(204)


def _response_bytes(conn: h11.Connection, response: PushResponse) -> bytes:
    headers = [
        *response.headers,
        ("Content-Length", str(len(response.body))),
        ("Connection", "close"),
    ]
    if response.body:
        headers.append(("Content-Type", "text/plain; charset=utf-8"))
    try:
        return (
            conn.send(
                h11.Response(
                    status_code=response.status,
                    headers=headers,
                    reason=REASONS.get(response.status, "Error"),
                )
            )
            + (conn.send(h11.Data(data=response.body)) or b"")
            + (conn.send(h11.EndOfMessage()) or b"")
        )
    except h11.LocalProtocolError:  # h11 is not in a state to respond (garbage): raw close
        reason = REASONS.get(response.status, "Error")
        head = f"HTTP/1.1 {response.status} {reason}\r\nContent-Length: {len(response.body)}"
        return (head + "\r\nConnection: close\r\n\r\n").encode("latin-1") + response.body


def _error(exc: HttpError) -> PushResponse:
    return PushResponse(exc.status, (), f"{exc}\n".encode())


class PushServer:
    """Serves a :class:`PushService` on ``host:port``: HTTP pushes and WebSocket clients."""

    def __init__(self, service: PushService, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        task = asyncio.create_task(self._purge_loop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY)
            self.service.purge(self._clock())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else "local"
        if self._connections >= self.service.limits.connections:
            writer.close()
            return
        self._connections += 1
        try:
            await self._serve_one(reader, writer, peer)
        except (ConnectionError, TimeoutError, OSError):
            pass
        except Exception:  # a bug must not take the service down: log it, drop the client
            self.errors += 1
            log.exception("push event=connection_error")
        finally:
            self._connections -= 1
            writer.close()

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        raw = bytearray()
        if not self.service.budget.take(peer, self._clock()):
            writer.write(_response_bytes(conn, _error(HttpError(429, "over the budget"))))
            await writer.drain()
            return
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                request = await self._read_head(reader, conn, raw)
        except HttpError as exc:
            writer.write(_response_bytes(conn, _error(exc)))
            await writer.drain()
            return
        except TimeoutError:
            writer.write(_response_bytes(conn, _error(HttpError(408))))
            await writer.drain()
            return
        headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in request.headers}
        if "websocket" in headers.get("upgrade", "").lower():
            await self._serve_websocket(reader, writer, bytes(raw), peer)
            return
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):
                body = await self._read_body(reader, conn, headers)
            target = request.target.decode("ascii").split("?", 1)[0]
            response = self.service.handle_http(
                request.method.decode("ascii"), target, headers, body, self._clock()
            )
        except HttpError as exc:
            log.debug("push event=reject status=%d reason=%s", exc.status, exc)
            response = _error(exc)
        except TimeoutError:
            response = _error(HttpError(408))
        writer.write(_response_bytes(conn, response))
        await writer.drain()

    async def _read_head(
        self, reader: asyncio.StreamReader, conn: h11.Connection, raw: bytearray
    ) -> h11.Request:
        """Read until h11 has a request head (``raw`` keeps the bytes, for wsproto)."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                hint = exc.error_status_hint
                raise HttpError(hint if 400 <= hint < 500 else 400, str(exc)) from None
            if isinstance(event, h11.Request):
                if event.http_version not in (b"1.0", b"1.1"):
                    raise HttpError(400, "not HTTP/1.x")
                return event
            if event is not h11.NEED_DATA:
                raise HttpError(400, "no request")
            room = MAX_HEAD + 1 - len(raw)
            if room <= 0:
                raise HttpError(431)
            data = await reader.read(min(room, READ_SIZE))
            raw += data
            conn.receive_data(data)

    async def _read_body(
        self, reader: asyncio.StreamReader, conn: h11.Connection, headers: Mapping[str, str]
    ) -> bytes:
        """The request's body, at most MAX_PAYLOAD bytes (413 beyond, before reading it)."""
        length = headers.get("content-length")
        if length is not None and int(length) > MAX_PAYLOAD:
            raise HttpError(413, "push message over 4096 bytes (RFC 8030 section 7.2)")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(400, str(exc)) from None
            if isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_PAYLOAD:
                    raise HttpError(413, "push message over 4096 bytes")
                chunks.append(bytes(event.data))
            elif event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
            else:
                raise HttpError(400, "unexpected request event")

    async def _serve_websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes, peer: str
    ) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        session = WsSession(self.service, peer)
        wake = asyncio.Event()
        session.wakeup = wake.set
        parts: list[str] = []
        data: bytes | None = raw
        read_task: asyncio.Task[bytes] | None = None
        try:
            while True:
                if data and not self._receive(ws, writer, session, data, parts):
                    return
                if not await self._flush(ws, writer, session):
                    return
                wake.clear()
                if read_task is None:
                    read_task = asyncio.ensure_future(reader.read(READ_SIZE))
                wake_task = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait(
                    {read_task, wake_task},
                    timeout=IDLE_TIMEOUT if session.uaid else HELLO_TIMEOUT,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wake_task.cancel()
                if not done:
                    session.fail(1001, "idle")
                    await self._flush(ws, writer, session)
                    return
                data = None
                if read_task in done:
                    data = read_task.result()
                    read_task = None
                    if not data:  # the peer closed without a close frame (1006)
                        return
        finally:
            if read_task is not None:
                read_task.cancel()
            self.service.detach(session)

    def _receive(
        self,
        ws: WSConnection,
        writer: asyncio.StreamWriter,
        session: WsSession,
        data: bytes,
        parts: list[str],
    ) -> bool:
        """Feed ``data`` to wsproto and handle its events (``parts`` holds a fragmented
        text message).  False if the connection is to end at once (a failed handshake)."""
        try:
            ws.receive_data(data)
        except (WsRemoteProtocolError, WsLocalProtocolError):
            return self._reject_handshake(ws, writer)
        while session.close is None:
            try:
                events = list(ws.events())
            except (WsRemoteProtocolError, WsLocalProtocolError):
                return self._reject_handshake(ws, writer)
            if not events:
                break
            for event in events:
                if isinstance(event, WsRequest):
                    if event.target.split("?", 1)[0] != "/":
                        writer.write(ws.send(RejectConnection(status_code=404)))
                        return False
                    proto = SUBPROTOCOL if SUBPROTOCOL in event.subprotocols else None
                    writer.write(ws.send(AcceptConnection(subprotocol=proto)))
                elif isinstance(event, TextMessage):
                    parts.append(event.data)
                    if sum(map(len, parts)) > self.service.limits.max_ws_message:
                        session.fail(WS_TOO_BIG, "message too big")
                    elif event.message_finished:
                        session.receive_text("".join(parts), self._clock())
                        parts.clear()
                elif isinstance(event, BytesMessage):
                    session.fail(WS_UNSUPPORTED, "binary messages are not part of it")
                elif isinstance(event, Ping):
                    writer.write(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    code = event.code if event.code not in (1005, 1006) else 1000
                    session.fail(code, "closed by the client")
                if session.close is not None:
                    break
        return True

    @staticmethod
    def _reject_handshake(ws: WSConnection, writer: asyncio.StreamWriter) -> bool:
        if ws.state is ConnectionState.CONNECTING:
            writer.write(_response_bytes(h11.Connection(h11.SERVER), _error(HttpError(400))))
        return False

    async def _flush(
        self, ws: WSConnection, writer: asyncio.StreamWriter, session: WsSession
    ) -> bool:
        """Send the session's queued messages, or its close; False once it is closed."""
        if ws.state is ConnectionState.OPEN:
            for text in session.outbox:
                writer.write(ws.send(TextMessage(data=text)))
        session.outbox.clear()
        if session.close is not None:
            if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                code, reason = session.close
                writer.write(ws.send(CloseConnection(code=code, reason=reason[:120])))
            await writer.drain()
            return False
        await writer.drain()
        return True


@dataclass(frozen=True)
class PushServiceOptions:
    host: str
    port: int
    data: Path | None
    origin: str | None = None


async def run_push_service(opts: PushServiceOptions, ready: Callable[[str], None]) -> None:
    """Serve until cancelled; ``ready`` gets the origin once the port is bound."""
    store = PushStore(opts.data / "push.sqlite3" if opts.data else None)
    service = PushService(store, opts.origin or "http://placeholder")
    server = PushServer(service)
    try:
        port = await server.start(opts.host, opts.port)
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        service.origin = (opts.origin or f"http://{host}:{port}").rstrip("/")
        ready(service.origin)
        await asyncio.Event().wait()
    finally:
        await server.close()
        store.close()


def main_push_service(opts: PushServiceOptions) -> int:
    """``zmesh push-service``: serve until interrupted; 0 on Ctrl-C, 1 if it cannot listen."""

    def ready(origin: str) -> None:
        ws = "ws" + origin.removeprefix("http")
        print(f"zmesh push-service: Firefox's dom.push.serverURL = {ws}/", flush=True)
        print(f"zmesh push-service: push endpoints under {origin}/wpush/", flush=True)
        where = opts.data / "push.sqlite3" if opts.data else "memory (lost on exit)"
        print(f"zmesh push-service: storage {where}", flush=True)

    try:
        asyncio.run(run_push_service(opts, ready))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"zmesh push-service: error: {exc}", file=sys.stderr)
        return 1
    return 0
