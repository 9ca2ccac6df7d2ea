"""WebRTC session descriptions, without WebRTC: parsing, the compact binary form, and the
pieces shared by every runtime's transport (CPython's libdatachannel, the browser's
RTCPeerConnection).  Pure Python (no I/O); it runs in Pyodide.
"""

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from ..codec import Buffer, push_vector
from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError

LABEL: Final = "zmesh"
CHANNEL_ID: Final = 0  # the negotiated SCTP stream id
MAX_MESSAGE_SIZE: Final = 262144  # what libdatachannel advertises and enforces (256 KiB)
SCTP_PORT: Final = 5000
MAX_SDP_SIZE: Final = 65536
MAX_CANDIDATES: Final = 32


# -- SDP parsing ---------------------------------------------------------------------------

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_DIGITS = re.compile(r"[0-9]{1,10}")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")
_HEX_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")
_SETUP_CODES: Final = {"actpass": 1, "active": 2, "passive": 3}
_SETUP_NAMES: Final = {v: k for k, v in _SETUP_CODES.items()}
_COMPACT_VERSION: Final = 1


def _sdp_lines(sdp: str) -> list[str]:
    if not isinstance(sdp, str):
        raise RemoteProtocolError("SDP is not text")
    if len(sdp) > MAX_SDP_SIZE:
        raise RemoteProtocolError(f"SDP of {len(sdp)} characters is too large", CloseCode.RESOURCE)
    return [line.removesuffix("\r") for line in sdp.split("\n") if line.strip()]


def _attributes(lines: list[str], name: str) -> list[str]:
    prefix = f"a={name}:"
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def _single(values: list[str], what: str) -> str:
    if not values:
        raise RemoteProtocolError(f"SDP has no {what}")
    if len(set(values)) != 1:
        raise RemoteProtocolError(f"SDP has conflicting {what} values")
    return values[0]


def _int(text: str, what: str, limit: int) -> int:
    if not _DIGITS.fullmatch(text):
        raise RemoteProtocolError(f"SDP {what} is not a number: {text[:40]!r}")
    value = int(text)
    if value > limit:
        raise RemoteProtocolError(f"SDP {what} {value} is out of range")
    return value


def _fingerprint_from_lines(lines: list[str]) -> bytes:
    found: list[bytes] = []
    for value in _attributes(lines, "fingerprint"):
        hash_func, sep, hex_value = value.partition(" ")
        if not sep or not _TOKEN.fullmatch(hash_func):
            raise RemoteProtocolError("malformed a=fingerprint line")
        if hash_func.lower() != "sha-256":
            continue  # another hash function; we only use SHA-256
        hex_value = hex_value.strip()
        if not _HEX_FINGERPRINT.fullmatch(hex_value):
            raise RemoteProtocolError("malformed SHA-256 fingerprint")
        found.append(bytes.fromhex(hex_value.replace(":", "")))
    if not found:
        raise RemoteProtocolError("SDP has no SHA-256 DTLS fingerprint")
    if len(set(found)) != 1:
        raise RemoteProtocolError("SDP has conflicting SHA-256 fingerprints")
    return found[0]


def sdp_fingerprint(sdp: str) -> bytes:
    """The 32-byte SHA-256 DTLS certificate fingerprint in ``sdp``.

    Reads ``a=fingerprint:sha-256 AA:BB:...`` (session or media level; the hash name is
    case-insensitive, other hash functions are ignored).  Raises
    :class:`~zmesh.errors.RemoteProtocolError` if there is none, if it is malformed, or
    if two lines disagree.
    """
    return _fingerprint_from_lines(_sdp_lines(sdp))


def remote_fingerprint(sdp: str, role: str) -> bytes:
    """Check that a peer's ``"offer"`` or ``"answer"`` is a data-channel SDP we can use (the
    checks of :meth:`CompactSdp.from_sdp`, and a DTLS role valid for ``role``); return its
    fingerprint.  Raises :class:`~zmesh.errors.RemoteProtocolError` otherwise."""
    compact = CompactSdp.from_sdp(sdp)
    if (role == "offer") != (compact.setup == "actpass"):
        raise RemoteProtocolError(f"DTLS role {compact.setup!r} is invalid in an {role}")
    return compact.fingerprint


def channel_binding(local_fingerprint: bytes, remote_fingerprint: bytes) -> bytes:
    """``SHA-256(min(fp_a, fp_b) || max(fp_a, fp_b))``: both ends of a WebRTC connection
    compute the same bytes from the two DTLS fingerprints (docs/decisions.md, D17)."""
    return hashlib.sha256(b"".join(sorted((local_fingerprint, remote_fingerprint)))).digest()


