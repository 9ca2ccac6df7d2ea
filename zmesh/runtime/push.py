# ruff: noqa: PLC0415  (lazy imports: the padding codec must import in Pyodide, which lacks them)
"""Native push sending: RFC 8291 ``aes128gcm`` Web Push with RFC 8292 VAPID.

A native node wakes a browser node by POSTing an encrypted push message to the browser's
push subscription (:class:`PushSubscription`, the W3C ``PushSubscription.toJSON()``
shape).  Encryption is pywebpush's (http-ece over pyca cryptography, a fresh ECDH key
and salt per message); the VAPID JWT is py-vapid's, signed with the node's own key,
kept in its data directory (:class:`NodeVapidKey`, see D48 in docs/decisions.md).

Every payload is padded to :data:`PADDED_SIZE` bytes before encryption, so every push
body is exactly :data:`PUSH_BODY_SIZE` (4096) bytes and its size says nothing of its
content.  http-ece appends the RFC 8188 delimiter itself and offers no padding, so the
padding is inside the plaintext: a 2-byte big-endian length, the payload, zeros
(:func:`pad_payload` / :func:`unpad_payload`; the browser node strips it).

The HTTP request is framed by h11 (:class:`zmesh.runtime.http.ClientExchange`), over
TLS for ``https://`` endpoints.
"""

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ZMeshError
from .http import ClientExchange, run_exchange

#: RFC 8188 aes128gcm header: salt (16), record size (4), key id length (1), key id (65)
ECE_HEADER = 86
#: one record's overhead: the delimiter and the AES-GCM tag
ECE_RECORD_OVERHEAD = 1 + 16
#: every push body's size: the most a push service must accept (RFC 8030 section 7.2)
PUSH_BODY_SIZE = 4096
PADDED_SIZE = PUSH_BODY_SIZE - ECE_HEADER - ECE_RECORD_OVERHEAD
LENGTH_PREFIX = 2
#: the largest payload a push carries
MAX_PUSH_PAYLOAD = PADDED_SIZE - LENGTH_PREFIX
#: the VAPID contact: one value for every node, so it names no one (RFC 8292 section 2.1)
VAPID_SUB = "mailto:push@zmesh.invalid"
#: a token lives 12 hours (RFC 8292: at most 24)
VAPID_LIFETIME = 12 * 3600
VAPID_KEY_FILE = "push-vapid.pem"
URGENCIES = ("very-low", "low", "normal", "high")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; ValueError if it is not base64url."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def p256_public_key(raw: bytes) -> bytes:
    """``raw`` if it is an uncompressed P-256 point on the curve; ValueError otherwise."""
    if len(raw) != 65 or raw[0] != 4:
        raise ValueError("not an uncompressed P-256 public key")
    from cryptography.hazmat.primitives.asymmetric import ec  # CPython only (not Pyodide)

    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # ValueError off-curve
    return raw


class PushError(ZMeshError):
    """A push could not be built or sent, or the push service refused it (``status``)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def pad_payload(payload: bytes) -> bytes:
    """``payload`` as exactly PADDED_SIZE bytes; PushError if it is over MAX_PUSH_PAYLOAD."""
    if len(payload) > MAX_PUSH_PAYLOAD:
        raise PushError(f"push payload of {len(payload)} bytes over {MAX_PUSH_PAYLOAD}")
    head = len(payload).to_bytes(LENGTH_PREFIX, "big")
    return head + payload + bytes(PADDED_SIZE - LENGTH_PREFIX - len(payload))


def unpad_payload(padded: bytes) -> bytes:
    """The payload inside a padded plaintext; PushError unless the length and the zero
    padding are exactly as :func:`pad_payload` makes them."""
    if len(padded) != PADDED_SIZE:
        raise PushError(f"padded push payload of {len(padded)} bytes, not {PADDED_SIZE}")
    size = int.from_bytes(padded[:LENGTH_PREFIX], "big")
    if size > MAX_PUSH_PAYLOAD or any(padded[LENGTH_PREFIX + size :]):
        raise PushError("push payload padding is malformed")
    return padded[LENGTH_PREFIX : LENGTH_PREFIX + size]


@dataclass(frozen=True)
class PushSubscription:
    """A browser's push subscription, as a native node holds it: the endpoint and the
    keys of RFC 8291 (``p256dh``: the browser's P-256 public key; ``auth``: 16 bytes)."""

    endpoint: str
    p256dh: bytes
    auth: bytes

    def __post_init__(self) -> None:
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a push endpoint is an http(s) URL")
        if len(self.endpoint) > 2048:
            raise ValueError("push endpoint too long")
        p256_public_key(self.p256dh)
        if len(self.auth) != 16:
            raise ValueError("auth secret must be 16 bytes (RFC 8291 section 3.2)")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "PushSubscription":
        """From ``PushSubscription.toJSON()``: {"endpoint", "keys": {"p256dh", "auth"}}.
        ValueError if a field is missing or malformed."""
        try:
            keys = obj["keys"]
            endpoint, p256dh, auth = obj["endpoint"], keys["p256dh"], keys["auth"]
        except (KeyError, TypeError):
            raise ValueError("not a push subscription: endpoint and keys required") from None
        if not all(isinstance(v, str) for v in (endpoint, p256dh, auth)):
            raise ValueError("push subscription fields must be strings")
        return cls(endpoint, b64url_decode(p256dh), b64url_decode(auth))

    def to_json(self) -> dict[str, Any]:
        keys = {"p256dh": b64url_encode(self.p256dh), "auth": b64url_encode(self.auth)}
        return {"endpoint": self.endpoint, "keys": keys}


class NodeVapidKey:
    """A node's VAPID key pair (P-256), kept as PEM in its data directory."""

    def __init__(self, vapid: Any) -> None:
        self._vapid = vapid

    @classmethod
    def generate(cls) -> "NodeVapidKey":
        from py_vapid import Vapid02

        vapid = Vapid02()
        vapid.generate_keys()
        return cls(vapid)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> "NodeVapidKey":
        """The key in ``data_dir``/push-vapid.pem, made (mode 0600) if missing.
        PushError if the file exists but is not a P-256 private key."""
        from py_vapid import Vapid02

        path = data_dir / VAPID_KEY_FILE
        if path.exists():
            try:
                return cls(Vapid02.from_file(str(path)))
            except Exception as exc:  # py-vapid raises several kinds for a bad file
                raise PushError(f"{path} is not a VAPID private key: {exc}") from None
        key = cls.generate()
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key._vapid.private_pem())
        return key

    @property
    def public_key(self) -> bytes:
        """The raw public key (65 bytes): the browser's ``applicationServerKey``."""
        from cryptography.hazmat.primitives import serialization

        raw: bytes = self._vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return raw

    @property
    def application_server_key(self) -> str:
        return b64url_encode(self.public_key)

    def authorization(self, endpoint: str, now: float) -> str:
        """The ``Authorization: vapid t=..., k=...`` value for a push to ``endpoint``."""
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(now) + VAPID_LIFETIME,
            "sub": VAPID_SUB,
        }
        header: dict[str, str] = self._vapid.sign(claims)
        return header["Authorization"]


