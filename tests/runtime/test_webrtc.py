"""The native WebRTC transport (zmesh/runtime/webrtc.py): real libdatachannel connections
between two PeerConnections in one process, over loopback."""

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiolibdatachannel as rtc
import pytest

from zmesh.errors import LocalProtocolError, RemoteProtocolError
from zmesh.runtime import webrtc
from zmesh.runtime.rtc import TransportError
from zmesh.runtime.webrtc import WebRTCTransport
from zmesh.signaling.sdp import MAX_MESSAGE_SIZE, CompactSdp


def run[T](coro: Awaitable[T], timeout: float = 20.0) -> T:
    """Run one test coroutine; a hang becomes a TimeoutError, not a stuck suite."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def connected_pair(**kwargs: Any) -> AsyncIterator[tuple[WebRTCTransport, WebRTCTransport]]:
    pending_dial, offer = await webrtc.dial(loopback=True, **kwargs)
    pending_answer, answer_sdp = await webrtc.answer(offer, loopback=True, **kwargs)
    a, b = await asyncio.gather(pending_dial.complete(answer_sdp), pending_answer.connected())
    try:
        yield a, b
    finally:
        await asyncio.gather(a.aclose(), b.aclose())


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def collector(transport: WebRTCTransport) -> list[bytes]:
    got: list[bytes] = []
    transport.onmessage = got.append
    return got


# -- connections ---------------------------------------------------------------------------


def test_open_and_exchange_both_ways_in_order() -> None:
    async def main() -> None:
        async with connected_pair() as (a, b):
            assert a.readyState == b.readyState == "open"
            got_a, got_b = collector(a), collector(b)
            for i in range(500):
                a.send(b"a%d" % i)
                b.send(b"b%d" % i)
            await until(lambda: len(got_a) == len(got_b) == 500)
            assert got_b == [b"a%d" % i for i in range(500)]
            assert got_a == [b"b%d" % i for i in range(500)]

    run(main())


def test_one_mib_of_16k_messages_arrives_intact() -> None:
    async def main() -> None:
        async with connected_pair() as (a, b):
            data = os.urandom(1 << 20)
            got = collector(b)
            for i in range(0, len(data), 16384):
                a.send(data[i : i + 16384])
            await until(lambda: sum(map(len, got)) >= len(data))
            assert all(len(m) == 16384 for m in got)
            assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(data).digest()

    run(main())


def test_largest_message_and_oversize_refused() -> None:
    async def main() -> None:
        async with connected_pair() as (a, b):
            got = collector(b)
            big = os.urandom(MAX_MESSAGE_SIZE)
            a.send(big)
            with pytest.raises(LocalProtocolError):
                a.send(bytes(MAX_MESSAGE_SIZE + 1))
            await until(lambda: len(got) == 1)
            assert got == [big]

    run(main())


def test_channel_binding_is_shared_and_per_connection() -> None:
    async def main() -> None:
        bindings = []
        for _ in range(2):
            pending_dial, offer = await webrtc.dial(loopback=True)
            pending_answer, answer_sdp = await webrtc.answer(offer, loopback=True)
            a, b = await asyncio.gather(
                pending_dial.complete(answer_sdp), pending_answer.connected()
            )
            fingerprints = sorted(
                (webrtc.sdp_fingerprint(offer), webrtc.sdp_fingerprint(answer_sdp))
            )
            assert a.channel_binding == b.channel_binding
            assert a.channel_binding == hashlib.sha256(b"".join(fingerprints)).digest()
            bindings.append(a.channel_binding)
            await asyncio.gather(a.aclose(), b.aclose())
        assert bindings[0] != bindings[1]

    run(main())


def test_close_propagates_to_the_peer() -> None:
    async def main() -> None:
        async with connected_pair() as (a, b):
            closed_a, closed_b = asyncio.Event(), asyncio.Event()
            a.onclose, b.onclose = closed_a.set, closed_b.set
            a.close()
            assert a.readyState == "closed"
            await asyncio.wait_for(asyncio.gather(closed_a.wait(), closed_b.wait()), 5)
            assert b.readyState == "closed"
            assert a.error is None and b.error is None
            a.send(b"after close")  # a no-op, like MemoryTransport
            b.send(b"after close")
            assert a.bufferedAmount == b.bufferedAmount == 0

    run(main())


def test_close_delivers_what_was_sent_before_it() -> None:
    """close() right after a burst: the burst still arrives, in order, before onclose.
    (Deleting the native objects, as the wrapper's close() does, would lose it.)"""

    async def main() -> None:
        async with connected_pair() as (a, b):
            events: list[bytes | None] = []
            b.onmessage = events.append
            b.onclose = lambda: events.append(None)
            burst = [i.to_bytes(4, "big") + bytes(16380) for i in range(2000)]  # 32 MiB
            for message in burst:
                a.send(message)
            a.close()
            assert a.readyState == "closed"
            await until(lambda: None in events, timeout=15)
            assert events[:-1] == burst and events[-1] is None

    run(main())


def test_closing_both_ends_at_once_is_quick() -> None:
    async def main() -> None:
        async with connected_pair() as (a, b):
            a.send(b"x")
            b.send(b"y")
            t0 = time.monotonic()
            await asyncio.gather(a.aclose(), b.aclose())
            assert time.monotonic() - t0 < webrtc.CLOSE_LINGER / 2

    run(main())


def test_messages_wait_for_a_handler() -> None:
    """Messages that arrive before onmessage is set (the driver attaches after the
    transport opens) are held, not dropped; so is an early close."""

    async def main() -> None:
        async with connected_pair() as (a, b):
            for i in range(100):
                a.send(b"%d" % i)
            a.close()
            await until(lambda: b.readyState == "closing")
            closed = asyncio.Event()
            b.onclose = closed.set
            got = collector(b)
            await asyncio.wait_for(closed.wait(), 5)
            assert got == [b"%d" % i for i in range(100)]
            assert b.readyState == "closed"

    run(main())


def test_extra_channels_from_the_peer_are_closed() -> None:
    async def main() -> None:
        async with connected_pair() as (a, b):
            extra = await a._pc.create_data_channel("other")  # a peer going off-script
            await asyncio.wait_for(extra.wait_closed(), 5)
            got = collector(b)
            a.send(b"still fine")
            await until(lambda: got == [b"still fine"])

    run(main())


# -- backpressure, and the aiolibdatachannel hazards ---------------------------------------


def test_buffered_amount_and_bufferedamountlow() -> None:
    async def main() -> None:
        async with connected_pair() as (a, b):
            got = collector(b)
            a.bufferedAmountLowThreshold = 256 * 1024
            assert a.bufferedAmountLowThreshold == 256 * 1024
            seen_at_low: list[int] = []
            a.onbufferedamountlow = lambda: seen_at_low.append(a.bufferedAmount)
            message = bytes(65536)
            sent = 0
            while a.bufferedAmount <= 2 << 20 and sent < 2000:  # send() never waits
                a.send(message)
                sent += 1
            assert a.bufferedAmount > a.bufferedAmountLowThreshold
            await until(lambda: len(seen_at_low) > 0)
            assert seen_at_low[0] <= a.bufferedAmountLowThreshold
            await until(lambda: len(got) == sent)
            assert len(seen_at_low) == 1  # fired once, on the way down

    run(main())


def test_sending_with_a_low_water_threshold_never_hangs() -> None:
    """The configuration that deadlocks the wrapper's send(wait_for_drain=True) (a
    threshold above the message size; see the next test) flows through our transport,
    with a sender that waits for onbufferedamountlow above a high-water mark."""

    async def main() -> None:
        async with connected_pair() as (a, b):
            got = collector(b)
            a.bufferedAmountLowThreshold = 1 << 20
            low = asyncio.Event()
            a.onbufferedamountlow = low.set
            message = os.urandom(16384)
            waits = 0
            for _ in range(2000):  # 32 MiB
                while a.bufferedAmount > 4 << 20:
                    low.clear()
                    await low.wait()
                    waits += 1
                a.send(message)
            await until(lambda: len(got) == 2000)
            assert waits > 0  # backpressure engaged, and released every time
            assert all(m == message for m in got)

    run(main(), timeout=15)


async def raw_pair() -> tuple[
    rtc.PeerConnection, rtc.PeerConnection, rtc.DataChannel, rtc.DataChannel
]:
    """Two plain aiolibdatachannel peers (no zMesh adapter), for the wrapper's own bugs."""
    ports = [webrtc._free_udp_port() for _ in range(2)]
    pcs = [
        rtc.PeerConnection(rtc.RTCConfiguration(port_range_begin=p, port_range_end=p))
        for p in ports
    ]
    options = rtc.DataChannelOptions(negotiated=True, stream_id=0)
    channels = [await pc.create_data_channel("zmesh", options) for pc in pcs]
    offer = await pcs[0].create_offer()
    await pcs[1].set_remote_description(
        webrtc._with_loopback_candidate(offer.sdp, ports[0]), "offer"
    )
    answer = await pcs[1].create_answer()
    await pcs[0].set_remote_description(
        webrtc._with_loopback_candidate(answer.sdp, ports[1]), "answer"
    )
    await asyncio.gather(*(c.wait_open() for c in channels))
    return pcs[0], pcs[1], channels[0], channels[1]


def test_upstream_send_with_drain_hangs() -> None:
    """Evidence for the workaround (aiolibdatachannel 2026.10.15): with a threshold at or
    above what is buffered, DataChannel.send(wait_for_drain=True) blocks forever.  If this
    test fails, upstream fixed it."""

    async def main() -> None:
        a, b, channel, _ = await raw_pair()
        try:
            channel.set_buffered_amount_low_threshold(65536)

            async def send_all() -> None:
                for _ in range(2000):
                    await channel.send(bytes(16384))  # wait_for_drain=True

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(send_all(), 2.0)
            assert channel.buffered_amount == 0  # nothing left to drain: a lost wake-up
        finally:
            await asyncio.gather(a.aclose(), b.aclose())

    run(main())


@pytest.mark.slow
def test_upstream_receive_queue_drops_messages() -> None:
    """Evidence for the adapter's own buffer (aiolibdatachannel 2026.10.15): a reader that
    drains the wrapper's 1,024-message queue continuously still loses messages when the
    loop is busy, because all queued native callbacks run before the reader does."""

    async def main() -> None:
        a, b, sender, receiver = await raw_pair()
        try:
            got = 0

            async def reader() -> None:
                nonlocal got
                async for _ in receiver:
                    got += 1
                    time.sleep(0.0002)  # a slow consumer, blocking the loop

            task = asyncio.create_task(reader())
            for i in range(5000):
                await sender.send(b"%d" % i, wait_for_drain=False)
            await asyncio.sleep(2.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert got < 5000
        finally:
            await asyncio.gather(a.aclose(), b.aclose())

    run(main())


@pytest.mark.slow
def test_slow_consumer_loses_nothing() -> None:
    """5,000 messages sent as fast as possible (no yielding, so all of them are in flight
    at once) to a consumer that blocks the loop for 0.2 ms per message.  The bound is
    raised above 5,000 here: in the mesh, credit flow control keeps a peer under 512."""

    async def main() -> None:
        async with connected_pair(max_pending=8192) as (a, b):
            got: list[bytes] = []

            def slow(message: bytes) -> None:
                time.sleep(0.0002)
                got.append(message)

            b.onmessage = slow
            expected = [i.to_bytes(4, "big") + os.urandom(96) for i in range(5000)]
            for message in expected:
                a.send(message)
            await until(lambda: len(got) == 5000, timeout=15)
            assert got == expected
            assert b.readyState == "open" and b.error is None

    run(main(), timeout=25)


def test_receive_buffer_overflow_closes_with_an_error() -> None:
    async def main() -> None:
        async with connected_pair(max_pending=100) as (a, b):
            closed_a, closed_b = asyncio.Event(), asyncio.Event()
            a.onclose, b.onclose = closed_a.set, closed_b.set
            for i in range(1000):  # b has no onmessage: everything waits in its buffer
                a.send(b"%d" % i)
            await asyncio.wait_for(asyncio.gather(closed_a.wait(), closed_b.wait()), 5)
            assert b.readyState == "closed"
            assert b.error is not None and "100" in b.error
            got = collector(b)
            await asyncio.sleep(0.05)
            assert got == []  # a transport that overflowed delivers nothing more

    run(main())


def test_receive_buffer_byte_bound() -> None:
    async def main() -> None:
        async with connected_pair(max_pending_bytes=MAX_MESSAGE_SIZE) as (a, b):
            closed = asyncio.Event()
            b.onclose = closed.set
            for _ in range(5):  # 320 KiB for a 256 KiB bound, nobody reading
                a.send(bytes(65536))
            await asyncio.wait_for(closed.wait(), 5)
            assert b.error is not None and "overflow" in b.error

    run(main())


# -- failures ------------------------------------------------------------------------------


def test_answer_that_never_connects_times_out() -> None:
    async def main() -> None:
        pending_dial, offer = await webrtc.dial(loopback=True)
        pending_answer, answer_sdp = await webrtc.answer(offer, loopback=True)
        await pending_answer.aclose()  # the answerer is gone: nothing will ever connect
        t0 = time.monotonic()
        with pytest.raises(TransportError):
            await pending_dial.complete(answer_sdp, timeout=1.0)
        assert time.monotonic() - t0 < 3.0
        await pending_dial.aclose()  # harmless after a failure

    run(main())


def test_connected_times_out_when_the_dialler_never_completes() -> None:
    async def main() -> None:
        pending_dial, offer = await webrtc.dial(loopback=True)
        pending_answer, _ = await webrtc.answer(offer, loopback=True)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="did not open"):
            await pending_answer.connected(timeout=0.5)
        assert time.monotonic() - t0 < 2.0
        await pending_dial.aclose()  # an abandoned dial closes cleanly

    run(main())


GARBLES: dict[str, Callable[[str], str]] = {
    "empty": lambda sdp: "",
    "garbage": lambda sdp: "garbage",
    "bare": lambda sdp: "v=0\r\n",
    "nul": lambda sdp: "\x00" * 64,
    "sha-1": lambda sdp: sdp.replace("sha-256", "sha-1"),  # a real SDP, no usable fingerprint
}


@pytest.mark.parametrize("garble", GARBLES.values(), ids=GARBLES.keys())
def test_garbage_answer_is_a_protocol_error(garble: Callable[[str], str]) -> None:
    async def main() -> None:
        pending_dial, offer = await webrtc.dial(loopback=True)
        answer_sdp = garble(offer)
        with pytest.raises((RemoteProtocolError, TransportError)):
            await pending_dial.complete(answer_sdp, timeout=2.0)
        with pytest.raises(LocalProtocolError):
            await pending_dial.complete(answer_sdp)

    run(main())


def test_answer_with_an_offer_role_or_our_own_fingerprint_is_refused() -> None:
    async def main() -> None:
        pending_dial, _ = await webrtc.dial(loopback=True)
        other, other_offer = await webrtc.dial(loopback=True)
        with pytest.raises(RemoteProtocolError, match="actpass"):  # an offer, not an answer
            await pending_dial.complete(other_offer, timeout=2.0)
        await other.aclose()

        pending_dial, offer = await webrtc.dial(loopback=True)
        ours = CompactSdp.from_sdp(offer)
        reflected = CompactSdp(ours.ice_ufrag, ours.ice_pwd, ours.fingerprint, "active")
        with pytest.raises(RemoteProtocolError, match="own fingerprint"):
            await pending_dial.complete(reflected.to_sdp("answer"), timeout=2.0)

    run(main())


def test_answer_refused_by_libdatachannel_is_a_protocol_error() -> None:
    async def main() -> None:
        pending_dial, _ = await webrtc.dial(loopback=True)
        other, other_offer = await webrtc.dial(loopback=True)
        pending_answer, answer_sdp = await webrtc.answer(other_offer, loopback=True)

        async def refuse(sdp: str, type_: str) -> None:
            raise rtc.RTCError("rtcSetRemoteDescription: invalid argument (-1)", -1)

        pending_dial._transport._pc.set_remote_description = refuse  # type: ignore[method-assign]
        with pytest.raises(RemoteProtocolError, match="rejected"):
            await pending_dial.complete(answer_sdp, timeout=2.0)
        assert pending_dial._transport.readyState == "closed"
        await asyncio.gather(other.aclose(), pending_answer.aclose())

    run(main())


def test_wrong_fingerprint_fails_fast() -> None:
    """DTLS checks the peer's certificate against the SDP: a substituted fingerprint
    fails the connection (quickly, not by timeout)."""

    async def main() -> None:
        pending_dial, offer = await webrtc.dial(loopback=True)
        pending_answer, answer_sdp = await webrtc.answer(offer, loopback=True)
        compact = CompactSdp.from_sdp(answer_sdp)
        forged = CompactSdp(
            compact.ice_ufrag, compact.ice_pwd, bytes(32), compact.setup, compact.candidates
        )
        t0 = time.monotonic()
        # Usually DTLS fails (TransportError); on a loaded machine libdatachannel may
        # already refuse the answer itself (RemoteProtocolError).  Either way: fast.
        with pytest.raises((TransportError, RemoteProtocolError)):
            await pending_dial.complete(forged.to_sdp("answer"), timeout=5.0)
        assert time.monotonic() - t0 < 4.0
        await pending_answer.aclose()

    run(main())


def test_garbage_offer_is_a_protocol_error() -> None:
    async def main() -> None:
        pending_dial, real = await webrtc.dial(loopback=True)
        for offer in ("", "garbage", real.replace("m=application", "m=audio")):
            with pytest.raises(RemoteProtocolError):
                await webrtc.answer(offer, loopback=True)
        await pending_dial.aclose()

    run(main())


# -- the compact form, end to end ------------------------------------------------------


def test_compact_round_trip_still_connects() -> None:
    """Offer and answer both go through from_sdp -> encode -> decode -> to_sdp, keeping
    only the 127.0.0.1 candidate: the rebuilt SDP is all libdatachannel gets, and the
    connection opens over the added loopback candidate."""

    def squeeze(sdp: str, role: str) -> str:
        compact = CompactSdp.decode(CompactSdp.from_sdp(sdp).encode())
        loop_only = tuple(c for c in compact.candidates if c[0] == "127.0.0.1")
        assert len(loop_only) == 1
        return CompactSdp(
            compact.ice_ufrag, compact.ice_pwd, compact.fingerprint, compact.setup, loop_only
        ).to_sdp(role)

    async def main() -> None:
        pending_dial, offer = await webrtc.dial(loopback=True)
        pending_answer, answer_sdp = await webrtc.answer(squeeze(offer, "offer"), loopback=True)
        a, b = await asyncio.gather(
            pending_dial.complete(squeeze(answer_sdp, "answer")), pending_answer.connected()
        )
        try:
            assert a.channel_binding == b.channel_binding
            got = collector(b)
            a.send(b"through the compact form")
            await until(lambda: got == [b"through the compact form"])
        finally:
            await asyncio.gather(a.aclose(), b.aclose())

    run(main())


def test_mdns_and_srflx_candidates_do_not_stall_libdatachannel() -> None:
    """A browser's answer as the compact form keeps it (D50): an mDNS name that does not
    resolve here and a srflx address.  libdatachannel skips the name and connects over
    the srflx candidate (here, the peer's real loopback address) at once."""

    def browser_like(sdp: str, role: str) -> str:
        compact = CompactSdp.from_sdp(sdp)
        loop = next(c for c in compact.candidates if c[0] == "127.0.0.1")
        shaped = CompactSdp(
            compact.ice_ufrag,
            compact.ice_pwd,
            compact.fingerprint,
            compact.setup,
            candidates=(("4d5a6c2e-0b5d-4b3c-9f3a-0e2b9a4f1c11.local", 9),),
            reflexive=(loop,),
        )
        return CompactSdp.decode(shaped.encode()).to_sdp(role)

    async def main() -> None:
        pending_dial, offer = await webrtc.dial(loopback=True)
        pending_answer, answer_sdp = await webrtc.answer(offer, loopback=True)
        t0 = time.monotonic()
        a, b = await asyncio.gather(
            pending_dial.complete(browser_like(answer_sdp, "answer"), timeout=5.0),
            pending_answer.connected(timeout=5.0),
        )
        try:
            assert time.monotonic() - t0 < 2.0
            assert a.channel_binding == b.channel_binding
        finally:
            await asyncio.gather(a.aclose(), b.aclose())

    run(main())
