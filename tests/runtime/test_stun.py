"""The STUN binding responder (zmesh/runtime/stun.py, D50): codec vectors, strictness,
fuzzing, budgets against floods, and one real UDP round trip."""

import asyncio
import binascii
import contextlib
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import RemoteProtocolError
from zmesh.runtime.stun import (
    GLOBAL_BURST,
    MAX_REQUEST_SIZE,
    PER_SOURCE_BURST,
    StunResponder,
    binding_request,
    binding_response,
    parse_binding_request,
    parse_binding_response,
    parse_stun_uri,
    start_stun,
    stun_servers,
    stun_uri,
)

TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def test_rfc5769_vector_response_ipv4() -> None:
    """RFC 5769 section 2.2's response, without its SOFTWARE and MESSAGE-INTEGRITY: the
    same XOR-MAPPED-ADDRESS bytes for 192.0.2.1:32853."""
    response = binding_response(TXID, ("192.0.2.1", 32853))
    assert response[:2] == b"\x01\x01"
    assert response[20:32].hex() == "002000080001a147e112a643"
    assert len(response) == 40
    assert parse_binding_response(response, TXID) == ("192.0.2.1", 32853)
    crc = binascii.crc32(response[:32]) ^ 0x5354554E
    assert response[32:].hex() == "80280004" + f"{crc:08x}"


def test_rfc5769_vector_response_ipv6() -> None:
    """RFC 5769 section 2.3's XOR-MAPPED-ADDRESS for 2001:db8:1234:5678:11:2233:4455:6677
    port 32853."""
    source = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    response = binding_response(TXID, source)
    assert response[20:44].hex() == ("00200014" + "0002a147" + "0113a9faa5d3f179bc25f4b5bed2b9d9")
    assert len(response) == 52
    assert parse_binding_response(response, TXID) == source


def test_ipv4_mapped_source_answers_as_ipv4() -> None:
    response = binding_response(TXID, ("::ffff:192.0.2.1", 9))
    assert parse_binding_response(response, TXID) == ("192.0.2.1", 9)


def test_request_round_trip_whole_split_trailing() -> None:
    for fingerprint in (True, False):
        request = binding_request(TXID, fingerprint=fingerprint)
        assert parse_binding_request(request) == TXID
        for cut in range(len(request)):  # every prefix is refused
            with pytest.raises(RemoteProtocolError):
                parse_binding_request(request[:cut])
        for extra in (b"\x00", b"\x00" * 4, request):  # trailing bytes are refused
            with pytest.raises(RemoteProtocolError):
                parse_binding_request(request + extra)


def _with_attribute(attr_type: int, value: bytes, *, fingerprint: bool = False) -> bytes:
    padded = value + bytes(-len(value) % 4)
    body = attr_type.to_bytes(2, "big") + len(value).to_bytes(2, "big") + padded
    length = len(body) + (8 if fingerprint else 0)
    head = b"\x00\x01" + length.to_bytes(2, "big") + b"\x21\x12\xa4\x42" + TXID
    if not fingerprint:
        return head + body
    crc = binascii.crc32(head + body) ^ 0x5354554E
    return head + body + b"\x80\x28\x00\x04" + crc.to_bytes(4, "big")


