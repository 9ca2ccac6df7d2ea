"""The SDP codec (zmesh/signaling/sdp.py): fingerprints, the compact binary form, the
channel binding.  Whole, split, with trailing data, and fuzzed: any input either parses
or raises RemoteProtocolError."""

import contextlib
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from chromium_sdp import CHROMIUM_VIDEO_OFFER
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError, RemoteProtocolError
from zmesh.signaling.sdp import (
    MAX_CANDIDATES,
    MAX_SDP_SIZE,
    CompactSdp,
    channel_binding,
    local_media_offer,
    remote_fingerprint,
    sdp_fingerprint,
)

# A real offer from libdatachannel (dial(loopback=True)).
LIBDATACHANNEL_OFFER = (
    "v=0\r\no=rtc 651457258 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\na=ice-options:ice2 trickle\r\n"
    "a=fingerprint:sha-256 E3:18:6E:A0:DA:DB:8F:C6:14:F0:48:04:7F:1B:5F:B5:C5:66:99:D6:A3:5B:"
    "AD:9E:BE:9F:23:1D:B5:49:6B:DE\r\n"
    "m=application 53231 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 192.0.2.2\r\n"
    "a=mid:0\r\na=sendrecv\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
    "a=setup:actpass\r\na=ice-ufrag:Vswi\r\na=ice-pwd:O1T8Nt4ZLvd6AVPXEAutml\r\n"
    "a=candidate:lo 1 UDP 2130706431 127.0.0.1 53231 typ host\r\n"
    "a=candidate:2 1 UDP 2116026111 fd00::2 53231 typ host\r\n"
    "a=candidate:1 1 UDP 2114977791 192.0.2.2 53231 typ host\r\na=end-of-candidates\r\n"
)
OFFER_FINGERPRINT = bytes.fromhex(
    "E3186EA0DADB8FC614F048047F1B5FB5C56699D6A35BAD9EBE9F231DB5496BDE"
)

# The shape of a Chromium data-channel offer: an mDNS host candidate and a srflx one.
CHROMIUM_STYLE_OFFER = (
    "v=0\r\no=- 4215775240449105457 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=candidate:3031411337 1 udp 2113937151 4d5a6c2e-0b5d-4b3c-9f3a-0e2b9a4f1c11.local "
    "54321 typ host generation 0 network-cost 999\r\n"
    "a=candidate:842163049 1 udp 1677729535 203.0.113.7 54321 typ srflx raddr 0.0.0.0 "
    "rport 0 generation 0 network-cost 999\r\n"
    "a=candidate:1 1 udp 2122260223 192.168.1.20 54322 typ host generation 0\r\n"
    "a=ice-ufrag:Wq3L\r\na=ice-pwd:7d9Xg2iNbV0mBq3o1Kx5zJ1y\r\na=ice-options:trickle\r\n"
    "a=fingerprint:SHA-256 e3:18:6e:a0:da:db:8f:c6:14:f0:48:04:7f:1b:5f:b5:c5:66:99:d6:a3:5b:"
    "ad:9e:be:9f:23:1d:b5:49:6b:de\r\n"
    "a=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
)


def test_sdp_fingerprint() -> None:
    assert sdp_fingerprint(LIBDATACHANNEL_OFFER) == OFFER_FINGERPRINT
    assert sdp_fingerprint(CHROMIUM_STYLE_OFFER) == OFFER_FINGERPRINT  # case, level
    both = LIBDATACHANNEL_OFFER.replace("a=setup", "a=fingerprint:sha-1 00:11:22:33\r\na=setup")
    assert sdp_fingerprint(both) == OFFER_FINGERPRINT  # other hashes are ignored


