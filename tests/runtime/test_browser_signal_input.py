"""Bad SIGNAL offers between browsers (D50): garbage, a replayed offer, and an offer whose
compact SDP is malformed are dropped before the page is asked for an answer; a good
browser offer (mDNS host name and srflx candidates) reaches the page once."""

import asyncio

from zmesh.identity import Identity
from zmesh.node import Node
from zmesh.rng import DeterministicRng
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.browser import browser_config
from zmesh.runtime.rtc import TransportError
from zmesh.signaling.negotiation import Negotiation
from zmesh.signaling.sdp import CompactSdp

RNG = DeterministicRng(11, b"browser-signals")
MDNS = "4d5a6c2e-0b5d-4b3c-9f3a-0e2b9a4f1c11.local"


class CountingRtc:
    """An RtcBackend that counts the answers it is asked for, and makes none."""

    def __init__(self) -> None:
        self.answers: list[str] = []

    async def dial(self, *, loopback: bool = False) -> object:
        raise TransportError("not in this test")

    async def answer(self, offer_sdp: str, *, loopback: bool = False) -> object:
        self.answers.append(offer_sdp)
        raise TransportError("the page declines (test)")


def test_garbage_replayed_and_malformed_browser_offers_are_dropped() -> None:
    async def main() -> None:
        now = wall_clock()
        target_id, sender_id = Identity.generate(RNG), Identity.generate(RNG)
        target = Node(target_id, RNG.fork(b"t"), now, browser_config(True))
        sender = Node(sender_id, RNG.fork(b"s"), now, browser_config(True))
        rtc = CountingRtc()
        driver = AsyncNode(target, rtc=rtc, loopback=True)  # type: ignore[arg-type]
        negotiation = Negotiation(sender_id, RNG.fork(b"n"))
        session = CompactSdp(
            "abcd", "p" * 22, b"\x07" * 32, "actpass",
            candidates=((MDNS, 50000),), reflexive=(("127.0.0.1", 50000),),
        )  # fmt: skip
        target_desc = target.descriptor(now)
        sender_desc = sender.descriptor(now).encode()

        def offer(data: bytes) -> bytes:
            made = negotiation.make_offer(
                target_desc, b"\x07" * 32, data, wall_clock(), descriptor=sender_desc
            )
            return made.data

        good = offer(session.encode())
        assert good  # a browser's offer: compact version 2
        try:
            driver._on_signal(sender_id.node_id, good)
            await asyncio.sleep(0.05)
            assert len(rtc.answers) == 1
            assert f"{MDNS} 50000 typ host" in rtc.answers[0]
            assert "127.0.0.1 50000 typ srflx" in rtc.answers[0]

            driver._on_signal(sender_id.node_id, good)  # replayed through the mesh
            for garbage in (b"", b"\x00" * 40, good[:-1], good[:50] + bytes(len(good) - 50)):
                driver._on_signal(sender_id.node_id, garbage)
            encoded = session.encode()
            unknown_kind = encoded[:-7] + b"\x21" + encoded[-6:]  # the srflx entry's kind
            driver._on_signal(sender_id.node_id, offer(unknown_kind))
            plain = CompactSdp("abcd", "p" * 22, b"\x07" * 32, "actpass", (("127.0.0.1", 9),))
            needless_v2 = b"\x02" + plain.encode()[1:]  # version 2 where 1 was due
            driver._on_signal(sender_id.node_id, offer(needless_v2))
            driver._on_signal(sender_id.node_id, offer(encoded + b"\x00"))  # trailing byte
            await asyncio.sleep(0.05)
            assert len(rtc.answers) == 1  # none of them reached the page
        finally:
            await driver.close()

    asyncio.run(main())
