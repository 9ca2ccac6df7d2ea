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
(tests drive it without sockets); :class:`~zmesh.runtime.push_server.PushServer` is its
asyncio glue.
"""

import json
import logging
import re
import secrets
import sqlite3
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from py_vapid import jwt as vapid_jwt

from .http import HttpError
from .push import b64url_decode, b64url_encode, p256_public_key

log = logging.getLogger("zmesh.push")

#: RFC 8030 section 7.2: a push service must accept at least 4096 bytes of payload
MAX_PAYLOAD = 4096
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
