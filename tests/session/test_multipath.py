"""Sessions over several legs (zmesh/session/multipath.py), against an in-memory model.

The model: two :class:`Session` objects joined by legs, each leg two FIFO pipes with a
one-way delay and a bandwidth, driven by an event loop on a virtual clock.  Every cell
goes through ``encode_stream_frames``/``decode_stream_frames``.  Faults: a leg closed
(both ends told, cells in flight lost) and a blackhole (cells silently dropped both
ways, nobody told).
"""

import heapq
import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError, RemoteProtocolError
from zmesh.onion.geometry import Geometry
from zmesh.rng import DeterministicRng, randbelow
from zmesh.session.endpoint import (
    MAX_STREAMS,
    StreamConnected,
    StreamData,
    StreamFinished,
    StreamOpened,
    StreamReset,
)
from zmesh.session.frames import (
    TOKEN_SIZE,
    AckFrame,
    ConnectedFrame,
    DataFrame,
    LinkFrame,
    OpenFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    StreamFrame,
    decode_stream_frames,
    encode_stream_frames,
    first_link,
)
from zmesh.session.multipath import (
    IDLE_PING_INTERVAL,
    MAX_CONTROL,
    MAX_LEG_RECORDS,
    MAX_LEGS,
    MAX_PINGS,
    MAX_PONGS,
    ONE_WAY_STALL,
    SERVER_GRACE,
    SESSION_GRACE,
    LastLegStalled,
    LegLost,
    Session,
    SessionFailed,
)
from zmesh.session.stream import DEFAULT_WINDOW

PAYLOAD = Geometry().cell_payload_size
TOKEN = bytes(range(TOKEN_SIZE))
MB = 1 << 20


@dataclass
class Pipe:
    """One direction of a leg: FIFO, ``delay`` seconds plus ``size / bandwidth``."""

    delay: float
    bandwidth: float
    free_at: float = 0.0
    dropping: bool = False
    generation: int = 0


@dataclass
class Leg:
    leg_id: int
    up: Pipe
    down: Pipe
    data_bytes: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})


class Model:
    """The event loop, the legs and both ends' drivers (the aioquic triad)."""

    def __init__(self, seed: int = 1, *, leg_cap: int | None = None) -> None:
        self.now = 0.0
        self.rng = DeterministicRng(seed, b"multipath-model")
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        kw = {} if leg_cap is None else {"leg_cap": leg_cap}
        self.client = Session(client=True, token=TOKEN, payload_size=PAYLOAD, now=0.0, **kw)
        self.server = Session(client=False, token=TOKEN, payload_size=PAYLOAD, now=0.0, **kw)
        self.legs: dict[int, Leg] = {}
        self._timer: dict[str, float | None] = {"client": None, "server": None}
        self.events: dict[str, list[object]] = {"client": [], "server": []}
        self.handlers: dict[str, Callable[[object], None]] = {}
        self.steps = 0

    def session(self, side: str) -> Session:
        return self.client if side == "client" else self.server

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, fn))

    def add_leg(self, leg_id: int, delay: float, bandwidth: float) -> None:
        self.legs[leg_id] = Leg(leg_id, Pipe(delay, bandwidth), Pipe(delay, bandwidth))
        self.client.add_leg(leg_id, self.now)
        self.pump("client")

    def close_leg(self, leg_id: int) -> None:
        leg = self.legs[leg_id]
        for pipe in (leg.up, leg.down):
            pipe.dropping = True
            pipe.generation += 1  # cells in flight are lost with the circuit
        self.client.leg_closed(leg_id, self.now)
        self.pump("client")
        far = leg.down.delay  # the DESTROY reaches the far end a little later
        self.at(
            self.now + far, lambda: (self.server.leg_closed(leg_id, self.now), self.pump("server"))
        )

    def blackhole(self, leg_id: int) -> None:
        leg = self.legs[leg_id]
        for pipe in (leg.up, leg.down):
            pipe.dropping = True
            pipe.generation += 1

    def send(self, side: str, leg_id: int, frames: list[StreamFrame]) -> None:
        leg = self.legs[leg_id]
        pipe = leg.up if side == "client" else leg.down
        if pipe.dropping:
            return
        payload = encode_stream_frames(frames, PAYLOAD)
        leg.data_bytes[side] += sum(len(f.data) for f in frames if isinstance(f, DataFrame))
        start = max(self.now, pipe.free_at)
        pipe.free_at = start + len(payload) / pipe.bandwidth
        generation = pipe.generation
        other = "server" if side == "client" else "client"

        def arrive() -> None:
            if pipe.generation == generation:
                self.session(other).receive(leg_id, decode_stream_frames(payload), self.now)
                self.pump(other)

        self.at(pipe.free_at + pipe.delay, arrive)

    def pump(self, side: str) -> None:
        """Drain events, send cells, re-arm the one timer (what a driver does)."""
        session = self.session(side)
        while (event := session.next_event()) is not None:
            self.events[side].append(event)
            handler = self.handlers.get(side)
            if handler is not None:
                handler(event)
        for leg_id, frames in session.cells_to_send(self.now):
            self.send(side, leg_id, frames)
        when = session.get_timer()
        if when is not None and when != self._timer[side]:
            self._timer[side] = when

            def fire() -> None:
                if self._timer[side] == when:
                    self._timer[side] = None
                    session.handle_timer(self.now)
                    self.pump(side)

            self.at(max(when, self.now), fire)

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        while self._queue and self._queue[0][0] <= until and not stop():
            when, _, fn = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            fn()
            self.steps += 1
            assert self.steps < 2_000_000, "the model never settled"
        self.now = max(self.now, min(until, self._queue[0][0] if self._queue else until))