@pytest.mark.parametrize(
    "sdp",
    [
        "",
        "v=0\r\n",
        LIBDATACHANNEL_OFFER.replace("sha-256", "sha-1"),  # no SHA-256 fingerprint
        LIBDATACHANNEL_OFFER.replace("E3:18", "E3:1"),  # short byte
        LIBDATACHANNEL_OFFER.replace("E3:18", "E3:18:00"),  # 33 bytes
        LIBDATACHANNEL_OFFER.replace("E3:18", "G3:18"),  # not hex
        LIBDATACHANNEL_OFFER.replace("E3:18", "E318"),  # no colon
        LIBDATACHANNEL_OFFER.replace("sha-256 ", "sha-256"),  # no separator
        LIBDATACHANNEL_OFFER.replace(
            "a=setup", "a=fingerprint:sha-256 " + ":".join(["00"] * 32) + "\r\na=setup"
        ),  # two fingerprints that disagree
        "a=fingerprint:sha-256 " + ":".join(["00"] * 32) * 3000,  # too large
    ],
)
def test_sdp_fingerprint_rejects_malformed(sdp: str) -> None:
    with pytest.raises(RemoteProtocolError):
        sdp_fingerprint(sdp)


def test_compact_from_real_sdp() -> None:
    compact = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER)
    assert compact == CompactSdp(
        ice_ufrag="Vswi",
        ice_pwd="O1T8Nt4ZLvd6AVPXEAutml",
        fingerprint=OFFER_FINGERPRINT,
        setup="actpass",
        candidates=(("127.0.0.1", 53231), ("fd00::2", 53231), ("192.0.2.2", 53231)),
    )
    assert CompactSdp.decode(compact.encode()) == compact
    assert len(compact.encode()) == 2 + 32 + 2 + 4 + 2 + 22 + 1 + 7 + 19 + 7
    # Browser SDP: the mDNS host name, the IP host one and the srflx one are all kept.
    chromium = CompactSdp.from_sdp(CHROMIUM_STYLE_OFFER)
    assert chromium.candidates == (
        ("4d5a6c2e-0b5d-4b3c-9f3a-0e2b9a4f1c11.local", 54321),
        ("192.168.1.20", 54322),
    )
    assert chromium.reflexive == (("203.0.113.7", 54321),)
    assert chromium.fingerprint == OFFER_FINGERPRINT
    assert CompactSdp.decode(chromium.encode()) == chromium
    assert chromium.encode()[0] == 2  # version 2: it has candidates version 1 cannot carry
    assert CompactSdp.from_sdp(chromium.to_sdp("offer")) == chromium


def test_compact_to_sdp_roles() -> None:
    offer = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER)
    sdp = offer.to_sdp("offer")
    for line in (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
        "a=mid:0",
        "a=group:BUNDLE 0",
        "a=setup:actpass",
    ):
        assert line in sdp.split("\r\n")
    assert CompactSdp.from_sdp(sdp) == offer
    with pytest.raises(RemoteProtocolError):
        offer.to_sdp("answer")  # actpass is an offer's role
    with pytest.raises(LocalProtocolError):
        offer.to_sdp("pranswer")
    active = CompactSdp(offer.ice_ufrag, offer.ice_pwd, offer.fingerprint, "active")
    assert "a=setup:active" in active.to_sdp("answer")
    with pytest.raises(RemoteProtocolError):
        active.to_sdp("offer")


