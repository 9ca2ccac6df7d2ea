"""The DataChannel base (zmesh/link/transport.py): the W3C surface, the bounded inbox and
the fire-once close, driven by hand: ``defer`` queues callbacks and the test runs them."""

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError
from zmesh.link.transport import DELIVERY_BATCH, DataChannel, Transport


class Channel(DataChannel):
    """A DataChannel over lists: what it sends, and the callbacks it defers."""

    def __init__(self, **bounds: int) -> None:
        self.deferred: list[Callable[[], None]] = []
        bounds.setdefault("max_message_size", 1000)
        super().__init__(self.deferred.append, **bounds)
        self._state = "open"
        self.sent: list[bytes] = []
        self.queued = 0
        self.released: list[tuple[bool, bool]] = []
        self.thresholds: list[int] = []

    def _transmit(self, data: bytes) -> None:
        self.sent.append(data)
        self.queued += len(data)

    def _buffered(self) -> int:
        return self.queued

    def _release(self, *, local: bool, graceful: bool) -> None:
        self.released.append((local, graceful))

    def _threshold_set(self, value: int) -> None:
        self.thresholds.append(value)

    def drained(self, n: int) -> None:
        before = self.bufferedAmount
        self.queued -= n
        self._buffered_changed(before)

    def run(self) -> int:
        """Run deferred callbacks (and those they defer) until none is left."""
        ran = 0
        while self.deferred:
            self.deferred.pop(0)()
            ran += 1
        return ran


def recorder(channel: Channel) -> list[bytes | None]:
    """Messages as they are delivered, then None for onclose."""
    events: list[bytes | None] = []
    channel.onmessage = events.append
    channel.onclose = lambda: events.append(None)
    return events


def test_it_is_a_transport() -> None:
    transport: Transport = Channel()
    assert transport.readyState == "open" and transport.channel_binding == b""


def test_bounds_must_hold_one_message() -> None:
    with pytest.raises(LocalProtocolError):
        Channel(max_pending=0)
    with pytest.raises(LocalProtocolError):
        Channel(max_message_size=1000, max_pending_bytes=999)


# -- sending and the threshold -------------------------------------------------------------


def test_send_checks_the_size_and_the_state() -> None:
    channel = Channel()
    channel.send(bytes(1000))
    with pytest.raises(LocalProtocolError, match="1001 bytes"):
        channel.send(bytes(1001))
    channel.close()
    channel.send(b"after close")  # a no-op, as in browsers
    assert channel.sent == [bytes(1000)]
    assert channel.bufferedAmount == 0  # nothing is buffered on a closed channel


def test_bufferedamountlow_fires_only_when_crossing_down() -> None:
    channel = Channel()
    fired: list[int] = []
    channel.onbufferedamountlow = lambda: fired.append(channel.bufferedAmount)
    channel.bufferedAmountLowThreshold = 100
    assert channel.thresholds == [100]
    for _ in range(3):
        channel.send(bytes(100))
    channel.drained(100)  # 300 -> 200: still above
    assert fired == []
    channel.drained(100)  # 200 -> 100: at the threshold
    assert fired == [100]
    channel.drained(100)  # 100 -> 0: was not above
    assert fired == [100]
    channel.send(bytes(50))
    channel.drained(50)  # never above the threshold: no event
    assert fired == [100]
    with pytest.raises(LocalProtocolError):
        channel.bufferedAmountLowThreshold = -1
    assert channel.bufferedAmountLowThreshold == 100


def test_no_bufferedamountlow_after_close() -> None:
    channel = Channel()
    fired: list[int] = []
    channel.onbufferedamountlow = lambda: fired.append(1)
    channel.send(bytes(100))
    channel.close()
    channel.drained(100)
    channel._buffered_low()  # a native report arriving late
    assert fired == []


# -- the inbox -----------------------------------------------------------------------------


def test_messages_wait_for_a_handler_then_arrive_in_order() -> None:
    channel = Channel()
    for i in range(5):
        channel._received(b"%d" % i)
    assert channel.run() == 0  # nobody to deliver to: nothing scheduled
    events = recorder(channel)
    channel._received(b"5")  # behind the held ones, not ahead of them
    channel.run()
    assert events == [b"%d" % i for i in range(6)]
    channel._received(b"6")  # nothing held: delivered at once
    assert events[-1] == b"6"


def test_held_messages_are_delivered_a_batch_per_call() -> None:
    channel = Channel(max_pending=3 * DELIVERY_BATCH)
    for i in range(2 * DELIVERY_BATCH + 1):
        channel._hold(i.to_bytes(2, "big"))
    events = recorder(channel)
    assert channel.run() == 3  # one deferred call per batch: other channels get a turn
    assert events == [i.to_bytes(2, "big") for i in range(2 * DELIVERY_BATCH + 1)]


def test_a_full_inbox_by_count_closes_with_an_error() -> None:
    channel = Channel(max_pending=10)
    for i in range(10):
        channel._received(b"%d" % i)
    assert channel.readyState == "open" and channel.error is None  # at the bound: fine
    channel._received(b"one too many")
    channel._received(b"and more")
    channel.run()
    assert channel.readyState == "closed"
    assert channel.error is not None and "10 messages" in channel.error
    assert channel.released == [(True, False)]  # the peer is told, not gracefully
    events = recorder(channel)
    channel.run()
    assert events == [None]  # what was held is dropped; onclose fires once