def encrypt_push(subscription: PushSubscription, payload: bytes) -> bytes:
    """The RFC 8291 aes128gcm body (PUSH_BODY_SIZE bytes) carrying ``payload`` padded.
    PushError if the payload is too big."""
    from pywebpush import WebPusher

    pusher = WebPusher(subscription.to_json())
    body: bytes = pusher.encode(pad_payload(payload), "aes128gcm")["body"]
    assert len(body) == PUSH_BODY_SIZE
    return body


@dataclass(frozen=True)
class PushReceipt:
    """The push service's answer: 201 with the message's Location (RFC 8030 section 5)."""

    status: int
    location: str
    ttl: int


async def send_push(
    subscription: PushSubscription,
    payload: bytes,
    key: NodeVapidKey,
    *,
    ttl: int,
    urgency: str = "normal",
    topic: str | None = None,
    timeout: float = 10.0,
    now: float | None = None,
) -> PushReceipt:
    """Encrypt ``payload`` for ``subscription`` and POST it, signed with ``key``.

    Returns the receipt of a 201; raises PushError for a refusal (with its status), a
    payload over MAX_PUSH_PAYLOAD or a bad argument; OSError or TimeoutError if the push
    service cannot be reached."""
    if ttl < 0 or urgency not in URGENCIES:
        raise PushError("TTL must be >= 0 and Urgency one of " + ", ".join(URGENCIES))
    body = encrypt_push(subscription, payload)
    parts = urlsplit(subscription.endpoint)
    headers = [
        (b"Host", parts.netloc.encode()),
        (b"TTL", b"%d" % ttl),
        (b"Urgency", urgency.encode()),
        (b"Content-Encoding", b"aes128gcm"),
        (b"Content-Type", b"application/octet-stream"),
        (b"Content-Length", b"%d" % len(body)),
        (b"Authorization", key.authorization(subscription.endpoint, now or time.time()).encode()),
    ]
    if topic is not None:
        headers.append((b"Topic", topic.encode()))
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    exchange = ClientExchange("POST", target or "/", headers, body)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    import ssl  # lazily: an unvendored module in Pyodide

    context = ssl.create_default_context() if secure else None
    assert parts.hostname is not None  # PushSubscription checked it

    await run_exchange(parts.hostname, port, exchange, timeout, context)
    if exchange.status != 201:
        reason = exchange.body[:200].decode("utf-8", "replace").strip()
        raise PushError(f"push refused: {exchange.status} {reason}", exchange.status)
    fields = {name.lower(): value for name, value in exchange.headers}
    ttl_back = fields.get("ttl", str(ttl))
    return PushReceipt(
        201, fields.get("location", ""), int(ttl_back) if ttl_back.isdigit() else ttl
    )


def subscription_from_text(text: str) -> PushSubscription:
    """A subscription from its JSON text; ValueError if it is not one."""
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError("a push subscription is a JSON object")
    return PushSubscription.from_json(obj)