@pytest.mark.parametrize(
    "sdp",
    [
        LIBDATACHANNEL_OFFER.replace("a=mid:0", "a=mid:data"),
        LIBDATACHANNEL_OFFER.replace("a=sctp-port:5000", "a=sctp-port:5001"),
        LIBDATACHANNEL_OFFER.replace("webrtc-datachannel", "5000"),
        LIBDATACHANNEL_OFFER + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        LIBDATACHANNEL_OFFER.replace("a=ice-ufrag:Vswi", "a=ice-ufrag:Vsw"),  # too short
        LIBDATACHANNEL_OFFER.replace("a=ice-pwd:", "a=ice-pwd:x\r\na=ice-pwd:"),
        LIBDATACHANNEL_OFFER.replace("a=setup:actpass", "a=setup:holdconn"),
        LIBDATACHANNEL_OFFER.replace("53231 typ host", "99999 typ host"),
        LIBDATACHANNEL_OFFER.replace("UDP 2130706431", "UDP 2130706431x"),
        LIBDATACHANNEL_OFFER.replace("lo 1 UDP", "lo 1\u0661 UDP"),  # a non-ASCII digit
        LIBDATACHANNEL_OFFER.replace(" typ host\r\n", " host\r\n"),
    ],
)
def test_compact_rejects_unusable_sdp(sdp: str) -> None:
    with pytest.raises(RemoteProtocolError):
        CompactSdp.from_sdp(sdp)


ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).filter(
    lambda ip: not ip.is_unspecified and not ip.is_multicast
)
mdns_names = st.uuids().map(lambda u: f"{u}.local")
compacts = st.builds(
    CompactSdp,
    ice_ufrag=st.text(ICE_CHARS, min_size=4, max_size=256),
    ice_pwd=st.text(ICE_CHARS, min_size=22, max_size=256),
    fingerprint=st.binary(min_size=32, max_size=32),
    setup=st.sampled_from(["actpass", "active", "passive"]),
    candidates=st.lists(
        st.tuples(st.one_of(addresses.map(str), mdns_names), st.integers(1, 65535)),
        max_size=MAX_CANDIDATES // 2,
        unique=True,
    ).map(tuple),
    reflexive=st.lists(
        st.tuples(addresses.map(str), st.integers(1, 65535)),
        max_size=MAX_CANDIDATES // 2,
        unique=True,
    ).map(tuple),
    media=st.booleans(),
).filter(lambda c: not set(c.candidates) & set(c.reflexive))
# version 4: a video section and an audio one (D59)
compacts = st.one_of(
    compacts, compacts.filter(lambda c: c.media).map(lambda c: replace(c, audio=True))
)


@settings(max_examples=300, deadline=None)
@given(compacts)
def test_compact_round_trips(compact: CompactSdp) -> None:
    role = "offer" if compact.setup == "actpass" else "answer"
    assert CompactSdp.from_sdp(compact.to_sdp(role)) == compact
    assert CompactSdp.decode(compact.encode()) == compact
    assert sdp_fingerprint(compact.to_sdp(role)) == compact.fingerprint


def mutate(base: str, edits: list[tuple[int, int, str]]) -> str:
    for position, length, insert in edits:
        at = position % (len(base) + 1)
        base = base[:at] + insert + base[at + length :]
    return base


edits = st.lists(
    st.tuples(
        st.integers(0, 2000),
        st.integers(0, 8),
        st.one_of(
            st.text(max_size=6),
            st.sampled_from(["\r\n", ":", " ", "a=", "m=application ", "typ", "sha-256", "0"]),
        ),
    ),
    max_size=6,
)


def parses_or_refuses(parse: Callable[[Any], object], value: object) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse(value)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=400), edits.map(lambda e: mutate(LIBDATACHANNEL_OFFER, e))))
def test_sdp_parsers_raise_only_remote_protocol_error(sdp: str) -> None:
    parses_or_refuses(CompactSdp.from_sdp, sdp)
    parses_or_refuses(sdp_fingerprint, sdp)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(compacts, st.integers(0, 600), st.binary(max_size=3)).map(
            lambda t: (lambda b: b[: t[1]] + t[2] + b[t[1] + len(t[2]) :])(t[0].encode())
        ),
    )
)
def test_compact_decode_raises_only_remote_protocol_error(data: bytes) -> None:
    parses_or_refuses(CompactSdp.decode, data)


def test_compact_rejects_bad_fields() -> None:
    good = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER)
    for kwargs in (
        {"ice_ufrag": "ab\r\na=x"},
        {"ice_pwd": "short"},
        {"fingerprint": bytes(31)},
        {"setup": "holdconn"},
        {"candidates": (("127.0.0.01", 1),)},
        {"candidates": (("127.0.0.1", 0),)},
        {"candidates": (("::1", 1),) * (MAX_CANDIDATES + 1)},
    ):
        fields = {
            "ice_ufrag": good.ice_ufrag,
            "ice_pwd": good.ice_pwd,
            "fingerprint": good.fingerprint,
            "setup": good.setup,
            "candidates": good.candidates,
        }
        fields.update(kwargs)
        with pytest.raises(RemoteProtocolError):
            CompactSdp(**fields)
    assert ipaddress.ip_address(good.candidates[0][0]).is_loopback


# -- whole, split, trailing ------------------------------------------------------------


