"""A STUN binding responder (RFC 8489), so that browsers learn their reflexive addresses
from the mesh's own native nodes rather than from a third party's STUN server.

libdatachannel's ICE ports answer only connectivity checks that carry the ICE
credentials of a session, so a native node answers plain binding requests on a UDP port of
its own (``zmesh relay --stun-port``), publishes it in its descriptor as a ``stun:`` URI
(RFC 7064) among its addresses, and browser nodes configure the STUN servers of the relays
they are linked to as their ICE servers (:func:`stun_servers`).

The parts:

* :func:`parse_binding_request` is a strict parser: anything but a well-formed Binding
  request (RFC 8489 section 5: the magic cookie, a length that matches and is a multiple
  of 4, every attribute within the message, FINGERPRINT last and correct) raises
  :class:`~zmesh.errors.RemoteProtocolError`.  A request carrying credentials
  (USERNAME, USERHASH, MESSAGE-INTEGRITY) is an ICE check meant for someone else, and one
  carrying an unknown comprehension-required attribute would need a 420 answer: both are
  dropped instead, as is every other error (a responder that sends error responses
  answers garbage with bytes).
* :func:`binding_response` builds the success response: XOR-MAPPED-ADDRESS and
  FINGERPRINT, nothing else (40 bytes for IPv4, 52 for IPv6, against a request of at
  least 20: the responder amplifies at most 2.6 times, and only within its budgets).
* :class:`StunResponder` is the sans-I/O responder: ``respond(data, source, now)`` returns
  the datagram to send back, or None.  Every datagram, well-formed or not, first spends a
  token from its source address's bucket (at most :data:`MAX_SOURCES` of them, least
  recently used first out) and then one from a global bucket, so a flood costs us a
  bounded amount of parsing and of replies, whatever its sources.
* :class:`StunServer` is the asyncio glue (a datagram protocol); :func:`start_stun`
  binds it.
"""

import asyncio
import binascii
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from ..budget import TokenBucket
from ..errors import RemoteProtocolError

MAGIC_COOKIE: Final = 0x2112A442
HEADER_SIZE: Final = 20
TRANSACTION_ID_SIZE: Final = 12
BINDING_REQUEST: Final = 0x0001
BINDING_SUCCESS: Final = 0x0101
XOR_MAPPED_ADDRESS: Final = 0x0020
FINGERPRINT: Final = 0x8028
FINGERPRINT_XOR: Final = 0x5354554E
# attributes that carry credentials: the request is an ICE connectivity check
CREDENTIALS: Final = frozenset(
    {0x0006, 0x0008, 0x001C, 0x001E}
)  # USERNAME, MI, MI-SHA256, USERHASH
MAX_REQUEST_SIZE: Final = 548  # RFC 8489 section 6.1: a request that fits any path's MTU
DEFAULT_PORT: Final = 3478  # RFC 8489 section 18.1 (``stun:host`` without a port)

PER_SOURCE_RATE: Final = 10.0  # datagrams per second from one source address
PER_SOURCE_BURST: Final = 20.0
GLOBAL_RATE: Final = 500.0  # datagrams per second from everyone
GLOBAL_BURST: Final = 1000.0
MAX_SOURCES: Final = 4096  # per-source buckets held, least recently used first out
MAX_SERVERS: Final = 2  # STUN servers a browser node configures


# -- the codec --------------------------------------------------------------------------------


def _fingerprint(data: bytes) -> int:
    """RFC 8489 section 14.7: CRC-32 of the message up to the attribute, XOR 0x5354554e."""
    return binascii.crc32(data) ^ FINGERPRINT_XOR


