"""TLS inside a circuit stream: the client side of ``https://`` for ``zmesh.fetch`` (D51).

The exit only pipes bytes to ``host:port``; the TLS session runs end to end between the
fetching node and the web server, so the exit sees ciphertext.  Pyodide's ``ssl`` module is
a stub, so the handshake and record layer are tlslite-ng's (pure Python, TLS 1.2 and 1.3),
driven over an in-memory socket (:class:`_MemorySocket`) by :class:`TlsClient`, a sans-I/O
object: :meth:`TlsClient.receive_data` takes ciphertext from the stream,
:meth:`TlsClient.data_to_send` gives ciphertext for it, :meth:`TlsClient.send` /
:meth:`TlsClient.read` carry plaintext.

tlslite-ng's own AES-GCM and ChaCha20-Poly1305 are pure Python (about 0.4 MB/s); on import
this module points its record layer's cipher factories at :func:`_aead` instead, which uses
pyca ``cryptography`` on CPython and the noble bundle (``zmeshCrypto``, web/src/crypto.js)
in Pyodide.  tlslite-ng checks the handshake's signatures with the leaf's key; the chain and
the host name are checked afterwards by a :class:`ChainVerifier` (pyca's RFC 5280 verifier on
CPython, pkijs in the page, web/src/x509.js) against certifi's CA set plus any ``--trust-ca``
certificates, before any application data is sent.

Offered: TLS 1.2 (ECDHE with AEAD suites only) and TLS 1.3, key share X25519 (P-256 after a
HelloRetryRequest), ALPN ``http/1.1``, SNI for host names (not for IP addresses, RFC 6066,
section 3).  A server that sends garbage, alerts, or more than :data:`MAX_PENDING` bytes that
do not make progress gets a :class:`TlsError`.
"""

import errno
import ipaddress
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

if sys.platform == "emscripten" and "dbm" not in sys.modules:  # pragma: no cover - Pyodide
    # Pyodide's stdlib has no dbm; tlslite-ng's package init imports it for its on-disk
    # verifier and session databases, which zmesh never opens
    import types

    _dbm = types.ModuleType("dbm")

    def _no_dbm(*args: object, **kwargs: object) -> None:
        raise OSError("dbm is not available in Pyodide")

    _dbm.open = _no_dbm  # type: ignore[attr-defined]
    sys.modules["dbm"] = _dbm

from tlslite import HandshakeSettings, TLSConnection, recordlayer
from tlslite.errors import TLSAbruptCloseError, TLSError

from ..errors import ZMeshError

#: ciphertext that may wait in the memory socket before tlslite reads it (a TLS record is at
#: most 16 KiB + 256 bytes, RFC 8446, section 5.2; the driver drains after every feed)
MAX_PENDING = 256 * 1024
#: the most certificates a server's chain may carry to the verifier
MAX_CHAIN = 10
AEAD_CIPHERS = ("chacha20-poly1305", "aes128gcm", "aes256gcm")


class TlsError(ZMeshError):
    """The TLS session failed: a handshake error, an alert, garbage from the server, or a
    certificate that does not check out.  The message says which."""


class CertificateError(TlsError):
    """The server's certificate chain is not trusted, or does not name the host."""


# -- the record layer's AEADs ---------------------------------------------------------------


class _Aead:
    """An AEAD with the interface tlslite-ng's record layer expects (``seal``/``open``,
    ``open`` returning None on a bad tag), backed by ``seal``/``open`` callables."""

    # tlslite-ng's attribute names
    isBlockCipher = False  # noqa: N815
    isAEAD = True  # noqa: N815
    nonceLength = 12  # noqa: N815
    tagLength = 16  # noqa: N815

    def __init__(
        self,
        name: str,
        key: bytes,
        seal: Callable[[bytes, bytes, bytes], bytes],
        open_: Callable[[bytes, bytes, bytes], bytes | None],
    ) -> None:
        self.name = name
        self.key = bytes(key)
        self.implementation = _BACKEND
        self._seal = seal
        self._open = open_

    def seal(self, nonce: bytes, plaintext: bytes, data: bytes) -> bytearray:
        return bytearray(self._seal(bytes(nonce), bytes(plaintext), bytes(data)))

    def open(self, nonce: bytes, ciphertext: bytes, data: bytes) -> bytearray | None:
        if len(ciphertext) < self.tagLength:
            return None
        out = self._open(bytes(nonce), bytes(ciphertext), bytes(data))
        return None if out is None else bytearray(out)