def test_compact_vector() -> None:
    """The binary form of the libdatachannel offer, byte for byte."""
    expected = (
        "0101" + OFFER_FINGERPRINT.hex() + "0004" + b"Vswi".hex()
        + "0016" + b"O1T8Nt4ZLvd6AVPXEAutml".hex() + "03"
        + "04" + "7f000001" + "cfef"
        + "06" + "fd000000000000000000000000000002" + "cfef"
        + "04" + "c0000202" + "cfef"
    )  # fmt: skip
    compact = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER)
    assert compact.encode().hex() == expected
    assert CompactSdp.decode(bytes.fromhex(expected)) == compact


def test_compact_decode_refuses_every_prefix_and_trailing_bytes() -> None:
    data = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER).encode()
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            CompactSdp.decode(data[:cut])
    for extra in (b"\x00", b"\x04", data):
        with pytest.raises(RemoteProtocolError):
            CompactSdp.decode(data + extra)


def test_sdp_line_endings_and_trailing_lines() -> None:
    """LF-only and CRLF SDP parse alike; unknown trailing attributes are ignored, a second
    media section is not, and the size bound holds exactly."""
    expected = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER)
    assert CompactSdp.from_sdp(LIBDATACHANNEL_OFFER.replace("\r\n", "\n")) == expected
    assert CompactSdp.from_sdp(LIBDATACHANNEL_OFFER + "a=x-unknown:1\r\n\r\n") == expected
    with pytest.raises(RemoteProtocolError):
        CompactSdp.from_sdp(LIBDATACHANNEL_OFFER + "m=application 9 UDP/DTLS/SCTP x\r\n")
    padding = "a=x-pad:" + "p" * (MAX_SDP_SIZE - len(LIBDATACHANNEL_OFFER) - 10) + "\r\n"
    at_limit = LIBDATACHANNEL_OFFER + padding
    assert len(at_limit) == MAX_SDP_SIZE
    assert CompactSdp.from_sdp(at_limit) == expected
    with pytest.raises(RemoteProtocolError, match="too large"):
        CompactSdp.from_sdp(at_limit + "a")


def test_sdp_split_at_every_line_parses_only_when_whole() -> None:
    """A truncated SDP (cut at any line) either lacks something and is refused, or holds
    everything we keep and parses to the same value: never anything else."""
    expected = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER)
    lines = LIBDATACHANNEL_OFFER.split("\r\n")
    for cut in range(len(lines)):
        part = "\r\n".join(lines[:cut])
        try:
            parsed = CompactSdp.from_sdp(part)
        except RemoteProtocolError:
            continue
        assert parsed.fingerprint == expected.fingerprint
        assert parsed.candidates == expected.candidates[: len(parsed.candidates)]


def test_remote_fingerprint_checks_the_role() -> None:
    assert remote_fingerprint(LIBDATACHANNEL_OFFER, "offer") == OFFER_FINGERPRINT
    with pytest.raises(RemoteProtocolError, match="actpass"):
        remote_fingerprint(LIBDATACHANNEL_OFFER, "answer")
    active = LIBDATACHANNEL_OFFER.replace("a=setup:actpass", "a=setup:active")
    assert remote_fingerprint(active, "answer") == OFFER_FINGERPRINT
    with pytest.raises(RemoteProtocolError):
        remote_fingerprint(active, "offer")


def test_channel_binding_is_symmetric() -> None:
    a, b = bytes(range(32)), bytes(range(1, 33))
    assert channel_binding(a, b) == channel_binding(b, a) == hashlib.sha256(a + b).digest()
    assert channel_binding(a, a) != channel_binding(a, b)


# -- mDNS names and server-reflexive candidates (compact version 2, D50) --------------------

MDNS = "4d5a6c2e-0b5d-4b3c-9f3a-0e2b9a4f1c11.local"


