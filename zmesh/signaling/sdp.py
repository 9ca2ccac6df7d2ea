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
_MDNS_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.local")
_COMPACT_V1: Final = 1  # UDP host candidates with IP addresses only
_COMPACT_V2: Final = 2  # also mDNS host names and server-reflexive candidates
_COMPACT_V3: Final = 3  # version 2's candidates, and a video section (the media transport)
_COMPACT_V4: Final = 4  # version 3 with an audio section too (the media transport's cover audio)
#: the video section of the media transport (D58): VP8 with NACK, PLI and REMB feedback
VIDEO_PAYLOAD: Final = 97
_VIDEO_LINES: Final = (
    "a=sendrecv",
    "a=rtcp-mux",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    f"a=rtpmap:{VIDEO_PAYLOAD} VP8/90000",
    f"a=rtcp-fb:{VIDEO_PAYLOAD} nack",
    f"a=rtcp-fb:{VIDEO_PAYLOAD} nack pli",
    f"a=rtcp-fb:{VIDEO_PAYLOAD} goog-remb",
)
#: the audio section of the media transport (D59): Opus, as Chromium offers it
AUDIO_PAYLOAD: Final = 111
_AUDIO_LINES: Final = (
    "a=sendrecv",
    "a=rtcp-mux",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    f"a=rtpmap:{AUDIO_PAYLOAD} opus/48000/2",
    f"a=fmtp:{AUDIO_PAYLOAD} minptime=10;useinbandfec=1",
)
# a compact candidate's kind byte (v1 knows only the first two)
_HOST_V4, _HOST_V6, _SRFLX_V4, _SRFLX_V6, _HOST_MDNS = 4, 6, 0x14, 0x16, 0x20


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


def remote_fingerprint(sdp: str, role: str, *, media: bool = False) -> bytes:
    """Check that a peer's ``"offer"`` or ``"answer"`` is a data-channel SDP (a video one
    if ``media``) we can use (the checks of :meth:`CompactSdp.from_sdp`, and a DTLS role
    valid for ``role``); return its fingerprint.  Raises
    :class:`~zmesh.errors.RemoteProtocolError` otherwise."""
    compact = CompactSdp.from_sdp(sdp)
    if compact.media != media:
        kind = "a video section" if media else "a data channel"
        raise RemoteProtocolError(f"the SDP does not describe {kind}")
    if (role == "offer") != (compact.setup == "actpass"):
        raise RemoteProtocolError(f"DTLS role {compact.setup!r} is invalid in an {role}")
    return compact.fingerprint


def channel_binding(local_fingerprint: bytes, remote_fingerprint: bytes) -> bytes:
    """``SHA-256(min(fp_a, fp_b) || max(fp_a, fp_b))``: both ends of a WebRTC connection
    compute the same bytes from the two DTLS fingerprints (docs/decisions.md, D17)."""
    return hashlib.sha256(b"".join(sorted((local_fingerprint, remote_fingerprint)))).digest()


