"""The per-link scheduler: the link's messages in, shaped messages out on the profile's
clock (see :mod:`zmesh.shaping`)."""

import math
from collections import deque

from ..errors import CloseCode
from ..link import frames as lf
from ..rng import DeterministicRng, Rng
from .carrier import HEADER, MAX_MESSAGE, MIN_MESSAGE, Deshaper, shaped_message
from .profile import ShapeConfig, VideoProfile, pick, uniform

#: bytes a link may have waiting in its shaper.  Each frame waiting holds one of the
#: link's credits (a frame is sent, as far as the link's flow control knows), so the
#: window (LINK_WINDOW frames) bounds the queue long before this; reaching it is a bug,
#: and the link closes rather than grow it.
MAX_QUEUE = 40 << 20
#: the scheduler may fall this far behind its clock (a stalled driver); beyond it, missed
#: messages are skipped rather than sent in a burst
MAX_LAG = 0.25
KEY_JITTER = 0.25  # a key frame comes every key_interval * (1 +- KEY_JITTER)
#: messages that are one CREDIT, PING or PONG frame (8 bytes each) go ahead of the queue, at
#: the next frame boundary: they are uncounted, their order against other frames does
#: not matter, and a heartbeat or a credit return stuck behind a window of cells would
#: make the link look dead (phi) or stall it
URGENT = frozenset({lf.FrameType.CREDIT, lf.FrameType.PING, lf.FrameType.PONG})
URGENT_SIZE = lf.FRAME_HEADER + 4


class LinkShaper:
    """One link's sending side: a byte queue and the profile's clock.

    The messages it emits depend only on the profile, its Rng and the times of
    :meth:`handle_timer`, never on what is queued: the data fills them, cover the rest."""

    def __init__(
        self,
        config: ShapeConfig,
        video: VideoProfile | None,
        rng: Rng,
        now: float,
        phase: float = 0.0,
    ) -> None:
        self._config = config
        self._video = video
        self._rng = rng
        self._queue: deque[bytes] = deque()
        self._urgent: deque[bytes] = deque()  # see URGENT
        self._current = b""  # the message being sent, cut across shaped messages
        self._offset = 0  # bytes of it already sent
        self.queued = 0  # bytes waiting
        self.outbox: list[bytes] = []
        self.sent = 0  # data bytes sent
        self.cover = 0  # bytes of cover and headers sent
        self._tick = 0
        self._phase = phase  # constant: the grid is phase + k * interval
        self._next_key = math.inf
        if config.mode == "constant":
            self._tick = math.floor((now - phase) / config.interval) + 1
            self.next_send = phase + self._tick * config.interval
        else:
            assert video is not None
            self.next_send = now + pick(rng, video.interval)
            if video.key_interval is not None:
                self._next_key = now + video.key_interval * uniform(rng, 0.0, 1.0)

    def push(self, messages: list[bytes]) -> bool:
        """Queue the link's messages (whole frames each); False if that would pass
        MAX_QUEUE (nothing is queued then: the link must close)."""
        size = sum(len(m) for m in messages)
        if self.queued + size > MAX_QUEUE:
            return False
        for m in messages:
            if len(m) == URGENT_SIZE and m[0] in URGENT:
                self._urgent.append(m)
            else:
                self._queue.append(m)
        self.queued += size
        return True

    def get_timer(self) -> float:
        return self.next_send

    def handle_timer(self, now: float) -> None:
        """Emit the messages due by ``now`` into :attr:`outbox`."""
        if now - self.next_send > MAX_LAG:  # stalled: skip what was missed
            if self._config.mode == "constant":
                self._tick = math.floor((now - self._phase) / self._config.interval)
                self.next_send = self._phase + self._tick * self._config.interval
            else:
                self.next_send = now
        while self.next_send <= now:
            self._emit(self._sizes(self.next_send))
            self._advance()

    def flush(self) -> list[bytes]:
        """Everything queued, at once, in messages of the profile's sizes (the link is
        closing), after what was already due."""
        while self.queued:
            self._emit(self._sizes(self.next_send))
        out, self.outbox = self.outbox, []
        return out

    def _advance(self) -> None:
        if self._config.mode == "constant":
            self._tick += 1
            self.next_send = self._phase + self._tick * self._config.interval
        else:
            assert self._video is not None
            self.next_send += pick(self._rng, self._video.interval)

    def _sizes(self, at: float) -> list[int]:
        """The sizes of the messages of the next frame of the profile (sent at ``at``)."""
        if self._config.mode == "constant":
            return [self._config.size]
        video = self._video
        assert video is not None
        if at >= self._next_key:
            assert video.key_interval is not None
            size = pick(self._rng, video.key_size)
            jitter = uniform(self._rng, 1 - KEY_JITTER, 1 + KEY_JITTER)
            self._next_key = at + video.key_interval * jitter
        else:
            size = pick(self._rng, video.delta_size)
        return split(size)

    def _emit(self, sizes: list[int]) -> None:
        for size in sizes:
            data = self._take(size - HEADER)
            self.sent += len(data)
            self.cover += size - len(data)
            self.outbox.append(shaped_message(data, size))

    def _take(self, n: int) -> bytes:
        """Up to ``n`` bytes of the stream: the rest of the current message, then urgent
        messages, then the queue's."""
        parts: list[bytes] = []
        while n > 0:
            if self._offset == len(self._current):  # at a frame boundary: pick the next
                if self._urgent:
                    self._current = self._urgent.popleft()
                elif self._queue:
                    self._current = self._queue.popleft()
                else:
                    break
                self._offset = 0
            head, start = self._current, self._offset
            end = min(len(head), start + n)
            parts.append(head if start == 0 and end == len(head) else head[start:end])
            self._offset = end
            n -= end - start
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.queued -= len(data)
        return data