@dataclass
class Transfer:
    """The client opens one stream; the server sends ``down`` bytes, the client ``up``."""

    model: Model
    down: bytes
    up: bytes = b""
    got_down: bytearray = field(default_factory=bytearray)
    got_up: bytearray = field(default_factory=bytearray)
    arrivals: list[float] = field(default_factory=list)
    done_at: float | None = None

    def __post_init__(self) -> None:
        self.model.handlers["client"] = self.on_client
        self.model.handlers["server"] = self.on_server
        self.stream = self.model.client.open_stream("example.org:80")

    def on_client(self, event: object) -> None:
        if isinstance(event, StreamConnected):
            self.stream.write(self.up)
            self.stream.finish()
        elif isinstance(event, StreamData):
            self.got_down += event.data
            self.arrivals.append(self.model.now)
        elif isinstance(event, StreamFinished):
            self.done_at = self.model.now

    def on_server(self, event: object) -> None:
        if isinstance(event, StreamOpened):
            self.model.server.accept_stream(event.stream_id)
            stream = self.model.server.streams[event.stream_id]
            stream.write(self.down)
            stream.finish()
        elif isinstance(event, StreamData):
            self.got_up += event.data

    def run(self, until: float = 120.0) -> None:
        self.model.pump("client")
        self.model.run(until, stop=lambda: self.done_at is not None and self.got_up == self.up)

    @property
    def longest_gap(self) -> float:
        times = self.arrivals
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def assert_intact(self) -> None:
        assert bytes(self.got_down) == self.down, "download lost or corrupted bytes"
        assert bytes(self.got_up) == self.up, "upload lost or corrupted bytes"
        assert self.done_at is not None


def payload(rng: DeterministicRng, n: int) -> bytes:
    return rng.bytes(n)


def transfer(
    legs: list[tuple[float, float]], size: int, seed: int = 1, up: int = 0, **kw: int
) -> Transfer:
    model = Model(seed, **kw)
    for i, (delay, bandwidth) in enumerate(legs):
        model.add_leg(i + 1, delay, bandwidth)
    return Transfer(model, payload(model.rng, size), payload(model.rng, up))


# -- whole transfers ---------------------------------------------------------------------


@pytest.mark.parametrize("n_legs", [1, 2, 3])
def test_multi_mb_transfer_arrives_in_order_and_intact(n_legs: int) -> None:
    t = transfer([(0.02 + 0.01 * i, 4 * MB) for i in range(n_legs)], 4 * MB, up=300_000)
    t.run()
    t.assert_intact()
    carried = [leg.data_bytes["server"] for leg in t.model.legs.values()]
    assert all(c > 0 for c in carried), carried  # every leg carried some of it
    t.model.run(t.model.now + 1.0)  # the last ACKs
    assert not t.model.client.streams and not t.model.server.streams  # both closed it


def test_two_equal_legs_are_at_least_as_fast_as_one() -> None:
    one = transfer([(0.03, 2 * MB)], 4 * MB)
    one.run()
    two = transfer([(0.03, 2 * MB), (0.03, 2 * MB)], 4 * MB)
    two.run()
    one.assert_intact()
    two.assert_intact()
    assert one.done_at is not None and two.done_at is not None
    print(
        f"4 MiB: one leg {one.done_at:.3f} s, two legs {two.done_at:.3f} s, "
        f"throughput x{one.done_at / two.done_at:.2f}"
    )
    assert two.done_at <= one.done_at
    assert two.done_at < 0.7 * one.done_at  # the second leg really adds bandwidth


