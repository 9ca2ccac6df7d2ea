"""The signaling endpoint under an offer flood, over real HTTP and real WebRTC: the
pending-answer caps answer 503, a replay 403, an honest node still links, and the
negotiation's deadlines release the flood's connections through the driver's timer."""

import asyncio
import time
from collections.abc import Callable

from zmesh.identity import Identity
from zmesh.node import Node, NodeConfig
from zmesh.runtime import webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.entropy import SystemRng
from zmesh.runtime.http import HttpError, Request, http_request
from zmesh.signaling.negotiation import Limits, Negotiation

PER_SOURCE = 3
ANSWER_TIMEOUT = 2.0


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return predicate()


async def _wait_for_no_pending(relay: AsyncNode, timeout: float) -> bool:
    return await _until(lambda: relay.negotiation.pending_answers() == 0, timeout)


async def _flood() -> None:
    rng = SystemRng()
    limits = Limits(answers_per_source=PER_SOURCE, answer_timeout=ANSWER_TIMEOUT)
    relay = AsyncNode(
        Node(Identity.generate(rng), rng, wall_clock(), NodeConfig()),
        rtc=webrtc,
        loopback=True,
        signaling_limits=limits,
    )
    client = AsyncNode(Node(Identity.generate(rng), rng, wall_clock()), rtc=webrtc, loopback=True)
    port = await relay.serve_http("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/zmesh/signal"
    mallory = Identity.generate(rng)
    relay_desc = relay.node.descriptor(wall_clock())
    mallory_desc = Node(mallory, rng, wall_clock()).descriptor(wall_clock()).encode()
    pending, offer_sdp = await webrtc.dial(loopback=True)  # she never completes it
    try:
        compact = webrtc.CompactSdp.from_sdp(offer_sdp)
        negotiation = Negotiation(mallory, rng)
        offers = [
            negotiation.make_offer(
                relay_desc,
                compact.fingerprint,
                compact.encode(),
                wall_clock(),
                descriptor=mallory_desc,
            ).data
            for _ in range(PER_SOURCE + 3)
        ]
        statuses = [(await http_request(url, method="POST", body=o))[0] for o in offers]
        assert statuses == [200] * PER_SOURCE + [503] * 3
        assert relay.negotiation.pending_answers(mallory.node_id) == PER_SOURCE
        assert (await http_request(url, method="POST", body=offers[0]))[0] == 403  # replay

        await client.bootstrap(f"http://127.0.0.1:{port}")  # another source is answered
        assert client.node.link_to(relay.node.node_id) is not None
        # the flood's answers never connect: their deadlines free the slots
        assert await _wait_for_no_pending(relay, ANSWER_TIMEOUT + 3.0)
        assert relay.negotiation.get_timer() is None
        assert (await http_request(url, method="POST", body=offers[-1]))[0] == 200
    finally:
        await pending.aclose()
        await client.close()
        await relay.close()


def test_an_offer_flood_is_capped_and_an_honest_node_still_links() -> None:
    asyncio.run(_flood())


# -- the driver's deadline scopes, with a WebRTC double that never connects -------------------
_SDP = webrtc.CompactSdp("abcd", "p" * 22, b"\x01" * 32, "actpass", (("127.0.0.1", 9),))


class _NeverConnects:
    def __init__(self, rtc: "_HangingRtc") -> None:
        self.rtc = rtc

    async def connected(self, *, timeout: float = 10.0) -> webrtc.WebRTCTransport:
        await asyncio.Event().wait()  # ignores its timeout: only the driver can end it
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.rtc.closed += 1


class _HangingRtc:
    """Answers every offer; no answer ever connects."""

    def __init__(self) -> None:
        self.closed = 0

    async def dial(self, *, loopback: bool = False) -> tuple[object, str]:
        raise AssertionError("the relay does not dial here")

    async def answer(self, offer_sdp: str, *, loopback: bool = False) -> tuple[_NeverConnects, str]:
        answer = webrtc.CompactSdp("efgh", "q" * 22, b"\x02" * 32, "active", _SDP.candidates)
        return _NeverConnects(self), answer.to_sdp("answer")


async def _shed_and_expire() -> None:
    rng = SystemRng()
    rtc = _HangingRtc()
    limits = Limits(answers_per_source=2, answers_total=4, answer_timeout=0.5)
    relay = AsyncNode(
        Node(Identity.generate(rng), rng, wall_clock(), NodeConfig()),
        rtc=rtc,  # type: ignore[arg-type]
        signaling_limits=limits,
    )
    relay_desc = relay.node.descriptor(wall_clock())

    def offer(identity: Identity) -> bytes:
        intro = Node(identity, rng, wall_clock()).descriptor(wall_clock()).encode()
        made = Negotiation(identity, rng).make_offer(
            relay_desc, _SDP.fingerprint, _SDP.encode(), wall_clock(), descriptor=intro
        )
        return made.data

    async def post(identity: Identity) -> int:
        try:
            await relay.handle_http(Request("POST", "/zmesh/signal", offer(identity)))
        except HttpError as exc:
            return exc.status
        return 200

    a, b, c = (Identity.generate(rng) for _ in range(3))
    try:
        assert [await post(a) for _ in range(3)] == [200, 200, 503]
        relay._on_signal(a.node_id, offer(a))  # the same cap drops a SIGNAL frame's offer
        assert relay.negotiation.pending_answers(a.node_id) == 2
        assert [await post(b) for _ in range(2)] == [200, 200]
        assert relay.negotiation.pending_answers() == 4 and rtc.closed == 0
        assert await post(c) == 200  # sheds a's oldest pending answer, at once
        assert await _until(lambda: rtc.closed == 1, 0.2)  # long before any deadline
        assert relay.negotiation.pending_answers(a.node_id) == 1
        assert await _wait_for_no_pending(relay, 3.0)  # the rest reach their deadline
        assert await _until(lambda: rtc.closed == 5, 1.0)
    finally:
        await relay.close()


def test_the_driver_ends_shed_and_expired_answers_that_would_hang() -> None:
    asyncio.run(_shed_and_expire())