def test_optional_attributes_are_skipped() -> None:
    assert parse_binding_request(_with_attribute(0x8022, b"chromium")) == TXID  # SOFTWARE
    assert parse_binding_request(_with_attribute(0xC057, b"\x00\x01", fingerprint=True)) == TXID


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x01\x01" + binding_request(TXID)[2:], "not a Binding request"),  # a response
        (b"\x00\x11" + binding_request(TXID)[2:], "not a Binding request"),  # indication
        (b"\x00\x03" + binding_request(TXID)[2:], "not a Binding request"),  # Allocate
        (b"\x80" + binding_request(TXID)[1:], "first two bits"),  # RTP/DTLS, not STUN
        (
            binding_request(TXID)[:4] + b"\x00\x00\x00\x00" + TXID + binding_request(TXID)[20:],
            "magic cookie",
        ),
        (binding_request(TXID)[:-1] + b"\x00", "FINGERPRINT"),  # a wrong CRC
        (_with_attribute(0x0006, b"user:name"), "credentials"),  # USERNAME: an ICE check
        (_with_attribute(0x0008, bytes(20)), "credentials"),  # MESSAGE-INTEGRITY
        (_with_attribute(0x001E, bytes(32)), "credentials"),  # USERHASH
        (_with_attribute(0x0003, bytes(4)), "comprehension-required"),  # CHANGE-REQUEST
        (_with_attribute(0x8028, bytes(3)), "FINGERPRINT"),  # a short FINGERPRINT
        (_with_attribute(0x8028, bytes(4)) + bytes(0), "FINGERPRINT"),  # a wrong one
        (b"\x00\x01\x00\x03\x21\x12\xa4\x42" + TXID + b"\x00\x00\x00", "length"),  # odd
        (b"\x00\x01\x00\x08\x21\x12\xa4\x42" + TXID + b"\x80\x22\x00\x09abcd", "past"),
        (b"\x00\x01\x02\x20\x21\x12\xa4\x42" + TXID + bytes(0x220), "bytes"),  # too large
    ],
)
def test_malformed_requests_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        parse_binding_request(data)


def test_fingerprint_must_be_last() -> None:
    request = binding_request(TXID)
    body = request[20:] + b"\x80\x22\x00\x00"  # SOFTWARE after FINGERPRINT
    data = request[:2] + len(body).to_bytes(2, "big") + request[4:20] + body
    with pytest.raises(RemoteProtocolError, match="last"):
        parse_binding_request(data)


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=MAX_REQUEST_SIZE + 8),
        st.tuples(st.integers(0, 40), st.binary(min_size=1, max_size=4)).map(
            lambda t: (lambda b: b[: t[0]] + t[1] + b[t[0] + len(t[1]) :])(binding_request(TXID))
        ),
        st.binary(max_size=64).map(lambda b: b"\x00\x01" + b[:2] + b"\x21\x12\xa4\x42" + b[2:]),
    )
)
def test_parser_raises_only_remote_protocol_error(data: bytes) -> None:
    """Any input either parses (to the 12 bytes after the cookie) or is refused."""
    try:
        assert parse_binding_request(data) == data[8:20]
    except RemoteProtocolError:
        pass
    responder = StunResponder()
    reply = responder.respond(data, ("192.0.2.1", 5), 0.0)
    assert reply is None or len(reply) == 40


def test_responder_answers_and_counts() -> None:
    responder = StunResponder()
    reply = responder.respond(binding_request(TXID), ("203.0.113.9", 4242), 0.0)
    assert reply is not None and parse_binding_response(reply, TXID) == ("203.0.113.9", 4242)
    assert responder.respond(b"garbage", ("203.0.113.9", 4242), 0.0) is None
    assert (responder.counters.answered, responder.counters.malformed) == (1, 1)


def test_per_source_flood_is_capped_and_others_still_answered() -> None:
    """One source sending 1,000 requests in an instant gets PER_SOURCE_BURST answers;
    garbage spends the same budget; another source is still answered."""
    responder = StunResponder()
    request = binding_request(TXID)
    answered = sum(
        responder.respond(request, ("198.51.100.7", port), 0.0) is not None
        for port in range(1000, 2000)  # other ports: the budget is per address
    )
    assert answered == PER_SOURCE_BURST
    assert responder.counters.limited == 1000 - PER_SOURCE_BURST
    assert responder.respond(request, ("198.51.100.8", 1), 0.0) is not None
    later = responder.respond(request, ("198.51.100.7", 1000), 1.0)  # refilled: 10/s
    assert later is not None
    garbage = StunResponder()
    for _ in range(int(PER_SOURCE_BURST)):
        garbage.respond(b"\x00" * 20, ("198.51.100.9", 1), 0.0)
    assert garbage.respond(request, ("198.51.100.9", 1), 0.0) is None  # budget spent


