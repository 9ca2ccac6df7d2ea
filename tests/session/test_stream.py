"""Reliable ordered streams with credit-based flow control (zmesh/session/stream.py)."""

import random

import pytest
from helpers import FlowViolationError, Link, MessyNetwork, Network, chunks, shuttle
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import CloseCode, LocalProtocolError, RemoteProtocolError
from zmesh.session.frames import AckFrame, DataFrame, ResetFrame, StreamFrame
from zmesh.session.stream import DEFAULT_WINDOW, PAGE_SIZE, Stream, StreamState


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def pair(window: int = DEFAULT_WINDOW) -> tuple[Stream, Stream]:
    return Stream(5, window=window), Stream(5, window=window)


def data_frames(frames: list[StreamFrame]) -> list[DataFrame]:
    return [f for f in frames if isinstance(f, DataFrame)]


def deliver(stream: Stream, frames: list[StreamFrame]) -> bytes:
    return b"".join(stream.receive(f) for f in frames)


def buffered(stream: Stream) -> int:
    """Out-of-order bytes the receiver holds, checked against its pages (white-box)."""
    held = sum(filled.count(1) for _, filled in stream._pages.values())
    first = stream._pages.get(stream._received // PAGE_SIZE)
    if first is not None:  # the read offset's page also marks bytes already delivered
        held -= first[1].count(1, 0, stream._received % PAGE_SIZE)
    assert held == stream.buffered
    return held


# -- ordered delivery --------------------------------------------------------------------


def test_large_payload_both_directions() -> None:
    a, b = pair(window=64 * 1024)
    up, down = payload(300_000, 1), payload(123_457, 2)
    a.write(up)
    b.write(down)
    got_a, got_b = shuttle(a, b, max_data_len=4000)
    assert got_b == up
    assert got_a == down
    assert (a.bytes_sent, b.bytes_received) == (len(up), len(up))
    assert (b.bytes_sent, a.bytes_received) == (len(down), len(down))
    assert a.pending == b.pending == 0
    assert a.send_offset == len(up)


def test_writes_between_rounds_arrive_in_order() -> None:
    a, b = pair(window=1000)
    data = payload(10_000, 3)
    link = Link(a, b, max_data_len=100)
    received = b""
    for piece in chunks(data, 777):
        a.write(piece)
        received += link.run()[1]
    assert received == data


def test_empty_writes_send_nothing() -> None:
    a, _ = pair()
    a.write(b"")
    assert a.frames_to_send(100, 10) == []


# -- flow control ------------------------------------------------------------------------


def test_sender_stalls_at_the_peer_window_until_acked() -> None:
    a, b = pair(window=100)
    a.write(payload(1000))
    first = a.frames_to_send(30, 100)
    assert [len(f.data) for f in data_frames(first)] == [30, 30, 30, 10]
    assert a.send_offset == 100
    assert a.pending == 900
    assert a.frames_to_send(30, 100) == []  # stalled: no credit left

    assert len(deliver(b, first)) == 100
    acks = b.frames_to_send(30, 100)
    assert acks == [AckFrame(5, 100, 200)]
    assert a.frames_to_send(30, 100) == []  # the ACK has not arrived yet
    deliver(a, acks)
    second = a.frames_to_send(30, 100)
    assert sum(len(f.data) for f in data_frames(second)) == 100
    assert a.send_offset == 200


def test_small_window_transfer_never_exceeds_credit() -> None:
    a, b = pair(window=64)
    data = payload(5000, 4)
    a.write(data)
    a.finish()
    b.finish()
    assert shuttle(a, b, max_data_len=50)[1] == data
    assert a.finished
    assert b.finished


def test_shuttle_detects_a_flow_violation() -> None:
    # the checker itself: a sender whose idea of the window is larger than the receiver's
    a, b = Stream(5, window=200), Stream(5, window=100)
    a.write(payload(150))
    with pytest.raises(FlowViolationError):
        shuttle(a, b)


def test_budget_limits_frames() -> None:
    a, b = pair(window=400)
    a.write(payload(1000))
    assert a.frames_to_send(100, 0) == []
    frames = a.frames_to_send(100, 3)
    assert len(frames) == 3
    assert a.send_offset == 300
    deliver(b, frames)
    b.write(b"x")
    out = b.frames_to_send(100, 1)
    assert len(out) == 1
    assert isinstance(out[0], AckFrame)  # an ACK goes first
    assert b.ack_due is False


def test_ack_after_a_quarter_window() -> None:
    a, b = pair(window=400)
    a.write(payload(400))
    frames = a.frames_to_send(99, 10)
    deliver(b, frames[:1])
    assert not b.ack_due  # 99 < 400 // 4
    deliver(b, frames[1:2])
    assert b.ack_due


# -- reordering, duplication, multipath ---------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_shuffled_and_duplicated_data_reassembles(seed: int) -> None:
    rng = random.Random(seed)
    a, b = pair()
    data = payload(50_000, seed)
    a.write(data)
    a.finish()
    frames: list[StreamFrame] = list(a.frames_to_send(997, 1 << 30))
    frames += rng.sample(frames, len(frames) // 3)
    rng.shuffle(frames)
    assert deliver(b, frames) == data
    assert b.peer_finished


@pytest.mark.parametrize("seed", range(4))
def test_messy_network_in_both_directions(seed: int) -> None:
    rng = random.Random(seed)
    a, b = pair(window=2000)
    up, down = payload(20_000, seed), payload(7_000, seed + 100)
    a.write(up)
    b.write(down)
    a.finish()
    b.finish()
    got_a, got_b = shuttle(
        a, b, max_data_len=300, a_to_b=MessyNetwork(rng), b_to_a=MessyNetwork(rng)
    )
    assert got_b == up
    assert got_a == down
    assert a.finished
    assert b.finished


def test_resend_with_different_chunking_reassembles() -> None:
    """A later layer may resend unacknowledged bytes on another circuit, cut differently."""
    rng = random.Random(7)
    data = payload(5000, 7)
    first = [DataFrame(5, i * 100, c) for i, c in enumerate(chunks(data, 100))]
    second = [DataFrame(5, i * 37, c) for i, c in enumerate(chunks(data, 37))]
    # each path loses a different half; together they cover everything
    frames = [f for i, f in enumerate(first) if i % 2] + [
        f
        for f in second
        if any(p // 100 % 2 == 0 for p in (f.offset, f.offset + len(f.data) - 1))
        or rng.random() < 0.5
    ]
    rng.shuffle(frames)
    b = Stream(5)
    assert deliver(b, list(frames)) == data
    assert buffered(b) == 0


def test_shorter_duplicate_at_the_same_offset_keeps_buffered_bytes() -> None:
    b = Stream(5, window=1000)
    assert b.receive(DataFrame(5, 10, b"B" * 100)) == b""
    assert b.receive(DataFrame(5, 10, b"B" * 5)) == b""
    assert b.receive(DataFrame(5, 0, b"A" * 10)) == b"A" * 10 + b"B" * 100


def test_overlapping_segments_never_buffer_beyond_the_window() -> None:
    window = 1000
    b = Stream(5, window=window)
    for offset in range(1, window):
        b.receive(DataFrame(5, offset, bytes([offset % 256]) * min(100, window - offset)))
        assert buffered(b) <= window
    # the first frame to cover a position wins; later overlapping frames add nothing
    expected = b"\x00" + bytes(max(1, p - 99) % 256 for p in range(1, window))
    assert b.receive(DataFrame(5, 0, b"\x00")) == expected
    assert buffered(b) == 0


def test_scattered_one_byte_segments_attack() -> None:
    """Issue 7: 40,000 one-byte frames scattered over the window, then overlapping and
    duplicate frames on top.  Every frame costs O(its length) (timed by
    bench/stream_reassembly.py), the buffer stays within the window in bytes and in pages,
    and the stream still reassembles exactly."""
    rnd = random.Random(7)
    window = DEFAULT_WINDOW
    truth = payload(window, 11)
    b = Stream(5, window=window, auto_consume=False)
    positions = rnd.sample(range(1, window), 40_000)
    for p in positions:
        assert b.receive(DataFrame(5, p, truth[p : p + 1])) == b""
    for p in rnd.sample(positions, 10_000):  # duplicates, and overlaps with other bytes
        b.receive(DataFrame(5, p, truth[p : p + 1]))
        b.receive(DataFrame(5, max(1, p - 50), truth[max(1, p - 50) : p + 50]))
        assert b.buffered <= window
    assert buffered(b) <= window
    max_pages = window // PAGE_SIZE + 2
    assert len(b._pages) <= max_pages  # memory: 2 * PAGE_SIZE per page, nothing per segment
    # the rest of the stream, in 997-byte frames shuffled, with FIN on a middle one
    frames = [DataFrame(5, o, truth[o : o + 997]) for o in range(0, window, 997)]
    last = frames[-1]
    frames[-1] = DataFrame(5, last.offset, last.data, fin=True)
    rnd.shuffle(frames)
    got = deliver(b, list(frames))
    assert got == truth
    assert b.peer_finished
    assert b.buffered == buffered(b) == 0
    assert b._pages == {} or len(b._pages) == 1  # at most the read offset's page


def test_fin_check_uses_the_highest_buffered_end() -> None:
    b = Stream(5, window=100_000)
    for p in range(10, 90_000, 9):
        b.receive(DataFrame(5, p, b"x"))
    with pytest.raises(RemoteProtocolError, match="final offset"):
        b.receive(DataFrame(5, 89_990, b"y", fin=True))  # below the byte at 89_992
    b.receive(DataFrame(5, 89_999, b"", fin=True))
    with pytest.raises(RemoteProtocolError, match="beyond the final offset"):
        b.receive(DataFrame(5, 89_999, b"z"))


def test_in_order_data_after_a_gap_fills_the_page_it_left() -> None:
    """The in-order fast path drops pages that hold only delivered bytes."""
    b = Stream(5, window=3 * PAGE_SIZE)
    assert b.receive(DataFrame(5, 10, b"b" * 10)) == b""
    assert b.receive(DataFrame(5, 0, b"a" * 10)) == b"a" * 10 + b"b" * 10
    assert len(b._pages) == 1  # the read offset's page, delivered bytes only
    assert b.receive(DataFrame(5, 20, b"c" * PAGE_SIZE)) == b"c" * PAGE_SIZE
    assert b._pages == {}
    assert b.receive(DataFrame(5, PAGE_SIZE + 30, b"e")) == b""
    assert b.receive(DataFrame(5, PAGE_SIZE + 20, b"d" * 10)) == b"d" * 10 + b"e"
    assert buffered(b) == 0


def test_duplicates_of_delivered_data_are_ignored() -> None:
    b = Stream(5)
    assert b.receive(DataFrame(5, 0, b"hello")) == b"hello"
    assert b.receive(DataFrame(5, 0, b"hello")) == b""
    assert b.receive(DataFrame(5, 2, b"llo wo")) == b" wo"
    assert b.bytes_received == 8


# -- FIN ---------------------------------------------------------------------------------


def test_fin_handshake() -> None:
    a, b = pair()
    a.write(b"request")
    a.finish()
    link = Link(a, b)
    got_a, got_b = link.run()
    assert got_b == b"request"
    assert b.peer_finished
    assert a.fin_acked
    assert not a.finished  # b has not finished its side yet
    assert not b.finished
    b.write(b"response")
    b.finish()
    got_a, got_b = link.run()
    assert got_a == b"response"
    assert got_b == b""
    assert a.finished
    assert b.finished


def test_fin_on_an_empty_stream() -> None:
    a, b = pair()
    a.finish()
    b.finish()
    assert shuttle(a, b) == (b"", b"")
    assert a.finished
    assert b.finished


def test_fin_rides_on_the_last_data_frame() -> None:
    a, _ = pair()
    a.write(b"x" * 250)
    a.finish()
    frames = data_frames(a.frames_to_send(100, 10))
    assert [(f.offset, len(f.data), f.fin) for f in frames] == [
        (0, 100, False),
        (100, 100, False),
        (200, 50, True),
    ]
    assert a.frames_to_send(100, 10) == []


def test_fin_waits_for_credit() -> None:
    a, _ = pair(window=10)
    a.write(b"x" * 15)
    a.finish()
    frames = data_frames(a.frames_to_send(100, 10))
    assert [(len(f.data), f.fin) for f in frames] == [(10, False)]


def test_fin_before_data_arrives() -> None:
    b = Stream(5)
    assert b.receive(DataFrame(5, 5, b"world", fin=True)) == b""
    assert not b.peer_finished
    assert b.receive(DataFrame(5, 0, b"hello")) == b"helloworld"
    assert b.peer_finished
    assert b.ack_due


# -- protocol violations -----------------------------------------------------------------


@pytest.mark.parametrize(("offset", "n"), [(0, 11), (5, 6), (10, 1), (2**64 - 1, 1)])
def test_window_violation(offset: int, n: int) -> None:
    b = Stream(5, window=10)
    with pytest.raises(RemoteProtocolError, match="window") as exc:
        b.receive(DataFrame(5, offset, b"x" * n))
    assert exc.value.code is CloseCode.RESOURCE


def test_window_slides_with_delivery() -> None:
    b = Stream(5, window=10)
    b.receive(DataFrame(5, 0, b"x" * 10))
    b.receive(DataFrame(5, 10, b"x" * 10))
    with pytest.raises(RemoteProtocolError, match="window"):
        b.receive(DataFrame(5, 20, b"x" * 11))


def test_data_beyond_fin() -> None:
    b = Stream(5)
    b.receive(DataFrame(5, 0, b"abc", fin=True))
    with pytest.raises(RemoteProtocolError, match="beyond the final offset"):
        b.receive(DataFrame(5, 3, b"d"))
    with pytest.raises(RemoteProtocolError, match="beyond the final offset"):
        b.receive(DataFrame(5, 2, b"cd"))


def test_conflicting_fin() -> None:
    b = Stream(5)
    b.receive(DataFrame(5, 10, b"", fin=True))
    with pytest.raises(RemoteProtocolError, match="conflicting"):
        b.receive(DataFrame(5, 10, b"x", fin=True))
    with pytest.raises(RemoteProtocolError, match="conflicting"):
        b.receive(DataFrame(5, 0, b"x", fin=True))


def test_repeated_fin_is_fine() -> None:
    b = Stream(5)
    assert b.receive(DataFrame(5, 0, b"abc", fin=True)) == b"abc"
    assert b.receive(DataFrame(5, 0, b"abc", fin=True)) == b""
    assert b.receive(DataFrame(5, 3, b"", fin=True)) == b""
    assert b.peer_finished


def test_fin_below_delivered_data() -> None:
    b = Stream(5)
    b.receive(DataFrame(5, 0, b"abcde"))
    with pytest.raises(RemoteProtocolError, match="final offset"):
        b.receive(DataFrame(5, 0, b"ab", fin=True))


def test_fin_below_buffered_data() -> None:
    b = Stream(5)
    b.receive(DataFrame(5, 10, b"xyz"))
    with pytest.raises(RemoteProtocolError, match="final offset"):
        b.receive(DataFrame(5, 0, b"ab", fin=True))


def test_ack_beyond_sent() -> None:
    a, _ = pair()
    with pytest.raises(RemoteProtocolError, match="never sent"):
        a.receive(AckFrame(5, 1, 100))
    a.write(b"abc")
    a.frames_to_send(100, 10)
    a.receive(AckFrame(5, 3, 100))
    with pytest.raises(RemoteProtocolError, match="never sent"):
        a.receive(AckFrame(5, 4, 100))


def test_stale_ack_does_not_shrink_credit() -> None:
    a, _ = pair(window=10)
    a.write(b"x" * 30)
    a.frames_to_send(100, 10)
    a.receive(AckFrame(5, 10, 30))
    a.receive(AckFrame(5, 5, 15))  # reordered, older
    assert sum(len(f.data) for f in data_frames(a.frames_to_send(100, 10))) == 20


def test_reset_closes_the_stream() -> None:
    a, _ = pair()
    a.write(b"abc")
    assert a.receive(ResetFrame(5, 3)) == b""
    assert a.state is StreamState.RESET
    assert a.frames_to_send(100, 10) == []
    with pytest.raises(LocalProtocolError):
        a.write(b"more")
    with pytest.raises(LocalProtocolError):
        a.finish()


def test_write_after_finish() -> None:
    a, _ = pair()
    a.write(b"abc")
    a.finish()
    with pytest.raises(LocalProtocolError, match="closed"):
        a.write(b"d")


# -- fuzzing -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 20_000),
    max_data_len=st.integers(1, 2000),
    window=st.integers(1, 5000),
    messy=st.booleans(),
    rnd=st.randoms(use_true_random=False),
)
def test_fuzz_transfer(
    size: int, max_data_len: int, window: int, messy: bool, rnd: random.Random
) -> None:
    a, b = pair(window=window)
    data = rnd.randbytes(size)
    reply = rnd.randbytes(size // 3)
    for piece in chunks(data, rnd.randint(1, 5000)):
        a.write(piece)
    b.write(reply)
    a.finish()
    b.finish()
    net: tuple[Network, Network] = (
        (MessyNetwork(rnd), MessyNetwork(rnd)) if messy else (Network(), Network())
    )
    got_a, got_b = shuttle(a, b, max_data_len=max_data_len, a_to_b=net[0], b_to_a=net[1])
    assert got_b == data
    assert got_a == reply
    assert a.finished
    assert b.finished


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 5000),
    max_data_len=st.integers(1, 700),
    dup=st.lists(st.integers(0, 10**6), max_size=20),
    rnd=st.randoms(use_true_random=False),
)
def test_fuzz_any_permutation_reassembles(
    size: int, max_data_len: int, dup: list[int], rnd: random.Random
) -> None:
    a, b = pair(window=8192)
    data = rnd.randbytes(size)
    a.write(data)
    a.finish()
    frames: list[StreamFrame] = list(a.frames_to_send(max_data_len, 1 << 30))
    frames += [frames[i % len(frames)] for i in dup]
    rnd.shuffle(frames)
    assert deliver(b, frames) == data
    assert b.peer_finished
    assert buffered(b) == 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 120), st.booleans()),
        max_size=40,
    )
)
def test_fuzz_hostile_frames_raise_only_remote_errors(ops: list[tuple[int, int, bool]]) -> None:
    """Arbitrary DATA frames: delivered bytes stay a prefix of the true stream, the buffer
    stays within the window, and anything wrong is a RemoteProtocolError."""
    truth = payload(500, 9)
    b = Stream(5, window=256)
    out = b""
    for offset, n, fin in ops:
        try:
            out += b.receive(DataFrame(5, offset, truth[offset : offset + n], fin))
        except RemoteProtocolError:
            break
        assert buffered(b) <= b.window
    assert truth.startswith(out)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 3 * PAGE_SIZE),
    cuts=st.lists(st.tuples(st.integers(0, 3 * PAGE_SIZE), st.integers(1, 600)), max_size=60),
    window=st.integers(1, 4 * PAGE_SIZE),
    rnd=st.randoms(use_true_random=False),
)
def test_fuzz_overlapping_segments_reassemble_within_the_window(
    size: int, cuts: list[tuple[int, int]], window: int, rnd: random.Random
) -> None:
    """Any permutation of overlapping, duplicated segments (plus a covering set) of a byte
    string reassembles to it, and the receiver never holds more than its window."""
    truth = rnd.randbytes(size)
    segments = [(o, min(n, window)) for o, n in cuts if o < size]
    step = rnd.randint(1, min(700, window))
    segments += [(o, step) for o in range(0, size, step)]  # makes sure every byte comes
    segments += rnd.choices(segments, k=len(segments) // 2)  # duplicates
    rnd.shuffle(segments)
    b = Stream(5, window=window)
    out = b""
    pending = [DataFrame(5, o, truth[o : o + n], fin=o + n >= size) for o, n in segments]
    while pending:  # frames beyond the current window wait, as a sender's credit would
        allowed = b._max_data
        now = [f for f in pending if f.offset + len(f.data) <= allowed]
        pending = [f for f in pending if f.offset + len(f.data) > allowed]
        assert now, "the window stopped sliding"
        for f in now:
            out += b.receive(f)
            assert buffered(b) <= window
            assert len(b._pages) <= window // PAGE_SIZE + 2
    assert out == truth
    assert b.peer_finished


def test_a_stale_ack_does_not_acknowledge_our_fin() -> None:
    a = Stream(5)
    a.write(b"abc")
    a.finish()
    frames = a.frames_to_send(100, budget=10)
    assert frames == [DataFrame(5, 0, b"abc", fin=True)]
    # an ACK the peer sent before the FIN reached it covers the bytes but not the FIN
    a.receive(AckFrame(5, 3, 100, fin=False))
    assert not a.fin_acked
    a.receive(AckFrame(5, 3, 100, fin=True))
    assert a.fin_acked