def test_blest_keeps_data_off_a_much_slower_leg() -> None:
    """Fast leg 10 ms, slow leg 200 ms: waiting for the fast leg delivers sooner."""
    fast_only = transfer([(0.01, 4 * MB)], 2 * MB)
    fast_only.run()
    both = transfer([(0.01, 4 * MB), (0.2, 4 * MB)], 2 * MB)
    both.run()
    both.assert_intact()
    slow = both.model.legs[2].data_bytes["server"]
    assert slow <= PAYLOAD * 2, slow  # at most the cells sent before any RTT was measured
    assert both.done_at is not None and fast_only.done_at is not None
    assert both.done_at <= fast_only.done_at * 1.05
    # with comparable legs the rule lets both carry data
    similar = transfer([(0.02, 1 * MB), (0.03, 1 * MB)], 2 * MB)
    similar.run()
    similar.assert_intact()
    assert similar.model.legs[2].data_bytes["server"] > 0.2 * 2 * MB


def test_killing_a_leg_mid_transfer_loses_no_byte() -> None:
    t = transfer([(0.02, 2 * MB), (0.04, 2 * MB), (0.03, 2 * MB)], 3 * MB, up=500_000)
    t.model.at(0.5, lambda: t.model.close_leg(1))
    t.run()
    t.assert_intact()
    assert LegLost(1, "closed") in t.model.events["client"]
    assert t.model.server.failovers + t.model.client.failovers >= 1
    assert t.longest_gap < 0.5, t.longest_gap


@pytest.mark.parametrize("delays", [(0.02, 0.05), (0.05, 0.02), (0.035, 0.035)])
def test_a_blackholed_leg_is_detected_within_its_rto_and_loses_no_byte(
    delays: tuple[float, float],
) -> None:
    t = transfer([(delays[0], 2 * MB), (delays[1], 2 * MB)], 3 * MB, up=200_000)
    t.model.at(0.4, lambda: t.model.blackhole(1))
    t.run()
    t.assert_intact()
    assert LegLost(1, "stalled") in t.model.events["server"]
    assert LegLost(1, "stalled") in t.model.events["client"]
    print(f"blackhole with legs {delays}: longest gap {t.longest_gap * 1000:.0f} ms")
    assert t.longest_gap < 1.0, t.longest_gap
    assert t.model.client.leg_ids == [2] and t.model.server.leg_ids == [2]


def cross_traffic(model: Model, leg_id: int, pause: float, every: float) -> None:
    """Other circuits' bursts on the link of ``leg_id`` toward the client: from now on,
    ``pause`` seconds of their bytes join its queue every ``every`` seconds (a shared
    10 Mbit/s link carrying a 64 KiB batch or a resent burst of another session)."""
    pipe = model.legs[leg_id].down

    def burst(k: int) -> None:
        pipe.free_at = max(model.now, pipe.free_at) + pause
        if k < 100:
            model.at(model.now + every, lambda: burst(k + 1))

    burst(0)


def test_a_healthy_leg_queued_behind_other_traffic_is_not_declared_stalled() -> None:
    """A leg whose PONGs and data wait 150 ms behind other circuits' bursts every 300 ms
    still delivers: it is kept (D56).  The rule before D56 (nothing received for RTO / 2)
    gave it up at about 0.5 s on both ends, and the transfer took 1.69 s, not 1.52 s."""
    t = transfer([(0.02, 2 * MB), (0.02, 2 * MB)], 3 * MB, up=MB)
    t.model.at(0.3, lambda: cross_traffic(t.model, 1, 0.15, 0.3))
    t.run()
    t.assert_intact()
    assert not [
        e for side in ("client", "server") for e in t.model.events[side] if isinstance(e, LegLost)
    ]
    assert t.model.client.leg_ids == [1, 2] and t.longest_gap < 0.2, t.longest_gap


@pytest.mark.parametrize("pause", [0.0, 0.15])
def test_a_queued_leg_that_dies_is_still_found_within_a_second(pause: float) -> None:
    t = transfer([(0.02, 2 * MB), (0.02, 2 * MB)], 6 * MB, up=MB)
    if pause:
        t.model.at(0.3, lambda: cross_traffic(t.model, 1, pause, 0.3))
    t.model.at(1.0, lambda: t.model.blackhole(1))
    found: list[float] = []
    on_client = t.model.handlers["client"]

    def spy(event: object) -> None:
        if isinstance(event, LegLost):
            found.append(t.model.now)
        on_client(event)

    t.model.handlers["client"] = spy
    t.run()
    t.assert_intact()
    assert LegLost(1, "stalled") in t.model.events["client"]
    (when,) = found
    print(f"blackhole under {pause * 1000:.0f} ms bursts found after {when - 1.0:.3f} s")
    assert 1.0 < when < 2.0 and t.longest_gap < 1.0, (when, t.longest_gap)