def test_a_full_inbox_by_bytes_closes_with_an_error() -> None:
    channel = Channel(max_pending_bytes=2500)
    channel._received(bytes(1000))
    channel._received(bytes(1000))
    channel._received(bytes(500))  # 2,500 bytes: at the bound
    assert channel.readyState == "open"
    channel._received(b"x")
    channel.run()
    assert channel.readyState == "closed"
    assert channel.error is not None and "2500 bytes" in channel.error


def test_inbox_attack_costs_the_peer_its_channel_not_our_memory() -> None:
    """A peer that floods a channel nobody reads: held work stays within the bounds and
    everything after the overflow is dropped on arrival."""
    channel = Channel(max_pending=64, max_pending_bytes=64 * 1000)
    for _ in range(10_000):
        channel._hold(bytes(1000))
        assert len(channel._inbox) <= 64 and channel._inbox_bytes <= 64 * 1000
    assert len(channel.deferred) == 1  # one close, however long the flood
    channel.run()
    assert channel.readyState == "closed" and not channel._inbox and channel.error


# -- closing -------------------------------------------------------------------------------


def test_remote_close_delivers_what_arrived_then_fires_once() -> None:
    channel = Channel()
    for i in range(3):
        channel._received(b"%d" % i)
    channel._remote_closed("peer went away")
    assert channel.readyState == "closing" and channel.released == [(False, True)]
    channel._received(b"after the close")  # dropped
    events = recorder(channel)
    channel.run()
    assert events == [b"0", b"1", b"2", None]
    assert channel.readyState == "closed" and channel.error == "peer went away"
    channel._remote_closed("again")
    channel.close()
    channel.run()
    assert events == [b"0", b"1", b"2", None]
    assert channel.released == [(False, True)] and channel.error == "peer went away"


def test_local_close_drops_what_is_held() -> None:
    channel = Channel()
    channel._received(b"never delivered")
    channel.close()
    assert channel.readyState == "closed" and channel.error is None
    assert channel.released == [(True, True)]
    events = recorder(channel)
    channel.run()
    assert events == [None]


def test_a_local_close_while_closing_drops_the_rest() -> None:
    channel = Channel()
    events: list[bytes | None] = []
    channel._received(b"held")
    channel._remote_closed()
    channel.close()  # before the handler is set
    channel.onmessage = events.append
    channel.onclose = lambda: events.append(None)
    channel.run()
    assert events == [None] and channel.released == [(False, True)]


def test_a_handler_that_closes_the_channel_stops_delivery() -> None:
    channel = Channel()
    for i in range(5):
        channel._received(b"%d" % i)
    got: list[bytes] = []

    def handler(message: bytes) -> None:
        got.append(message)
        if len(got) == 2:
            channel.close()

    channel.onmessage = handler
    channel.run()
    assert got == [b"0", b"1"]


def test_onclose_set_late_still_fires_once() -> None:
    channel = Channel()
    channel.close()
    channel.run()  # no handler yet: nothing to fire
    closes: list[int] = []
    channel.onclose = lambda: closes.append(1)
    channel.onclose = lambda: closes.append(2)  # replaced before it ran
    channel.run()
    assert closes == [2]
    channel.onclose = lambda: closes.append(3)
    channel.run()
    assert closes == [2]


# -- any order of events ---------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), st.integers(4, 400)),
        st.tuples(
            st.sampled_from(["attach", "detach", "run", "remote_close", "close"]), st.just(0)
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_any_order_of_events_keeps_the_promises(script: list[tuple[str, int]]) -> None:
    """Whatever happens: delivery is in order without gaps or repeats, the inbox stays in
    its bounds, onclose fires at most once and last; a channel that neither closed nor
    overflowed delivers everything once its peer closes and a handler is attached."""
    channel = Channel(max_pending=8, max_pending_bytes=1000, max_message_size=400)
    received: list[bytes] = []
    events: list[bytes | None] = []
    channel.onclose = lambda: events.append(None)
    for op, size in script:
        if op == "receive":
            message = len(received).to_bytes(4, "big") + bytes(size - 4)
            received.append(message)
            channel._received(message)
        elif op == "attach":
            channel.onmessage = events.append
        elif op == "detach":
            channel.onmessage = None
        elif op == "run":
            channel.run()
        elif op == "remote_close":
            channel._remote_closed()
        else:
            channel.close()
        assert len(channel._inbox) <= 8 and channel._inbox_bytes <= 1000
        assert events.count(None) <= 1 and (None not in events or events[-1] is None)
    delivered = [e for e in events if e is not None]
    assert delivered == received[: len(delivered)]
    channel._remote_closed()
    channel.onmessage = events.append
    channel.run()
    assert events[-1] is None and events.count(None) == 1
    delivered = [e for e in events if e is not None]
    assert delivered == received[: len(delivered)]
    if channel.error is None and not any(op in ("close", "remote_close") for op, _ in script):
        assert delivered == received
