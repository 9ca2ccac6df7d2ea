"""TLS inside circuit streams (zmesh.runtime.tls, D51): tlslite-ng's client on the
platform's AEADs against CPython's ``ssl`` server over memory BIOs (no sockets, no sleeps),
and the certificate checks (pyca's verifier) for good, untrusted, mismatched and expired
certificates."""

import asyncio
import datetime
import ssl
import time
from pathlib import Path

import pytest
import tlsca
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.runtime.fetch import Target, _exchange_tls, start_exchange
from zmesh.runtime.tls import (
    MAX_PENDING,
    CertificateError,
    TlsClient,
    TlsError,
    make_verifier,
    pem_blocks,
)

CA = tlsca.make_ca()
GOOD = CA.issue("127.0.0.1")


def _handshake(client: TlsClient, server: ssl.SSLObject, split: int = 0) -> None:
    """Move bytes both ways until both ends finished the handshake (``split``: feed the
    client that many bytes at a time)."""
    server_done = False
    for _ in range(50):
        done = client.handshake()
        _incoming(server).write(client.data_to_send())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        data = _outgoing(server).read()
        step = split or len(data) or 1
        for i in range(0, len(data), step):
            client.receive_data(data[i : i + step])
            done = client.handshake()
        if done and server_done:
            _incoming(server).write(client.data_to_send())
            return
    raise AssertionError("the handshake did not finish")


_BIOS: dict[int, tuple[ssl.MemoryBIO, ssl.MemoryBIO]] = {}


def _pair(issued: tlsca.Issued, version: ssl.TLSVersion | None = None) -> ssl.SSLObject:
    ctx = issued.context()
    if version is not None:
        ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    _BIOS[id(server)] = (incoming, outgoing)
    return server


def _incoming(server: ssl.SSLObject) -> ssl.MemoryBIO:
    return _BIOS[id(server)][0]


def _outgoing(server: ssl.SSLObject) -> ssl.MemoryBIO:
    return _BIOS[id(server)][1]


def _verify(client: TlsClient, host: str, extra: str = CA.pem, now: float | None = None) -> None:
    verifier = make_verifier(extra)
    asyncio.run(verifier.verify(client.peer_chain, host, time.time() if now is None else now))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
@pytest.mark.parametrize("split", [0, 1, 1000])
def test_a_session_round_trips_both_ways(version: ssl.TLSVersion, split: int) -> None:
    server = _pair(GOOD, version)
    client = TlsClient("127.0.0.1")
    _handshake(client, server, split)
    assert client.version == {ssl.TLSVersion.TLSv1_3: "TLS 1.3"}.get(version, "TLS 1.2")
    assert "gcm" in client.cipher or "chacha" in client.cipher
    _verify(client, "127.0.0.1")
    client.send(b"GET / HTTP/1.1\r\n\r\n")
    _incoming(server).write(client.data_to_send())
    assert server.read(100) == b"GET / HTTP/1.1\r\n\r\n"
    payload = bytes(range(256)) * 1000
    server.write(payload)
    received = bytearray()
    data = _outgoing(server).read()
    for i in range(0, len(data), split or len(data)):
        client.receive_data(data[i : i + (split or len(data))])
        received += client.read()
    assert received == payload


def test_close_notify_and_abrupt_close_end_the_session() -> None:
    server = _pair(GOOD)
    client = TlsClient("127.0.0.1")
    _handshake(client, server)
    server.write(b"bye")
    try:
        server.unwrap()
    except ssl.SSLWantReadError:
        pass
    client.receive_data(_outgoing(server).read())
    assert client.read() == b"bye" and client.closed

    server = _pair(GOOD)
    client = TlsClient("127.0.0.1")
    _handshake(client, server)
    client.receive_eof()  # no close_notify: the HTTP framing decides
    assert client.read() == b"" and client.closed


def test_certificates_that_do_not_check_out_are_refused() -> None:
    cases = [
        (tlsca.make_ca("other").issue("127.0.0.1"), "127.0.0.1", "no chain to a trusted CA"),
        (CA.issue("127.0.0.2"), "127.0.0.1", "subjectAltName"),
        (CA.issue("example.org"), "example.com", "subjectAltName"),
        (
            CA.issue("127.0.0.1", days=0.5, not_before=-3 * tlsca.DAY),
            "127.0.0.1",
            "expired or not yet valid",
        ),
    ]
    for issued, host, error in cases:
        server = _pair(issued)
        client = TlsClient(host)
        _handshake(client, server)
        with pytest.raises(CertificateError, match=error):
            _verify(client, host)
    # certifi alone does not know the test CA
    server = _pair(GOOD)
    client = TlsClient("127.0.0.1")
    _handshake(client, server)
    with pytest.raises(CertificateError, match="no chain"):
        _verify(client, "127.0.0.1", extra="")
    later = (datetime.datetime.now(datetime.UTC) + 40 * tlsca.DAY).timestamp()
    with pytest.raises(CertificateError, match="expired"):
        _verify(client, "127.0.0.1", now=later)