def test_a_new_legs_first_round_trip_may_take_several_times_the_others_srtt() -> None:
    """Leg 1 has an SRTT of about 45 ms; leg 2, added mid-transfer, 300 ms.  Before its
    first sample leg 2's RTO is twice leg 1's RTO (0.4 s), so it is measured, not given up
    (the rule before D56, twice leg 1's SRTT floored at 0.2 s, gave it up on both ends)."""
    t = transfer([(0.02, 2 * MB)], 3 * MB, up=MB)
    t.model.at(0.4, lambda: t.model.add_leg(2, 0.15, 2 * MB))
    t.run()
    t.assert_intact()
    assert not [
        e for side in ("client", "server") for e in t.model.events[side] if isinstance(e, LegLost)
    ]
    legs = {info.leg_id: info for info in t.model.client.legs(t.model.now)}
    assert legs[2].srtt is not None and legs[2].srtt > 0.3


def test_a_replacement_leg_takes_over() -> None:
    t = transfer([(0.02, 2 * MB), (0.03, 2 * MB)], 2 * MB)
    t.model.at(0.3, lambda: (t.model.close_leg(1), t.model.close_leg(2)))
    t.model.at(0.8, lambda: t.model.add_leg(3, 0.025, 2 * MB))  # from standby
    t.run()
    t.assert_intact()
    assert not any(isinstance(e, SessionFailed) for e in t.model.events["client"])


def test_a_session_without_legs_fails_after_the_grace_time() -> None:
    t = transfer([(0.02, 2 * MB)], 2 * MB)
    t.model.at(0.3, lambda: t.model.close_leg(1))
    t.model.run(0.3 + SESSION_GRACE - 0.01)
    assert not t.model.client.failed
    t.model.run(0.3 + SESSION_GRACE + 1.0)
    assert t.model.client.failed and t.model.server.failed
    assert SessionFailed(f"no leg for {SESSION_GRACE:g} s") in t.model.events["client"]
    assert t.model.client.get_timer() is None
    assert t.model.client.cells_to_send(t.model.now) == []
    with pytest.raises(LocalProtocolError):
        t.model.client.add_leg(9, t.model.now)


def test_legs_that_never_reach_the_server_do_not_stop_the_clients_grace() -> None:
    """The client's only leg dies; every new leg it adds is lost before its LINK reaches
    the server.  Those legs never reached the server's session, whose grace runs on, so
    they must not stop the client's: the client fails at its grace time after the last
    working leg, not later (the heal run saw a client outlive its server this way, then
    build legs for minutes, each refused by a new server session as a protocol error)."""
    t = transfer([(0.02, 2 * MB)], 2 * MB)
    t.model.at(0.3, lambda: t.model.close_leg(1))

    def doomed(leg_id: int) -> None:
        t.model.add_leg(leg_id, 0.02, 2 * MB)
        t.model.blackhole(leg_id)  # its LINK is lost
        t.model.at(t.model.now + 2.0, lambda: t.model.close_leg(leg_id))

    for k in range(20):
        t.model.at(1.0 + 3 * k, lambda k=k: doomed(10 + k))
    t.model.run(0.3 + SESSION_GRACE - 0.01)
    assert not t.model.client.failed
    t.model.run(0.3 + SESSION_GRACE + 0.01)
    assert t.model.client.failed
    assert SessionFailed(f"no leg for {SESSION_GRACE:g} s") in t.model.events["client"]
    assert SERVER_GRACE > SESSION_GRACE


def test_idle_legs_get_cheap_pings_and_nothing_else() -> None:
    model = Model()
    model.add_leg(1, 0.02, MB)
    model.add_leg(2, 0.03, MB)
    sent: list[list[StreamFrame]] = []
    real_send = model.send

    def spy(side: str, leg_id: int, frames: list[StreamFrame]) -> None:
        sent.append(frames)
        real_send(side, leg_id, frames)

    model.send = spy  # type: ignore[method-assign]
    model.run(10.0)
    assert all(isinstance(f, LinkFrame | PingFrame | PongFrame) for c in sent for f in c)
    pings = sum(isinstance(f, PingFrame) for c in sent for f in c)
    # both ends ping both legs about every IDLE_PING_INTERVAL
    assert 4 * 10 / IDLE_PING_INTERVAL * 0.8 <= pings <= 4 * 10 / IDLE_PING_INTERVAL * 1.2
    assert model.client.leg_ids == [1, 2] and not model.client.failed
    info = model.client.legs(model.now)
    assert [i.leg_id for i in info] == [1, 2]
    assert info[0].srtt is not None and 0.04 < info[0].srtt < 0.04 * 1.7  # plus cell times