def parse_binding_request(data: bytes) -> bytes:
    """The transaction id of ``data`` if it is a STUN Binding request we answer.

    Raises :class:`~zmesh.errors.RemoteProtocolError` for anything else: not STUN, another
    method or class, a bad length, cookie, attribute layout or FINGERPRINT, credentials,
    or an unknown comprehension-required attribute (RFC 8489 sections 5, 6.3, 14)."""
    if not isinstance(data, bytes):
        raise RemoteProtocolError("a STUN message is bytes")
    if not HEADER_SIZE <= len(data) <= MAX_REQUEST_SIZE:
        raise RemoteProtocolError(f"STUN message of {len(data)} bytes")
    message_type = int.from_bytes(data[0:2], "big")
    length = int.from_bytes(data[2:4], "big")
    if message_type & 0xC000:
        raise RemoteProtocolError("not a STUN message (the first two bits are set)")
    if message_type != BINDING_REQUEST:
        raise RemoteProtocolError(f"STUN message type {message_type:#06x} is not a Binding request")
    if length != len(data) - HEADER_SIZE or length % 4:
        raise RemoteProtocolError("STUN message length does not match")
    if int.from_bytes(data[4:8], "big") != MAGIC_COOKIE:
        raise RemoteProtocolError("STUN message without the magic cookie (RFC 3489 is not served)")
    pos = HEADER_SIZE
    while pos < len(data):
        if pos + 4 > len(data):
            raise RemoteProtocolError("truncated STUN attribute header")
        attr_type = int.from_bytes(data[pos : pos + 2], "big")
        attr_len = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 4 + attr_len
        padded = end + (-attr_len % 4)
        if padded > len(data):
            raise RemoteProtocolError("STUN attribute runs past the message")
        if attr_type == FINGERPRINT:
            if attr_len != 4 or padded != len(data):
                raise RemoteProtocolError("FINGERPRINT must be 4 bytes and the last attribute")
            if int.from_bytes(data[pos + 4 : end], "big") != _fingerprint(data[:pos]):
                raise RemoteProtocolError("STUN FINGERPRINT does not match")
        elif attr_type in CREDENTIALS:
            raise RemoteProtocolError("STUN request with credentials (an ICE check)")
        elif attr_type < 0x8000:
            raise RemoteProtocolError(f"unknown comprehension-required attribute {attr_type:#06x}")
        pos = padded
    return data[8:HEADER_SIZE]


def binding_request(transaction_id: bytes, *, fingerprint: bool = True) -> bytes:
    """A Binding request (for tests and clients): header, then FINGERPRINT if asked."""
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise ValueError("a STUN transaction id is 12 bytes")
    length = 8 if fingerprint else 0
    head = (
        BINDING_REQUEST.to_bytes(2, "big")
        + length.to_bytes(2, "big")
        + MAGIC_COOKIE.to_bytes(4, "big")
        + transaction_id
    )
    if not fingerprint:
        return head
    return head + _fingerprint_attribute(head)


def _fingerprint_attribute(before: bytes) -> bytes:
    return FINGERPRINT.to_bytes(2, "big") + b"\x00\x04" + _fingerprint(before).to_bytes(4, "big")


