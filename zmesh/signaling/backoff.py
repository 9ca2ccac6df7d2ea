"""Retry delays for bootstrap: exponential, capped, jittered from the injected Rng.

Attempt ``n`` (from 0) waits a uniform time in ``[d/2, d]`` with ``d = min(cap, base *
2**n)`` ("equal jitter"): never less than half the nominal delay, so retries stay spread
out, and never more than the cap.  Jitter keeps nodes that lost the same relay from
retrying in lockstep.  :meth:`Backoff.reset` after a success starts again at ``base``.
"""

from typing import Final

from ..errors import LocalProtocolError
from ..rng import Rng, randbelow

BASE: Final = 2.0
CAP: Final = 30.0
_RESOLUTION: Final = 1 << 32


class Backoff:
    """Exponential backoff with equal jitter."""

    def __init__(self, rng: Rng, *, base: float = BASE, cap: float = CAP) -> None:
        if not 0 < base <= cap:
            raise LocalProtocolError("backoff needs 0 < base <= cap")
        self.rng = rng
        self.base = base
        self.cap = cap
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; each call counts one failure."""
        nominal = min(self.cap, self.base * 2.0 ** min(self.attempts, 64))
        self.attempts += 1
        fraction = randbelow(self.rng, _RESOLUTION + 1) / _RESOLUTION
        return nominal / 2 + nominal / 2 * fraction

    def reset(self) -> None:
        """An attempt succeeded: the next delay starts from ``base`` again."""
        self.attempts = 0