def test_a_silent_idle_leg_is_found_by_phi_accrual_and_a_slow_one_is_kept() -> None:
    """Nothing at stake: the RTO rule does not watch the legs, the phi detector over each
    leg's PONGs does.  A blackholed idle leg is lost about ONE_WAY_STALL (its acceptable
    pause) plus a few spreads after its last PONG; a healthy one stays, its phi low."""
    model = Model()
    model.add_leg(1, 0.02, MB)
    model.add_leg(2, 0.03, MB)
    model.run(5.0)
    assert max(leg.phi for leg in model.client.legs(model.now)) < 1.0
    lost: list[float] = []
    model.handlers["client"] = lambda e: lost.append(model.now) if isinstance(e, LegLost) else None
    model.blackhole(2)
    cut = model.now
    model.run(cut + 10.0)
    assert LegLost(2, "stalled") in model.events["client"]
    assert model.client.leg_ids == [1] and not model.client.failed
    assert model.client.legs(model.now)[0].phi < 1.0  # leg 1 healthy all along
    # found after the acceptable pause (from the last PONG, one PING interval or less
    # before the cut), and long before the session's grace time
    (when,) = lost
    assert cut + ONE_WAY_STALL - IDLE_PING_INTERVAL < when < cut + ONE_WAY_STALL + 1.5


def test_a_silent_idle_last_leg_is_reported_not_dropped() -> None:
    model = Model()
    model.add_leg(1, 0.02, MB)
    model.run(2.0)
    model.blackhole(1)
    model.run(model.now + 5.0)
    assert LastLegStalled(1) in model.events["client"]
    assert model.client.leg_ids == [1] and not model.client.failed


# -- 1,000 sessions with random faults ----------------------------------------------------


def random_session(seed: int) -> tuple[Transfer, list[float]]:
    """2-3 legs of 20-50 ms and 1-3 MiB/s; up to all but one of them closed or
    blackholed at a random time during the download.  Returns the fault times."""
    model = Model(seed)
    rng = model.rng
    n_legs = 2 + randbelow(rng, 2)
    rate = 0
    for i in range(n_legs):
        bandwidth = (1 + randbelow(rng, 3)) * MB
        rate += bandwidth
        model.add_leg(i + 1, 0.02 + randbelow(rng, 31) / 1000, bandwidth)
    size = 128 * 1024 + randbelow(rng, 512 * 1024)
    up = payload(rng, randbelow(rng, 32 * 1024))
    t = Transfer(model, payload(rng, size), up)
    faults: list[float] = []
    for victim in range(1, n_legs):
        kind = randbelow(rng, 3)
        when = 0.05 + randbelow(rng, 1000) / 1000 * size / rate
        if kind == 0:
            model.at(when, lambda v=victim: model.close_leg(v))
        elif kind == 1:
            model.at(when, lambda v=victim: model.blackhole(v))
        if kind < 2:
            faults.append(when)
    return t, faults


def test_a_thousand_sessions_with_leg_deaths_and_blackholes_lose_nothing() -> None:
    stalls: list[float] = []
    lost = 0
    for seed in range(1000):
        t, faults = random_session(seed)
        t.run()
        lost += abs(len(t.down) - len(t.got_down)) + abs(len(t.up) - len(t.got_up))
        t.assert_intact()
        assert t.done_at is not None
        if any(when < t.done_at for when in faults):  # a fault hit the transfer
            stalls.append(t.longest_gap)
    stalls.sort()
    p50 = statistics.median(stalls)
    p99 = stalls[int(len(stalls) * 0.99)]
    print(
        f"1000 sessions, {len(stalls)} hit by a fault mid-transfer: bytes lost {lost}, "
        f"stall p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {stalls[-1] * 1000:.0f} ms"
    )
    assert lost == 0
    assert len(stalls) > 300
    assert p99 < 1.0


def test_fifty_sessions_with_faults_lose_nothing() -> None:
    """The quick cousin of the thousand (which is marked slow)."""
    for seed in range(1000, 1050):
        t, _ = random_session(seed)
        t.run()
        t.assert_intact()
        assert t.longest_gap < 1.0


# -- bad input and bounds -----------------------------------------------------------------


