"""A sans-I/O SOCKS5 server connection: RFC 1928, with RFC 1929 username/password auth.

The driver owns the socket.  After each :meth:`Socks5Server.receive_data` it writes
:meth:`~Socks5Server.data_to_send` and pulls events from :meth:`~Socks5Server.next_event`
until it returns ``None``:

==================  =========================================  ============================
event               meaning                                    the driver
==================  =========================================  ============================
``Greeting``        the client's method offer (RFC 1928 §3)    may log it (already answered)
``Credentials``     username and password (RFC 1929 §2)        may log it (already answered)
``ConnectRequest``  a CONNECT request (RFC 1928 §4, §5)        writes ``reply(code, ...)``
``BadRequest``      a well-formed request we refuse            closes (the reply is queued)
``Data``            tunnel bytes, after ``reply(SUCCEEDED)``   forwards them to the stream
==================  =========================================  ============================

The server makes the handshake's only choices itself, so the driver has nothing to
decide before the request: it selects USERNAME/PASSWORD when offered, else NO AUTH, else
answers X'FF' (no acceptable methods); and it accepts any credentials.  They are never
checked.  As with Tor's ``IsolateSOCKSAuth`` they only form the
:attr:`ConnectRequest.isolation_key`, so that different credentials get different
circuits.  These answers, and the failure reply to a :class:`BadRequest`, are queued for
``data_to_send()``; only ``reply()`` returns its bytes directly.  After X'FF' or any
failure reply the state is REJECTED, :attr:`~Socks5Server.failed` is true, and the
driver writes ``data_to_send()`` and closes (RFC 1928 §3, §6).

Bytes the client sends early are kept: handshake messages are parsed in turn, and bytes
after the request come out as :class:`Data` once the driver has replied SUCCEEDED.

Malformed bytes (a wrong version or reserved byte, an empty method list, more than
:data:`MAX_BUFFERED` bytes held before the tunnel) raise
:class:`~zmesh.errors.RemoteProtocolError` from ``receive_data``.  The error is sticky.
A complete request we cannot serve (a command other than CONNECT, an unknown address
type, an invalid hostname, port 0) is a :class:`BadRequest` instead, so the client gets
a proper SOCKS reply rather than a reset.  Calling ``reply()`` in any state but REPLY
raises :class:`~zmesh.errors.LocalProtocolError`.

``receive_data(b"")`` does nothing: the driver handles end of file itself.  Once in the
tunnel, the connection buffers whatever it is given; flow control is the driver's job.
"""

import re
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum, auto
from ipaddress import IPv4Address, IPv6Address, ip_address

from .errors import LocalProtocolError, RemoteProtocolError

SOCKS_VERSION = 5
AUTH_VERSION = 1
"""The RFC 1929 subnegotiation version."""

MAX_BUFFERED = 4096
"""The most bytes held before the tunnel opens.  The largest legal handshake, fully
pipelined, is 1032 bytes (greeting 257, auth 513, request 262); the rest leaves room for
optimistic data such as a TLS ClientHello with a post-quantum key share."""


class AuthMethod(IntEnum):
    """RFC 1928 §3: METHOD values."""

    NO_AUTH = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE = 0xFF


class Command(IntEnum):
    """RFC 1928 §4: CMD values.  Only CONNECT is served."""

    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class AddressType(IntEnum):
    """RFC 1928 §4 and §5: ATYP values."""

    IPV4 = 0x01
    DOMAINNAME = 0x03
    IPV6 = 0x04


class ReplyCode(IntEnum):
    """RFC 1928 §6: REP values."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    """Connection not allowed by ruleset (the exit policy)."""
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class State(Enum):
    GREETING = auto()
    """Waiting for the version identifier/method selection message (RFC 1928 §3)."""
    AUTH = auto()
    """Waiting for the username/password request (RFC 1929 §2)."""
    REQUEST = auto()
    """Waiting for the request (RFC 1928 §4)."""
    REPLY = auto()
    """``ConnectRequest`` delivered; waiting for the driver's ``reply()``."""
    TUNNEL = auto()
    """Replied SUCCEEDED: every byte received is :class:`Data`."""
    REJECTED = auto()
    """We answered X'FF' or a failure reply: the connection must close (RFC 1928 §3, §6)."""
    ERROR = auto()
    """The client sent malformed bytes."""


