"""Waking by push (zmesh/runtime/wake.py, browser_wake.py): a native node keeps wake
records and builds signed dials by push that the browser side takes once; bad records and
bad pushes are dropped and counted, never raised."""

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from zmesh.identity import Flags, Identity
from zmesh.node import Node, NodeConfig
from zmesh.rng import DeterministicRng
from zmesh.runtime import webrtc
from zmesh.runtime.aio import AsyncNode
from zmesh.runtime.browser_wake import BrowserWake, WakeNode
from zmesh.runtime.push import NodeVapidKey, PushError, PushSubscription, pad_payload
from zmesh.runtime.rtc import TransportError
from zmesh.runtime.wake import WakeService, wake_address
from zmesh.signaling.sdp import CompactSdp
from zmesh.signaling.wake import WakeRecord, vapid_key_of

RNG = DeterministicRng(5, b"wake-runtime")
BROWSER = Identity.generate(RNG)
FP = bytes(range(32))


def browser_record(native: bytes, now: float) -> bytes:
    desc = BROWSER.make_descriptor(
        flags=Flags.RELAY, onion_epoch=1, onion_pk=bytes(1216), published=int(now), lifetime=3600
    )
    key = NodeVapidKey.generate().public_key  # any P-256 point will do as p256dh
    unsigned = WakeRecord(
        BROWSER.node_id, native, int(now * 1000), 600, FP, "http://127.0.0.1:9/wpush/t",
        key, bytes(16), desc.encode(),
    )  # fmt: skip
    return unsigned.sign(BROWSER).encode()


def test_native_node_keeps_records_and_pushes_a_dial_the_browser_takes_once() -> None:
    async def main() -> None:
        rng = DeterministicRng(6, b"native")
        node = Node(Identity.generate(rng), rng, time.time(), NodeConfig())
        driver = AsyncNode(node, rtc=webrtc, loopback=True)
        key = NodeVapidKey.generate()
        pushed: list[tuple[PushSubscription, bytes]] = []

        async def push(subscription: PushSubscription, payload: bytes, *_: Any, **__: Any) -> None:
            pushed.append((subscription, payload))
            raise PushError("push refused: 410 gone", 410)  # the subscription ended

        wake = WakeService(driver, key, push=push)
        try:
            # garbage, a dial sent to a native node, a record relayed by someone else: dropped
            wake.on_signal(BROWSER.node_id, b"\x81\x01garbage")
            wake.on_signal(BROWSER.node_id, b"\x82" + bytes(100))
            wake.on_signal(node.node_id, browser_record(node.node_id, time.time()))
            assert len(wake.book) == 0 and wake.stats["refused"] == 2
            wake.on_signal(BROWSER.node_id, browser_record(node.node_id, time.time()))
            assert len(wake.book) == 1 and wake.stats["records"] == 1

            assert not await wake.wake(BROWSER.node_id)  # the push service said 410
            assert len(wake.book) == 0  # so the record is gone
            assert wake.stats["failed"] == 1 and len(pushed) == 1
            subscription, payload = pushed[0]
            assert subscription.endpoint == "http://127.0.0.1:9/wpush/t"
            assert len(pad_payload(payload)) == 3993  # fits one padded push

            # the browser's side: the dial verifies once; its answer is libdatachannel's
            native_desc = node.descriptor(time.time())
            browser = BrowserWake(
                SimpleNamespace(node=SimpleNamespace(node_id=BROWSER.node_id)),  # type: ignore[arg-type]
                FailingRtc(),  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
            )
            browser.wake_nodes[node.node_id] = WakeNode(native_desc, "k")
            browser.on_push(pad_payload(payload), time.time() * 1000)
            await asyncio.sleep(0)
            browser.on_push(pad_payload(payload), time.time() * 1000)  # a replay
            await asyncio.sleep(0.05)
            assert browser.stats["dialsRefused"] == 1 and browser.stats["dialsFailed"] == 1
            assert "replayed" in browser.stats["lastError"] or "page" in browser.stats["lastError"]
            assert FailingRtc.requests[0]["answer"].startswith("v=0")
            answer = CompactSdp.from_sdp(FailingRtc.requests[0]["answer"])
            assert answer.setup in ("active", "passive") and answer.candidates
        finally:
            await wake.close()
            await driver.close()

    asyncio.run(main())


class FailingRtc:
    """The page's side, refusing: records the pushdial request."""

    requests: ClassVar[list[dict[str, str]]] = []

    async def push_dial(self, request_json: str) -> Any:
        FailingRtc.requests.append(json.loads(request_json))
        raise TransportError("the page could not pushdial: test")


@pytest.mark.parametrize(
    "data",
    [
        b"",  # empty
        bytes(3993),  # padding of an empty payload: not a dial
        b"\xff" * 3993,  # garbled padding
        bytes(9000),  # oversized
        pad_payload(b"\x82\x01" + bytes(3000)),  # a malformed dial
    ],
)
def test_bad_pushes_are_dropped_and_counted(data: bytes) -> None:
    browser = BrowserWake(
        SimpleNamespace(node=SimpleNamespace(node_id=BROWSER.node_id)),  # type: ignore[arg-type]
        FailingRtc(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    browser.on_push(data, 0.0)
    assert browser.stats["dialsRefused"] == 1 and browser.stats["pushes"] == 1


def test_the_vapid_key_is_published_as_a_descriptor_address() -> None:
    key = NodeVapidKey.generate()
    desc = BROWSER.make_descriptor(
        flags=Flags.RELAY, onion_epoch=1, onion_pk=bytes(1216), published=0, lifetime=3600,
        addresses=("http://127.0.0.1:1", wake_address(key)),
    )  # fmt: skip
    assert vapid_key_of(desc) == key.application_server_key