def linked_pair() -> tuple[Session, Session]:
    """A client and a server with leg 1 linked and stream 1 connected."""
    model = Model()
    model.add_leg(1, 0.01, MB)
    model.client.open_stream("a:1")
    model.handlers["server"] = lambda e: (
        model.server.accept_stream(e.stream_id) if isinstance(e, StreamOpened) else None
    )
    model.pump("client")
    model.run(1.0)
    assert StreamConnected(1) in model.events["client"]
    return model.client, model.server


def test_link_for_another_session_is_refused() -> None:
    server = Session(client=False, token=TOKEN, payload_size=PAYLOAD, now=0.0)
    with pytest.raises(RemoteProtocolError, match="another session"):
        server.receive(1, [LinkFrame(bytes(TOKEN_SIZE), 0)], 0.0)
    with pytest.raises(RemoteProtocolError, match="begin with LINK"):
        server.receive(1, [PingFrame(1)], 0.0)
    with pytest.raises(RemoteProtocolError, match="begin with LINK"):
        server.receive(1, [], 0.0)
    server.receive(1, [LinkFrame(TOKEN, 0), PingFrame(1)], 0.0)
    with pytest.raises(RemoteProtocolError, match="already linked"):
        server.receive(1, [LinkFrame(TOKEN, 0)], 0.0)
    assert first_link([LinkFrame(TOKEN, 3), PingFrame(1)]) == LinkFrame(TOKEN, 3)
    assert first_link([PingFrame(1), LinkFrame(TOKEN, 3)]) is None
    assert first_link([]) is None


def test_legs_per_session_are_bounded() -> None:
    """A server never holds more than MAX_LEGS legs: a LINK beyond them replaces the
    stalest (the client never has more at once, so that one is gone on its side; the
    heal run saw exits end whole sessions with "more than 4 legs" instead)."""
    server = Session(client=False, token=TOKEN, payload_size=PAYLOAD, now=0.0)
    for i in range(MAX_LEGS):
        server.receive(i, [LinkFrame(TOKEN, i)], float(i))
    server.receive(2, [PingFrame(1)], 10.0)
    server.receive(0, [PingFrame(2)], 11.0)
    for k, leg in enumerate([99, 100, 101]):
        server.receive(leg, [LinkFrame(TOKEN, leg)], 12.0 + k)
        assert len(server.leg_ids) == MAX_LEGS
    # legs 1 and 3 were the stalest, then 2 (heard at 10.0)
    assert sorted(server.leg_ids) == [0, 99, 100, 101]
    assert [e for e in drain(server) if isinstance(e, LegLost)] == [
        LegLost(1, "replaced"),
        LegLost(3, "replaced"),
        LegLost(2, "replaced"),
    ]
    assert not server.failed
    client = Session(client=True, token=TOKEN, payload_size=PAYLOAD, now=0.0)
    for i in range(MAX_LEGS):
        client.add_leg(i, 0.0)
    with pytest.raises(LocalProtocolError, match="at most"):
        client.add_leg(99, 0.0)
    with pytest.raises(LocalProtocolError, match="exists"):
        client.add_leg(0, 0.0)
    client.leg_closed(0, 0.0)
    client.add_leg(99, 0.0)  # a closed leg frees its slot
    with pytest.raises(LocalProtocolError):
        server.add_leg(5, 0.0)


def test_ack_for_bytes_never_sent_and_data_beyond_the_window() -> None:
    client, server = linked_pair()
    with pytest.raises(RemoteProtocolError, match="never sent"):
        server.receive(1, [AckFrame(1, 10, DEFAULT_WINDOW)], 2.0)
    with pytest.raises(RemoteProtocolError, match="window"):
        client.receive(1, [DataFrame(1, DEFAULT_WINDOW - 2, b"xyz")], 2.0)


def test_frames_for_streams_never_opened_or_closed() -> None:
    client, server = linked_pair()
    with pytest.raises(RemoteProtocolError, match="never opened"):
        server.receive(1, [DataFrame(7, 0, b"x")], 2.0)
    with pytest.raises(RemoteProtocolError, match="never opened"):
        client.receive(1, [DataFrame(2, 0, b"x")], 2.0)
    with pytest.raises(RemoteProtocolError, match="opened a stream"):
        client.receive(1, [OpenFrame(5, "x:1")], 2.0)
    with pytest.raises(RemoteProtocolError, match="CONNECTED from the client"):
        server.receive(1, [ConnectedFrame(1)], 2.0)
    server.receive(1, [OpenFrame(1, "a:1")], 2.0)  # a resent OPEN: the first won
    assert server.next_event() is None
    client.reset_stream(1, 3)
    server.receive(1, [ResetFrame(1, 3)], 2.0)
    assert StreamReset(1, 3) in drain(server)
    for session in (client, server):  # late frames of a closed stream are dropped
        session.receive(1, [DataFrame(1, 0, b"late"), AckFrame(1, 0, 9), ResetFrame(1, 1)], 2.1)
        assert drain(session) == []


