"""The per-link scheduler (zmesh/shaping/scheduler.py): sizes and times come from the
profile alone, the data comes through in order, the queue is bounded."""

import itertools
import math

import pytest

from zmesh.errors import CloseCode
from zmesh.link import frames as lf
from zmesh.onion.geometry import DEFAULT_GEOMETRY
from zmesh.rng import DeterministicRng
from zmesh.shaping import Deshaper, ShapeConfig, Shaping, VideoProfile
from zmesh.shaping.carrier import MAX_MESSAGE, MIN_MESSAGE
from zmesh.shaping.scheduler import MAX_LAG, MAX_QUEUE, LinkShaper, split

PROFILE = VideoProfile(
    interval=(0.03, 0.033, 0.036),
    delta_size=(3, 2000, 9000),
    key_size=(70000, 140000),
    key_interval=2.0,
)
CONSTANT = ShapeConfig("constant", size=4096, interval=0.01)
VIDEO = ShapeConfig("video", video=PROFILE)


def run(shaper: LinkShaper, until: float, step: float = 0.004) -> list[tuple[float, int]]:
    """Drive the timer to ``until`` (as a driver would, at each deadline or ``step``);
    returns (time, size) of every message."""
    out: list[tuple[float, int]] = []
    now = 0.0
    while now < until:
        now = min(shaper.get_timer(), now + step)
        shaper.handle_timer(now)
        out += [(now, len(m)) for m in shaper.outbox]
        shaper.outbox = []
    return out


def frames(n: int) -> list[bytes]:
    cells = [lf.encode_cell(i, bytes([i % 256]) * 8192) for i in range(n)]
    small = [lf.encode_frame(lf.Destroy(i, CloseCode.PROTOCOL)) for i in range(n)]
    return [f for pair in zip(cells, small, strict=True) for f in pair]


