"""The media link's core: frames, the reliable stream over lossy frames, the schedule."""

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError, RemoteProtocolError
from zmesh.link import frames as lf
from zmesh.rng import DeterministicRng
from zmesh.shaping.media import (
    FIN,
    HEADER,
    MAX_MESSAGE,
    MIN_FRAME,
    NACK,
    START_CODE,
    TAG,
    MediaLink,
    decode_frame,
    encode_frame,
    equal_pieces,
    media_profile,
    media_profiles,
)
from zmesh.shaping.profile import VideoProfile

PROFILE = VideoProfile.measured()


def pair(seed: int = 1) -> tuple[MediaLink, MediaLink]:
    return (
        MediaLink(PROFILE, DeterministicRng(seed, b"a"), 0.0),
        MediaLink(PROFILE, DeterministicRng(seed, b"b"), 0.0),
    )


def run(
    a: MediaLink,
    b: MediaLink,
    until: float,
    *,
    loss: float = 0.0,
    delay: float = 0.002,
    seed: int = 0,
    start: float = 0.0,
) -> tuple[list[bytes], list[bytes], list[tuple[float, int]]]:
    """Drive both ends in virtual time; frames take ``delay`` and are lost with
    probability ``loss``.  Returns the messages each end received and a's frame trace."""
    drop = random.Random(seed)
    got: dict[int, list[bytes]] = {0: [], 1: []}
    trace: list[tuple[float, int]] = []
    flight: list[tuple[float, int, int, bytes]] = []  # (arrival, order, to, frame)
    order = 0
    ends = (a, b)
    now = start
    while now <= until:
        nxt = min(a.get_timer(), b.get_timer(), flight[0][0] if flight else until + 1)
        now = nxt
        if now > until:
            break
        while flight and flight[0][0] <= now:
            _, _, to, frame = heapq.heappop(flight)
            got[to] += ends[to].receive(frame, now)
        for i, end in enumerate(ends):
            if end.get_timer() <= now:
                end.handle_timer(now)
                for frame in end.frames_to_send():
                    if i == 0:
                        trace.append((now, len(frame)))
                    if drop.random() >= loss:
                        order += 1
                        heapq.heappush(flight, (now + delay, order, 1 - i, frame))
    return got[0], got[1], trace


def messages(n: int, seed: int = 3) -> list[bytes]:
    r = random.Random(seed)
    return [r.randbytes(r.choice([8, 9, 136, 8200, 8200 * 7, MAX_MESSAGE])) for _ in range(n)]


def test_frames_round_trip_whole_one_byte_short_and_malformed() -> None:
    frame = encode_frame(2000, key=True, flags=FIN, offset=7, ack=9, data=b"hello")
    assert len(frame) == 2000
    assert frame[TAG : TAG + 3] == START_CODE
    assert not frame[0] & 1  # the VP8 key-frame bit is 0 for a key frame
    assert decode_frame(frame) == (True, FIN, 7, 9, b"hello")
    delta = encode_frame(500, key=False, flags=NACK, offset=1, ack=2, data=b"")
    assert delta[0] & 1 and delta[0] & 0x10  # inter frame, shown
    assert decode_frame(delta) == (False, NACK, 1, 2, b"")
    with pytest.raises(RemoteProtocolError):
        decode_frame(frame[: TAG + HEADER - 1])
    with pytest.raises(RemoteProtocolError):  # declared data beyond the frame
        decode_frame(encode_frame(40, key=False, flags=0, offset=0, ack=0, data=b"x" * 20)[:30])
    with pytest.raises(ValueError):
        encode_frame(MIN_FRAME, key=True, flags=0, offset=0, ack=0, data=b"x")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_frame_parses_or_raises_the_remote_error(data: bytes) -> None:
    link = MediaLink(PROFILE, DeterministicRng(1), 0.0)
    try:
        link.receive(data, 0.0)
    except RemoteProtocolError:
        pass


def test_messages_arrive_whole_and_in_order_both_ways() -> None:
    a, b = pair()
    sent_a, sent_b = messages(40, 1), messages(25, 2)
    for m in sent_a:
        a.send(m)
    for m in sent_b:
        b.send(m)
    got_a, got_b, _ = run(a, b, 20.0)
    assert got_b == sent_a and got_a == sent_b
    assert a.resent == 0 and b.buffered == 0


