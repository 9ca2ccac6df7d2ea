"""The browser node's media connections (D58), on CPython with a fake page: the offer
the page makes is rewritten to what compact SDP version 3 expands to, the connection opens
on the page's ``open``, each frame the sender transform asks for is the link's next one,
and each frame received is the link's (a hostile one closes the connection)."""

import asyncio
import dataclasses
import os

import pytest
from chromium_sdp import CHROMIUM_VIDEO_OFFER

from zmesh.rng import DeterministicRng
from zmesh.runtime.browser_rtc import BrowserMediaTransport, BrowserRtc
from zmesh.runtime.rtc import TransportError
from zmesh.shaping.media import MediaLink, decode_frame
from zmesh.shaping.profile import VideoProfile
from zmesh.signaling.sdp import CompactSdp

CANDIDATE = "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n"


class MediaPage:
    """The page's side, as web/src/rtc.js and worker.js answer a media dial."""

    def __init__(self, created: str = CHROMIUM_VIDEO_OFFER) -> None:
        self.created = created
        self.ops: list[str] = []
        self.local = ""
        self.frames: list[bytes | None] = []  # what the node answered each pull with
        self.closed: list[int] = []

    async def rtc(self, op: str, pc: int, sdp: str | None) -> str | None:
        self.ops.append(op)
        if op == "mdial":
            return self.created
        if op == "mlocal":
            assert sdp is not None
            self.local = sdp.replace("a=end-of-candidates", CANDIDATE + "a=end-of-candidates")
            return self.local
        assert op == "remote"
        return None

    def media_frame(self, pc: int, frame: bytes | None) -> None:
        self.frames.append(frame)

    def close(self, pc: int) -> None:
        self.closed.append(pc)

    def random(self, n: int) -> bytes:
        return os.urandom(n)


async def _open(page: MediaPage) -> tuple[BrowserRtc, BrowserMediaTransport]:
    rtc = BrowserRtc(page, media=True)  # type: ignore[arg-type]
    pending, offer = await rtc.dial()
    assert page.ops == ["mdial", "mlocal"] and offer == page.local
    assert "a=rtpmap:97 VP8/90000" in offer and "a=ssrc:2417716019 cname:" in offer
    ours = CompactSdp.from_sdp(offer)
    answer = dataclasses.replace(ours, setup="active", fingerprint=bytes(range(32)))
    completing = asyncio.ensure_future(pending.complete(answer.to_sdp("answer")))
    await asyncio.sleep(0)
    pc = next(iter(rtc._conns))
    rtc.on_event(pc, "pull", b"", 0, 0)  # before the connection is open: no frame
    assert page.frames == [None]
    rtc.on_event(pc, "open", b"", 0, 0)
    transport = await completing
    assert isinstance(transport, BrowserMediaTransport) and transport.readyState == "open"
    assert page.ops[-1] == "remote" and len(transport.channel_binding) == 32
    return rtc, transport


def test_a_media_dial_moves_messages_both_ways_in_frames() -> None:
    async def scenario() -> None:
        page = MediaPage()
        rtc, transport = await _open(page)
        loop = asyncio.get_running_loop()
        peer = MediaLink(VideoProfile.measured(), DeterministicRng(9), loop.time())
        got: list[bytes] = []
        transport.onmessage = got.append
        up = [os.urandom(n) for n in (9, 8200, 8200, 70000)]
        down = [os.urandom(n) for n in (136, 8200, 30000)]
        for m in up:
            transport.send(m)
        for m in down:
            peer.send(m)
        assert transport.bufferedAmount == sum(4 + len(m) for m in up)
        got_peer: list[bytes] = []
        for _ in range(400):
            if len(got_peer) == len(up) and len(got) == len(down):
                break
            rtc.on_event(transport.pc, "pull", b"", 0, 0)
            frame = page.frames[-1]
            assert frame is not None
            got_peer += peer.receive(frame, loop.time())
            rtc.on_event(transport.pc, "frame", peer.next_frame(loop.time()), 0, 0)
            await asyncio.sleep(0)
        assert got_peer == up and got == down
        assert transport.bufferedAmount == 0
        assert decode_frame(page.frames[1] or b"")[0]  # the first frame is a key frame
        rtc.on_event(transport.pc, "frame", b"\x01" * 40, 0, 0)  # not a media frame
        await asyncio.sleep(0)
        assert transport.readyState == "closed" and "marker" in (transport.error or "")
        assert page.closed == [transport.pc]

    asyncio.run(scenario())


