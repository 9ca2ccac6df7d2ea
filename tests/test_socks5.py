"""The sans-I/O SOCKS5 server (zmesh/socks5.py): RFC 1928 and RFC 1929."""

import itertools
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError, RemoteProtocolError
from zmesh.socks5 import (
    MAX_BUFFERED,
    AddressType,
    AuthMethod,
    BadRequest,
    ConnectRequest,
    Credentials,
    Data,
    Event,
    Greeting,
    ReplyCode,
    Socks5Server,
    State,
    valid_hostname,
)

# -- a client-side encoder and a driver ------------------------------------------------


def greeting(*methods: int) -> bytes:
    return bytes([5, len(methods), *methods])


def auth(username: bytes, password: bytes) -> bytes:
    return bytes([1, len(username)]) + username + bytes([len(password)]) + password


def request(host: str | bytes, port: int, atyp: int | None = None, cmd: int = 1) -> bytes:
    if isinstance(host, bytes):
        kind, addr = AddressType.DOMAINNAME, bytes([len(host)]) + host
    elif ":" in host:
        kind, addr = AddressType.IPV6, IPv6Address(host).packed
    elif host.replace(".", "").isdigit():
        kind, addr = AddressType.IPV4, IPv4Address(host).packed
    else:
        raw = host.encode()
        kind, addr = AddressType.DOMAINNAME, bytes([len(raw)]) + raw
    return bytes([5, cmd, 0, kind if atyp is None else atyp]) + addr + port.to_bytes(2, "big")


NULL_REPLY = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"


def drive(chunks: list[bytes], server: Socks5Server | None = None) -> tuple[list[Event], bytes]:
    """Feed ``chunks`` as a driver would, replying SUCCEEDED to every CONNECT.

    Returns the events (consecutive Data merged) and every byte the driver wrote.
    """
    server = server or Socks5Server()
    events: list[Event] = []
    out = bytearray()
    for chunk in chunks:
        server.receive_data(chunk)
        out += server.data_to_send()
        while (event := server.next_event()) is not None:
            if isinstance(event, Data) and events and isinstance(events[-1], Data):
                events[-1] = Data(events[-1].data + event.data)
            else:
                events.append(event)
            if isinstance(event, ConnectRequest):
                out += server.reply(ReplyCode.SUCCEEDED)
        assert server.data_to_send() == b""  # nothing is queued by next_event or reply
    return events, bytes(out)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- valid exchanges -------------------------------------------------------------------

PAYLOAD = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
CREDS = auth(b"alice", b"circuit-7")
KEY = CREDS[1:]