def test_lost_frames_are_resent() -> None:
    a, b = pair()
    sent = messages(40)
    for m in sent:
        a.send(m)
    _, got_b, _ = run(a, b, 40.0, loss=0.1, seed=5)
    assert got_b == sent
    assert a.resent > 0  # something was lost and sent again


@pytest.mark.parametrize("delay", [0.002, 0.3])
def test_loss_costs_a_fraction_of_the_rate(delay: float) -> None:
    """5% of frames lost: each gap is resent once, at once (a NACK per gap, not a
    timeout), so the goodput stays well above 1 Mbit/s."""
    a, b = pair()
    for m in messages(300, 8):
        a.send(m)
    _, got, _ = run(a, b, 10.0, loss=0.05, delay=delay, seed=2)
    carried = sum(len(m) for m in got)
    assert carried * 8 / 10.0 > (1.2e6 if delay < 0.1 else 1.0e6)


def test_goodput_is_most_of_the_profile_rate() -> None:
    a, b = pair()
    for m in messages(200, 9):
        a.send(m)
    _, got, trace = run(a, b, 10.0)
    carried = sum(len(m) for m in got)
    wire = sum(size for _, size in trace)
    assert carried > 0.95 * wire  # headers cost under 5% when the link is busy
    assert carried * 8 / 10.0 > 1.5e6  # the measured call carries > 1.5 Mbit/s


def test_the_trace_does_not_depend_on_what_is_carried() -> None:
    busy_a, busy_b = pair(7)
    idle_a, idle_b = pair(7)
    for m in messages(30):
        busy_a.send(m)
    _, _, busy = run(busy_a, busy_b, 5.0)
    _, _, idle = run(idle_a, idle_b, 5.0)
    assert busy == idle
    assert 120 <= len(busy) <= 180  # about 30 frames a second


def test_the_first_frame_is_a_key_frame_and_the_rest_are_not() -> None:
    a = MediaLink(PROFILE, DeterministicRng(2), 0.0)
    while a.get_timer() < 3.0:
        a.handle_timer(a.get_timer())
    frames = a.frames_to_send()
    assert len(frames) > 60
    assert decode_frame(frames[0])[0] is True
    assert all(decode_frame(f)[0] is False for f in frames[1:])


def test_fin_after_the_data() -> None:
    a, b = pair()
    sent = messages(5)
    for m in sent:
        a.send(m)
    a.finish()
    with pytest.raises(LocalProtocolError):
        a.send(b"late")
    _, got, _ = run(a, b, 5.0)
    assert got == sent and b.peer_finished and a.done


def test_hostile_peers_are_refused() -> None:
    a = MediaLink(PROFILE, DeterministicRng(1), 0.0)
    with pytest.raises(RemoteProtocolError):  # acknowledges bytes never sent
        a.receive(encode_frame(100, key=False, flags=0, offset=0, ack=5, data=b""), 0.0)
    a = MediaLink(PROFILE, DeterministicRng(1), 0.0)
    huge = (MAX_MESSAGE + 1).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError):  # a message over the limit
        a.receive(encode_frame(100, key=False, flags=0, offset=0, ack=0, data=huge), 0.0)
    a = MediaLink(PROFILE, DeterministicRng(1), 0.0)
    a.receive(encode_frame(100, key=False, flags=FIN, offset=0, ack=0, data=b""), 0.0)
    with pytest.raises(RemoteProtocolError):  # data after the end of the stream
        a.receive(encode_frame(100, key=False, flags=0, offset=0, ack=0, data=b"x"), 0.0)
    with pytest.raises(LocalProtocolError):
        a.send(bytes(MAX_MESSAGE + 1))


def test_a_stalled_driver_skips_rather_than_bursts() -> None:
    a = MediaLink(PROFILE, DeterministicRng(2), 0.0)
    a.handle_timer(60.0)
    assert len(a.frames_to_send()) <= 20


