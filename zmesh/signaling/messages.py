"""Signed signaling messages: a WebRTC offer or answer bound to a node identity.

Wire format, version 1 (big-endian)::

    u8 version | u8 kind (1 offer, 2 answer) | sender id[32] | target id[32]
    | u64 timestamp_ms | nonce[16] | fingerprint[32] | u16 len | session
    | u16 len | sender descriptor (optional, for bootstrap)
    | signature[2484]

``session`` is the compact SDP (ICE credentials and candidates); ``fingerprint`` is the
sender's DTLS certificate fingerprint, signed here so that a man in the middle of the
signaling path cannot substitute its own certificate: the receiver checks that the SDP it
is about to apply carries exactly this fingerprint, and the link handshake then binds both
fingerprints into its transcript.  The hybrid signature (Ed25519 + ML-DSA-44) covers every
byte before it.  Replay and the state of each negotiation are in
:mod:`zmesh.signaling.negotiation`.
"""

from dataclasses import dataclass, replace
from enum import IntEnum

from ..codec import Buffer, push_vector
from ..crypto import signing
from ..errors import CloseCode, RemoteProtocolError
from ..identity import Descriptor, Identity, decode_descriptor

VERSION = 1
CONTEXT = b"zmesh-signal-v1"
MAX_SESSION = 2048
MAX_MESSAGE = 16384
MAX_SKEW_MS = 120_000
FINGERPRINT_SIZE = 32


class Kind(IntEnum):
    OFFER = 1
    ANSWER = 2


@dataclass(frozen=True, slots=True)
class SignalingMessage:
    kind: Kind
    sender: bytes
    target: bytes
    timestamp_ms: int
    nonce: bytes
    fingerprint: bytes
    session: bytes
    descriptor: bytes = b""
    signature: bytes = b""

    def signed_part(self) -> bytes:
        return b"".join(
            (
                bytes([VERSION, self.kind]),
                self.sender,
                self.target,
                self.timestamp_ms.to_bytes(8, "big"),
                self.nonce,
                self.fingerprint,
                push_vector(self.session, 2),
                push_vector(self.descriptor, 2),
            )
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    def sign(self, identity: Identity) -> "SignalingMessage":
        return replace(self, signature=identity.signing.sign(self.signed_part(), CONTEXT))


def decode_message(data: bytes) -> SignalingMessage:
    """Parse (not verify) a message; raise RemoteProtocolError if malformed."""
    if len(data) > MAX_MESSAGE:
        raise RemoteProtocolError("signaling message too large", CloseCode.RESOURCE)
    buf = Buffer(data)
    version = buf.pull_uint8()
    if version != VERSION:
        raise RemoteProtocolError(f"unknown signaling version {version}")
    try:
        kind = Kind(buf.pull_uint8())
    except ValueError:
        raise RemoteProtocolError("unknown signaling message kind") from None
    msg = SignalingMessage(
        kind=kind,
        sender=buf.pull_bytes(32),
        target=buf.pull_bytes(32),
        timestamp_ms=buf.pull_uint64(),
        nonce=buf.pull_bytes(16),
        fingerprint=buf.pull_bytes(FINGERPRINT_SIZE),
        session=buf.pull_vector(2, MAX_SESSION),
        descriptor=buf.pull_vector(2, MAX_MESSAGE),
        signature=buf.pull_bytes(signing.SIGNATURE_SIZE),
    )
    buf.expect_eof()
    return msg


def check_fresh(msg: SignalingMessage, now_ms: int) -> None:
    """Raise RemoteProtocolError (AUTH) unless ``msg``'s timestamp is within
    :data:`MAX_SKEW_MS` of ``now_ms``."""
    if abs(msg.timestamp_ms - now_ms) > MAX_SKEW_MS:
        raise RemoteProtocolError("stale signaling message", CloseCode.AUTH)


def verify_message(
    msg: SignalingMessage,
    *,
    now_ms: int,
    expected_target: bytes,
    known: Descriptor | None,
    now: float,
) -> Descriptor:
    """Check a message's sender, signature, target and freshness.

    The sender's keys come from ``known`` (a descriptor we already trust, e.g. the node we
    dialled) or, failing that, from the descriptor carried in the message, which must
    itself verify and hash to the sender id.  Returns the sender's descriptor.  Raises
    RemoteProtocolError (AUTH) on any mismatch.
    """
    if msg.target != expected_target:
        raise RemoteProtocolError("signaling message addressed to another node", CloseCode.AUTH)
    check_fresh(msg, now_ms)
    sender = known
    if sender is None:
        if not msg.descriptor:
            raise RemoteProtocolError("unknown sender and no descriptor", CloseCode.AUTH)
        sender = decode_descriptor(msg.descriptor)
        sender.verify(now)
    if sender.node_id != msg.sender:
        raise RemoteProtocolError("signaling sender does not match its keys", CloseCode.AUTH)
    if not signing.verify(sender.signing_pk, msg.signature, msg.signed_part(), CONTEXT):
        raise RemoteProtocolError("bad signaling signature", CloseCode.AUTH)
    return sender