# (name, client bytes, expected events, expected server bytes); the request is pipelined
# with the payload, which must come out as Data after the reply.
VALID: list[tuple[str, bytes, list[Event], bytes]] = [
    (
        "noauth-ipv4",
        greeting(0) + request("93.184.216.34", 80) + PAYLOAD,
        [
            Greeting((0,), AuthMethod.NO_AUTH),
            ConnectRequest("93.184.216.34", 80, AddressType.IPV4, b""),
            Data(PAYLOAD),
        ],
        b"\x05\x00" + NULL_REPLY,
    ),
    (
        "noauth-ipv6",
        greeting(0) + request("2001:db8::1", 443),
        [
            Greeting((0,), AuthMethod.NO_AUTH),
            ConnectRequest("2001:db8::1", 443, AddressType.IPV6, b""),
        ],
        b"\x05\x00" + NULL_REPLY,
    ),
    (
        "noauth-domain",
        greeting(0) + request("example.com", 443) + PAYLOAD,
        [
            Greeting((0,), AuthMethod.NO_AUTH),
            ConnectRequest("example.com", 443, AddressType.DOMAINNAME, b""),
            Data(PAYLOAD),
        ],
        b"\x05\x00" + NULL_REPLY,
    ),
    (
        "userpass-domain",
        greeting(0, 2) + CREDS + request("xn--bcher-kva.example.", 8080) + PAYLOAD,
        [
            Greeting((0, 2), AuthMethod.USERNAME_PASSWORD),
            Credentials(b"alice", b"circuit-7"),
            ConnectRequest("xn--bcher-kva.example.", 8080, AddressType.DOMAINNAME, KEY),
            Data(PAYLOAD),
        ],
        b"\x05\x02" + b"\x01\x00" + NULL_REPLY,
    ),
    (
        "userpass-only-ipv4",
        greeting(2) + CREDS + request("1.2.3.4", 65535),
        [
            Greeting((2,), AuthMethod.USERNAME_PASSWORD),
            Credentials(b"alice", b"circuit-7"),
            ConnectRequest("1.2.3.4", 65535, AddressType.IPV4, KEY),
        ],
        b"\x05\x02" + b"\x01\x00" + NULL_REPLY,
    ),
    (
        "userpass-empty-password-ipv6",
        greeting(1, 2, 0x80) + auth(b"u", b"") + request("::1", 22) + b"\x00",
        [
            Greeting((1, 2, 0x80), AuthMethod.USERNAME_PASSWORD),
            Credentials(b"u", b""),
            ConnectRequest("::1", 22, AddressType.IPV6, b"\x01u\x00"),
            Data(b"\x00"),
        ],
        b"\x05\x02" + b"\x01\x00" + NULL_REPLY,
    ),
    (
        "longest-domain",
        greeting(0) + request(b".".join([b"a" * 63] * 4), 1),
        [
            Greeting((0,), AuthMethod.NO_AUTH),
            ConnectRequest(".".join(["a" * 63] * 4), 1, AddressType.DOMAINNAME, b""),
        ],
        b"\x05\x00" + NULL_REPLY,
    ),
    (
        "no-acceptable-method",
        greeting(1, 3) + request("1.2.3.4", 80),  # the pipelined request is dropped
        [Greeting((1, 3), AuthMethod.NO_ACCEPTABLE)],
        b"\x05\xff",
    ),
    (
        "bind",
        greeting(0) + request("1.2.3.4", 80, cmd=2) + PAYLOAD,
        [Greeting((0,), AuthMethod.NO_AUTH), BadRequest(ReplyCode.COMMAND_NOT_SUPPORTED, "")],
        b"\x05\x00" + b"\x05\x07" + NULL_REPLY[2:],
    ),
]
IDS = [case[0] for case in VALID]


def strip_reasons(events: list[Event]) -> list[Event]:
    return [BadRequest(e.code, "") if isinstance(e, BadRequest) else e for e in events]


@pytest.mark.parametrize(("name", "data", "expected", "written"), VALID, ids=IDS)
def test_exchange_in_one_piece(
    name: str, data: bytes, expected: list[Event], written: bytes
) -> None:
    events, out = drive([data])
    assert strip_reasons(events) == expected
    assert out == written


@pytest.mark.parametrize(("name", "data", "expected", "written"), VALID, ids=IDS)
def test_exchange_one_byte_at_a_time(
    name: str, data: bytes, expected: list[Event], written: bytes
) -> None:
    assert drive(bytewise(data)) == drive([data])


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(VALID), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_exchange_in_any_split(
    case: tuple[str, bytes, list[Event], bytes], cuts: list[int]
) -> None:
    data = case[1]
    assert drive(split(data, cuts)) == drive([data])


# -- step by step ----------------------------------------------------------------------


def test_no_auth_step_by_step() -> None:
    server = Socks5Server()
    assert server.state is State.GREETING
    assert server.next_event() is None
    assert server.data_to_send() == b""
    server.receive_data(b"\x05")
    assert server.next_event() is None
    assert server.data_to_send() == b""
    server.receive_data(b"\x02\x00\x01")
    assert server.method is AuthMethod.NO_AUTH
    assert server.data_to_send() == b"\x05\x00"  # answered before next_event is called
    assert server.data_to_send() == b""
    assert server.state is State.REQUEST
    assert server.next_event() == Greeting((0, 1), AuthMethod.NO_AUTH)
    assert server.next_event() is None
    server.receive_data(request("10.0.0.1", 8080))
    event = server.next_event()
    assert event == ConnectRequest("10.0.0.1", 8080, AddressType.IPV4, b"")
    assert server.state is State.REPLY
    server.receive_data(b"early")
    assert server.next_event() is None  # no Data before the reply
    server.receive_data(b" bytes")
    assert server.reply(ReplyCode.SUCCEEDED) == NULL_REPLY
    assert server.state is State.TUNNEL
    assert server.next_event() == Data(b"early bytes")
    assert server.next_event() is None
    server.receive_data(b"")
    assert server.next_event() is None
    server.receive_data(b"more")
    assert server.next_event() == Data(b"more")
    assert not server.failed


