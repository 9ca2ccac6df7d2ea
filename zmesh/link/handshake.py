"""The link handshake: mutual authentication by X-Wing, bound to the transport.

Three messages, KEMTLS-style (no signatures on the wire, so a link costs two
encapsulations and no 2.4 KB ML-DSA signature)::

    I -> R  HELLO1  identity_keys_I, ct_R = Encaps(kem_pk_R)
    R -> I  HELLO2  ct_I = Encaps(kem_pk_I), MAC(k, "responder")
    I -> R  HELLO3  MAC(k, "initiator")

with ``k = HKDF(ss_R || ss_I, salt = SHA-256(binding || HELLO1 || ct_I))``.  ``binding`` is
the transport's channel binding (for WebRTC, both DTLS fingerprints), so a handshake cannot
be replayed on another connection.  The initiator knows the responder's identity key from
its descriptor; the responder learns the initiator's from HELLO1 and its node id is the hash
of those keys.  Only a holder of each identity's X-Wing secret can compute ``k``.
"""

from enum import Enum, auto

from ..crypto import constant_time_equal, hkdf, keyed_hash, sha256, xwing
from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..identity import Identity, node_id_of
from ..rng import Rng
from .frames import Frame, Hello1, Hello2, Hello3, encode_frame

_INFO = b"zmesh-link-v1"


class HandshakeState(Enum):
    START = auto()
    SENT_HELLO1 = auto()
    SENT_HELLO2 = auto()
    DONE = auto()


class LinkHandshake:
    def __init__(
        self,
        identity: Identity,
        *,
        initiator: bool,
        binding: bytes,
        rng: Rng,
        expected_peer_kem_pk: bytes | None = None,
        expected_peer_id: bytes | None = None,
    ) -> None:
        if initiator and (expected_peer_kem_pk is None or expected_peer_id is None):
            raise LocalProtocolError("an initiator must know the peer's identity key and id")
        self.identity = identity
        self.initiator = initiator
        self.binding = binding
        self._rng = rng
        self._peer_kem_pk = expected_peer_kem_pk
        self.peer_id: bytes | None = expected_peer_id
        self.state = HandshakeState.START
        self._ss_r = b""
        self._hello1 = b""
        self._key = b""

    def _derive(self, ss_r: bytes, ss_i: bytes, ct_i: bytes) -> bytes:
        salt = sha256(self.binding + self._hello1 + ct_i)
        return hkdf(ss_r + ss_i, salt, _INFO, 32)

    def start(self) -> Hello1:
        """The initiator's first message."""
        if not self.initiator or self.state is not HandshakeState.START:
            raise LocalProtocolError("start() is for a fresh initiator")
        assert self._peer_kem_pk is not None
        ct, self._ss_r = xwing.encaps_with(self._peer_kem_pk, self._rng)
        keys = self.identity.kem.public + self.identity.signing.public
        hello = Hello1(keys, ct)
        self._hello1 = encode_frame(hello)
        self.state = HandshakeState.SENT_HELLO1
        return hello

    def receive(self, frame: Frame) -> Frame | None:
        """Advance on a handshake frame; return the reply to send, if any.

        Raises RemoteProtocolError (code HANDSHAKE or AUTH) on anything unexpected.
        """
        if isinstance(frame, Hello1) and not self.initiator and self.state is HandshakeState.START:
            kem_pk = frame.identity_keys[: xwing.PUBLIC_KEY_SIZE]
            sign_pk = frame.identity_keys[xwing.PUBLIC_KEY_SIZE :]
            self.peer_id = node_id_of(kem_pk, sign_pk)
            self._hello1 = encode_frame(frame)
            ss_r = self.identity.kem.decaps(frame.ciphertext)
            ct_i, ss_i = xwing.encaps_with(kem_pk, self._rng)
            self._key = self._derive(ss_r, ss_i, ct_i)
            self.state = HandshakeState.SENT_HELLO2
            return Hello2(ct_i, keyed_hash(self._key, b"responder"))
        if isinstance(frame, Hello2) and self.state is HandshakeState.SENT_HELLO1:
            ss_i = self.identity.kem.decaps(frame.ciphertext)
            self._key = self._derive(self._ss_r, ss_i, frame.ciphertext)
            if not constant_time_equal(frame.mac, keyed_hash(self._key, b"responder")):
                raise RemoteProtocolError("peer failed to prove its identity", CloseCode.AUTH)
            self.state = HandshakeState.DONE
            return Hello3(keyed_hash(self._key, b"initiator"))
        if isinstance(frame, Hello3) and self.state is HandshakeState.SENT_HELLO2:
            if not constant_time_equal(frame.mac, keyed_hash(self._key, b"initiator")):
                raise RemoteProtocolError("peer failed to prove its identity", CloseCode.AUTH)
            self.state = HandshakeState.DONE
            return None
        raise RemoteProtocolError(
            f"unexpected {type(frame).__name__} during the handshake", CloseCode.HANDSHAKE
        )

    @property
    def done(self) -> bool:
        return self.state is HandshakeState.DONE
