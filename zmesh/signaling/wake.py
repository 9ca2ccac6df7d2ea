"""Waking a browser node by Web Push, sans I/O: wake records, dial offers, and their state.

Theory of operation (docs/decisions.md, D48 and D54).  A browser node picks a few *wake
nodes* (native nodes it is linked to that publish a VAPID key, at most
:data:`MAX_WAKE_NODES`) and subscribes to Web Push once per wake node, restricted to that
node's key.  It hands each wake node a :class:`WakeRecord` as a SIGNAL payload: its push
subscription, the SHA-256 fingerprint of the long-lived DTLS certificate it keeps for
dials by push, and a lifetime, signed with its identity (and its descriptor, so the wake
node can check the signature whatever it knows).  The wake node keeps the newest record
of each browser in a :class:`WakeBook` (bounded per browser and in all, verification
budgeted per sending peer).

To bring the browser into the mesh with no HTTP round trip, the wake node builds the
browser's offer itself (the browser's fingerprint from the record, ICE credentials it
chooses), answers it with its own WebRTC stack, and pushes a :class:`WakeDial`: those
credentials, its compact answer, an expiry and a nonce, signed.  The browser checks it
with a :class:`DialGuard` (from one of its wake nodes, to itself, not expired, not
replayed), puts the credentials into its own offer before ``setLocalDescription``,
applies the answer, and the link handshake binds both certificates to both identities
as for any link.

Wire formats (big-endian), each signed over every byte before the signature::

    record: u8 kind (0x81) | u8 version (1) | browser id[32] | wake node id[32]
          | u64 timestamp_ms | u32 lifetime_s | fingerprint[32] | u16 len | endpoint
          | p256dh[65] | auth[16] | u16 len | browser descriptor | signature
    dial:   u8 kind (0x82) | u8 version (1) | wake node id[32] | browser id[32]
          | u64 timestamp_ms | u64 expires_ms | nonce[16] | u8 len | ice-ufrag
          | u8 len | ice-pwd | u16 len | compact answer | signature

The first byte tells them from signaling messages (version 1) in SIGNAL frames.  Every
parser raises :class:`~zmesh.errors.RemoteProtocolError` on bad input.
"""

import heapq
from dataclasses import dataclass, replace
from typing import Final

from ..budget import TokenBucket
from ..codec import Buffer, push_vector
from ..crypto import signing
from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..identity import Descriptor, Identity, decode_descriptor
from .messages import FINGERPRINT_SIZE, MAX_MESSAGE, MAX_SESSION, MAX_SKEW_MS
from .sdp import CompactSdp

RECORD_KIND: Final = 0x81
DIAL_KIND: Final = 0x82
VERSION: Final = 1
RECORD_CONTEXT: Final = b"zmesh-wake-record-v1"
DIAL_CONTEXT: Final = b"zmesh-wake-dial-v1"
MAX_WAKE_NODES: Final = 3  # subscriptions a browser hands out (D48: its guards, at most 3)
MAX_ENDPOINT: Final = 2048
P256_POINT: Final = 65
AUTH_SIZE: Final = 16
NONCE_SIZE: Final = 16
MAX_RECORD_LIFETIME: Final = 7 * 24 * 3600  # seconds; the push service keeps nothing longer
MAX_DIAL_LIFETIME_MS: Final = 120_000  # a dial offer's expiry, at most this after it was made
MAX_ICE: Final = 256
WAKE_WEBPUSH_SCHEME: Final = "webpush:"  # a descriptor address naming the node's VAPID key


def is_wake_payload(payload: bytes) -> bool:
    """True if a SIGNAL payload is a wake record or dial (not a signaling message)."""
    return payload[:1] in (bytes([RECORD_KIND]), bytes([DIAL_KIND]))


def vapid_key_of(desc: Descriptor) -> str | None:
    """The VAPID public key (base64url text) ``desc`` publishes as a ``webpush:`` address;
    None if it publishes none (it cannot wake browsers)."""
    for address in desc.addresses:
        if address.startswith(WAKE_WEBPUSH_SCHEME):
            key = address[len(WAKE_WEBPUSH_SCHEME) :]
            if len(key) == 87 and all(c.isalnum() or c in "-_" for c in key):
                return key
    return None