def test_compact_v2_vector() -> None:
    """An mDNS host name and a srflx address, byte for byte."""
    compact = CompactSdp(
        "Wq3L", "7d9Xg2iNbV0mBq3o1Kx5zJ1y", OFFER_FINGERPRINT, "actpass",
        candidates=((MDNS, 54321),), reflexive=(("203.0.113.7", 54321),),
    )  # fmt: skip
    expected = (
        "0201" + OFFER_FINGERPRINT.hex() + "0004" + b"Wq3L".hex()
        + "0018" + b"7d9Xg2iNbV0mBq3o1Kx5zJ1y".hex() + "02"
        + "20" + "4d5a6c2e0b5d4b3c9f3a0e2b9a4f1c11" + "d431"
        + "14" + "cb007107" + "d431"
    )  # fmt: skip
    assert compact.encode().hex() == expected
    assert CompactSdp.decode(bytes.fromhex(expected)) == compact
    sdp = compact.to_sdp("offer")
    assert f"a=candidate:1 1 UDP 2130706431 {MDNS} 54321 typ host" in sdp
    assert "203.0.113.7 54321 typ srflx raddr 0.0.0.0 rport 0" in sdp
    data = compact.encode()
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            CompactSdp.decode(data[:cut])
    with pytest.raises(RemoteProtocolError):
        CompactSdp.decode(data + b"\x00")


def test_compact_versions_are_strict() -> None:
    """Version 1 carries no srflx or mDNS kinds, and version 2 is written only when needed
    (so there is one encoding of each value)."""
    v2 = CompactSdp("Wq3L", "7d9Xg2iNbV0mBq3o1Kx5zJ1y", OFFER_FINGERPRINT, "actpass",
                    reflexive=(("203.0.113.7", 1),)).encode()  # fmt: skip
    with pytest.raises(RemoteProtocolError, match="kind"):
        CompactSdp.decode(b"\x01" + v2[1:])
    plain = CompactSdp.from_sdp(LIBDATACHANNEL_OFFER).encode()
    assert plain[0] == 1
    with pytest.raises(RemoteProtocolError, match="version 2"):
        CompactSdp.decode(b"\x02" + plain[1:])


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        (f"a=candidate:1 1 udp 1 {MDNS} 9 typ host", ((MDNS, 9),)),
        (f"a=candidate:1 1 udp 1 {MDNS.upper()} 9 typ host", ()),  # not the browsers' form
        ("a=candidate:1 1 udp 1 printer.local 9 typ host", ()),  # a name, not a UUID
        (f"a=candidate:1 1 udp 1 {MDNS} 9 typ srflx raddr 0.0.0.0 rport 0", ()),
        ("a=candidate:1 1 udp 1 203.0.113.7 9 typ relay raddr 0.0.0.0 rport 0", ()),
        ("a=candidate:1 1 udp 1 203.0.113.7 9 typ prflx", ()),
        ("a=candidate:1 1 tcp 1 203.0.113.7 9 typ srflx", ()),
    ],
)
def test_candidate_kinds(line: str, kept: tuple[tuple[str, int], ...]) -> None:
    sdp = LIBDATACHANNEL_OFFER.replace("a=candidate:lo", line + "\r\na=candidate:lo")
    compact = CompactSdp.from_sdp(sdp)
    names = tuple(c for c in compact.candidates if c[0].endswith(".local"))
    assert names + compact.reflexive == kept


def test_srflx_equal_to_a_host_candidate_is_kept_once() -> None:
    sdp = LIBDATACHANNEL_OFFER.replace(
        "a=end-of-candidates",
        "a=candidate:9 1 udp 1 127.0.0.1 53231 typ srflx\r\na=end-of-candidates",
    )
    compact = CompactSdp.from_sdp(sdp)
    assert compact.reflexive == ()
    assert ("127.0.0.1", 53231) in compact.candidates


def test_candidate_cap_counts_both_kinds() -> None:
    lines = [f"a=candidate:{i} 1 udp 1 10.0.0.{i} 9 typ srflx" for i in range(1, 40)]
    sdp = LIBDATACHANNEL_OFFER.replace("a=end-of-candidates", "\r\n".join(lines))
    compact = CompactSdp.from_sdp(sdp)
    assert len(compact.candidates) + len(compact.reflexive) == MAX_CANDIDATES
    with pytest.raises(RemoteProtocolError, match="too many"):
        CompactSdp(
            compact.ice_ufrag, compact.ice_pwd, compact.fingerprint, "actpass",
            compact.candidates, (*compact.reflexive, ("10.9.9.9", 1)),
        )  # fmt: skip
    with pytest.raises(RemoteProtocolError):
        CompactSdp("Wq3L", "7d9Xg2iNbV0mBq3o1Kx5zJ1y", OFFER_FINGERPRINT, "actpass",
                   reflexive=((MDNS, 1),))  # fmt: skip