def test_a_name_gets_sni_and_an_address_does_not() -> None:
    issued = CA.issue("example.com")
    seen: list[str | None] = []
    ctx = issued.context()
    ctx.sni_callback = lambda obj, name, ctx: seen.append(name)  # type: ignore[assignment,func-returns-value]
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    _BIOS[id(server)] = (incoming, outgoing)
    client = TlsClient("example.com")
    _handshake(client, server)
    _verify(client, "example.com")
    assert seen == ["example.com"]
    assert TlsClient("127.0.0.1")._conn is not None


def test_garbage_and_early_close_raise_tls_error() -> None:
    client = TlsClient("127.0.0.1")
    assert not client.handshake()
    assert client.data_to_send()  # the ClientHello
    client.receive_data(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(TlsError):
        client.handshake()
    client = TlsClient("127.0.0.1")
    client.handshake()
    client.receive_eof()
    with pytest.raises(TlsError, match="closed the connection during the handshake"):
        client.handshake()


def test_pending_ciphertext_is_bounded() -> None:
    client = TlsClient("127.0.0.1")
    client.receive_data(bytes(MAX_PENDING))
    with pytest.raises(TlsError, match="waiting"):
        client.receive_data(b"x")


def test_a_response_larger_than_the_pending_bound_arrives_in_one_stream_event() -> None:
    """A stream event may carry up to the stream's window (multipath releases everything
    behind a filled gap at once): zmesh.fetch feeds it to the client in slices."""
    server = _pair(GOOD)
    body = bytes(range(256)) * (3 * MAX_PENDING // 256)
    exchange = start_exchange("GET", Target("127.0.0.1", 443, "/", "https"), [], b"", 1 << 22)
    events: list[bytes] = []

    def send(data: bytes) -> None:
        _incoming(server).write(data)

    async def receive() -> bytes | None:
        try:
            server.do_handshake()
            if server.pending() or _incoming(server).pending:
                request = server.read(65536)
                assert request.startswith(b"GET / HTTP/1.1")
                server.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except ssl.SSLWantReadError:
            pass
        events.append(_outgoing(server).read())
        return events[-1]

    verifier = make_verifier(CA.pem)
    asyncio.run(
        _exchange_tls(Target("127.0.0.1", 443, "/", "https"), exchange, verifier, send, receive)
    )
    assert exchange.status == 200 and exchange.body == body
    assert max(len(e) for e in events) > MAX_PENDING


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 64))
def test_any_bytes_are_a_tls_error_or_need_more(data: bytes, split: int) -> None:
    client = TlsClient("127.0.0.1")
    client.handshake()
    try:
        for i in range(0, len(data), split):
            client.receive_data(data[i : i + split])
            if client.handshake():
                break
        client.receive_eof()
        client.handshake()
    except TlsError:
        pass


def test_pem_blocks() -> None:
    text = "junk\n" + CA.pem + "more junk\n" + CA.pem
    assert pem_blocks(text) == [CA.pem, CA.pem]
    assert pem_blocks("-----BEGIN CERTIFICATE-----\nAAAA\n") == []


def test_trust_ca_files_are_checked_and_reach_config_json(tmp_path: Path) -> None:
    import json

    from zmesh.runtime.webserver import WebServer, load_trust_ca

    good = tmp_path / "ca.pem"
    good.write_text("comment\n" + CA.pem)
    assert load_trust_ca(good) == CA.pem
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(GOOD.cert_pem)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    big = tmp_path / "big.pem"
    big.write_text(CA.pem * 1000)
    for path, error in [
        (leaf, "not a CA"),
        (junk, "not PEM"),
        (big, "over"),
        (tmp_path, "cannot read"),
    ]:
        with pytest.raises(ValueError, match=error):
            load_trust_ca(path)
    server = WebServer(tmp_path, ["http://127.0.0.1:1"], CA.pem)
    assert json.loads(server._config)["trustCa"] == CA.pem
    assert "trustCa" not in json.loads(WebServer(tmp_path, ["http://127.0.0.1:1"])._config)
