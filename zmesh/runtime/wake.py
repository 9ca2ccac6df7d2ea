"""A native node wakes browser nodes by Web Push and links to them with no signaling round
trip (docs/decisions.md, D54; the records and offers are :mod:`zmesh.signaling.wake`).

:class:`WakeService` runs next to a native node's :class:`~zmesh.runtime.aio.AsyncNode`:

* it publishes the node's VAPID public key as a ``webpush:`` address (:func:`wake_address`,
  added to the descriptor by ``zmesh relay``) and keeps the wake records browsers send it
  (SIGNAL payloads, :class:`~zmesh.signaling.wake.WakeBook`);
* when the link to a browser whose record it holds closes and stays closed for
  :data:`WAKE_DELAY` seconds, it *dials by push* (:meth:`WakeService.wake`): it builds the
  browser's offer itself (the record's DTLS fingerprint, ICE credentials of its own
  choosing, no candidates: the browser's checks arrive as peer-reflexive), answers it
  with libdatachannel, and pushes (RFC 8291, padded) a signed
  :class:`~zmesh.signaling.wake.WakeDial` with the answer and those credentials; the
  browser's connectivity checks then open the connection, and the link handshake runs as
  for any link.  A browser is woken at most :data:`MAX_WAKES_PER_LOSS` times per lost
  link, :data:`WAKE_RETRY` seconds apart, and at most :data:`MAX_WAKING` at once.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from ..errors import RemoteProtocolError
from ..identity import short_id
from ..node import Event, LinkClosed
from ..signaling.sdp import CompactSdp
from ..signaling.wake import (
    DIAL_KIND,
    NONCE_SIZE,
    RECORD_KIND,
    WAKE_WEBPUSH_SCHEME,
    WakeBook,
    make_dial,
)
from .aio import AsyncNode, wall_clock
from .push import NodeVapidKey, PushError, PushSubscription, send_push
from .rtc import TransportError
from .tasks import TaskSet

log = logging.getLogger("zmesh.wake")

WAKE_DELAY: Final = 2.0  # seconds a browser's link stays down before it is woken
WAKE_RETRY: Final = 20.0  # seconds between wakes of one browser
MAX_WAKES_PER_LOSS: Final = 3
MAX_WAKING: Final = 16
DIAL_LIFETIME_MS: Final = 60_000
PUSH_TTL: Final = 60  # seconds the push service keeps the dial (it expires with it)


WAKE_ERRORS = (PushError, TransportError, RemoteProtocolError, OSError, TimeoutError, ValueError)


def wake_address(key: NodeVapidKey) -> str:
    """The descriptor address that publishes ``key`` (``webpush:`` + base64url)."""
    return WAKE_WEBPUSH_SCHEME + key.application_server_key


class WakeService:
    """Wake records in, dials by push out, for one native node (see the module doc)."""

    def __init__(
        self,
        driver: AsyncNode,
        key: NodeVapidKey,
        *,
        delay: float = WAKE_DELAY,
        push: Callable[..., Awaitable[object]] = send_push,
    ) -> None:
        self.driver = driver
        self.key = key
        self.delay = delay
        self._push = push
        self.book = WakeBook(driver.node.node_id)
        self.stats = dict.fromkeys(("records", "refused", "wakes", "pushed", "linked", "failed"), 0)
        self._waking: set[bytes] = set()
        self._tasks = TaskSet(log)
        self._chained = driver.on_event
        driver.on_event = self._on_event
        driver.on_wake = self.on_signal

    def on_signal(self, origin: bytes, payload: bytes) -> None:
        """A wake payload in a SIGNAL frame from ``origin``: keep a valid record; drop the
        rest (dials are for browsers)."""
        if payload[:1] != bytes([RECORD_KIND]):
            if payload[:1] == bytes([DIAL_KIND]):
                log.info("wake event=drop origin=%s reason=dial_to_a_native_node", short_id(origin))
            return
        try:
            stored = self.book.receive(payload, origin, wall_clock())
        except RemoteProtocolError as exc:
            self.stats["refused"] += 1
            log.info("wake event=record_refused origin=%s reason=%r", short_id(origin), str(exc))
            return
        self.stats["records"] += 1
        log.info(
            "wake event=record browser=%s lifetime=%d",
            short_id(stored.record.browser),
            stored.record.lifetime_s,
        )

    def _on_event(self, event: Event) -> None:
        if self._chained is not None:
            self._chained(event)
        if isinstance(event, LinkClosed) and event.peer_id is not None:
            peer = event.peer_id
            known = self.book.get(peer, wall_clock()) is not None
            if known and peer not in self._waking and len(self._waking) < MAX_WAKING:
                self._waking.add(peer)
                self._tasks.spawn(self._keep_awake(peer))

    async def _keep_awake(self, browser: bytes) -> None:
        """Wake ``browser`` while its link stays down (at most MAX_WAKES_PER_LOSS times)."""
        try:
            await asyncio.sleep(self.delay)
            for _ in range(MAX_WAKES_PER_LOSS):
                if self.driver.node.link_to(browser) is not None:
                    return
                if await self.wake(browser):
                    return
                await asyncio.sleep(WAKE_RETRY)
        finally:
            self._waking.discard(browser)

    async def wake(self, browser: bytes) -> bool:
        """Dial ``browser`` by push; True once the link is up.  Failures are logged and
        counted (no wake record, the push refused or unreachable, no connection in time)."""
        now = wall_clock()
        stored = self.book.get(browser, now)
        if stored is None:
            return False
        record, rng = stored.record, self.driver.rng
        self.stats["wakes"] += 1
        ufrag, pwd = rng.bytes(6).hex(), rng.bytes(12).hex()
        offer = CompactSdp(ufrag, pwd, record.fingerprint, "actpass").to_sdp("offer")
        pending = None
        try:
            pending, answer_sdp = await self.driver.rtc.answer(offer, loopback=self.driver.loopback)
            dial = make_dial(
                self.driver.node.identity,
                browser,
                ice_ufrag=ufrag,
                ice_pwd=pwd,
                answer=CompactSdp.from_sdp(answer_sdp),
                nonce=rng.bytes(NONCE_SIZE),
                now=wall_clock(),
                lifetime_ms=DIAL_LIFETIME_MS,
            )
            subscription = PushSubscription(record.endpoint, record.p256dh, record.auth)
            await self._push(subscription, dial.encode(), self.key, ttl=PUSH_TTL, urgency="high")
            self.stats["pushed"] += 1
            log.info("wake event=pushed browser=%s", short_id(browser))
            transport = await pending.connected(timeout=DIAL_LIFETIME_MS / 1000)
            pending = None
        except WAKE_ERRORS as exc:
            self.stats["failed"] += 1
            if isinstance(exc, PushError) and exc.status in (404, 410):
                self.book.forget(browser)  # the subscription is gone (RFC 8030 section 7.3)
            log.info("wake event=failed browser=%s error=%r", short_id(browser), str(exc))
            return False
        finally:
            if pending is not None:
                await pending.aclose()
        # the browser runs the link handshake as its initiator (it checks it reached the
        # node that signed the dial); its certificate is the one in the record
        self.driver.attach(transport, None)
        self.stats["linked"] += 1
        return True

    async def close(self) -> None:
        self._tasks.cancel()


__all__ = ["WakeService", "wake_address"]