def drain(session: Session) -> list[object]:
    out: list[object] = []
    while (e := session.next_event()) is not None:
        out.append(e)
    return out


def test_duplicate_and_reordered_data_across_legs_is_harmless() -> None:
    client, _ = linked_pair()
    data = bytes(range(256)) * 8
    frames = [DataFrame(1, i, data[i : i + 100]) for i in range(0, len(data), 100)]
    order = frames[::-1] + frames + frames[::2]
    got = bytearray()
    for frame in order:
        client.receive(1, [frame], 2.0)
        got += b"".join(e.data for e in drain(client) if isinstance(e, StreamData))
    assert bytes(got) == data


def test_pings_and_pongs_are_bounded() -> None:
    client, server = linked_pair()
    server.receive(1, [PingFrame(i) for i in range(100)], 2.0)
    pongs = [f for _, c in server.cells_to_send(2.0) for f in c if isinstance(f, PongFrame)]
    assert len(pongs) == MAX_PONGS
    client.receive(1, [PongFrame(12345), PongFrame(0)], 2.0)  # unknown nonces: nothing
    # a leg whose PINGs go unanswered keeps at most MAX_PINGS out
    model = Model()
    model.add_leg(1, 0.01, MB)
    model.blackhole(1)
    for step in range(100):
        model.client.cells_to_send(step * 0.001)
    assert max(len(leg.pings) for leg in model.client._legs.values()) <= MAX_PINGS


def test_in_flight_per_leg_is_capped() -> None:
    cap = 64 * 1024
    model = Model(leg_cap=cap)
    model.add_leg(1, 0.05, MB)
    model.add_leg(2, 0.05, MB)
    t = Transfer(model, b"z" * (4 * MB))
    t.model.pump("client")
    peak = 0
    while model._queue and t.done_at is None:
        model.run(model.now + 0.005)
        peak = max([peak] + [leg.inflight for leg in model.server._legs.values()])
    assert cap <= peak <= cap + PAYLOAD
    t.assert_intact()


def test_resend_queue_is_bounded_by_the_window() -> None:
    model = Model()
    model.add_leg(1, 0.05, 8 * MB)
    model.add_leg(2, 0.05, 8 * MB)
    Transfer(model, b"q" * (8 * MB))
    model.pump("client")
    model.run(0.3)
    model.blackhole(1)
    model.blackhole(2)
    model.run(3.0)
    server = model.server
    assert len(server.leg_ids) == 1  # one stalled and was given up; the last one is kept
    queued = sum(r.end - r.start for r in server._resend)
    stream = next(iter(server.streams.values()))
    assert 0 < queued <= stream.send_offset - stream.acked <= DEFAULT_WINDOW
    assert len(server._resend) <= MAX_LEGS * MAX_LEG_RECORDS
    model.run(
        3.0 + 2 * SESSION_GRACE
    )  # the last leg, silent, is given up after the grace time; then the session
    assert not server.leg_ids and server.failed


def test_streams_and_control_frames_are_bounded() -> None:
    _, server = linked_pair()
    server.receive(1, [OpenFrame(sid, "x:1") for sid in range(2, MAX_STREAMS + 1)], 2.0)
    assert len(server.streams) == MAX_STREAMS
    with pytest.raises(RemoteProtocolError, match="control"):
        for sid in range(MAX_STREAMS + 1, MAX_STREAMS + 2 + MAX_CONTROL):
            server.receive(1, [OpenFrame(sid, "x:1")], 2.0)  # each refused with a RESET
    _, server = linked_pair()
    with pytest.raises(RemoteProtocolError, match="sparse"):
        for sid in range(10, 100_000, 2):
            server.receive(1, [OpenFrame(sid, "x:1")], 2.0)
            while server.next_event() is not None:
                pass
            for s in list(server.streams):
                server.reset_stream(s, 1)
            server.cells_to_send(2.0)


def test_bad_construction_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="16 bytes"):
        Session(client=True, token=b"short", payload_size=PAYLOAD, now=0.0)
    with pytest.raises(LocalProtocolError, match="at least"):
        Session(client=True, token=TOKEN, payload_size=100, now=0.0)
    client = Session(client=True, token=TOKEN, payload_size=PAYLOAD, now=0.0)
    with pytest.raises(LocalProtocolError, match="too long"):
        client.open_stream("x" * 300)
    with pytest.raises(LocalProtocolError):
        client.accept_stream(1)


