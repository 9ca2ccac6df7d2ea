"""The browser node's side of waking by push (docs/decisions.md, D54).

:class:`BrowserWake` picks up to :data:`~zmesh.signaling.wake.MAX_WAKE_NODES` wake nodes
among the native nodes it is linked to that publish a VAPID key (a ``webpush:``
descriptor address), has the page subscribe once per wake node (a service-worker
registration per scope, restricted to that node's key: D48), and hands each wake node a
signed :class:`~zmesh.signaling.wake.WakeRecord` as a SIGNAL payload, with the
fingerprint of the long-lived DTLS certificate the page keeps in IndexedDB.

A push from a wake node reaches the page's service worker, then the page, then
:meth:`BrowserWake.on_push`: the payload is unpadded and checked by a
:class:`~zmesh.signaling.wake.DialGuard`; the page makes an offer with that certificate,
puts the pushed ICE credentials into it before ``setLocalDescription``, and applies the
pushed answer (op ``pushdial`` of ``web/src/rtc.js``); once the channel opens the link
handshake runs as for any link.  Nothing goes back over HTTP.
"""

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..errors import RemoteProtocolError, ZMeshError
from ..identity import Descriptor, short_id
from ..signaling.sdp import CompactSdp, channel_binding
from ..signaling.wake import MAX_WAKE_NODES, DialGuard, WakeDial, WakeRecord, vapid_key_of
from .push import PushError, b64url_decode, unpad_payload
from .rtc import RTC_TIMEOUT, TransportError
from .tasks import TaskSet

if TYPE_CHECKING:
    from .aio import AsyncNode
    from .browser_rtc import BrowserRtc, Host

log = logging.getLogger("zmesh.browser.wake")

RECORD_LIFETIME: Final = 3600  # seconds a wake record lives; it is sent again at half
CHECK_INTERVAL: Final = 5.0
MAX_PUSH_BYTES: Final = 8192  # a push payload from the page, before unpadding


@dataclass
class WakeNode:
    descriptor: Descriptor
    key: str
    sent: float = 0.0  # when its record was last sent (0: never)