def test_username_password_step_by_step() -> None:
    server = Socks5Server()
    server.receive_data(greeting(0, 2))
    assert server.data_to_send() == b"\x05\x02"
    assert server.state is State.AUTH
    server.receive_data(CREDS[:-1])
    assert server.data_to_send() == b""
    server.receive_data(CREDS[-1:])
    assert server.data_to_send() == b"\x01\x00"
    assert server.next_event() == Greeting((0, 2), AuthMethod.USERNAME_PASSWORD)
    assert server.next_event() == Credentials(b"alice", b"circuit-7")
    assert server.next_event() is None
    server.receive_data(request("example.com", 443))
    assert server.next_event() == ConnectRequest("example.com", 443, AddressType.DOMAINNAME, KEY)
    assert server.data_to_send() == b""


def test_username_password_is_preferred_and_isolates() -> None:
    keys = []
    for user, password in [(b"a", b"x"), (b"a", b"y"), (b"ax", b""), (b"", b"ax")]:
        events, out = drive([greeting(0, 2) + auth(user, password) + request("h.example", 1)])
        assert out.startswith(b"\x05\x02\x01\x00")
        connect = events[2]
        assert isinstance(connect, ConnectRequest)
        keys.append(connect.isolation_key)
    events, _ = drive([greeting(0) + request("h.example", 1)])
    assert isinstance(events[1], ConnectRequest)
    keys.append(events[1].isolation_key)
    assert keys[-1] == b""
    assert len(set(keys)) == len(keys)  # (a, x) != (a, y); the lengths keep ax|"" != ""|ax


def test_secrets_stay_out_of_reprs() -> None:
    events, _ = drive([greeting(2) + auth(b"user", b"hunter2") + request("h.example", 1)])
    assert "hunter2" not in repr(events)
    assert "user" in repr(events[1])


def test_tunnel_data_is_unbounded_but_handshake_is_bounded() -> None:
    server = Socks5Server()
    drive([greeting(0) + request("1.2.3.4", 80)], server)
    assert server.state is State.TUNNEL
    server.receive_data(bytes(10 * MAX_BUFFERED))
    assert server.next_event() == Data(bytes(10 * MAX_BUFFERED))


def test_largest_legal_handshake_fits() -> None:
    data = (
        greeting(*range(255))
        + auth(b"u" * 255, b"p" * 255)
        + request(b".".join([b"a" * 63] * 4), 443)
    )
    assert len(data) == 1032
    events, _ = drive([data + bytes(MAX_BUFFERED - len(data))])
    assert [type(e) for e in events] == [Greeting, Credentials, ConnectRequest, Data]


# -- replies ---------------------------------------------------------------------------


def at_reply(data: bytes = b"") -> Socks5Server:
    server = Socks5Server()
    drive([greeting(0)], server)
    server.receive_data(request("example.com", 443) + data)
    assert isinstance(server.next_event(), ConnectRequest)
    return server


@pytest.mark.parametrize("code", [c for c in ReplyCode if c is not ReplyCode.SUCCEEDED])
def test_failure_replies_reject(code: ReplyCode) -> None:
    server = at_reply(b"pipelined")
    assert server.reply(code) == bytes([5, code]) + NULL_REPLY[2:]
    assert server.state is State.REJECTED
    assert server.failed
    server.receive_data(b"ignored")
    assert server.next_event() is None