def _parse_candidate(value: str) -> tuple[str, int, str] | None:
    """``(address, port, type)`` of a UDP candidate we keep, else None (skipped).

    Kept: ``host`` candidates whose address is an IP literal or an mDNS name (the
    ``<uuid>.local`` that browsers put in place of their addresses), and ``srflx``
    candidates with an IP literal.  Candidates on other transports or components, of other
    types (relay, prflx), or with another name are legal but not kept; syntax errors raise.
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
    if component_id != 1 or transport.lower() != "udp" or port == 0:
        return None
    if cand_type not in ("host", "srflx"):
        return None
    if _MDNS_NAME.fullmatch(address):
        return (address, port, "host") if cand_type == "host" else None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # an FQDN, or an mDNS name of another form
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return None
    if ip.is_unspecified or ip.is_multicast:
        return None
    return str(ip), port, cand_type


def _check_candidate(candidate: tuple[str, int], *, names: bool) -> None:
    if not isinstance(candidate, tuple) or len(candidate) != 2:
        raise RemoteProtocolError("a candidate is an (address, port) pair")
    address, port = candidate
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise RemoteProtocolError("candidate port out of range")
    if not isinstance(address, str):
        raise RemoteProtocolError("candidate address is not text")
    if names and _MDNS_NAME.fullmatch(address):
        return
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise RemoteProtocolError("candidate address is not an IP address") from None
    if str(ip) != address:
        raise RemoteProtocolError("candidate address is not in canonical form")


@dataclass(frozen=True, slots=True)
class CompactSdp:
    """The parts of a data-channel SDP that differ between connections.

    ``from_sdp`` keeps the ICE credentials, the SHA-256 fingerprint, the DTLS role, the
    UDP host candidates (IP literals, and the ``<uuid>.local`` mDNS names that browsers
    show instead of their addresses) and the server-reflexive ones (IP literals), each
    list in its order, at most :data:`MAX_CANDIDATES` in all; ``to_sdp`` rebuilds a
    minimal standard SDP around them.  ``encode``/``decode`` are its binary form for
    signaling messages::

        u8 version | u8 setup (1 actpass, 2 active, 3 passive) | fingerprint[32]
        | u16 len | ice-ufrag | u16 len | ice-pwd
        | u8 count | count * (u8 kind | address | u16 port)

    where ``kind`` is 4 or 6 (a host IPv4 or IPv6 address, 4 or 16 bytes), and in version
    2 only, 0x14 or 0x16 (a server-reflexive IPv4 or IPv6 address) or 0x20 (an mDNS host
    name: the 16 bytes of its UUID).  ``encode`` writes version 1 when every candidate is
    a host IP address (as native nodes' are), so older nodes still read it.  Version 3
    is version 2 for a video section instead of a data channel (``media``: the media
    transport, :mod:`zmesh.runtime.media`, D58); ``to_sdp`` then writes one VP8 track
    (``sendrecv``, payload type 97, NACK, PLI, REMB, no RTX and no SSRCs: a lost
    packet is resent as it was, and RTP is routed by its ``mid`` extension).  Version 4
    is version 3 with an audio section after the video one (``audio``, D59: ``mid`` ``1``,
    Opus as payload type 111, bundled), which native media ends send as cover so that
    the link looks like a call; browsers' media offers stay version 3.

    Every parsing path raises :class:`~zmesh.errors.RemoteProtocolError` on bad input.
    The SDP must describe exactly one data-channel section (``mid`` ``0``, SCTP port
    5000), as libdatachannel, Chromium and Firefox produce for a data-only connection,
    or exactly one video section over ``UDP/TLS/RTP/SAVPF`` (``mid`` ``0``), optionally
    followed by one audio section (``mid`` ``1``).
    """

    ice_ufrag: str
    ice_pwd: str
    fingerprint: bytes
    setup: str  # "actpass" (offers), "active" or "passive" (answers)
    candidates: tuple[tuple[str, int], ...] = ()  # host: an IP address or an mDNS name
    reflexive: tuple[tuple[str, int], ...] = ()  # server-reflexive: an IP address
    media: bool = False  # a video section (the media transport), not a data channel
    audio: bool = False  # and an audio section after it (the media transport's cover audio)

    def __post_init__(self) -> None:
        if not _ICE_CHARS.fullmatch(self.ice_ufrag) or not 4 <= len(self.ice_ufrag) <= 256:
            raise RemoteProtocolError("invalid ICE username fragment")
        if not _ICE_CHARS.fullmatch(self.ice_pwd) or not 22 <= len(self.ice_pwd) <= 256:
            raise RemoteProtocolError("invalid ICE password")
        if not isinstance(self.fingerprint, bytes) or len(self.fingerprint) != 32:
            raise RemoteProtocolError("the fingerprint must be 32 bytes (SHA-256)")
        if self.setup not in _SETUP_CODES:
            raise RemoteProtocolError(f"invalid DTLS setup role {self.setup!r}")
        if not isinstance(self.candidates, tuple) or not isinstance(self.reflexive, tuple):
            raise RemoteProtocolError("candidates must be tuples")
        if len(self.candidates) + len(self.reflexive) > MAX_CANDIDATES:
            raise RemoteProtocolError("too many candidates")
        for candidate in self.candidates:
            _check_candidate(candidate, names=True)
        for candidate in self.reflexive:
            _check_candidate(candidate, names=False)
        if self.audio and not self.media:
            raise RemoteProtocolError("an audio section needs a video section")

    @classmethod
    def from_sdp(cls, sdp: str) -> "CompactSdp":
        lines = _sdp_lines(sdp)
        media = [line for line in lines if line.startswith("m=")]
        audio = len(media) == 2 and media[1][2:].split(" ")[:1] == ["audio"]
        if len(media) != (2 if audio else 1):
            raise RemoteProtocolError("SDP must have one media section (or video and audio)")
        fields = media[0][2:].split(" ")
        if audio:
            audio_fields = media[1][2:].split(" ")
            if len(audio_fields) < 4 or audio_fields[2] != "UDP/TLS/RTP/SAVPF":
                raise RemoteProtocolError("SDP audio section is not WebRTC audio")
            _int(audio_fields[1], "media port", 65535)
        video = len(fields) >= 4 and fields[0] == "video" and fields[2] == "UDP/TLS/RTP/SAVPF"
        if not video and (
            len(fields) != 4
            or fields[0] != "application"
            or fields[2] != "UDP/DTLS/SCTP"
            or fields[3] != "webrtc-datachannel"
        ):
            raise RemoteProtocolError("SDP media section is not a WebRTC data channel or video")
        _int(fields[1], "media port", 65535)
        if audio and not video:
            raise RemoteProtocolError("SDP audio section without a video section")
        mids = _attributes(lines, "mid")
        if mids and mids != (["0", "1"] if audio else ["0"]):
            raise RemoteProtocolError(f"unsupported media ids {mids!r:.40} (expected 0, 1)")
        for port in _attributes(lines, "sctp-port"):
            if _int(port, "SCTP port", 65535) != SCTP_PORT:
                raise RemoteProtocolError(f"unsupported SCTP port {port}")
        host: list[tuple[str, int]] = []
        reflexive: list[tuple[str, int]] = []
        for value in _attributes(lines, "candidate"):
            parsed = _parse_candidate(value)
            if parsed is None or len(host) + len(reflexive) >= MAX_CANDIDATES:
                continue
            pair, kept = parsed[:2], host if parsed[2] == "host" else reflexive
            if pair not in host and pair not in reflexive:  # a srflx equal to a host: once
                kept.append(pair)
        return cls(
            ice_ufrag=_single(_attributes(lines, "ice-ufrag"), "a=ice-ufrag"),
            ice_pwd=_single(_attributes(lines, "ice-pwd"), "a=ice-pwd"),
            fingerprint=_fingerprint_from_lines(lines),
            setup=_single(_attributes(lines, "setup"), "a=setup"),
            candidates=tuple(host),
            reflexive=tuple(reflexive),
            media=video,
            audio=audio,
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
            "a=group:BUNDLE 0 1" if self.audio else "a=group:BUNDLE 0",
            f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PAYLOAD}"
            if self.media
            else "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            f"a=ice-ufrag:{self.ice_ufrag}",
            f"a=ice-pwd:{self.ice_pwd}",
            "a=fingerprint:sha-256 " + self.fingerprint.hex(":").upper(),
            f"a=setup:{self.setup}",
            "a=mid:0",
        ]
        if self.media:
            lines += _VIDEO_LINES
        else:
            lines += [f"a=sctp-port:{SCTP_PORT}", f"a=max-message-size:{MAX_MESSAGE_SIZE}"]
        for i, (address, port) in enumerate(self.candidates):
            priority = (126 << 24) | ((0xFFFF - i) << 8) | 255  # RFC 8445 section 5.1.2.1
            lines.append(f"a=candidate:{i + 1} 1 UDP {priority} {address} {port} typ host")
        for i, (ip, port) in enumerate(self.reflexive, start=len(self.candidates)):
            priority = (100 << 24) | ((0xFFFF - i) << 8) | 255
            lines.append(
                f"a=candidate:{i + 1} 1 UDP {priority} {ip} {port} typ srflx raddr 0.0.0.0 rport 0"
            )
        lines.append("a=end-of-candidates")
        if self.audio:
            lines += [
                f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PAYLOAD}",
                "c=IN IP4 0.0.0.0",
                *lines[7:11],  # the video section's ICE, fingerprint and setup lines
                "a=mid:1",
                *_AUDIO_LINES,
            ]
        return "\r\n".join(lines) + "\r\n"

    def encode(self) -> bytes:
        plain = not self.reflexive and not any(_MDNS_NAME.fullmatch(a) for a, _ in self.candidates)
        version = (
            _COMPACT_V4
            if self.audio
            else _COMPACT_V3
            if self.media
            else _COMPACT_V1
            if plain
            else _COMPACT_V2
        )
        out = [
            bytes([version, _SETUP_CODES[self.setup]]),
            self.fingerprint,
            push_vector(self.ice_ufrag.encode("ascii"), 2),
            push_vector(self.ice_pwd.encode("ascii"), 2),
            bytes([len(self.candidates) + len(self.reflexive)]),
        ]
        for (address, port), srflx in [(c, False) for c in self.candidates] + [
            (c, True) for c in self.reflexive
        ]:
            if _MDNS_NAME.fullmatch(address):
                kind, packed = _HOST_MDNS, bytes.fromhex(address[:-6].replace("-", ""))
            else:
                packed = ipaddress.ip_address(address).packed
                kind = (_HOST_V4 if len(packed) == 4 else _HOST_V6) | (0x10 if srflx else 0)
            out.append(bytes([kind]) + packed + port.to_bytes(2, "big"))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "CompactSdp":
        buf = Buffer(data)
        version = buf.pull_uint8()
        if version not in (_COMPACT_V1, _COMPACT_V2, _COMPACT_V3, _COMPACT_V4):
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
        kinds: tuple[int, ...] = (_HOST_V4, _HOST_V6)
        if version != _COMPACT_V1:
            kinds += (_SRFLX_V4, _SRFLX_V6, _HOST_MDNS)
        host: list[tuple[str, int]] = []
        reflexive: list[tuple[str, int]] = []
        for _ in range(count):
            kind = buf.pull_uint8()
            if kind not in kinds:
                raise RemoteProtocolError(f"unknown candidate kind {kind}")
            if kind == _HOST_MDNS:
                text = buf.pull_bytes(16).hex()
                address = f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}.local"
            elif kind & 0x0F == 4:
                address = str(ipaddress.IPv4Address(buf.pull_bytes(4)))
            else:
                address = str(ipaddress.IPv6Address(buf.pull_bytes(16)))
            (reflexive if kind & 0x10 else host).append((address, buf.pull_uint16()))
        buf.expect_eof()
        if (
            version == _COMPACT_V2
            and not reflexive
            and not any(_MDNS_NAME.fullmatch(a) for a, _ in host)
        ):
            raise RemoteProtocolError("compact SDP version 2 without a candidate that needs it")
        return cls(  # __post_init__ checks the credentials' characters
            ice_ufrag=ufrag.decode("latin-1"),
            ice_pwd=pwd.decode("latin-1"),
            fingerprint=fingerprint,
            setup=setup,
            candidates=tuple(host),
            reflexive=tuple(reflexive),
            media=version in (_COMPACT_V3, _COMPACT_V4),
            audio=version == _COMPACT_V4,
        )


#: a browser's own lines that local_media_offer keeps (its sending stream's SSRC and msid)
_STREAM_LINES: Final = ("a=ssrc:", "a=msid:")
MAX_STREAM_LINES: Final = 8


def local_media_offer(created: str) -> str:
    """The offer a browser sets as its local description for the media transport (D58),
    from the one ``createOffer`` made for its VP8-only video transceiver.

    The native end sees only the compact form, so it answers what version 3 expands to
    (VP8 as payload type 97, the mid and abs-send-time extensions as 1 and 3): the browser
    must offer exactly that, not its own payload types and extension ids (Chromium
    refuses such an answer: "RTP extension ID reassignment not supported").  Its
    ``a=ssrc`` and ``a=msid`` lines are kept: without them Chromium sends nothing.
    LocalProtocolError if ``created`` is not a video offer."""
    try:
        compact = CompactSdp.from_sdp(created)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"not a media offer: {exc}") from None
    if not compact.media or compact.setup != "actpass":
        raise LocalProtocolError("not a media offer: no video section or not an offer")
    keep = [line for line in _sdp_lines(created) if line.startswith(_STREAM_LINES)]
    if len(keep) > MAX_STREAM_LINES:
        raise LocalProtocolError(f"{len(keep)} ssrc and msid lines in a media offer")
    expanded = compact.to_sdp("offer").split("\r\n")
    end = expanded.index("a=end-of-candidates")
    return "\r\n".join(expanded[:end] + keep + expanded[end:])