class BrowserWake:
    """Subscriptions to wake nodes, and dials by push (see the module doc)."""

    def __init__(self, driver: "AsyncNode", rtc: "BrowserRtc", host: "Host") -> None:
        self.driver = driver
        self.rtc = rtc
        self.host = host
        self.node = driver.node
        self.guard = DialGuard(self.node.node_id)
        self.wake_nodes: dict[bytes, WakeNode] = {}
        self.fingerprint: bytes | None = None
        self.stats: dict[str, Any] = {
            "subscribed": 0,
            "subscribeFailures": 0,
            "pushes": 0,
            "dialsRefused": 0,
            "dialsLinked": 0,
            "dialsFailed": 0,
            "lastPushToLinkMs": None,
            "lastError": "",
        }
        self._tasks = TaskSet(log)

    def status(self) -> dict[str, Any]:
        return {"wakeNodes": [short_id(i) for i in self.wake_nodes], **self.stats}

    # -- subscribing -------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep wake records at up to MAX_WAKE_NODES linked native nodes (every 5 s)."""
        while True:
            try:
                await self.refresh(time.time())
            except (ZMeshError, ValueError) as exc:
                self.stats["subscribeFailures"] += 1
                self.stats["lastError"] = f"subscribe: {exc}"
                log.info("wake event=subscribe_failed error=%r", str(exc))
            await asyncio.sleep(CHECK_INTERVAL)

    def _linked_candidates(self) -> list[WakeNode]:
        node = self.node
        known = node.directory if node.sample is None else {**node.directory, **node.sample}
        out = []
        for peer in sorted(set(node.peers())):
            desc = known.get(peer)
            key = None if desc is None else vapid_key_of(desc)
            if desc is not None and key is not None:
                out.append(WakeNode(desc, key))
        return out

    async def refresh(self, now: float) -> None:
        """Pick new wake nodes while fewer than MAX_WAKE_NODES, and send each linked one
        its record when it has none younger than half its lifetime."""
        for candidate in self._linked_candidates():
            if len(self.wake_nodes) >= MAX_WAKE_NODES:
                break
            self.wake_nodes.setdefault(candidate.descriptor.node_id, candidate)
        for node_id, wake in self.wake_nodes.items():
            if now - wake.sent < RECORD_LIFETIME / 2 or self.node.link_to(node_id) is None:
                continue
            record = await self._record(wake, now)
            if self.driver.call(functools.partial(self.node.send_signal, node_id, record)):
                wake.sent = now
                self.stats["subscribed"] += 1
                log.info("wake event=record_sent wake_node=%s", short_id(node_id))

    async def _record(self, wake: WakeNode, now: float) -> bytes:
        if self.fingerprint is None:
            text = await self.host.rtc("cert", 0, None)
            self.fingerprint = bytes.fromhex((text or "").replace(":", ""))
            if len(self.fingerprint) != 32:
                self.fingerprint = None
                raise ZMeshError("the page gave no SHA-256 certificate fingerprint")
        scope = wake.descriptor.node_id.hex()[:16]
        args = json.dumps({"key": wake.key, "scope": scope})
        subscription = json.loads(await self.host.rtc("pushsub", 0, args) or "null")
        try:
            keys = subscription["keys"]
            endpoint, p256dh, auth = subscription["endpoint"], keys["p256dh"], keys["auth"]
            unsigned = WakeRecord(
                self.node.node_id,
                wake.descriptor.node_id,
                int(now * 1000),
                RECORD_LIFETIME,
                self.fingerprint,
                str(endpoint),
                b64url_decode(str(p256dh)),
                b64url_decode(str(auth)),
                self.node.descriptor(now).encode(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ZMeshError(f"the page gave an unusable push subscription ({exc})") from None
        return unsigned.sign(self.node.identity).encode()

    # -- dials by push -----------------------------------------------------------------------
    def on_push(self, data: bytes, arrived_ms: float) -> None:
        """A push payload the page passed on (padded, decrypted by the browser); a valid
        dial offer starts a connection, anything else is dropped and counted.  Never raises."""
        self.stats["pushes"] += 1
        try:
            if len(data) > MAX_PUSH_BYTES:
                raise RemoteProtocolError("push payload too large")
            payload = unpad_payload(data)
            descs = {i: w.descriptor for i, w in self.wake_nodes.items()}
            dial = self.guard.open(payload, descs, time.time())
        except (RemoteProtocolError, PushError) as exc:
            self.stats["dialsRefused"] += 1
            self.stats["lastError"] = f"push refused: {exc}"
            log.info("wake event=push_refused reason=%r", str(exc))
            return
        self._tasks.spawn(self._dial(dial, self.wake_nodes[dial.sender].descriptor, arrived_ms))

    async def _dial(self, dial: WakeDial, sender: Descriptor, arrived_ms: float) -> None:
        answer = dial.answer_sdp()
        request = {"ufrag": dial.ice_ufrag, "pwd": dial.ice_pwd, "answer": answer.to_sdp("answer")}
        transport = None
        try:
            transport, local_sdp = await self.rtc.push_dial(json.dumps(request))
            local = CompactSdp.from_sdp(local_sdp)
            if (local.ice_ufrag, local.ice_pwd) != (dial.ice_ufrag, dial.ice_pwd):
                raise TransportError("the page did not use the pushed ICE credentials")
            if local.fingerprint != self.fingerprint:
                raise TransportError("the page used another certificate than the published one")
            binding = channel_binding(local.fingerprint, answer.fingerprint)
            await transport.establish(None, binding, RTC_TIMEOUT)
        except (TransportError, RemoteProtocolError, TimeoutError) as exc:
            self.stats["dialsFailed"] += 1
            self.stats["lastError"] = f"dial by push: {exc}"
            log.info("wake event=dial_failed peer=%s error=%r", short_id(sender.node_id), str(exc))
            if transport is not None:
                transport.close()
            return
        self.driver.attach(transport, sender)
        await self.driver.wait_link(sender.node_id)
        self.stats["dialsLinked"] += 1
        self.stats["lastPushToLinkMs"] = round(time.time() * 1000 - arrived_ms, 1)
        log.info("wake event=linked peer=%s", short_id(sender.node_id))

    def close(self) -> None:
        self._tasks.cancel()


__all__ = ["BrowserWake"]