def test_reply_codes_match_rfc_1928() -> None:
    assert [int(c) for c in ReplyCode] == list(range(9))
    assert ReplyCode.NOT_ALLOWED == 2
    assert ReplyCode.COMMAND_NOT_SUPPORTED == 7
    assert ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED == 8


@pytest.mark.parametrize(
    ("addr", "port", "encoded"),
    [
        (IPv4Address("192.0.2.7"), 1080, b"\x01\xc0\x00\x02\x07\x04\x38"),
        ("192.0.2.7", 1, b"\x01\xc0\x00\x02\x07\x00\x01"),
        ("2001:db8::2", 65535, b"\x04" + IPv6Address("2001:db8::2").packed + b"\xff\xff"),
        (IPv6Address("::"), 0, b"\x04" + bytes(16) + b"\x00\x00"),
        ("relay.example", 80, b"\x03\x0drelay.example\x00\x50"),
    ],
)
def test_reply_bound_address(
    addr: str | IPv4Address | IPv6Address, port: int, encoded: bytes
) -> None:
    assert at_reply().reply(ReplyCode.SUCCEEDED, addr, port) == b"\x05\x00\x00" + encoded


# -- refusals: a SOCKS reply, then close -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (request("1.2.3.4", 80, cmd=2), ReplyCode.COMMAND_NOT_SUPPORTED),  # BIND
        (request("1.2.3.4", 80, cmd=3), ReplyCode.COMMAND_NOT_SUPPORTED),  # UDP ASSOCIATE
        (request("1.2.3.4", 80, cmd=0), ReplyCode.COMMAND_NOT_SUPPORTED),
        (request("1.2.3.4", 80, cmd=0xFF), ReplyCode.COMMAND_NOT_SUPPORTED),
        (b"\x05\x02\x00\x01", ReplyCode.COMMAND_NOT_SUPPORTED),  # refused before the address
        (request("1.2.3.4", 80, atyp=2), ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED),
        (b"\x05\x01\x00\x00", ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED),
        (request("1.2.3.4", 0), ReplyCode.GENERAL_FAILURE),  # port 0
        (request("::1", 0), ReplyCode.GENERAL_FAILURE),
        (request(b"example.com", 0), ReplyCode.GENERAL_FAILURE),
        (request(b"", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"exa\x00mple.com", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"example.com\x00", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"exa mple.com", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"a..b", 80), ReplyCode.GENERAL_FAILURE),
        (request(b".example", 80), ReplyCode.GENERAL_FAILURE),
        (request(b".", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"example.com..", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"a" * 64 + b".com", 80), ReplyCode.GENERAL_FAILURE),
        (request("bücher.example".encode(), 80), ReplyCode.GENERAL_FAILURE),
        (request(b"[::1]", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"::1", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"evil.com/x", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"evil.com:80", 80), ReplyCode.GENERAL_FAILURE),
        (request(b"a\r\nb", 80), ReplyCode.GENERAL_FAILURE),
    ],
)
def test_refused_request(data: bytes, code: ReplyCode) -> None:
    server = Socks5Server()
    drive([greeting(0)], server)
    server.receive_data(data + b"trailing")
    assert server.data_to_send() == bytes([5, code]) + NULL_REPLY[2:]
    assert server.state is State.REJECTED
    assert server.failed
    event = server.next_event()
    assert isinstance(event, BadRequest)
    assert event.code is code
    assert event.reason
    assert server.next_event() is None
    with pytest.raises(LocalProtocolError, match="REJECTED"):
        server.reply(ReplyCode.SUCCEEDED)
    server.receive_data(b"more")
    assert server.next_event() is None
    assert server.data_to_send() == b""


@pytest.mark.parametrize("methods", [(1,), (1, 3), (0x80, 0xFE), (0xFF,)])
def test_no_acceptable_method(methods: tuple[int, ...]) -> None:
    server = Socks5Server()
    server.receive_data(greeting(*methods) + request("1.2.3.4", 80))
    assert server.data_to_send() == b"\x05\xff"
    assert server.state is State.REJECTED
    assert server.failed
    assert server.next_event() == Greeting(methods, AuthMethod.NO_ACCEPTABLE)
    assert server.next_event() is None  # the pipelined request was dropped
    server.receive_data(request("1.2.3.4", 80))
    assert server.next_event() is None
    assert server.data_to_send() == b""


