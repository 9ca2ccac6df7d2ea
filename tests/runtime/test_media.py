"""The media transport (aiortc): a zMesh link inside the VP8 frames of a video track."""

import asyncio
import contextlib
import functools
import hashlib
import os
from collections.abc import AsyncIterator, Callable

import aioice.ice
import pytest
from aiortc.rtp import RtpPacket

from zmesh.errors import RemoteProtocolError
from zmesh.exit_policy import ExitPolicy
from zmesh.identity import Flags, Identity
from zmesh.node import Node
from zmesh.runtime import media, media_call
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.daemon import relay_config
from zmesh.runtime.entropy import SystemRng
from zmesh.runtime.media import MediaTransport, _FrameAssembler, media_fingerprint
from zmesh.runtime.rtc import rtc_backend
from zmesh.runtime.webrtc import WebRTCTransport
from zmesh.session.endpoint import StreamData, StreamFinished
from zmesh.shaping.audio import AudioProfile

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def pair() -> AsyncIterator[tuple[MediaTransport, MediaTransport]]:
    pending, offer = await media.dial(loopback=True)
    assert "127.0.0.1" in offer and "m=video" in offer
    pending_answer, answer = await media.answer(offer, loopback=True)
    a, b = await asyncio.gather(pending.complete(answer), pending_answer.connected())
    try:
        yield a, b
    finally:
        await asyncio.gather(a.aclose(), b.aclose())


def test_messages_cross_both_ways_in_order_and_close_is_orderly() -> None:
    async def main() -> None:
        async with pair() as (a, b):
            assert a.readyState == b.readyState == "open"
            assert a.channel_binding == b.channel_binding and len(a.channel_binding) == 32
            got_a: list[bytes] = []
            got_b: list[bytes] = []
            done = asyncio.Event()
            sent_a = [os.urandom(n) for n in (1, 8, 8200, 65536, 262144, 3000)]
            sent_b = [os.urandom(n) for n in (9, 136, 8200)]

            def receiver(into: list[bytes]) -> Callable[[bytes], None]:
                def on_message(m: bytes) -> None:
                    into.append(m)
                    if len(got_b) == len(sent_a) and len(got_a) == len(sent_b):
                        done.set()

                return on_message

            low = asyncio.Event()
            a.onmessage, b.onmessage = receiver(got_a), receiver(got_b)
            a.bufferedAmountLowThreshold = 1000
            a.onbufferedamountlow = low.set
            for m in sent_a:
                a.send(m)
            for m in sent_b:
                b.send(m)
            assert a.bufferedAmount > 300_000
            await asyncio.wait_for(done.wait(), 30)
            assert got_b == sent_a and got_a == sent_b
            assert low.is_set() and a.bufferedAmount == 0
            closed = asyncio.Event()
            b.onclose = closed.set
            a.close()
            await asyncio.wait_for(closed.wait(), 10)
            assert b.error is None  # the peer's FIN, not a failure

    asyncio.run(main())


def test_sdp_checks() -> None:
    async def main() -> None:
        pending, offer = await media.dial(loopback=True)
        try:
            # consent checks as often as the calls' (D59): aioice's globals, read per check
            assert aioice.ice.CONSENT_INTERVAL == media_call.CONSENT_INTERVAL
            assert aioice.ice.CONSENT_FAILURES * aioice.ice.CONSENT_INTERVAL == 30
            assert len(media_fingerprint(offer, "offer")) == 32
            with pytest.raises(RemoteProtocolError):  # an offer's role in an answer
                media_fingerprint(offer, "answer")
            data_channel = offer.replace("m=video 9 UDP/TLS/RTP/SAVPF", "m=application 9 UDP")
            data_channel = data_channel.split("m=video")[0]
            with pytest.raises(RemoteProtocolError):
                media_fingerprint(data_channel, "offer")
            with pytest.raises(RemoteProtocolError):
                await media.answer("v=0\r\n", loopback=True)
        finally:
            await pending.aclose()

    asyncio.run(main())


def test_frames_go_out_as_chromium_packetizes_them_with_cover_audio() -> None:
    """Pins what D59 does through aiortc's internals, on the datagrams as they leave: our
    encoder in the video sender cuts a frame into near-equal RTP packets whose datagrams
    fit MAX_VIDEO_DATAGRAM, the marker on a frame's last; the audio sender sends
    Opus-sized cover every 20 ms, unmarked (datagram sizes those of the measured calls:
    AUDIO_OVERHEAD is what aiortc adds); RTCP feedback goes as Chromium's transport-cc
    (~16 a second; the peer ignores it)."""

    async def main() -> None:
        async with pair() as (a, b):
            senders = {s.kind: s for s in a._pc.getSenders()}
            assert set(senders) == {"video", "audio"}
            ice = senders["video"].transport.transport  # RTCIceTransport: SRTP datagrams
            sent: list[tuple[int, bool, int, int]] = []  # type, marker, timestamp, size
            original = ice._send

            async def record(data: bytes) -> None:
                if 128 <= data[0] < 192:  # RTP or RTCP (not STUN, not DTLS)
                    ts = int.from_bytes(data[4:8], "big")
                    pt = data[1] if 192 <= data[1] <= 223 else data[1] & 0x7F
                    sent.append((pt, bool(data[1] & 0x80), ts, len(data)))
                await original(data)

            ice._send = record
            await asyncio.sleep(1.0)
            video = [(ts, n, m) for pt, m, ts, n in sent if pt == 97]
            audio = [(n, m) for pt, m, _, n in sent if pt < 128 and pt != 97]
            feedback = [n for pt, _, _, n in sent if pt == 205]
            profile = AudioProfile.measured()
            assert 35 <= len(audio) <= 65  # 50 a second
            sizes = {n for n, _ in audio}
            assert sizes <= set(profile.audio_size) and not any(m for _, m in audio)
            assert min(sizes) >= min(profile.audio_size) and max(sizes) <= max(profile.audio_size)
            assert 6 <= len(feedback) <= 30
            assert min(profile.feedback_size) - 2 <= min(feedback)
            assert max(feedback) <= max(profile.feedback_size) + 2
            frames: dict[int, list[tuple[int, bool]]] = {}
            for ts, n, m in video:
                frames.setdefault(ts, []).append((n, m))
            assert len(frames) >= 15
            assert max(n for ts, n, _ in video) <= media_call.MAX_VIDEO_DATAGRAM
            for pieces in list(frames.values())[1:-1]:  # whole frames
                assert max(pieces)[0] - min(pieces)[0] <= 1
                assert [m for _, m in pieces] == [False] * (len(pieces) - 1) + [True]
        assert not b.error

    asyncio.run(main())