if sys.platform == "emscripten":  # pragma: no cover - Pyodide only
    from js import Uint8Array, zmeshCrypto
    from pyodide.ffi import JsException

    _BACKEND = "noble"

    def _js_aead(kind: str, key: bytes) -> tuple[Callable[..., bytes], Callable[..., Any]]:
        call = zmeshCrypto.ffi.call

        def run(name: str, nonce: bytes, data: bytes, ad: bytes) -> bytes:
            buf = Uint8Array.new(len(key) + len(nonce) + len(ad) + len(data))
            buf.assign(key + nonce + ad + data)
            out: bytes = call(name, buf, len(key), len(nonce), len(ad)).to_bytes()
            return out

        def seal(nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
            return run(f"{kind}Seal", nonce, plaintext, ad)

        def open_(nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
            try:
                return run(f"{kind}Open", nonce, ciphertext, ad)
            except JsException:
                return None

        return seal, open_

    def _gcm(key: bytes) -> tuple[Callable[..., bytes], Callable[..., Any]]:
        return _js_aead("aesGcm", key)

    def _chacha(key: bytes) -> tuple[Callable[..., bytes], Callable[..., Any]]:
        return _js_aead("chachaPoly", key)

else:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    _BACKEND = "pyca"

    def _pyca_aead(
        cipher: AESGCM | ChaCha20Poly1305,
    ) -> tuple[Callable[..., bytes], Callable[..., Any]]:
        def seal(nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
            return cipher.encrypt(nonce, plaintext, ad)

        def open_(nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes | None:
            try:
                return cipher.decrypt(nonce, ciphertext, ad)
            except InvalidTag:
                return None

        return seal, open_

    def _gcm(key: bytes) -> tuple[Callable[..., bytes], Callable[..., Any]]:
        return _pyca_aead(AESGCM(key))

    def _chacha(key: bytes) -> tuple[Callable[..., bytes], Callable[..., Any]]:
        return _pyca_aead(ChaCha20Poly1305(key))


def _create_aes_gcm(key: bytes, impl_list: object = None) -> _Aead:
    """tlslite-ng's ``createAESGCM``, on the platform's AES-GCM."""
    return _Aead(f"aes{len(key) * 8}gcm", key, *_gcm(bytes(key)))


def _create_chacha20(key: bytes, impl_list: object = None) -> _Aead:
    """tlslite-ng's ``createCHACHA20``, on the platform's ChaCha20-Poly1305 (RFC 8439)."""
    return _Aead("chacha20-poly1305", key, *_chacha(bytes(key)))


# the record layer imported the factories by name: replace them there (this module is the
# only user of tlslite-ng in zmesh)
recordlayer.createAESGCM = _create_aes_gcm
recordlayer.createCHACHA20 = _create_chacha20


# -- the memory socket ------------------------------------------------------------------------


class _MemorySocket:
    """The socket tlslite-ng reads and writes: ``recv`` raises EWOULDBLOCK when nothing is
    buffered (tlslite's async generators then yield "want read"), ``b""`` after EOF."""

    def __init__(self) -> None:
        self.incoming = bytearray()
        self.outgoing = bytearray()
        self.eof = False

    def recv(self, size: int) -> bytes:
        if not self.incoming:
            if self.eof:
                return b""
            raise BlockingIOError(errno.EWOULDBLOCK, "no data buffered")
        data = bytes(self.incoming[:size])
        del self.incoming[:size]
        return data

    def send(self, data: bytes) -> int:
        self.outgoing += data
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.outgoing += data

    def close(self) -> None:
        self.eof = True

    def getpeername(self) -> tuple[str, int]:
        return ("0.0.0.0", 0)  # noqa: S104 (tlslite only formats it)

    def getsockname(self) -> tuple[str, int]:
        return ("0.0.0.0", 0)  # noqa: S104

    def settimeout(self, value: float | None) -> None:
        pass

    def gettimeout(self) -> float | None:
        return None

    def setsockopt(self, *args: object) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def fileno(self) -> int:
        return -1


# -- the client -------------------------------------------------------------------------------


def _settings() -> HandshakeSettings:
    settings = HandshakeSettings()
    settings.minVersion = (3, 3)
    settings.maxVersion = (3, 4)
    settings.cipherNames = list(AEAD_CIPHERS)
    settings.keyExchangeNames = ["ecdhe_ecdsa", "ecdhe_rsa"]
    settings.eccCurves = ["x25519", "secp256r1", "secp384r1"]
    settings.keyShares = ["x25519"]
    settings.dhGroups = []
    settings.use_heartbeat_extension = False
    return settings.validate()


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _failure(exc: BaseException) -> TlsError:
    if isinstance(exc, TLSError):
        return TlsError(f"TLS failed: {exc}")
    # tlslite-ng's parsers raise assorted exceptions on garbage
    return TlsError(f"TLS failed: the server sent something that is not TLS ({type(exc).__name__})")


class TlsClient:
    """The client side of one TLS session over in-memory buffers (sans-I/O).

    Drive it: :meth:`handshake` until it returns True, feeding :meth:`receive_data` and
    sending :meth:`data_to_send`; then check :attr:`peer_chain` with a verifier; then
    :meth:`send` the request and :meth:`read` the response.  Every method raises
    :class:`TlsError` for anything the server sent that is not a valid TLS session."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._sock = _MemorySocket()
        self._conn = TLSConnection(self._sock)
        server_name = None if is_ip_address(host) else host
        self._handshaker: Iterator[int] | None = self._conn.handshakeClientCert(
            settings=_settings(), serverName=server_name, alpn=[b"http/1.1"], async_=True
        )
        self._reader: Iterator[Any] | None = None
        self.established = False
        self.closed = False

    def receive_data(self, data: bytes) -> None:
        """Ciphertext from the stream; TlsError if too much waits unread."""
        if len(self._sock.incoming) + len(data) > MAX_PENDING:
            raise TlsError(f"over {MAX_PENDING} bytes of TLS data waiting")
        self._sock.incoming += data

    def receive_eof(self) -> None:
        """The stream ended."""
        self._sock.eof = True

    def data_to_send(self) -> bytes:
        """Ciphertext to write to the stream (and clear it)."""
        out = bytes(self._sock.outgoing)
        self._sock.outgoing.clear()
        return out

    def handshake(self) -> bool:
        """Advance the handshake with what was received; True once it is complete."""
        if self._handshaker is None:
            return True
        try:
            for step in self._handshaker:
                if step == 0:  # want read
                    if self._sock.eof and not self._sock.incoming:
                        raise TlsError("the server closed the connection during the handshake")
                    return False
        except TlsError:
            raise
        except TLSAbruptCloseError:
            raise TlsError("the server closed the connection during the handshake") from None
        except Exception as exc:  # tlslite-ng on hostile input: see _failure
            raise _failure(exc) from None
        self._handshaker = None
        self.established = True
        return True

    @property
    def peer_chain(self) -> list[bytes]:
        """The server's certificates (DER), leaf first; TlsError if it sent none or too many."""
        chain = self._conn.session.serverCertChain if self._conn.session else None
        certs = [bytes(c.bytes) for c in chain.x509List] if chain is not None else []
        if not certs:
            raise CertificateError("the server sent no certificate")
        if len(certs) > MAX_CHAIN:
            raise CertificateError(f"the server sent over {MAX_CHAIN} certificates")
        return certs

    @property
    def version(self) -> str:
        major, minor = self._conn.version
        return {(3, 3): "TLS 1.2", (3, 4): "TLS 1.3"}.get((major, minor), f"{major}.{minor}")

    @property
    def cipher(self) -> str:
        return str(self._conn.getCipherName())

    def send(self, data: bytes) -> None:
        """Encrypt application data (after the handshake)."""
        try:
            for _ in self._conn.writeAsync(data):
                pass  # the memory socket never blocks a write
        except Exception as exc:
            raise _failure(exc) from None

    def read(self) -> bytes:
        """The application data that can be decrypted now (b"" if none yet).  Sets
        :attr:`closed` once the server closed the session (or the stream ended)."""
        out = bytearray()
        while not self.closed:
            if self._reader is None:
                self._reader = self._conn.readAsync()
            try:
                result = next(self._reader)
            except StopIteration:
                result = bytearray()
            except TLSAbruptCloseError:
                # no close_notify: the HTTP framing decides whether the body is whole
                self.closed = True
                break
            except Exception as exc:
                raise _failure(exc) from None
            if isinstance(result, int):  # 0: want read, 1: want write
                if result == 0 and self._sock.eof and not self._sock.incoming:
                    self.closed = True
                break
            self._reader = None
            if not result:  # close_notify
                self.closed = True
                break
            out += result
        return bytes(out)


# -- certificate verification -----------------------------------------------------------------


class ChainVerifier(Protocol):
    async def verify(self, chain: Sequence[bytes], host: str, now: float) -> None:
        """Check ``chain`` (DER, leaf first) for ``host`` at ``now`` (Unix seconds) against
        the trust anchors; CertificateError if it does not check out."""


def pem_blocks(pem: str) -> list[str]:
    """The ``CERTIFICATE`` blocks of a PEM text."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    blocks = []
    for part in pem.split(begin)[1:]:
        body, found, _ = part.partition(end)
        if found:
            blocks.append(f"{begin}{body}{end}\n")
    return blocks


def default_anchors() -> str:
    """certifi's CA set (Mozilla's), as PEM."""
    import certifi  # noqa: PLC0415

    with open(certifi.where(), encoding="ascii") as f:
        return f.read()


class PycaVerifier:
    """RFC 5280 path validation and host-name checks with pyca ``cryptography``
    (``cryptography.x509.verification``), for CPython."""

    def __init__(self, anchors_pem: str) -> None:
        self._anchors_pem = anchors_pem

    async def verify(self, chain: Sequence[bytes], host: str, now: float) -> None:
        from cryptography import x509  # noqa: PLC0415
        from cryptography.x509 import verification  # noqa: PLC0415

        try:
            leaf, *rest = (x509.load_der_x509_certificate(c) for c in chain)
        except ValueError as exc:
            raise CertificateError(f"the server's certificate is malformed: {exc}") from None
        subject: x509.DNSName | x509.IPAddress = (
            x509.IPAddress(ipaddress.ip_address(host))
            if is_ip_address(host)
            else x509.DNSName(host)
        )
        verifier = (
            verification.PolicyBuilder()
            .store(_pyca_store(self._anchors_pem))
            .time(datetime.fromtimestamp(now, UTC))
            .build_server_verifier(subject)
        )
        try:
            verifier.verify(leaf, rest)
        except verification.VerificationError as exc:
            reason = str(exc).split(" (encountered", 1)[0]
            if "candidates exhausted" in reason:
                reason = "no chain to a trusted CA"
            elif "not valid at validation time" in reason:
                reason = "a certificate is expired or not yet valid"
            raise CertificateError(f"certificate rejected for {host}: {reason}") from None


@lru_cache(maxsize=4)
def _pyca_store(pem: str) -> Any:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.x509 import verification  # noqa: PLC0415

    certs = []
    for block in pem_blocks(pem):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few old roots have non-positive serials
            try:
                certs.append(x509.load_pem_x509_certificate(block.encode("ascii")))
            except ValueError:
                continue  # a root cryptography cannot parse can anchor nothing here
    if not certs:
        raise CertificateError("no usable trust anchors")
    return verification.Store(certs)


class JsVerifier:  # pragma: no cover - Pyodide only (tests/browser)
    """Path validation and host-name checks in the page: pkijs through ``zmeshX509``
    (web/src/x509.js, loaded by the worker on first use)."""

    def __init__(self, anchors_pem: str) -> None:
        self._anchors_pem = anchors_pem

    async def verify(self, chain: Sequence[bytes], host: str, now: float) -> None:
        from js import zmeshX509  # noqa: PLC0415
        from pyodide.ffi import JsException, to_js  # noqa: PLC0415

        try:
            ip_hex = ipaddress.ip_address(host).packed.hex() if is_ip_address(host) else ""
            error = await zmeshX509.verify(
                to_js([bytes(c) for c in chain]), host, ip_hex, now * 1000.0, self._anchors_pem
            )
        except JsException as exc:
            raise CertificateError(f"certificate check failed: {exc}") from None
        if error:
            raise CertificateError(f"certificate rejected for {host}: {error}")


def make_verifier(extra_pem: str = "") -> ChainVerifier:
    """The platform's verifier, trusting certifi's CAs plus those in ``extra_pem``."""
    anchors = default_anchors() + ("\n" + extra_pem if extra_pem else "")
    if sys.platform == "emscripten":  # pragma: no cover - Pyodide only
        return JsVerifier(anchors)
    return PycaVerifier(anchors)


__all__ = [
    "CertificateError",
    "ChainVerifier",
    "PycaVerifier",
    "TlsClient",
    "TlsError",
    "default_anchors",
    "make_verifier",
    "pem_blocks",
]