def test_a_heartbeat_goes_ahead_of_queued_bulk() -> None:
    a, b = pair()
    bulk = messages(60, 4)  # megabytes: seconds at the call's rate
    for m in bulk:
        a.send(m)
    ping = bytes([lf.FrameType.PING]) + (4).to_bytes(3, "big") + b"\x00\x00\x00\x07"
    a.send(ping)
    assert a.buffered == sum(4 + len(m) for m in [*bulk, ping])
    _, got, _ = run(a, b, 0.5)
    assert ping in got  # within half a second, though the bulk takes seconds
    assert got.index(ping) <= 2  # after at most the message that was being cut
    _, rest, _ = run(a, b, 60.0, start=0.5)
    assert [m for m in got + rest if m != ping] == bulk


def test_a_long_rtt_does_not_resend_everything() -> None:
    """Queueing delay (a loaded machine) is not loss: the RTO follows the RTT (RFC 6298),
    so a window is not resent again and again (with a fixed 0.4 s RTO it was)."""
    a, b = pair()
    sent = messages(120, 6)
    for m in sent:
        a.send(m)
    _, got, _ = run(a, b, 120.0, delay=0.8)
    assert got == sent
    assert a.resent < 0.05 * a.data_sent
    assert 1.6 < a.rto < 3.0  # about the RTT: 1.6 s and an ack's wait for a frame


def test_an_encoder_clocked_end_delivers_everything_at_its_own_cadence() -> None:
    """The browser's end (D58): each frame the encoder makes is replaced by next_frame, at
    the encoder's times (here 25-40 ms apart), with frames lost both ways; the other end
    runs on its timer."""
    clocked, timed = pair(4)
    sent_up, sent_down = messages(30, 5), messages(30, 6)
    for m in sent_up:
        clocked.send(m)
    for m in sent_down:
        timed.send(m)
    r = random.Random(7)
    got_up: list[bytes] = []
    got_down: list[bytes] = []
    sizes: list[int] = []
    keys = 0
    now, encoder_at = 0.0, 0.0
    while now < 60.0 and (len(got_up) < len(sent_up) or len(got_down) < len(sent_down)):
        now = min(encoder_at, timed.get_timer())
        if encoder_at <= now:
            frame = clocked.next_frame(now)
            sizes.append(len(frame))
            keys += decode_frame(frame)[0]
            if r.random() >= 0.1:
                got_up += timed.receive(frame, now + 0.002)
            encoder_at = now + r.uniform(0.025, 0.040)
        if timed.get_timer() <= now:
            timed.handle_timer(now)
            for frame in timed.frames_to_send():
                if r.random() >= 0.1:
                    got_down += clocked.receive(frame, now + 0.002)
    assert got_up == sent_up and got_down == sent_down
    assert keys == 1  # the first frame (the profile has no key interval)
    assert len(set(sizes)) > 10  # the sizes are the profile's draws, not one size
    assert clocked.resent > 0 and clocked.frames_sent == len(sizes)


@given(st.integers(0, 300_000), st.integers(1, 1500))
def test_equal_pieces_are_near_equal_and_as_few_as_fit(length: int, room: int) -> None:
    """Chromium's way of cutting a frame into RTP packets (D59)."""
    pieces = equal_pieces(length, room)
    assert sum(pieces) == length and max(pieces) <= room
    assert len(pieces) == max(1, -(-length // room)) and max(pieces) - min(pieces) <= 1
    assert pieces == sorted(pieces, reverse=True)


def test_equal_pieces_examples() -> None:
    assert equal_pieces(10_400, 1098) == [1040] * 10
    assert equal_pieces(2199, 1098) == [733, 733, 733]
    assert equal_pieces(0, 5) == [0]
    with pytest.raises(ValueError):
        equal_pieces(10, 0)


def test_media_links_send_as_one_direction_of_the_calls() -> None:
    """D59: a link's frames follow one direction of the judge's calls with a noisy camera
    (1.2 Mbit/s or more: a media link must carry 1 Mbit/s), drawn per link."""
    profiles = media_profiles()
    assert len(profiles) >= 2
    for profile in profiles:
        assert 1_200_000 <= profile.mean_bitrate <= 2_500_000 and profile.key_interval is None
        assert 20 <= len(profile.interval) / sum(profile.interval) <= 35
    drawn = {media_profile(DeterministicRng(bytes([i]) * 32, b"m")) for i in range(40)}
    assert len(drawn) == len(set(profiles))