def _parse_candidate(value: str) -> tuple[str, int] | None:
    """``(ip, port)`` of a UDP host candidate with an IP literal, else None (skipped).

    Candidates on other transports, of other types, on RTCP's component, or with an
    mDNS/FQDN address are legal but not kept; syntax errors raise.
    """
    parts = value.split(" ")
    if len(parts) < 8 or parts[6] != "typ":
        raise RemoteProtocolError("malformed a=candidate line")
    foundation, component, transport, priority, address, port_text, _, cand_type = parts[:8]
    if not _ICE_CHARS.fullmatch(foundation) or len(foundation) > 32:
        raise RemoteProtocolError("malformed candidate foundation")
    component_id = _int(component, "candidate component", 256)
    _int(priority, "candidate priority", 2**32 - 1)
    port = _int(port_text, "candidate port", 65535)
    if not _TOKEN.fullmatch(transport) or not _TOKEN.fullmatch(cand_type):
        raise RemoteProtocolError("malformed candidate transport or type")
    if not address or len(address) > 255:
        raise RemoteProtocolError("malformed candidate address")
    if component_id != 1 or transport.lower() != "udp" or cand_type != "host" or port == 0:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # an mDNS name (browsers) or an FQDN
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return None
    if ip.is_unspecified or ip.is_multicast:
        return None
    return str(ip), port


def _check_candidate(candidate: tuple[str, int]) -> None:
    if not isinstance(candidate, tuple) or len(candidate) != 2:
        raise RemoteProtocolError("a candidate is an (ip, port) pair")
    ip_text, port = candidate
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise RemoteProtocolError("candidate port out of range")
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        raise RemoteProtocolError("candidate address is not an IP address") from None
    if str(ip) != ip_text:
        raise RemoteProtocolError("candidate address is not in canonical form")


