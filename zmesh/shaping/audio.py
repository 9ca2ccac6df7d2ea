"""What a call sends beside its video, for the media transport (docs/decisions.md D59).

A Chromium video call also carries Opus audio (a packet about every 20 ms each way,
with jitter, 41-132 bytes) and transport-wide congestion control feedback (RTCP, ~16 a
second each way, 42-62 bytes); a media link without them was told from calls by its
sizes alone (a third of a call's datagrams are under 200 bytes).  :class:`AudioProfile`
holds those sizes and the audio's gaps as measured from calls captured by
``bench/classify.py`` (``audio_profile.json``, written by ``bench/audio_profile.py``):
the UDP payload sizes of the datagrams on the wire, so a sender subtracts what its own
stack adds (RTP header, extensions, SRTP tag) to get the payload it hands over.  Draws
come from the :class:`~zmesh.rng.Rng` given.
"""

import json
from dataclasses import dataclass
from importlib import resources
from typing import Final

from ..rng import Rng
from .profile import pick

PROFILE_FILE: Final = "audio_profile.json"
MAX_SAMPLES: Final = 65536
AUDIO_INTERVAL: Final = 0.02  # Opus frames of 20 ms, as WebRTC sends them
MAX_DATAGRAM: Final = 1500


@dataclass(frozen=True)
class AudioProfile:
    """Sorted samples of UDP payload sizes (bytes) and the feedback rate (per second)."""

    audio_size: tuple[int, ...]
    feedback_size: tuple[int, ...]
    feedback_rate: float
    source: str = ""
    #: gaps between audio packets, seconds (empty: every AUDIO_INTERVAL); Chromium's jitter
    #: (p10-p90 about 6-28 ms around 20) where aiortc would send like a clock
    audio_gap: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.audio_size or not self.feedback_size:
            raise ValueError("an audio profile needs audio and feedback sizes")
        if (
            min((*self.audio_size, *self.feedback_size)) < 1
            or max((*self.audio_size, *self.feedback_size)) > MAX_DATAGRAM
        ):
            raise ValueError(f"audio profile sizes must be within 1..{MAX_DATAGRAM} bytes")
        if not 0 <= self.feedback_rate <= 1000:
            raise ValueError("the feedback rate must be within 0..1000 a second")
        if self.audio_gap and not 0 <= min(self.audio_gap) <= max(self.audio_gap) <= 10:
            raise ValueError("audio gaps must be within 0..10 s")

    @classmethod
    def from_json(cls, text: str) -> "AudioProfile":
        """Parse ``bench/audio_profile.py``'s document; ValueError if it is malformed."""
        try:
            doc = json.loads(text)
            return cls(
                audio_size=tuple(int(v) for v in doc["audio_size"][:MAX_SAMPLES]),
                feedback_size=tuple(int(v) for v in doc["feedback_size"][:MAX_SAMPLES]),
                feedback_rate=float(doc["feedback_rate"]),
                source=str(doc.get("source", "")),
                audio_gap=tuple(float(v) for v in doc.get("audio_gap", [])[:MAX_SAMPLES]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed audio profile: {exc!r}") from None

    @classmethod
    def measured(cls) -> "AudioProfile":
        """The profile measured from Chromium calls and shipped with zMesh."""
        return cls.from_json(resources.files(__package__).joinpath(PROFILE_FILE).read_text())

    def audio_payload(self, rng: Rng, overhead: int) -> int:
        """An audio payload size: a measured datagram size less ``overhead`` (at least 1)."""
        return max(1, pick(rng, self.audio_size) - overhead)

    def audio_interval(self, rng: Rng) -> float:
        """Seconds until the next audio packet."""
        return pick(rng, self.audio_gap) if self.audio_gap else AUDIO_INTERVAL

    def feedback_payload(self, rng: Rng, overhead: int) -> int:
        """A feedback packet's size before ``overhead`` (at least 1)."""
        return max(1, pick(rng, self.feedback_size) - overhead)