# A real offer from aiortc 1.16 (zmesh.runtime.media.dial(loopback=True)): one VP8 track.
AIORTC_OFFER = (
    "v=0\r\no=- 4005086384 4005086384 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\na=msid-semantic:WMS *\r\n"
    "m=video 46187 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102\r\nc=IN IP4 127.0.0.1\r\n"
    "a=sendrecv\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\na=mid:0\r\n"
    "a=msid:73ba83e4-4a12-42b2-8e49-930ea1e40ccb ba56dbb6-5e14-452f-ad27-6d61ba7cd192\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=ssrc-group:FID 2593081328 1400132569\r\n"
    "a=ssrc:2593081328 cname:d78ccba8-46d5-4a36-8604-b4ba94e94d34\r\n"
    "a=rtpmap:97 VP8/90000\r\na=rtcp-fb:97 nack\r\na=rtcp-fb:97 nack pli\r\n"
    "a=rtcp-fb:97 goog-remb\r\na=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=97\r\n"
    "a=rtpmap:99 H264/90000\r\n"
    "a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 46187 typ host\r\n"
    "a=end-of-candidates\r\na=ice-ufrag:nPu2\r\na=ice-pwd:qMj245A5YI3oIoSdhOs5kX\r\n"
    "a=fingerprint:sha-256 5E:52:29:A2:62:C6:2B:AF:9B:C1:95:71:F4:DE:78:F6:74:9E:53:2E:1B:59:"
    "C8:22:3C:7E:86:25:8B:FA:FE:E5\r\n"
    "a=fingerprint:sha-384 57:23:40:87:D0:2B:DA:E6:8E:59:AA:DE:5F:3E:05:09:E7:68:80:CF:6C:D7:"
    "18:F0:35:56:9F:4C:59:56:BE:93:C1:1C:0A:F4:DD:4B:55:27:95:C6:A7:38:BE:FC:EF:FF\r\n"
    "a=setup:actpass\r\n"
)


def test_compact_video_section_is_version_3() -> None:
    """The media transport's offer (D58): a video section, in version 3, expanded to one
    VP8 track with NACK and no RTX."""
    compact = CompactSdp.from_sdp(AIORTC_OFFER)
    assert compact.media and compact.candidates == (("127.0.0.1", 46187),)
    assert compact.fingerprint.hex().startswith("5e5229a2")
    data = compact.encode()
    assert data[0] == 3
    assert CompactSdp.decode(data) == compact
    sdp = compact.to_sdp("offer")
    assert "m=video 9 UDP/TLS/RTP/SAVPF 97\r\n" in sdp and "a=rtpmap:97 VP8/90000" in sdp
    assert "a=rtcp-fb:97 nack" in sdp and "rtx" not in sdp and "sctp" not in sdp
    assert CompactSdp.from_sdp(sdp) == compact
    assert remote_fingerprint(AIORTC_OFFER, "offer", media=True) == compact.fingerprint
    with pytest.raises(RemoteProtocolError, match="data channel"):
        remote_fingerprint(AIORTC_OFFER, "offer")  # a video offer to a data-channel node
    with pytest.raises(RemoteProtocolError, match="video"):
        remote_fingerprint(LIBDATACHANNEL_OFFER, "offer", media=True)
    with pytest.raises(RemoteProtocolError):  # audio is no video
        CompactSdp.from_sdp(AIORTC_OFFER.replace("m=video", "m=audio"))
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            CompactSdp.decode(data[:cut])