def split(size: int) -> list[int]:
    """A frame of ``size`` bytes as message sizes: at most MAX_MESSAGE each, at least
    MIN_MESSAGE (a tiny frame is rounded up to it)."""
    size = max(size, MIN_MESSAGE)
    sizes = [MAX_MESSAGE] * (size // MAX_MESSAGE)
    rest = size % MAX_MESSAGE
    if rest:
        if rest < MIN_MESSAGE:  # move a few bytes from the last full message
            sizes[-1] -= MIN_MESSAGE - rest
            rest = MIN_MESSAGE
        sizes.append(rest)
    return sizes


class Shaping:
    """A node's shaping: a :class:`LinkShaper` per link (unless the mode is ``off``) and a
    :class:`~zmesh.shaping.carrier.Deshaper` per link (always: the peer chooses whether
    it shapes).  Inputs take ``now``; outputs are pulled (:meth:`due`, :meth:`get_timer`).

    Each link's shaper draws from its own DRBG seeded from the node's Rng when the link
    opens, so its trace (message times and sizes) depends on nothing the link carries."""

    def __init__(self, config: ShapeConfig, rng: Rng) -> None:
        self.config = config
        self._rng = rng
        self._video = config.profile() if config.mode == "video" else None
        self._shapers: dict[int, LinkShaper] = {}
        self._deshapers: dict[int, Deshaper] = {}
        self._closed_sent = self._closed_cover = 0  # the stats of links gone
        # constant: this node's grid (off draws nothing: a node that does not shape takes
        # the same random values as before shaping existed)
        self._phase = uniform(rng, 0.0, config.interval) if config.mode == "constant" else 0.0

    def open(self, link_id: int, now: float) -> None:
        """A link opened at ``now``: its messages are shaped from the first one on."""
        self._deshapers[link_id] = Deshaper()
        if self.config.mode != "off":
            rng = DeterministicRng(self._rng.bytes(32), b"zmesh-shaping")
            shaper = LinkShaper(self.config, self._video, rng, now, self._phase)
            self._shapers[link_id] = shaper

    def send(self, link_id: int, messages: list[bytes]) -> list[bytes] | CloseCode:
        """The link's messages: returned to send now (no shaper), or queued (returns
        []).  CloseCode.RESOURCE if the link's shaper is full (the link must close)."""
        shaper = self._shapers.get(link_id)
        if shaper is None:
            return messages
        return [] if shaper.push(messages) else CloseCode.RESOURCE

    def unwrap(self, link_id: int, message: bytes) -> bytes:
        """A received message as whole frames (see :meth:`Deshaper.unwrap`, which raises
        RemoteProtocolError on a malformed one)."""
        deshaper = self._deshapers.get(link_id)
        return message if deshaper is None else deshaper.unwrap(message)

    def close(self, link_id: int, last: list[bytes]) -> list[bytes]:
        """The link closes: what its shaper held and ``last``, shaped, to send at once."""
        self._deshapers.pop(link_id, None)
        shaper = self._shapers.pop(link_id, None)
        if shaper is None:
            return last
        shaper.push(last)  # refused only past MAX_QUEUE: the link is failing anyway
        out = shaper.flush()
        self._closed_sent += shaper.sent
        self._closed_cover += shaper.cover
        return out

    def get_timer(self) -> float:
        return min((s.next_send for s in self._shapers.values()), default=math.inf)

    def handle_timer(self, now: float) -> None:
        for shaper in self._shapers.values():
            if shaper.next_send <= now:
                shaper.handle_timer(now)

    def due(self) -> list[tuple[int, bytes]]:
        """The shaped messages emitted so far, per link, in order."""
        out: list[tuple[int, bytes]] = []
        for link_id, shaper in self._shapers.items():
            if shaper.outbox:
                out += [(link_id, m) for m in shaper.outbox]
                shaper.outbox = []
        return out

    def stats(self) -> tuple[int, int, int]:
        """Data bytes and cover bytes (headers included) sent on shaped links so far, and
        the data bytes waiting."""
        shapers = self._shapers.values()
        return (
            self._closed_sent + sum(s.sent for s in shapers),
            self._closed_cover + sum(s.cover for s in shapers),
            sum(s.queued for s in shapers),
        )