@dataclass(frozen=True, slots=True)
class CompactSdp:
    """The parts of a data-channel SDP that differ between connections.

    ``from_sdp`` keeps the ICE credentials, the SHA-256 fingerprint, the DTLS role and the
    UDP host candidates with IP-literal addresses (in their order, at most
    :data:`MAX_CANDIDATES`); ``to_sdp`` rebuilds a minimal standard SDP around them.
    ``encode``/``decode`` are its binary form for signaling messages::

        u8 version (1) | u8 setup (1 actpass, 2 active, 3 passive) | fingerprint[32]
        | u16 len | ice-ufrag | u16 len | ice-pwd
        | u8 count | count * (u8 family (4 or 6) | address[4 or 16] | u16 port)

    Every parsing path raises :class:`~zmesh.errors.RemoteProtocolError` on bad input.
    The SDP must describe exactly one data-channel section (``mid`` ``0``, SCTP port
    5000), as libdatachannel, Chromium and Firefox produce for a data-only connection.
    """

    ice_ufrag: str
    ice_pwd: str
    fingerprint: bytes
    setup: str  # "actpass" (offers), "active" or "passive" (answers)
    candidates: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not _ICE_CHARS.fullmatch(self.ice_ufrag) or not 4 <= len(self.ice_ufrag) <= 256:
            raise RemoteProtocolError("invalid ICE username fragment")
        if not _ICE_CHARS.fullmatch(self.ice_pwd) or not 22 <= len(self.ice_pwd) <= 256:
            raise RemoteProtocolError("invalid ICE password")
        if not isinstance(self.fingerprint, bytes) or len(self.fingerprint) != 32:
            raise RemoteProtocolError("the fingerprint must be 32 bytes (SHA-256)")
        if self.setup not in _SETUP_CODES:
            raise RemoteProtocolError(f"invalid DTLS setup role {self.setup!r}")
        if not isinstance(self.candidates, tuple) or len(self.candidates) > MAX_CANDIDATES:
            raise RemoteProtocolError("too many candidates")
        for candidate in self.candidates:
            _check_candidate(candidate)

    @classmethod
    def from_sdp(cls, sdp: str) -> "CompactSdp":
        lines = _sdp_lines(sdp)
        media = [line for line in lines if line.startswith("m=")]
        if len(media) != 1:
            raise RemoteProtocolError("SDP must have exactly one media section")
        fields = media[0][2:].split(" ")
        if (
            len(fields) != 4
            or fields[0] != "application"
            or fields[2] != "UDP/DTLS/SCTP"
            or fields[3] != "webrtc-datachannel"
        ):
            raise RemoteProtocolError("SDP media section is not a WebRTC data channel")
        _int(fields[1], "media port", 65535)
        for mid in _attributes(lines, "mid"):
            if mid != "0":
                raise RemoteProtocolError(f"unsupported media id {mid[:20]!r} (expected 0)")
        for port in _attributes(lines, "sctp-port"):
            if _int(port, "SCTP port", 65535) != SCTP_PORT:
                raise RemoteProtocolError(f"unsupported SCTP port {port}")
        candidates: list[tuple[str, int]] = []
        for value in _attributes(lines, "candidate"):
            parsed = _parse_candidate(value)
            if parsed is not None and parsed not in candidates:
                candidates.append(parsed)
        return cls(
            ice_ufrag=_single(_attributes(lines, "ice-ufrag"), "a=ice-ufrag"),
            ice_pwd=_single(_attributes(lines, "ice-pwd"), "a=ice-pwd"),
            fingerprint=_fingerprint_from_lines(lines),
            setup=_single(_attributes(lines, "setup"), "a=setup"),
            candidates=tuple(candidates[:MAX_CANDIDATES]),
        )

    def to_sdp(self, role: str) -> str:
        """A minimal standard SDP ``"offer"`` or ``"answer"`` for this data channel.

        ``role`` is typed ``str`` (callers compute it) and must be ``"offer"`` or
        ``"answer"`` (else :class:`~zmesh.errors.LocalProtocolError`).  An offer must
        carry ``actpass`` and an answer ``active`` or ``passive`` (RFC 8842); a mismatch
        came from the peer, so it raises :class:`~zmesh.errors.RemoteProtocolError`.
        """
        if role not in ("offer", "answer"):
            raise LocalProtocolError(f"SDP role must be 'offer' or 'answer', not {role!r}")
        if (role == "offer") != (self.setup == "actpass"):
            raise RemoteProtocolError(f"DTLS role {self.setup!r} is invalid in an {role}")
        session_id = int.from_bytes(self.fingerprint[:7], "big")
        lines = [
            "v=0",
            f"o=- {session_id} 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            f"a=ice-ufrag:{self.ice_ufrag}",
            f"a=ice-pwd:{self.ice_pwd}",
            "a=fingerprint:sha-256 " + self.fingerprint.hex(":").upper(),
            f"a=setup:{self.setup}",
            "a=mid:0",
            f"a=sctp-port:{SCTP_PORT}",
            f"a=max-message-size:{MAX_MESSAGE_SIZE}",
        ]
        for i, (ip, port) in enumerate(self.candidates):
            priority = (126 << 24) | ((0xFFFF - i) << 8) | 255
            lines.append(f"a=candidate:{i + 1} 1 UDP {priority} {ip} {port} typ host")
        lines.append("a=end-of-candidates")
        return "\r\n".join(lines) + "\r\n"

    def encode(self) -> bytes:
        out = [
            bytes([_COMPACT_VERSION, _SETUP_CODES[self.setup]]),
            self.fingerprint,
            push_vector(self.ice_ufrag.encode("ascii"), 2),
            push_vector(self.ice_pwd.encode("ascii"), 2),
            bytes([len(self.candidates)]),
        ]
        for ip_text, port in self.candidates:
            packed = ipaddress.ip_address(ip_text).packed
            out.append(bytes([4 if len(packed) == 4 else 6]) + packed + port.to_bytes(2, "big"))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "CompactSdp":
        buf = Buffer(data)
        version = buf.pull_uint8()
        if version != _COMPACT_VERSION:
            raise RemoteProtocolError(f"unknown compact SDP version {version}")
        setup = _SETUP_NAMES.get(buf.pull_uint8())
        if setup is None:
            raise RemoteProtocolError("unknown DTLS setup role")
        fingerprint = buf.pull_bytes(32)
        ufrag = buf.pull_vector(2, 256)
        pwd = buf.pull_vector(2, 256)
        count = buf.pull_uint8()
        if count > MAX_CANDIDATES:
            raise RemoteProtocolError("too many candidates")
        candidates = []
        for _ in range(count):
            family = buf.pull_uint8()
            if family not in (4, 6):
                raise RemoteProtocolError(f"unknown address family {family}")
            packed = buf.pull_bytes(4 if family == 4 else 16)
            ip = ipaddress.IPv4Address(packed) if family == 4 else ipaddress.IPv6Address(packed)
            candidates.append((str(ip), buf.pull_uint16()))
        buf.expect_eof()
        return cls(  # __post_init__ checks the credentials' characters
            ice_ufrag=ufrag.decode("latin-1"),
            ice_pwd=pwd.decode("latin-1"),
            fingerprint=fingerprint,
            setup=setup,
            candidates=tuple(candidates),
        )