def _packet(seq: int, ts: int, *, start: bool, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=ts, marker=int(marker))
    packet.payload = bytes([0x10 if start else 0x00]) + data
    packet._data = data  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return packet


def test_the_assembler_emits_a_frame_once_whole_in_any_order() -> None:
    assembler = _FrameAssembler()
    assert assembler.add(_packet(65535, 7, start=False, marker=True, data=b"c"))[1] is None
    assert assembler.add(_packet(65533, 7, start=True, marker=False, data=b"a"))[1] is None
    frame = assembler.add(_packet(65534, 7, start=False, marker=False, data=b"b"))[1]
    assert frame is not None and frame.data == b"abc"
    # a late retransmission of a frame delivered is ignored
    assert assembler.add(_packet(65534, 7, start=False, marker=False, data=b"b"))[1] is None
    # a frame missing a packet is held, bounded; later frames still come out
    assert assembler.add(_packet(0, 8, start=True, marker=False, data=b"x"))[1] is None
    for i in range(200):
        seq = 10 + i
        out = assembler.add(_packet(seq, 100 + i, start=True, marker=True, data=b"y"))[1]
        assert out is not None and out.data == b"y"
    assert assembler._held <= media.MAX_ASSEMBLY and len(assembler._partial) <= media.MAX_PARTIAL


@contextlib.asynccontextmanager
async def mesh() -> AsyncIterator[tuple[AsyncNode, int]]:
    """client -(media)- exit, and a circuit to the exit (one hop: two nodes, as the brief
    asks; bench/media.py runs a 2-hop chain)."""
    rng = SystemRng()

    def driver(flags: Flags = Flags.NONE) -> AsyncNode:
        node = Node(Identity.generate(rng), rng, wall_clock(), relay_config(flags, private=True))
        policy = ExitPolicy.allow_private() if flags & Flags.EXIT else None
        return AsyncNode(node, rtc=media, loopback=True, exit_policy=policy)

    client, exit_ = driver(), driver(Flags.EXIT)
    try:
        await media.link_nodes(client, exit_)
        for d in (client, exit_):
            assert [type(t) for t in d._transports.values()] == [MediaTransport]
        cid = await client.build_circuit([exit_.node.descriptor(wall_clock())], timeout=20)
        yield client, cid
    finally:
        await close_all(client, exit_)


async def close_all(*drivers: AsyncNode) -> None:
    """Close the drivers and wait until their connections are torn down (AsyncNode.close
    does not wait; a connection still open when the loop ends leaks its socket)."""
    transports = [t for d in drivers for t in d._transports.values()]
    for d in drivers:
        await d.close()
    for t in transports:
        assert isinstance(t, MediaTransport | WebRTCTransport)
        await t.wait_closed()


def test_a_stream_crosses_a_circuit_over_a_media_link() -> None:
    payload = os.urandom(400_000)

    async def main() -> None:
        async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(payload)
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with mesh() as (client, cid):
                session = client.session_for([cid])
                pipe = client.open_stream(session, f"127.0.0.1:{port}")
                await pipe.wait_connected(20)
                body = b""
                while True:
                    event = await pipe.receive(timeout=30)
                    if isinstance(event, StreamFinished):
                        break
                    assert isinstance(event, StreamData)
                    body += event.data
                    client.call(
                        functools.partial(
                            client.node.sessions.consume, session, pipe.sid, len(event.data)
                        )
                    )
                pipe.release()
                assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
        finally:
            server.close()

    asyncio.run(main())


def test_signaling_carries_media_offers_and_a_media_node_still_answers_data_channels() -> None:
    """Over a relay's HTTP signaling endpoint (compact SDP version 3): a media client
    links over a video track, a data-channel client over a data channel, to one relay."""

    async def main() -> None:
        rng = SystemRng()
        relay = AsyncNode(
            Node(Identity.generate(rng), rng, wall_clock(), relay_config(private=True)),
            rtc=rtc_backend("media"),
            loopback=True,
        )
        port = await relay.serve_http("127.0.0.1", 0)
        try:
            for transport, kind in (("media", MediaTransport), ("datachannel", WebRTCTransport)):
                client = AsyncNode(
                    Node(Identity.generate(rng), rng, wall_clock()),
                    rtc=rtc_backend(transport),
                    loopback=True,
                )
                try:
                    await client.bootstrap(f"http://127.0.0.1:{port}")
                    link = client.node.link_to(relay.node.node_id)
                    assert link is not None
                    assert isinstance(client._transports[link], kind)
                    theirs = await relay.wait_link(client.node.node_id, 10)
                    assert isinstance(relay._transports[theirs], kind)
                finally:
                    await close_all(client)
        finally:
            await close_all(relay)

    asyncio.run(main())