@dataclass(frozen=True, slots=True)
class Greeting:
    """The client's offered methods, and the one we chose (RFC 1928 §3)."""

    methods: tuple[int, ...]
    method: AuthMethod
    """USERNAME_PASSWORD if offered, else NO_AUTH if offered, else NO_ACCEPTABLE."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username/password request (RFC 1929 §2).  Never validated: see the module doc."""

    username: bytes
    password: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A CONNECT request (RFC 1928 §4).

    ``host`` is a dotted IPv4 address, a compressed IPv6 address (no brackets) or an
    ASCII hostname exactly as sent (letters, digits, ``-``, ``_``, dot-separated labels of
    1 to 63 bytes, an optional final dot).  ``isolation_key`` is empty without
    authentication, and otherwise ``ULEN | UNAME | PLEN | PASSWD`` as sent (RFC 1929 §2).
    """

    host: str
    port: int
    atyp: AddressType
    isolation_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A complete request we refuse.  Its failure reply is queued in ``data_to_send()``."""

    code: ReplyCode
    reason: str


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes from the client after the tunnel opened (RFC 1928 §6, after the reply)."""

    data: bytes


Event = Greeting | Credentials | ConnectRequest | BadRequest | Data

_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}")
_UNSPECIFIED = IPv4Address(0)


def valid_hostname(raw: bytes) -> bool:
    """Whether ``raw`` is an ASCII hostname we will pass on (see :class:`ConnectRequest`).

    Internationalized names arrive in their IDNA (``xn--``) form, which passes.
    """
    if not 1 <= len(raw) <= 255:
        return False
    name = raw.removesuffix(b".")
    return bool(name) and all(_LABEL.fullmatch(label) for label in name.split(b"."))


class Socks5Server:
    """The server side of one SOCKS5 connection.  See the module docstring."""

    __slots__ = ("_buffer", "_error", "_events", "_isolation_key", "_method", "_out", "_state")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._state = State.GREETING
        self._method = AuthMethod.NO_ACCEPTABLE
        self._isolation_key = b""
        self._error: RemoteProtocolError | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def failed(self) -> bool:
        """The handshake ended without a tunnel: write ``data_to_send()``, then close."""
        return self._state in (State.REJECTED, State.ERROR)

    @property
    def method(self) -> AuthMethod:
        """The selected method; NO_ACCEPTABLE until a greeting arrived."""
        return self._method

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the client and parse every complete handshake message.

        Raises RemoteProtocolError on malformed bytes, or if more than
        :data:`MAX_BUFFERED` bytes would stay held before the tunnel opens.  Bytes that
        arrive after we rejected the client are dropped.
        """
        self._raise_if_failed()
        if not data or self._state is State.REJECTED:
            return
        self._buffer += data
        if self._state is State.TUNNEL:
            return
        try:
            self._parse()
            if len(self._buffer) > MAX_BUFFERED:
                raise RemoteProtocolError(
                    f"more than {MAX_BUFFERED} bytes before the SOCKS5 tunnel opened"
                )
        except RemoteProtocolError as exc:
            self._state = State.ERROR
            self._error = exc
            self._buffer.clear()
            self._events.clear()
            self._out.clear()
            raise

    def data_to_send(self) -> bytes:
        """The answers the server made on its own since the last call (may be empty)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """The next event, or None until more bytes or the driver's ``reply()``."""
        self._raise_if_failed()
        if self._events:
            return self._events.popleft()
        if self._state is State.TUNNEL and self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return Data(data)
        return None

    def reply(
        self,
        code: ReplyCode,
        bound_addr: str | IPv4Address | IPv6Address = _UNSPECIFIED,
        bound_port: int = 0,
    ) -> bytes:
        """The reply (RFC 1928 §6) to a :class:`ConnectRequest`, for the driver to write.

        SUCCEEDED opens the tunnel; any other code rejects the client, who must close.
        ``BND.ADDR``/``BND.PORT`` default to ``0.0.0.0:0``, as Tor sends: the client has
        no use for the exit's address and should not learn it.  A ``bound_addr`` that is
        not an IP address is sent as a DOMAINNAME.
        """
        if self._state is not State.REPLY:
            raise LocalProtocolError(f"reply() in state {self._state.name}")
        try:
            code = ReplyCode(code)
        except ValueError:
            raise LocalProtocolError(f"{code!r} is not a SOCKS5 reply code") from None
        if not 0 <= bound_port <= 0xFFFF:
            raise LocalProtocolError(f"bound port {bound_port} out of range")
        message = _reply(code, _encode_address(bound_addr), bound_port)
        if code is ReplyCode.SUCCEEDED:
            self._state = State.TUNNEL
        else:
            self._reject()
        return message

    # -- parsing ---------------------------------------------------------------
    def _parse(self) -> None:
        """Parse complete messages until one is partial or the driver must reply."""
        while self._buffer:
            match self._state:
                case State.GREETING:
                    event: Event | None = self._parse_greeting()
                case State.AUTH:
                    event = self._parse_auth()
                case State.REQUEST:
                    event = self._parse_request()
                case _:
                    return
            if event is None:
                return
            self._events.append(event)

    def _parse_greeting(self) -> Greeting | None:
        """``VER | NMETHODS | METHODS`` (RFC 1928 §3); answers ``VER | METHOD``."""
        buf = self._buffer
        _check_version(buf[0], SOCKS_VERSION, "greeting")
        if len(buf) < 2:
            return None
        end = 2 + buf[1]
        if end == 2:
            raise RemoteProtocolError("SOCKS5 greeting offers no methods")
        if len(buf) < end:
            return None
        methods = tuple(buf[2:end])
        del buf[:end]
        if AuthMethod.USERNAME_PASSWORD in methods:
            self._method = AuthMethod.USERNAME_PASSWORD
            self._state = State.AUTH
        elif AuthMethod.NO_AUTH in methods:
            self._method = AuthMethod.NO_AUTH
            self._state = State.REQUEST
        else:
            self._reject()
        self._out += bytes([SOCKS_VERSION, self._method])
        return Greeting(methods, self._method)

    def _parse_auth(self) -> Credentials | None:
        """``VER | ULEN | UNAME | PLEN | PASSWD`` (RFC 1929 §2); answers success.

        RFC 1929 gives ULEN and PLEN a range of 1 to 255; empty fields are accepted too,
        as clients such as curl send an empty password.
        """
        buf = self._buffer
        _check_version(buf[0], AUTH_VERSION, "username/password request")
        if len(buf) < 2:
            return None
        ulen = buf[1]
        if len(buf) < 3 + ulen:
            return None
        end = 3 + ulen + buf[2 + ulen]
        if len(buf) < end:
            return None
        message = bytes(buf[:end])
        del buf[:end]
        self._isolation_key = message[1:]
        self._state = State.REQUEST
        self._out += bytes([AUTH_VERSION, 0x00])
        return Credentials(message[2 : 2 + ulen], message[3 + ulen :])

    def _parse_request(self) -> ConnectRequest | BadRequest | None:
        """``VER | CMD | RSV | ATYP | DST.ADDR | DST.PORT`` (RFC 1928 §4, §5)."""
        buf = self._buffer
        _check_version(buf[0], SOCKS_VERSION, "request")
        if len(buf) < 4:
            return None
        cmd, rsv, atyp = buf[1], buf[2], buf[3]
        if rsv != 0x00:
            raise RemoteProtocolError(f"SOCKS5 request reserved byte is {rsv:#04x}, not X'00'")
        if cmd != Command.CONNECT:
            name = Command(cmd).name if cmd in Command else f"{cmd:#04x}"
            return self._refuse(ReplyCode.COMMAND_NOT_SUPPORTED, f"command {name}")
        if atyp == AddressType.IPV4:
            start, length = 4, 4
        elif atyp == AddressType.IPV6:
            start, length = 4, 16
        elif atyp == AddressType.DOMAINNAME:
            if len(buf) < 5:
                return None
            start, length = 5, buf[4]
        else:
            return self._refuse(ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED, f"address type {atyp:#04x}")
        end = start + length + 2
        if len(buf) < end:
            return None
        raw = bytes(buf[start : start + length])
        port = int.from_bytes(buf[end - 2 : end], "big")
        del buf[:end]
        kind = AddressType(atyp)
        if kind is AddressType.IPV4:
            host = str(IPv4Address(raw))
        elif kind is AddressType.IPV6:
            host = str(IPv6Address(raw))
        elif valid_hostname(raw):
            host = raw.decode("ascii")
        else:
            return self._refuse(ReplyCode.GENERAL_FAILURE, f"invalid hostname {raw[:64]!r}")
        if port == 0:
            return self._refuse(ReplyCode.GENERAL_FAILURE, "destination port 0")
        self._state = State.REPLY
        return ConnectRequest(host, port, kind, self._isolation_key)

    # -- state -----------------------------------------------------------------
    def _refuse(self, code: ReplyCode, reason: str) -> BadRequest:
        """Queue the failure reply and reject: the rest of the input is moot."""
        self._out += _reply(code, _encode_address(_UNSPECIFIED), 0)
        self._reject()
        return BadRequest(code, reason)

    def _reject(self) -> None:
        self._state = State.REJECTED
        self._buffer.clear()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(f"SOCKS5 connection failed: {self._error}", self._error.code)


def _reply(code: ReplyCode, address: bytes, port: int) -> bytes:
    """``VER | REP | RSV | ATYP | BND.ADDR | BND.PORT`` (RFC 1928 §6)."""
    return bytes([SOCKS_VERSION, code, 0x00]) + address + port.to_bytes(2, "big")


def _check_version(value: int, expected: int, what: str) -> None:
    if value != expected:
        raise RemoteProtocolError(f"SOCKS5 {what} has version {value:#04x}, not {expected:#04x}")


def _encode_address(addr: str | IPv4Address | IPv6Address) -> bytes:
    """``ATYP | ADDR`` for a reply's BND.ADDR (RFC 1928 §5)."""
    if isinstance(addr, str):
        text = addr
        try:
            addr = ip_address(text)
        except ValueError:
            raw = text.encode("ascii", "replace")
            if not text.isascii() or not valid_hostname(raw):
                raise LocalProtocolError(f"invalid bound address {text!r}") from None
            return bytes([AddressType.DOMAINNAME, len(raw)]) + raw
    if isinstance(addr, IPv4Address):
        return bytes([AddressType.IPV4]) + addr.packed
    return bytes([AddressType.IPV6]) + addr.packed