def test_constant_sizes_and_grid() -> None:
    shaper = LinkShaper(CONSTANT, None, DeterministicRng(1), now=0.0123)
    shaper.push(frames(10))
    trace = run(shaper, 1.0)
    assert {size for _, size in trace} == {4096}
    times = [t for t, _ in trace]
    assert times[0] == pytest.approx(0.02)
    assert all(b - a == pytest.approx(0.01) for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("config", [CONSTANT, VIDEO])
def test_trace_does_not_depend_on_data(config: ShapeConfig) -> None:
    """Same seed: the same message times and sizes, idle or busy."""
    video = PROFILE if config.mode == "video" else None
    busy = LinkShaper(config, video, DeterministicRng(5), now=0.0)
    idle = LinkShaper(config, video, DeterministicRng(5), now=0.0)
    busy.push(frames(40))
    assert run(busy, 10.0) == run(idle, 10.0)
    assert busy.sent > 0 and idle.sent == 0


@pytest.mark.parametrize("config", [CONSTANT, VIDEO])
def test_data_comes_through_in_order(config: ShapeConfig) -> None:
    video = PROFILE if config.mode == "video" else None
    shaper = LinkShaper(config, video, DeterministicRng(2), now=0.0)
    sent = frames(30)
    shaper.push(sent[:20])
    deshaper, got = Deshaper(), b""
    now = 0.0
    for i in range(3000):
        now = shaper.get_timer()
        shaper.handle_timer(now)
        if i == 10:
            shaper.push(sent[20:])
        for m in shaper.outbox:
            got += deshaper.unwrap(m)
        shaper.outbox = []
        if not shaper.queued and i > 10:
            break
    assert got == b"".join(sent)
    assert shaper.sent == len(got)


def test_video_sizes_from_the_profile() -> None:
    shaper = LinkShaper(VIDEO, PROFILE, DeterministicRng(3), now=0.0)
    trace = run(shaper, 20.0)
    sizes = [s for _, s in trace]
    assert set(sizes) <= {
        MIN_MESSAGE,
        2000,
        9000,
        MAX_MESSAGE,
        70000 - MAX_MESSAGE,
        140000 - 2 * MAX_MESSAGE,
    }
    gaps = {round(b - a, 6) for (a, _), (b, _) in itertools.pairwise(trace) if b != a}
    assert gaps <= {0.03, 0.033, 0.036}
    bursts = sum(1 for s in sizes if s == MAX_MESSAGE)
    assert 7 <= bursts <= 25  # a key frame every 2 s +- 25%: 8 to 14 in 20 s, 1 or 2 messages


def test_split() -> None:
    assert split(1) == [MIN_MESSAGE]
    assert split(MAX_MESSAGE) == [MAX_MESSAGE]
    assert split(MAX_MESSAGE + 2) == [MAX_MESSAGE - 5, MIN_MESSAGE]
    assert sum(split(200000)) == 200000
    assert all(MIN_MESSAGE <= s <= MAX_MESSAGE for n in range(1, 300000, 997) for s in split(n))


def test_stall_skips_rather_than_bursts() -> None:
    shaper = LinkShaper(CONSTANT, None, DeterministicRng(1), now=0.0)
    shaper.handle_timer(5.0)  # 5 s late
    assert len(shaper.outbox) <= math.ceil(MAX_LAG / CONSTANT.interval) + 1
    assert shaper.get_timer() > 5.0


def test_queue_bound_attacked() -> None:
    """Past MAX_QUEUE the shaper refuses (the link closes) rather than grow."""
    shaping = Shaping(CONSTANT, DeterministicRng(1))
    shaping.open(1, 0.0)
    big = bytes(MAX_BATCH_MSG)
    for _ in range(MAX_QUEUE // len(big)):
        assert shaping.send(1, [big]) == []
    assert shaping.send(1, [big]) is CloseCode.RESOURCE
    assert shaping.stats()[2] <= MAX_QUEUE


MAX_BATCH_MSG = lf.MAX_BATCH


def test_off_passes_through() -> None:
    shaping = Shaping(ShapeConfig(), DeterministicRng(1))
    shaping.open(1, 0.0)
    msgs = frames(2)
    assert shaping.send(1, msgs) is msgs
    assert shaping.get_timer() == math.inf
    assert shaping.close(1, msgs) is msgs


def test_close_flushes_everything() -> None:
    shaping = Shaping(CONSTANT, DeterministicRng(1))
    shaping.open(7, 0.0)
    msgs = frames(5)
    shaping.send(7, msgs)
    last = shaping.close(7, [lf.encode_frame(lf.Close(lf.CloseCode.PROTOCOL))])
    assert {len(m) for m in last} == {4096}
    d = Deshaper()
    assert b"".join(d.unwrap(m) for m in last) == b"".join(msgs) + last_close()
    assert shaping.get_timer() == math.inf
    assert shaping.unwrap(7, b"x") == b"x"  # no deshaper left: passes (node drops it)


def last_close() -> bytes:
    return lf.encode_frame(lf.Close(lf.CloseCode.PROTOCOL))


def test_links_independent_and_deterministic() -> None:
    def traces(seed: int) -> list[list[tuple[float, int]]]:
        shaping = Shaping(VIDEO, DeterministicRng(seed))
        for link in (1, 2):
            shaping.open(link, 0.0)
        out: list[list[tuple[float, int]]] = [[], []]
        now = 0.0
        while now < 5:
            now = shaping.get_timer()
            shaping.handle_timer(now)
            for link, m in shaping.due():
                out[link - 1].append((now, len(m)))
        return out

    a, b = traces(9), traces(9)
    assert a == b
    assert a[0] != a[1]
    assert traces(10) != a


def test_config_limits() -> None:
    with pytest.raises(ValueError, match="mode"):
        ShapeConfig("loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        ShapeConfig("constant", size=MAX_MESSAGE + 1)
    with pytest.raises(ValueError, match="interval"):
        ShapeConfig("constant", interval=0)


def test_measured_profile_loads() -> None:
    p = VideoProfile.measured()
    assert len(p.interval) > 100 and len(p.delta_size) > 100
    mean_gap = sum(p.interval) / len(p.interval)
    assert 0.02 < mean_gap < 0.05  # about 30 frames/s
    assert 300_000 < p.mean_bitrate < 4_000_000


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"interval": [], "delta_size": [1]}',
        '{"interval": [0.03], "delta_size": [0]}',
        '{"interval": [0.03], "delta_size": [5], "key_interval": 1}',
        '{"interval": [99], "delta_size": [5]}',
        '{"interval": ["x"], "delta_size": [5]}',
    ],
)
def test_malformed_profile(text: str) -> None:
    with pytest.raises(ValueError):
        VideoProfile.from_json(text)


def test_cli_shape_option() -> None:
    from zmesh.cli import build_parser

    parser = build_parser()
    for command in (["relay", "--listen", "127.0.0.1:0", "--data", "/tmp/x"], ["proxy"], ["up"]):
        assert parser.parse_args(command).shape == "off"
        assert parser.parse_args([*command, "--shape", "video"]).shape == "video"
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--shape", "loud"])


def test_heartbeats_and_credit_jump_the_queue() -> None:
    """A PING, PONG or CREDIT queued behind cells goes out at the next frame boundary;
    a DESTROY keeps its place."""
    shaper = LinkShaper(CONSTANT, None, DeterministicRng(1), now=0.0)
    cells = [lf.encode_cell(1, bytes(8192)) for _ in range(4)]
    ping, credit = lf.encode_frame(lf.Ping(1)), lf.encode_frame(lf.Credit(9))
    destroy = lf.encode_frame(lf.Destroy(1, CloseCode.PROTOCOL))
    shaper.push([*cells, destroy])
    shaper.handle_timer(shaper.get_timer())  # the first cell begun
    shaper.push([ping, credit])
    d, got = Deshaper(), []
    for m in shaper.outbox:
        got += lf.FrameDecoder(DEFAULT_GEOMETRY).feed_message(d.unwrap(m))
    shaper.outbox = []
    while shaper.queued:
        shaper.handle_timer(shaper.get_timer())
        for m in shaper.outbox:
            got += lf.FrameDecoder(DEFAULT_GEOMETRY).feed_message(d.unwrap(m))
        shaper.outbox = []
    kinds = [type(f).__name__ for f in got]
    assert kinds == ["Cell", "Ping", "Credit", "Cell", "Cell", "Cell", "Destroy"]
