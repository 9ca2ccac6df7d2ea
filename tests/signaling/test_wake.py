"""Wake records and dial offers (zmesh/signaling/wake.py): codecs, signatures, bounds."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.codec import Buffer
from zmesh.errors import CloseCode, LocalProtocolError, RemoteProtocolError
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.rng import DeterministicRng
from zmesh.signaling.sdp import CompactSdp
from zmesh.signaling.wake import (
    DialGuard,
    WakeBook,
    WakeDial,
    WakeRecord,
    decode_dial,
    decode_record,
    is_wake_payload,
    make_dial,
    vapid_key_of,
)

RNG = DeterministicRng(11, b"wake")
NOW = 1_800_000_000.0
BROWSER, NATIVE, OTHER = (Identity.generate(RNG) for _ in range(3))
KEY = "B" + "A" * 86
FP = bytes(range(32))
ANSWER = CompactSdp("K1+t", "NfyUztTm1suk2fKkvFCQ1x", b"n" * 32, "active", (("127.0.0.1", 4000),))


def descriptor(identity: Identity, *addresses: str) -> Descriptor:
    return identity.make_descriptor(
        flags=Flags.RELAY, onion_epoch=1, onion_pk=bytes(1216), published=int(NOW),
        lifetime=3600, addresses=addresses,
    )  # fmt: skip


def record(
    now: float = NOW, *, by: Identity = BROWSER, to: Identity = NATIVE, lifetime: int = 3600
) -> WakeRecord:
    unsigned = WakeRecord(
        by.node_id, to.node_id, int(now * 1000), lifetime, FP, "http://127.0.0.1:9/wpush/abc",
        b"\x04" + bytes(64), bytes(16), descriptor(by).encode(),
    )  # fmt: skip
    return unsigned.sign(by)


def dial(now: float = NOW, *, by: Identity = NATIVE, nonce: bytes = b"n" * 16, **kw: int) -> bytes:
    made = make_dial(
        by, BROWSER.node_id, ice_ufrag="abcd1234", ice_pwd="0123456789abcdef01234567",
        answer=ANSWER, nonce=nonce, now=now, **kw,
    )  # fmt: skip
    return made.encode()


DIAL = dial()
WAKE_NODES = {NATIVE.node_id: descriptor(NATIVE, "webpush:" + KEY)}


# -- codecs ------------------------------------------------------------------------------------
def test_record_round_trip_whole_split_and_trailing() -> None:
    data = record().encode()
    assert is_wake_payload(data) and decode_record(data) == record()
    for cut in (0, 1, 66, len(data) - 1):
        with pytest.raises(RemoteProtocolError):
            decode_record(data[:cut])
    with pytest.raises(RemoteProtocolError):
        decode_record(data + b"\x00")


def test_dial_round_trip_whole_split_and_trailing() -> None:
    data = dial()
    parsed = decode_dial(data)
    assert parsed.encode() == data and parsed.answer_sdp() == ANSWER
    assert len(data) < 3991  # fits one padded push (zmesh.runtime.push.MAX_PUSH_PAYLOAD)
    for cut in range(0, len(data), 97):
        with pytest.raises(RemoteProtocolError):
            decode_dial(data[:cut])
    with pytest.raises(RemoteProtocolError):
        decode_dial(data + b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
@example(b"\x81\x01")
@example(b"\x82\x01" + bytes(200))
def test_fuzz_either_parses_or_raises_the_remote_error(data: bytes) -> None:
    for parse in (decode_record, decode_dial):
        try:
            parse(data)
        except RemoteProtocolError:
            pass


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 4000), st.integers(0, 255))
def test_fuzz_flipped_bytes_of_a_dial_never_pass_the_guard(at: int, value: int) -> None:
    data = bytearray(DIAL)
    at %= len(data)
    if data[at] == value:
        return
    data[at] = value
    try:
        DialGuard(BROWSER.node_id).open(bytes(data), WAKE_NODES, NOW)
    except RemoteProtocolError:
        return
    raise AssertionError("a modified dial offer was accepted")


def test_vapid_key_from_the_descriptor() -> None:
    assert vapid_key_of(WAKE_NODES[NATIVE.node_id]) == KEY
    assert vapid_key_of(descriptor(NATIVE, "http://127.0.0.1:1", "webpush:short")) is None


def test_local_misuse_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        record().sign(NATIVE)
    with pytest.raises(LocalProtocolError):
        record(lifetime=0)
    with pytest.raises(LocalProtocolError):
        dial(lifetime_ms=10**6)


# -- the wake book -----------------------------------------------------------------------------
def test_book_keeps_the_newest_record_per_browser() -> None:
    book = WakeBook(NATIVE.node_id)
    stored = book.receive(record().encode(), BROWSER.node_id, NOW)
    assert stored.descriptor.node_id == BROWSER.node_id and len(book) == 1
    with pytest.raises(RemoteProtocolError) as exc:  # a replay
        book.receive(record().encode(), BROWSER.node_id, NOW + 1)
    assert exc.value.code is CloseCode.REPLAY
    book.receive(record(NOW + 5).encode(), BROWSER.node_id, NOW + 5)
    assert len(book) == 1 and book.get(BROWSER.node_id, NOW + 6) is not None
    assert book.get(BROWSER.node_id, NOW + 5 + 3600) is None  # expired


@pytest.mark.parametrize(
    ("data", "origin", "now"),
    [
        (record(to=OTHER).encode(), BROWSER.node_id, NOW),  # for another node
        (record().encode(), OTHER.node_id, NOW),  # relayed by someone else
        (record().encode(), BROWSER.node_id, NOW + 600),  # stale
        (record().encode()[:-1] + b"\x00", BROWSER.node_id, NOW),  # forged
    ],
)
def test_book_refuses_bad_records(data: bytes, origin: bytes, now: float) -> None:
    book = WakeBook(NATIVE.node_id)
    with pytest.raises(RemoteProtocolError):
        book.receive(data, origin, now)
    assert len(book) == 0


def test_book_budget_per_peer_and_capacity() -> None:
    book = WakeBook(NATIVE.node_id, capacity=2, rate=0.0, burst=2)
    book.receive(record(NOW).encode(), BROWSER.node_id, NOW)
    book.receive(record(NOW + 1).encode(), BROWSER.node_id, NOW + 1)
    with pytest.raises(RemoteProtocolError) as exc:  # the budget: no signature checked
        book.receive(record(NOW + 2).encode(), BROWSER.node_id, NOW + 2)
    assert exc.value.code is CloseCode.RESOURCE
    others = [Identity.generate(RNG) for _ in range(2)]
    for i, other in enumerate(others):
        book.receive(record(NOW, by=other, lifetime=100 + i).encode(), other.node_id, NOW)
    assert len(book) == 2  # the record that expires first went
    assert book.get(others[0].node_id, NOW) is None
    assert book.get(BROWSER.node_id, NOW) is not None and book.get(others[1].node_id, NOW)


# -- the dial guard ----------------------------------------------------------------------------
def test_guard_takes_a_dial_once() -> None:
    guard = DialGuard(BROWSER.node_id)
    taken = guard.open(dial(), WAKE_NODES, NOW + 1)
    assert taken.ice_pwd == "0123456789abcdef01234567"
    with pytest.raises(RemoteProtocolError) as exc:
        guard.open(dial(), WAKE_NODES, NOW + 2)
    assert exc.value.code is CloseCode.REPLAY


@pytest.mark.parametrize(
    ("data", "now"),
    [
        (dial(), NOW + 61),  # expired
        (dial(NOW + 600), NOW),  # from the future
        (dial(by=OTHER), NOW),  # not a wake node of ours
        (dial()[:-1] + b"\x00", NOW),  # bad signature
    ],
)
def test_guard_refuses(data: bytes, now: float) -> None:
    with pytest.raises(RemoteProtocolError):
        DialGuard(BROWSER.node_id).open(data, WAKE_NODES, now)


def test_guard_refuses_an_offer_as_the_answer() -> None:
    offer = CompactSdp("abcd", "0123456789abcdef012345", b"x" * 32, "actpass")
    made = make_dial(
        NATIVE, BROWSER.node_id, ice_ufrag="abcd1234", ice_pwd="0123456789abcdef01234567",
        answer=offer, nonce=b"o" * 16, now=NOW,
    )  # fmt: skip
    with pytest.raises(RemoteProtocolError):
        DialGuard(BROWSER.node_id).open(made.encode(), WAKE_NODES, NOW)


def test_guard_refuses_a_lifetime_over_the_cap() -> None:
    unsigned = WakeDial(
        NATIVE.node_id, BROWSER.node_id, int(NOW * 1000), int(NOW * 1000) + 10**6, b"l" * 16,
        "abcd1234", "0123456789abcdef01234567", ANSWER.encode(),
    )  # fmt: skip
    with pytest.raises(RemoteProtocolError):
        DialGuard(BROWSER.node_id).open(unsigned.sign(NATIVE).encode(), WAKE_NODES, NOW)


def test_guard_full_window_never_readmits_a_replay() -> None:
    guard = DialGuard(BROWSER.node_id, capacity=3)
    sent = [dial(NOW + i, nonce=bytes([i]) * 16) for i in range(5)]
    for i, data in enumerate(sent):
        guard.open(data, WAKE_NODES, NOW + i)
    for data in sent:
        with pytest.raises(RemoteProtocolError):
            guard.open(data, WAKE_NODES, NOW + 5)
    assert len(guard._seen) == 3


def test_malformed_ice_credentials_are_refused() -> None:
    data = bytearray(dial())
    buf = Buffer(bytes(data))
    buf.pull_bytes(2 + 64 + 16 + 16)
    at = len(data) - buf.remaining + 1  # the ufrag's first character
    data[at] = ord(" ")
    with pytest.raises(RemoteProtocolError):
        decode_dial(bytes(data))
