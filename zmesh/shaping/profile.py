"""Shaping profiles: when a shaped link sends a message, and of what size.

* ``off``: no shaping; the link's messages go out as the link makes them.
* ``constant``: one message of :attr:`ShapeConfig.size` bytes every
  :attr:`ShapeConfig.interval` seconds, busy or idle, on a grid shared by all of a node's
  links (its phase drawn once per node, so that a frame forwarded across several hops
  waits half an interval per hop on average, not a whole one).  The default, 8,448 bytes
  every 20 ms (3.4 Mbit/s per link direction), carries a whole cell frame (8,200 B) and
  241 bytes of control frames per message: a lone cell never waits for a second message.
* ``video``: the cadence and sizes of a real WebRTC video call, measured in Chromium
  (``zmesh/shaping/video_profile.json``, written by ``bench/shaping_profile.py``): each
  gap and each delta frame's size is drawn from the measured distribution, and a key
  frame (a size from the key frames' distribution) comes every measured key-frame
  interval, give or take a quarter of it.  A frame over 64 KiB goes as several messages
  at once (a key frame is a burst of packets in RTP too).

Draws come from the :class:`~zmesh.rng.Rng` the scheduler is given, so a seeded run gives
the same trace.
"""

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from ..rng import Rng, randbelow
from .carrier import MAX_MESSAGE, MIN_MESSAGE

Mode = Literal["off", "constant", "video"]
MODES: tuple[Mode, ...] = ("off", "constant", "video")
PROFILE_FILE = "video_profile.json"
MAX_SAMPLES = 65536  # samples read per distribution (the file holds at most 4,096)


@dataclass(frozen=True)
class VideoProfile:
    """A measured call: sorted samples of gaps (seconds) and frame sizes (bytes)."""

    interval: tuple[float, ...]
    delta_size: tuple[int, ...]
    key_size: tuple[int, ...]
    key_interval: float | None  # seconds between key frames (None: never one again)
    mean_bitrate: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if not self.interval or not self.delta_size:
            raise ValueError("a video profile needs gaps and delta frame sizes")
        if min(self.interval) < 0 or max(self.interval) > 10:
            raise ValueError("video profile gaps must be within 0..10 s")
        if self.key_interval is not None and (self.key_interval <= 0 or not self.key_size):
            raise ValueError("a key-frame interval needs key frame sizes and must be positive")
        if min((*self.delta_size, *self.key_size)) < 1:
            raise ValueError("video profile frame sizes must be positive")

    @classmethod
    def from_json(cls, text: str) -> "VideoProfile":
        """Parse ``bench/shaping_profile.py``'s document; ValueError if it is malformed."""
        try:
            doc = json.loads(text)
            key_interval = doc.get("key_interval")
            return cls(
                interval=tuple(float(v) for v in doc["interval"][:MAX_SAMPLES]),
                delta_size=tuple(int(v) for v in doc["delta_size"][:MAX_SAMPLES]),
                key_size=tuple(int(v) for v in doc.get("key_size", [])[:MAX_SAMPLES]),
                key_interval=None if key_interval is None else float(key_interval),
                mean_bitrate=int(doc.get("mean_bitrate", 0)),
                source=str(doc.get("source", "")),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed video profile: {exc!r}") from None

    @classmethod
    def measured(cls) -> "VideoProfile":
        """The profile measured in Chromium and shipped with zMesh."""
        return cls.from_json(resources.files(__package__).joinpath(PROFILE_FILE).read_text())


@dataclass(frozen=True)
class ShapeConfig:
    """How a node shapes what it sends on each link (see the module doc)."""

    mode: Mode = "off"
    size: int = 8448  # constant: bytes per message (a cell frame, its header, 241 to spare)
    interval: float = 0.02  # constant: seconds between messages
    video: VideoProfile | None = field(default=None, compare=False)  # video: None = measured

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"shaping mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not MIN_MESSAGE <= self.size <= MAX_MESSAGE:
            raise ValueError(f"shaped message size must be {MIN_MESSAGE}..{MAX_MESSAGE} bytes")
        if not 0.001 <= self.interval <= 10:
            raise ValueError("shaping interval must be 1 ms to 10 s")

    def profile(self) -> VideoProfile:
        """The video profile in use (the measured one unless one was given)."""
        return self.video if self.video is not None else VideoProfile.measured()


NO_SHAPING = ShapeConfig()


def pick[T](rng: Rng, samples: tuple[T, ...]) -> T:
    """One sample drawn uniformly: a draw from the empirical distribution."""
    return samples[randbelow(rng, len(samples))]


def uniform(rng: Rng, low: float, high: float) -> float:
    """A float in [low, high) with 32 bits of resolution."""
    return low + (high - low) * int.from_bytes(rng.bytes(4), "big") / 2**32