# -- fuzzing ------------------------------------------------------------------------------

FRAMES = st.one_of(
    st.builds(OpenFrame, st.integers(0, 5), st.text(max_size=5)),
    st.builds(
        DataFrame, st.integers(0, 3), st.integers(0, 2**21), st.binary(max_size=50), st.booleans()
    ),
    st.builds(
        AckFrame, st.integers(0, 3), st.integers(0, 2**21), st.integers(0, 2**22), st.booleans()
    ),
    st.builds(ResetFrame, st.integers(0, 3), st.integers(0, 5)),
    st.builds(ConnectedFrame, st.integers(0, 3)),
    st.builds(
        LinkFrame, st.sampled_from([TOKEN, bytes(TOKEN_SIZE)]), st.integers(0, 127), st.booleans()
    ),
    st.builds(PingFrame, st.integers(0, 20)),
    st.builds(PongFrame, st.integers(0, 20)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.lists(FRAMES, max_size=6)), max_size=8),
    st.booleans(),
)
def test_fuzz_session_receive(cells: list[tuple[int, list[StreamFrame]]], to_server: bool) -> None:
    """Any frames on any leg: the session raises RemoteProtocolError or carries on."""
    client, server = linked_pair()
    session = server if to_server else client
    now = 2.0
    for leg_id, frames in cells:
        now += 0.01
        try:
            session.receive(leg_id, frames, now)
        except RemoteProtocolError:
            session.leg_closed(leg_id, now)
        session.handle_timer(now)
        for _, cell in session.cells_to_send(now):
            encode_stream_frames(cell, PAYLOAD)  # every cell fits
        drain(session)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_garbage_payloads_into_a_session(data: bytes) -> None:
    _, server = linked_pair()
    try:
        server.receive(1, decode_stream_frames(data), 2.0)
    except RemoteProtocolError:
        pass


def test_a_ping_that_new_data_makes_due_rides_in_its_cell() -> None:
    """A request's OPEN and the PING it makes due go as one cell, not two (D60)."""
    model = Model()
    model.add_leg(1, 0.01, MB)
    model.run(1.2)  # measured and idle: the last idle PING (at 1.0 s) answered
    sent: list[list[StreamFrame]] = []
    real_send = model.send

    def spy(side: str, leg_id: int, frames: list[StreamFrame]) -> None:
        if side == "client":
            sent.append(frames)
        real_send(side, leg_id, frames)

    model.send = spy  # type: ignore[method-assign]
    model.client.open_stream("a:1")
    model.pump("client")
    assert [type(f) for f in sent[0]] == [OpenFrame, PingFrame]
    assert len(sent) == 1  # no PING in a cell of its own behind it


def test_a_building_leg_carries_link_and_open_but_no_ping_until_built() -> None:
    """A circuit still being built (its OPEN right behind the CREATE, D64): LINK and the
    OPEN go on it, no PING (nothing watches it for stalls) and no DATA; built, it is
    PINGed at once."""
    client = Session(client=True, token=TOKEN, payload_size=PAYLOAD, now=0.0)
    client.add_leg(1, 0.0, building=True)
    sid = client.open_stream("a:1").stream_id
    cells = client.cells_to_send(0.0)
    assert [(leg, [type(f) for f in frames]) for leg, frames in cells] == [
        (1, [LinkFrame, OpenFrame])
    ]
    assert client.get_timer() == SESSION_GRACE  # only the grace clock: no stall watch
    client.handle_timer(5.0)
    assert client.next_event() is None  # not stalled however long it takes
    client.built(1)
    assert [type(f) for _, frames in client.cells_to_send(5.0) for f in frames] == [PingFrame]
    assert sid in client.streams


def test_a_leg_built_before_the_building_one_takes_its_open() -> None:
    """The second build came up first: the OPEN the building leg carried goes again on
    the built one (the server drops whichever copy comes second), and new frames go on
    the built leg only."""
    client = Session(client=True, token=TOKEN, payload_size=PAYLOAD, now=0.0)
    client.add_leg(1, 0.0, building=True)
    client.open_stream("a:1")
    client.cells_to_send(0.0)
    client.add_leg(2, 0.1)
    sent = client.cells_to_send(0.1)
    assert {leg for leg, _ in sent} == {2}
    frames = [type(f) for _, fs in sent for f in fs]
    assert frames[0] is LinkFrame and OpenFrame in frames and PingFrame in frames
    client.open_stream("b:1")
    assert {leg for leg, _ in client.cells_to_send(0.2)} == {2}