def test_global_budget_caps_a_spread_flood() -> None:
    """Requests from 5,000 different addresses (spoofed sources, say) in one instant get
    at most GLOBAL_BURST answers; the per-source table stays bounded."""
    responder = StunResponder(max_sources=1024)
    request = binding_request(TXID)
    answered = sum(
        responder.respond(request, (f"10.{i >> 8 & 255}.{i & 255}.1", 1), 0.0) is not None
        for i in range(5000)
    )
    assert answered == GLOBAL_BURST
    assert responder.sources == 1024


def test_replies_are_never_much_larger_than_requests() -> None:
    responder = StunResponder()
    request = binding_request(TXID, fingerprint=False)  # the smallest request: 20 bytes
    reply = responder.respond(request, ("2001:db8::1", 1), 0.0)
    assert reply is not None and len(reply) == 52 and len(request) == 20


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("stun:127.0.0.1:3478", ("127.0.0.1", 3478)),
        ("stun:relay.example.org", ("relay.example.org", 3478)),
        ("stun:[2001:db8::1]:5349", ("2001:db8::1", 5349)),
        ("stun:[2001:db8::1]", ("2001:db8::1", 3478)),
        ("stun:[127.0.0.1]:1", None),
        ("stun:host:0", None),
        ("stun:host:65536", None),
        ("stun:host:12a", None),
        ("stun:ho st:1", None),
        ("stun::1", None),
        ("stuns:host:1", None),
        ("http://127.0.0.1:1", None),
        ("stun:host:1?transport=udp", None),
        ("stun:[2001:db8::1]x", None),
    ],
)
def test_stun_uris(uri: str, parsed: tuple[str, int] | None) -> None:
    assert parse_stun_uri(uri) == parsed
    if parsed is not None:
        assert parse_stun_uri(stun_uri(*parsed)) == parsed


def test_stun_servers_for_browsers() -> None:
    published = [
        ("http://127.0.0.1:1", "stun:127.0.0.1:2"),
        ("http://127.0.0.1:3",),  # none
        ("stun:127.0.0.1:2",),  # the same server: once
        ("stun:127.0.0.1:4", "stun:127.0.0.1:5"),  # the first of each node only
        ("stun:127.0.0.1:6",),  # over MAX_SERVERS
    ]
    assert stun_servers(published, loopback=True) == ["stun:127.0.0.1:2", "stun:127.0.0.1:4"]
    # outside a loopback mesh, addresses that aim at this machine or its network are skipped
    hostile = [("stun:127.0.0.1:1", "stun:10.0.0.1:1"), ("stun:169.254.169.254:1",)]
    good = [("stun:93.184.216.34:3478",), ("stun:relay.example.org",)]
    assert stun_servers(hostile + good, loopback=False) == [
        "stun:93.184.216.34:3478",
        "stun:relay.example.org:3478",
    ]


def test_udp_round_trip_and_garbage_flood() -> None:
    """A real socket: a request is answered with our address; a flood of garbage gets no
    reply and leaves the responder answering within its budget."""

    async def main() -> None:
        server, port = await start_stun("127.0.0.1", 0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        try:
            for i in range(300):
                await loop.sock_sendto(sock, bytes([i % 256]) * (i % 600), ("127.0.0.1", port))
            await loop.sock_sendto(sock, binding_request(TXID), ("127.0.0.1", port))
            replies = []
            with contextlib.suppress(TimeoutError):
                while True:
                    replies.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.5))
            counters = server.responder.counters
            # (the kernel may drop some of the burst before we read it)
            assert counters.malformed <= PER_SOURCE_BURST  # the rest was over budget
            assert counters.answered <= 1
            if counters.answered:  # the source's burst may already be spent on garbage
                assert parse_binding_response(replies[0], TXID) == sock.getsockname()
            assert len(replies) == counters.answered
        finally:
            sock.close()
            server.close()

    asyncio.run(main())