def test_a_page_offer_that_is_not_video_fails_the_dial() -> None:
    async def scenario() -> None:
        page = MediaPage(created=CHROMIUM_VIDEO_OFFER.replace("m=video", "m=audio"))
        rtc = BrowserRtc(page, media=True)  # type: ignore[arg-type]
        with pytest.raises(TransportError, match="media offer"):
            await rtc.dial()
        assert page.ops == ["mdial"] and rtc.transports() == []

    asyncio.run(scenario())


def _exchange(
    rtc: BrowserRtc, page: MediaPage, pc: int, peer: MediaLink, rounds: int
) -> list[bytes]:
    """``rounds`` frames each way; the messages the peer got."""
    now = asyncio.get_event_loop().time()
    got: list[bytes] = []
    for _ in range(rounds):
        rtc.on_event(pc, "pull", b"", 0, 0)
        frame = page.frames[-1]
        if frame is not None:
            got += peer.receive(frame, now)
        rtc.on_event(pc, "frame", peer.next_frame(now), 0, 0)
    return got


def test_a_local_close_delivers_the_queue_then_fin_before_the_page_closes() -> None:
    async def scenario() -> None:
        page = MediaPage()
        rtc, transport = await _open(page)
        peer = MediaLink(VideoProfile.measured(), DeterministicRng(3), 0.0)
        last = os.urandom(30000)
        transport.send(last)
        transport.close()  # orderly: the queued message still goes, then FIN
        assert transport.readyState == "closed" and page.closed == []
        got = _exchange(rtc, page, transport.pc, peer, 40)
        assert got == [last] and peer.peer_finished
        assert page.closed == [transport.pc]  # closed once FIN was acknowledged
        frames = len(page.frames)
        rtc.on_event(transport.pc, "pull", b"", 0, 0)  # forgotten: no answer now
        assert len(page.frames) == frames

    asyncio.run(scenario())


def test_the_peers_fin_is_acknowledged_in_one_more_frame_then_the_page_closes() -> None:
    async def scenario() -> None:
        page = MediaPage()
        rtc, transport = await _open(page)
        peer = MediaLink(VideoProfile.measured(), DeterministicRng(4), 0.0)
        closed = asyncio.Event()
        got: list[bytes] = []
        transport.onmessage = got.append
        transport.onclose = closed.set
        peer.send(b"bye")
        peer.finish()
        rtc.on_event(transport.pc, "frame", peer.next_frame(0.0), 0, 0)
        await asyncio.wait_for(closed.wait(), 1)
        assert got == [b"bye"] and page.closed == []
        rtc.on_event(transport.pc, "pull", b"", 0, 0)  # the ack of FIN
        assert page.closed == [transport.pc]
        ack = page.frames[-1]
        assert ack is not None
        peer.receive(ack, 0.0)  # "bye" and FIN acknowledged
        peer.next_frame(0.0)  # FIN's second frame
        assert peer.done

    asyncio.run(scenario())


def test_a_page_close_ends_the_connection_without_lingering() -> None:
    async def scenario() -> None:
        page = MediaPage()
        rtc, transport = await _open(page)
        rtc.on_event(transport.pc, "close", b"connection failed", 0, 0)
        await asyncio.sleep(0)
        assert transport.readyState == "closed" and transport.error == "connection failed"
        assert rtc.transports() == []

    asyncio.run(scenario())