def test_local_media_offer_is_what_the_compact_form_expands_to() -> None:
    """The browser's end of the media transport (D58) offers payload type 97 and the
    extension ids of version 3, keeping its own SSRC and msid lines."""
    offer = local_media_offer(CHROMIUM_VIDEO_OFFER)
    compact = CompactSdp.from_sdp(CHROMIUM_VIDEO_OFFER)
    assert CompactSdp.from_sdp(offer) == compact
    expanded = compact.to_sdp("offer")
    kept = [line for line in offer.split("\r\n") if line not in expanded.split("\r\n")]
    assert kept == [
        "a=msid:- 00f54028-2810-46e4-9ef0-120782b0ad0a",
        "a=ssrc:2417716019 cname:rOZ0jo4ZRXGSfRSV",
        "a=ssrc:2417716019 msid:- 00f54028-2810-46e4-9ef0-120782b0ad0a",
    ]
    assert "a=rtpmap:97 VP8/90000" in offer and "rtpmap:96" not in offer
    assert offer.endswith("a=end-of-candidates\r\n")
    with pytest.raises(LocalProtocolError):  # a data channel's offer
        local_media_offer(LIBDATACHANNEL_OFFER)
    with pytest.raises(LocalProtocolError):  # an answer
        local_media_offer(CHROMIUM_VIDEO_OFFER.replace("actpass", "active"))
    many = CHROMIUM_VIDEO_OFFER + "a=ssrc:1 cname:x\r\n" * 8
    with pytest.raises(LocalProtocolError, match="ssrc"):
        local_media_offer(many)


def test_compact_video_and_audio_is_version_4() -> None:
    """A native media end's offer (D59): a VP8 section and an Opus one, bundled, in
    version 4; older readers refuse version 4, browsers' offers stay version 3."""
    offer = AIORTC_OFFER.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1") + (
        "m=audio 46187 UDP/TLS/RTP/SAVPF 111 0 8\r\nc=IN IP4 127.0.0.1\r\n"
        "a=sendrecv\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=mid:1\r\n"
        "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=ice-ufrag:nPu2\r\na=ice-pwd:qMj245A5YI3oIoSdhOs5kX\r\n"
        "a=fingerprint:sha-256 5E:52:29:A2:62:C6:2B:AF:9B:C1:95:71:F4:DE:78:F6:74:9E:53:2E:"
        "1B:59:C8:22:3C:7E:86:25:8B:FA:FE:E5\r\na=setup:actpass\r\n"
    )
    compact = CompactSdp.from_sdp(offer)
    assert compact.media and compact.audio
    assert compact == replace(CompactSdp.from_sdp(AIORTC_OFFER), audio=True)
    data = compact.encode()
    assert data[0] == 4 and CompactSdp.decode(data) == compact
    sdp = compact.to_sdp("offer")
    assert "a=group:BUNDLE 0 1\r\n" in sdp
    video, audio = sdp.split("m=audio")
    assert "a=rtpmap:97 VP8/90000" in video and "opus" not in video
    assert audio.startswith(" 9 UDP/TLS/RTP/SAVPF 111\r\n")
    assert "a=mid:1\r\n" in audio and "a=rtpmap:111 opus/48000/2\r\n" in audio
    assert "a=setup:actpass" in audio and "a=ice-ufrag:nPu2" in audio
    assert CompactSdp.from_sdp(sdp) == compact
    assert remote_fingerprint(offer, "offer", media=True) == compact.fingerprint
    assert not CompactSdp.from_sdp(CHROMIUM_VIDEO_OFFER).audio
    assert local_media_offer(CHROMIUM_VIDEO_OFFER).count("m=") == 1
    for bad in (
        offer.replace("a=mid:1", "a=mid:2"),  # unknown mid
        offer.replace("m=video", "m=audio", 1),  # two audio sections
        offer.replace("m=audio 46187 UDP/TLS/RTP/SAVPF", "m=audio 46187 RTP/AVP"),
        offer + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",  # three sections
        offer.split("m=video")[0]
        + LIBDATACHANNEL_OFFER.split("a=msid-semantic")[1].replace(
            "a=mid:0", "a=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1"
        ),  # a data channel and audio
    ):
        with pytest.raises(RemoteProtocolError):
            CompactSdp.from_sdp(bad)
    with pytest.raises(RemoteProtocolError, match="video"):
        replace(compact, media=False)
    for cut in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            CompactSdp.decode(data[:cut])