# -- wake records ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WakeRecord:
    """A browser's push subscription for one wake node, signed by the browser."""

    browser: bytes
    wake_node: bytes
    timestamp_ms: int
    lifetime_s: int
    fingerprint: bytes  # the DTLS certificate the browser uses for dials by push
    endpoint: str
    p256dh: bytes
    auth: bytes
    descriptor: bytes  # the browser's, encoded
    signature: bytes = b""

    def __post_init__(self) -> None:
        if len(self.browser) != 32 or len(self.wake_node) != 32:
            raise LocalProtocolError("node ids are 32 bytes")
        if not 0 < self.lifetime_s <= MAX_RECORD_LIFETIME:
            raise LocalProtocolError("wake record lifetime out of range")
        if len(self.fingerprint) != FINGERPRINT_SIZE:
            raise LocalProtocolError("a DTLS fingerprint is 32 bytes")
        if not self.endpoint.isascii() or not 0 < len(self.endpoint) <= MAX_ENDPOINT:
            raise LocalProtocolError("a push endpoint is up to 2048 ASCII characters")
        if len(self.p256dh) != P256_POINT or self.p256dh[0] != 4 or len(self.auth) != AUTH_SIZE:
            raise LocalProtocolError("p256dh is an uncompressed P-256 point, auth 16 bytes")

    @property
    def expires(self) -> float:
        """Unix seconds after which the record is dropped."""
        return self.timestamp_ms / 1000 + self.lifetime_s

    def signed_part(self) -> bytes:
        return b"".join(
            (
                bytes([RECORD_KIND, VERSION]),
                self.browser,
                self.wake_node,
                self.timestamp_ms.to_bytes(8, "big"),
                self.lifetime_s.to_bytes(4, "big"),
                self.fingerprint,
                push_vector(self.endpoint.encode("ascii"), 2),
                self.p256dh,
                self.auth,
                push_vector(self.descriptor, 2),
            )
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def sign(self, identity: Identity) -> "WakeRecord":
        if identity.node_id != self.browser:
            raise LocalProtocolError("a wake record is signed by its browser")
        return replace(self, signature=identity.signing.sign(self.signed_part(), RECORD_CONTEXT))


def decode_record(data: bytes) -> WakeRecord:
    """Parse (not verify) a wake record; RemoteProtocolError if malformed."""
    if len(data) > MAX_MESSAGE:
        raise RemoteProtocolError("wake record too large", CloseCode.RESOURCE)
    buf = Buffer(data)
    if buf.pull_uint8() != RECORD_KIND or buf.pull_uint8() != VERSION:
        raise RemoteProtocolError("not a version 1 wake record")
    browser, wake_node = buf.pull_bytes(32), buf.pull_bytes(32)
    timestamp_ms, lifetime_s = buf.pull_uint64(), buf.pull_uint32()
    fingerprint = buf.pull_bytes(FINGERPRINT_SIZE)
    endpoint = buf.pull_vector(2, MAX_ENDPOINT)
    p256dh, auth = buf.pull_bytes(P256_POINT), buf.pull_bytes(AUTH_SIZE)
    descriptor = buf.pull_vector(2, MAX_MESSAGE)
    signature = buf.pull_bytes(signing.SIGNATURE_SIZE)
    buf.expect_eof()
    try:
        return WakeRecord(
            browser,
            wake_node,
            timestamp_ms,
            lifetime_s,
            fingerprint,
            endpoint.decode("ascii"),
            p256dh,
            auth,
            descriptor,
            signature,
        )
    except (LocalProtocolError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"malformed wake record: {exc}") from None


def verify_record(record: WakeRecord, *, now: float) -> Descriptor:
    """The browser's descriptor if ``record`` is signed by the browser it names (its
    carried descriptor verifies and hashes to that id); RemoteProtocolError (AUTH) if not."""
    desc = decode_descriptor(record.descriptor)
    desc.verify(now)
    if desc.node_id != record.browser:
        raise RemoteProtocolError("wake record descriptor is another node's", CloseCode.AUTH)
    if not signing.verify(desc.signing_pk, record.signature, record.signed_part(), RECORD_CONTEXT):
        raise RemoteProtocolError("bad wake record signature", CloseCode.AUTH)
    return desc


@dataclass(frozen=True, slots=True)
class StoredWake:
    """A verified wake record and the browser's descriptor."""

    record: WakeRecord
    descriptor: Descriptor


class WakeBook:
    """The wake records a native node holds: the newest per browser, at most ``capacity``
    in all (a full book drops the record that expires first), verification budgeted per
    sending peer (``rate`` per second, ``burst``; at most ``capacity`` peers tracked).
    """

    def __init__(
        self, node_id: bytes, *, capacity: int = 4096, rate: float = 0.2, burst: float = 4
    ) -> None:
        self.node_id = node_id
        self.capacity = capacity
        self._rate, self._burst = rate, burst
        self._records: dict[bytes, StoredWake] = {}
        self._budgets: dict[bytes, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, browser: bytes, now: float) -> StoredWake | None:
        """The live record of ``browser``; None if there is none (or it expired)."""
        stored = self._records.get(browser)
        if stored is not None and stored.record.expires <= now:
            del self._records[browser]
            return None
        return stored

    def receive(self, data: bytes, origin: bytes, now: float) -> StoredWake:
        """Check and keep a wake record that ``origin`` sent in a SIGNAL frame.

        Raises RemoteProtocolError if it is malformed, not for us, not from the browser
        that signed it, stale, older than the one kept, over ``origin``'s verification
        budget (RESOURCE), or forged (AUTH)."""
        record = decode_record(data)
        if record.wake_node != self.node_id:
            raise RemoteProtocolError("wake record for another node", CloseCode.AUTH)
        if record.browser != origin:
            raise RemoteProtocolError("wake record relayed for another node", CloseCode.AUTH)
        if abs(record.timestamp_ms - now * 1000) > MAX_SKEW_MS:
            raise RemoteProtocolError("stale wake record", CloseCode.AUTH)
        kept = self.get(record.browser, now)
        if kept is not None and kept.record.timestamp_ms >= record.timestamp_ms:
            raise RemoteProtocolError("wake record not newer than the one kept", CloseCode.REPLAY)
        if not self._budget(origin).take(now):
            raise RemoteProtocolError("too many wake records from this peer", CloseCode.RESOURCE)
        stored = StoredWake(record, verify_record(record, now=now))
        self._records.pop(record.browser, None)
        while len(self._records) >= self.capacity:
            first = min(self._records.values(), key=lambda s: s.record.expires)
            del self._records[first.record.browser]
        self._records[record.browser] = stored
        return stored

    def forget(self, browser: bytes) -> None:
        self._records.pop(browser, None)

    def _budget(self, origin: bytes) -> TokenBucket:
        bucket = self._budgets.get(origin)
        if bucket is None:
            if len(self._budgets) >= self.capacity:
                del self._budgets[next(iter(self._budgets))]  # the longest tracked
            bucket = self._budgets[origin] = TokenBucket(self._rate, self._burst)
        return bucket


# -- dial offers -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WakeDial:
    """A wake node's dial offer to a browser: the browser's ICE credentials to use, the
    wake node's compact answer, an expiry and a nonce, signed by the wake node."""

    sender: bytes
    target: bytes
    timestamp_ms: int
    expires_ms: int
    nonce: bytes
    ice_ufrag: str
    ice_pwd: str
    answer: bytes  # CompactSdp.encode() of the wake node's answer
    signature: bytes = b""

    def signed_part(self) -> bytes:
        return b"".join(
            (
                bytes([DIAL_KIND, VERSION]),
                self.sender,
                self.target,
                self.timestamp_ms.to_bytes(8, "big"),
                self.expires_ms.to_bytes(8, "big"),
                self.nonce,
                push_vector(self.ice_ufrag.encode("ascii"), 1),
                push_vector(self.ice_pwd.encode("ascii"), 1),
                push_vector(self.answer, 2),
            )
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def sign(self, identity: Identity) -> "WakeDial":
        if identity.node_id != self.sender:
            raise LocalProtocolError("a dial offer is signed by its sender")
        return replace(self, signature=identity.signing.sign(self.signed_part(), DIAL_CONTEXT))

    def answer_sdp(self) -> CompactSdp:
        """The wake node's answer; RemoteProtocolError if it is not a usable answer."""
        compact = CompactSdp.decode(self.answer)
        if compact.setup == "actpass":
            raise RemoteProtocolError("a dial offer carries an answer, not an offer")
        return compact


def make_dial(
    identity: Identity,
    target: bytes,
    *,
    ice_ufrag: str,
    ice_pwd: str,
    answer: CompactSdp,
    nonce: bytes,
    now: float,
    lifetime_ms: int = 60_000,
) -> WakeDial:
    """A signed dial offer to ``target`` valid ``lifetime_ms`` from ``now``.  The ICE
    credentials are checked as any SDP's (RemoteProtocolError if they are not valid)."""
    if not 0 < lifetime_ms <= MAX_DIAL_LIFETIME_MS or len(nonce) != NONCE_SIZE:
        raise LocalProtocolError("bad dial lifetime or nonce")
    CompactSdp(ice_ufrag, ice_pwd, bytes(32), "actpass")  # the credentials' syntax
    now_ms = int(now * 1000)
    dial = WakeDial(
        identity.node_id, target, now_ms, now_ms + lifetime_ms, nonce, ice_ufrag, ice_pwd,
        answer.encode(),
    )  # fmt: skip
    return dial.sign(identity)


def decode_dial(data: bytes) -> WakeDial:
    """Parse (not verify) a dial offer; RemoteProtocolError if malformed."""
    buf = Buffer(data)
    if buf.pull_uint8() != DIAL_KIND or buf.pull_uint8() != VERSION:
        raise RemoteProtocolError("not a version 1 dial offer")
    sender, target = buf.pull_bytes(32), buf.pull_bytes(32)
    timestamp_ms, expires_ms = buf.pull_uint64(), buf.pull_uint64()
    nonce = buf.pull_bytes(NONCE_SIZE)
    ufrag, pwd = buf.pull_vector(1, MAX_ICE - 1), buf.pull_vector(1, MAX_ICE - 1)
    answer = buf.pull_vector(2, MAX_SESSION)
    signature = buf.pull_bytes(signing.SIGNATURE_SIZE)
    buf.expect_eof()
    try:
        ufrag_text, pwd_text = ufrag.decode("ascii"), pwd.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError("ICE credentials are not ASCII") from None
    CompactSdp(ufrag_text, pwd_text, bytes(32), "actpass")  # RemoteProtocolError if invalid
    return WakeDial(
        sender, target, timestamp_ms, expires_ms, nonce, ufrag_text, pwd_text, answer, signature
    )


class DialGuard:
    """The browser's check of dial offers: from one of its wake nodes, to itself, within
    their expiry, each nonce once.  Nonces are kept until their offer expires, at most
    ``capacity``; when full the one that expires first is forgotten and every offer made
    at or before its timestamp is refused from then on, so a replay never gets in."""

    def __init__(self, node_id: bytes, capacity: int = 256) -> None:
        self.node_id = node_id
        self.capacity = capacity
        self.floor_ms = -1
        self._seen: set[bytes] = set()
        self._by_expiry: list[tuple[int, int, bytes]] = []  # (expires, timestamp, key)

    def open(self, data: bytes, wake_nodes: dict[bytes, Descriptor], now: float) -> WakeDial:
        """Check a dial offer (the payload of a push); return it if it may be used.

        Raises RemoteProtocolError: malformed, not for us, from a node we did not
        subscribe with (AUTH), expired or made in the future (AUTH), replayed (REPLAY),
        a bad answer, or a bad signature (AUTH)."""
        dial = decode_dial(data)
        now_ms = int(now * 1000)
        if dial.target != self.node_id:
            raise RemoteProtocolError("dial offer for another node", CloseCode.AUTH)
        sender = wake_nodes.get(dial.sender)
        if sender is None:
            raise RemoteProtocolError("dial offer from a node that may not wake us", CloseCode.AUTH)
        if not dial.timestamp_ms < dial.expires_ms <= dial.timestamp_ms + MAX_DIAL_LIFETIME_MS:
            raise RemoteProtocolError("dial offer lifetime out of range", CloseCode.AUTH)
        if dial.expires_ms <= now_ms or dial.timestamp_ms > now_ms + MAX_SKEW_MS:
            raise RemoteProtocolError("expired dial offer", CloseCode.AUTH)
        self._expire(now_ms)
        key = dial.sender + dial.nonce
        if dial.timestamp_ms <= self.floor_ms or key in self._seen:
            raise RemoteProtocolError("replayed dial offer", CloseCode.REPLAY)
        dial.answer_sdp()
        if not signing.verify(sender.signing_pk, dial.signature, dial.signed_part(), DIAL_CONTEXT):
            raise RemoteProtocolError("bad dial offer signature", CloseCode.AUTH)
        self._seen.add(key)
        heapq.heappush(self._by_expiry, (dial.expires_ms, dial.timestamp_ms, key))
        while len(self._seen) > self.capacity:
            _, timestamp, old = heapq.heappop(self._by_expiry)
            self._seen.discard(old)
            self.floor_ms = max(self.floor_ms, timestamp)
        return dial

    def _expire(self, now_ms: int) -> None:
        """Forget nonces of offers that expired: their offers are refused anyway."""
        while self._by_expiry and self._by_expiry[0][0] <= now_ms:
            self._seen.discard(heapq.heappop(self._by_expiry)[2])


__all__ = [
    "DIAL_KIND",
    "MAX_WAKE_NODES",
    "RECORD_KIND",
    "DialGuard",
    "StoredWake",
    "WakeBook",
    "WakeDial",
    "WakeRecord",
    "decode_dial",
    "decode_record",
    "is_wake_payload",
    "make_dial",
    "vapid_key_of",
    "verify_record",
]