def binding_response(transaction_id: bytes, source: tuple[str, int]) -> bytes:
    """The Binding success response telling ``source`` (ip, port) its address:
    XOR-MAPPED-ADDRESS (RFC 8489 section 14.2) and FINGERPRINT, nothing else.
    Raises ValueError for a transaction id that is not 12 bytes or a bad address."""
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise ValueError("a STUN transaction id is 12 bytes")
    ip = ipaddress.ip_address(source[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    port = source[1]
    if not 0 <= port <= 0xFFFF:
        raise ValueError("port out of range")
    cookie = MAGIC_COOKIE.to_bytes(4, "big")
    mask = cookie if ip.version == 4 else cookie + transaction_id
    address = bytes(a ^ m for a, m in zip(ip.packed, mask, strict=True))
    family = b"\x01" if ip.version == 4 else b"\x02"
    value = b"\x00" + family + (port ^ (MAGIC_COOKIE >> 16)).to_bytes(2, "big") + address
    attribute = XOR_MAPPED_ADDRESS.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value
    length = len(attribute) + 8
    head = BINDING_SUCCESS.to_bytes(2, "big") + length.to_bytes(2, "big") + cookie + transaction_id
    return head + attribute + _fingerprint_attribute(head + attribute)


def parse_binding_response(data: bytes, transaction_id: bytes) -> tuple[str, int]:
    """The (ip, port) a Binding success response for ``transaction_id`` carries (a client's
    view, for tests).  Raises :class:`~zmesh.errors.RemoteProtocolError` otherwise."""
    if len(data) < HEADER_SIZE or int.from_bytes(data[0:2], "big") != BINDING_SUCCESS:
        raise RemoteProtocolError("not a Binding success response")
    if int.from_bytes(data[2:4], "big") != len(data) - HEADER_SIZE:
        raise RemoteProtocolError("STUN message length does not match")
    if data[4:8] != MAGIC_COOKIE.to_bytes(4, "big") or data[8:HEADER_SIZE] != transaction_id:
        raise RemoteProtocolError("another transaction's response")
    pos, found = HEADER_SIZE, None
    while pos + 4 <= len(data):
        attr_type = int.from_bytes(data[pos : pos + 2], "big")
        attr_len = int.from_bytes(data[pos + 2 : pos + 4], "big")
        value = data[pos + 4 : pos + 4 + attr_len]
        if attr_type == FINGERPRINT and int.from_bytes(value, "big") != _fingerprint(data[:pos]):
            raise RemoteProtocolError("STUN FINGERPRINT does not match")
        if attr_type == XOR_MAPPED_ADDRESS and attr_len in (8, 20):
            mask = data[4:8] + (transaction_id if attr_len == 20 else b"")
            packed = bytes(a ^ m for a, m in zip(value[4:], mask, strict=True))
            port = int.from_bytes(value[2:4], "big") ^ (MAGIC_COOKIE >> 16)
            found = (str(ipaddress.ip_address(packed)), port)
        pos += 4 + attr_len + (-attr_len % 4)
    if found is None:
        raise RemoteProtocolError("no XOR-MAPPED-ADDRESS")
    return found


# -- the responder ----------------------------------------------------------------------------


@dataclass
class StunCounters:
    answered: int = 0
    malformed: int = 0  # dropped: not a Binding request we answer
    limited: int = 0  # dropped: over a source's or the global budget


class StunResponder:
    """Answers Binding requests within per-source and global budgets (see the module doc).

    Sans-I/O: the caller passes the datagram, its source ``(ip, port)`` and ``now``."""

    def __init__(
        self,
        *,
        rate: float = PER_SOURCE_RATE,
        burst: float = PER_SOURCE_BURST,
        global_rate: float = GLOBAL_RATE,
        global_burst: float = GLOBAL_BURST,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self._rate, self._burst = rate, burst
        self._global = TokenBucket(global_rate, global_burst)
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_sources = max_sources
        self.counters = StunCounters()

    @property
    def sources(self) -> int:
        """Per-source buckets held."""
        return len(self._sources)

    def respond(self, data: bytes, source: tuple[str, int], now: float) -> bytes | None:
        """The response datagram to send back to ``source``, or None to drop ``data``."""
        ip = source[0]
        bucket = self._sources.get(ip)
        if bucket is None:
            bucket = self._sources[ip] = TokenBucket(self._rate, self._burst)
            while len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(ip)
        if not bucket.take(now) or not self._global.take(now):
            self.counters.limited += 1
            return None
        try:
            transaction_id = parse_binding_request(data)
            reply = binding_response(transaction_id, source)
        except (RemoteProtocolError, ValueError):
            self.counters.malformed += 1
            return None
        self.counters.answered += 1
        return reply


class StunServer(asyncio.DatagramProtocol):
    """The asyncio side of a :class:`StunResponder` (one UDP socket)."""

    def __init__(
        self, responder: StunResponder | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.responder = responder or StunResponder()
        self._clock = clock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.transport is None or len(addr) < 2:
            return
        source = (str(addr[0]), int(addr[1]))
        reply = self.responder.respond(data, source, self._clock())
        if reply is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for an earlier reply: nothing to do

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


async def start_stun(host: str, port: int = 0) -> tuple[StunServer, int]:
    """Bind a STUN responder to ``host``:``port`` (0: an ephemeral port); return it and
    the port it listens on.  Raises OSError if the address cannot be bound."""
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        StunServer, local_addr=(host, port), reuse_port=False
    )
    return server, int(transport.get_extra_info("sockname")[1])


# -- STUN URIs in descriptors -----------------------------------------------------------------


def stun_uri(host: str, port: int) -> str:
    """``stun:HOST:PORT`` (RFC 7064), with an IPv6 literal in brackets."""
    return f"stun:[{host}]:{port}" if ":" in host else f"stun:{host}:{port}"


def parse_stun_uri(text: str) -> tuple[str, int] | None:
    """(host, port) of a ``stun:`` URI (RFC 7064: ``stun:host[:port]``, no query), else
    None.  The host is an IP literal or a DNS name; ports 1-65535."""
    if not text.startswith("stun:"):
        return None
    rest = text[5:]
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            return None
        port_text = tail[1:] if tail else ""
        try:
            if ipaddress.ip_address(host).version != 6:
                return None
        except ValueError:
            return None
    else:
        host, _, port_text = rest.partition(":")
        if not host or len(host) > 253 or not all(c.isalnum() or c in "-." for c in host):
            return None
        if not host.isascii():
            return None
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
            return None
        return host, int(port_text)
    return host, DEFAULT_PORT


def stun_servers(addresses: Iterable[tuple[str, ...]], loopback: bool) -> list[str]:
    """The ICE server URLs (``stun:...``) for a browser node's connections: the first
    acceptable ``stun:`` address of each descriptor's ``addresses``, at most
    :data:`MAX_SERVERS`, in order.

    Outside a mesh on loopback a descriptor is anyone's to sign, so, as for signaling URLs,
    an IP literal must be global: a loopback, private, link-local, multicast, reserved or
    unspecified one is skipped (a DNS name is taken as it is)."""
    out: list[str] = []
    for published in addresses:
        for address in published:
            parsed = parse_stun_uri(address)
            if parsed is None:
                continue
            host, port = parsed
            if not loopback:
                try:
                    ip = ipaddress.ip_address(host)
                except ValueError:
                    ip = None
                if ip is not None and not ip.is_global:
                    continue
            uri = stun_uri(host, port)
            if uri not in out:
                out.append(uri)
            break
        if len(out) >= MAX_SERVERS:
            break
    return out
