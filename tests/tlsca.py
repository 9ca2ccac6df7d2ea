"""Test certificates for the https-through-circuits tests (pyca ``cryptography``).

:func:`make_ca` makes a CA (RFC 5280 profile: critical basicConstraints, keyCertSign, key
identifiers) and :meth:`TestCa.issue` a server certificate for an IP address or a DNS
name; :func:`https_server` serves files over TLS on loopback with one.
"""

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass
class Issued:
    cert_pem: str
    key_pem: str

    def context(self) -> ssl.SSLContext:
        """A server SSLContext with this certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert.write_text(self.cert_pem)
            key.write_text(self.key_pem)
            ctx.load_cert_chain(cert, key)
        return ctx


@dataclass
class TestCa:
    __test__ = False
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return _pem(self.cert)

    def issue(
        self, host: str, *, not_before: datetime.timedelta = -DAY, days: float = 30
    ) -> Issued:
        """A server certificate for ``host`` (an IP address SAN, else a DNS name), valid from
        ``now + not_before`` for ``days`` days."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        start = now + not_before
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return Issued(_pem(cert), key_pem)


def make_ca(name: str = "zMesh test CA") -> TestCa:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return TestCa(cert, key)


def body_for(path: str) -> bytes:
    """What :func:`https_server` serves at ``path``: ``/<N>mb`` is N MiB of a fixed
    pattern, ``/<N>`` N bytes, anything else a short text."""
    name = path.strip("/")
    if name.endswith("mb") and name[:-2].isdigit():
        size = int(name[:-2]) << 20
    elif name.isdigit():
        size = int(name)
    else:
        return b"hello over TLS\n"
    pattern = bytes(range(251))
    return (pattern * (size // len(pattern) + 1))[:size]


@contextlib.asynccontextmanager
async def https_server(
    ctx: ssl.SSLContext, body: Callable[[str], bytes] = body_for
) -> AsyncIterator[int]:
    """An HTTPS server on 127.0.0.1 (yields its port): every GET gets ``body(path)``."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            data = body(head.split(b" ")[1].decode("ascii"))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(data)
            )
            writer.write(data)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