@pytest.mark.parametrize(
    "name",
    ["example.com", "EXAMPLE.com.", "a", "a-b_c.d", "xn--nxasmq6b.example", "1.2.3.4"],
)
def test_valid_hostnames(name: str) -> None:
    assert valid_hostname(name.encode())


# -- malformed input: RemoteProtocolError, sticky ----------------------------------------


@pytest.mark.parametrize(
    ("prefix", "data", "match"),
    [
        (b"", b"\x04\x01\x00\x50\x01\x02\x03\x04\x00", "version 0x04"),  # SOCKS4
        (b"", b"GET / HTTP/1.1\r\n", "version"),
        (b"", b"\x00", "version"),
        (b"", b"\x05\x00", "no methods"),
        (greeting(2), b"\x05\x05user\x00", "username/password request has version 0x05"),
        (greeting(2), b"\x00", "version"),
        (greeting(0), b"\x04\x01\x00\x01", "request has version"),
        (greeting(0), b"\x05\x01\x01\x01\x01\x02\x03\x04\x00\x50", "reserved"),
        (greeting(2) + CREDS, b"\x05\x01\x80\x03", "reserved"),
        (greeting(0), request("1.2.3.4", 80) + bytes(MAX_BUFFERED + 1), "bytes before"),
    ],
)
def test_malformed(prefix: bytes, data: bytes, match: str) -> None:
    server = Socks5Server()
    drive([prefix], server)
    with pytest.raises(RemoteProtocolError, match=match):
        drive([data], server)
    assert server.state is State.ERROR
    assert server.failed
    assert server.data_to_send() == b""
    with pytest.raises(RemoteProtocolError, match="failed"):
        server.next_event()
    with pytest.raises(RemoteProtocolError, match="failed"):
        server.receive_data(b"\x05")


def test_oversize_early_data_while_waiting_for_the_reply() -> None:
    server = at_reply()
    server.receive_data(bytes(MAX_BUFFERED))
    with pytest.raises(RemoteProtocolError, match="bytes before"):
        server.receive_data(b"x")


def test_large_chunk_is_judged_after_parsing() -> None:
    data = greeting(0) + request("1.2.3.4", 80)
    events, _ = drive([data + bytes(MAX_BUFFERED)])
    assert events[-1] == Data(bytes(MAX_BUFFERED))
    with pytest.raises(RemoteProtocolError, match="bytes before"):
        drive([data + bytes(MAX_BUFFERED + 1)])


# -- misuse: LocalProtocolError ----------------------------------------------------------


def test_reply_in_the_wrong_state() -> None:
    server = Socks5Server()
    with pytest.raises(LocalProtocolError, match="GREETING"):
        server.reply(ReplyCode.SUCCEEDED)
    server.receive_data(greeting(2))
    with pytest.raises(LocalProtocolError, match="AUTH"):
        server.reply(ReplyCode.GENERAL_FAILURE)
    server.receive_data(CREDS)
    with pytest.raises(LocalProtocolError, match="REQUEST"):
        server.reply(ReplyCode.SUCCEEDED)
    server.receive_data(request("1.2.3.4", 80))
    server.next_event()
    server.reply(ReplyCode.SUCCEEDED)
    with pytest.raises(LocalProtocolError, match="TUNNEL"):
        server.reply(ReplyCode.SUCCEEDED)


