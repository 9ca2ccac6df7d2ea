"""Identity binding over real signaling: a swapped DTLS fingerprint is refused."""

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from zmesh.errors import CloseCode, RemoteProtocolError
from zmesh.identity import Identity
from zmesh.node import Node, NodeConfig
from zmesh.runtime import aio, webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.entropy import SystemRng
from zmesh.signaling.messages import decode_message

Tamper = Callable[[bytes], bytes]


async def _bootstrap_through(tamper: Tamper | None) -> tuple[bool, Exception | None]:
    rng = SystemRng()

    async def man_in_the_middle(url: str, **kw: object) -> tuple[int, bytes]:
        status, body = await aio.http_request(url, **kw)  # type: ignore[arg-type]
        if tamper is not None and url.endswith("/zmesh/signal") and status == 200:
            body = tamper(body)
        return status, body

    relay = AsyncNode(
        Node(Identity.generate(rng), rng, wall_clock(), NodeConfig(max_links=64)),
        rtc=webrtc,
        loopback=True,
    )
    client = AsyncNode(
        Node(Identity.generate(rng), rng, wall_clock()),
        rtc=webrtc,
        http_client=man_in_the_middle,
        loopback=True,
    )
    port = await relay.serve_http("127.0.0.1", 0)
    try:
        await client.bootstrap(f"http://127.0.0.1:{port}")
        return client.node.link_to(relay.node.node_id) is not None, None
    except RemoteProtocolError as exc:
        return client.node.link_to(relay.node.node_id) is not None, exc
    finally:
        await client.close()
        await relay.close()


def _swap_sdp_fingerprint(body: bytes) -> bytes:
    """Keep the signed fields; put another certificate's fingerprint in the SDP."""
    msg = decode_message(body)
    compact = webrtc.CompactSdp.decode(msg.session)
    forged = dataclasses.replace(compact, fingerprint=bytes(32))
    return dataclasses.replace(msg, session=forged.encode()).encode()


def _resign_as_mallory(body: bytes) -> bytes:
    """Swap the fingerprint everywhere and sign as someone else."""
    mallory = Identity.generate(SystemRng())
    msg = decode_message(body)
    compact = webrtc.CompactSdp.decode(msg.session)
    forged = dataclasses.replace(compact, fingerprint=b"\x01" * 32)
    return (
        dataclasses.replace(msg, session=forged.encode(), fingerprint=forged.fingerprint)
        .sign(mallory)
        .encode()
    )


def test_honest_signaling_links_up() -> None:
    linked, error = asyncio.run(_bootstrap_through(None))
    assert linked and error is None


@pytest.mark.parametrize("tamper", [_swap_sdp_fingerprint, _resign_as_mallory])
def test_an_answer_with_a_fingerprint_the_expected_node_did_not_sign_is_refused(
    tamper: Callable[[bytes], bytes],
) -> None:
    linked, error = asyncio.run(_bootstrap_through(tamper))
    assert not linked
    assert isinstance(error, RemoteProtocolError)
    assert error.code == CloseCode.AUTH