@pytest.mark.parametrize(
    ("code", "addr", "port"),
    [
        (9, "1.2.3.4", 0),
        (ReplyCode.SUCCEEDED, "1.2.3.4", -1),
        (ReplyCode.SUCCEEDED, "1.2.3.4", 65536),
        (ReplyCode.SUCCEEDED, "bad host", 1),
        (ReplyCode.SUCCEEDED, "", 1),
        (ReplyCode.SUCCEEDED, "hôte.example", 1),
    ],
)
def test_bad_reply_arguments(code: ReplyCode, addr: str, port: int) -> None:
    server = at_reply()
    with pytest.raises(LocalProtocolError):
        server.reply(code, addr, port)
    assert server.state is State.REPLY  # nothing changed; a good reply still works
    assert server.reply(ReplyCode.SUCCEEDED) == NULL_REPLY


# -- fuzzing ---------------------------------------------------------------------------


def check_invariant(chunks: list[bytes]) -> None:
    """Events or RemoteProtocolError, nothing else; Data is exactly the input's tail."""
    try:
        events, _ = drive(chunks)
    except RemoteProtocolError:
        return
    data = b"".join(e.data for e in events if isinstance(e, Data))
    assert b"".join(chunks).endswith(data)
    assert all(
        isinstance(e, Greeting | Credentials | ConnectRequest | BadRequest | Data) for e in events
    )
    for event in events:
        if isinstance(event, ConnectRequest):
            assert 1 <= event.port <= 65535
            assert event.host.isascii()
            assert "\x00" not in event.host


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=2 * MAX_BUFFERED), cuts=st.lists(st.integers(0, 10_000), max_size=8))
@example(data=b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50", cuts=[])
def test_fuzz_random_bytes(data: bytes, cuts: list[int]) -> None:
    check_invariant(split(data, cuts))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64), cuts=st.lists(st.integers(0, 100), max_size=4))
def test_fuzz_after_a_valid_greeting(data: bytes, cuts: list[int]) -> None:
    check_invariant(split(greeting(0, 2) + data, cuts))
    check_invariant(split(greeting(2) + CREDS + data, cuts))


mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 2000),
    st.integers(0, 255),
)


@settings(max_examples=1000, deadline=None)
@given(
    case=st.sampled_from(VALID),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_fuzz_mutated_exchanges(
    case: tuple[str, bytes, list[Event], bytes],
    mutations: list[tuple[str, int, int]],
    cuts: list[int],
) -> None:
    data = bytearray(case[1])
    for op, position, value in mutations:
        i = position % (len(data) + 1)
        if op == "insert":
            data.insert(i, value)
        elif i == len(data):
            continue
        elif op == "flip":
            data[i] ^= 1 << (value % 8)
        elif op == "set":
            data[i] = value
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    check_invariant(split(bytes(data), cuts))


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[bytes, ConnectRequest]:
    """A random valid exchange and the request it must produce."""
    creds = draw(st.none() | st.tuples(st.binary(max_size=255), st.binary(max_size=255)))
    atyp = draw(st.sampled_from(AddressType))
    port = draw(st.integers(1, 65535))
    if atyp is AddressType.IPV4:
        host = str(draw(st.ip_addresses(v=4)))
        addr = IPv4Address(host).packed
    elif atyp is AddressType.IPV6:
        host = str(draw(st.ip_addresses(v=6)))
        addr = IPv6Address(host).packed
    else:
        label = st.from_regex(r"[A-Za-z0-9_-]{1,63}", fullmatch=True)
        labels = draw(st.lists(label, min_size=1, max_size=4))
        host = ".".join(labels)[:255].rstrip(".")
        if not valid_hostname(host.encode()):
            host = "x"
        addr = bytes([len(host)]) + host.encode()
    data = greeting(0) if creds is None else greeting(2) + auth(*creds)
    data += bytes([5, 1, 0, atyp]) + addr + port.to_bytes(2, "big")
    key = b"" if creds is None else auth(*creds)[1:]
    return data, ConnectRequest(host, port, atyp, key)


@settings(max_examples=300, deadline=None)
@given(exchange=exchanges(), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_round_trip_random_requests(
    exchange: tuple[bytes, ConnectRequest], cuts: list[int]
) -> None:
    data, expected = exchange
    events, out = drive(split(data, cuts))
    assert events[-1] == expected
    assert out.endswith(NULL_REPLY)
