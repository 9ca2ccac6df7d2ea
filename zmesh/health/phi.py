"""The phi-accrual failure detector.

Hayashibara, Défago, Yared, Katayama, "The phi accrual failure detector" (SRDS 2004), as
Akka (``akka.remote.PhiAccrualFailureDetector``) and Cassandra implement it.  Instead of a
yes/no verdict it reports ``phi = -log10(P(a heartbeat arrives later than now))``, where the
inter-arrival times are modelled as a normal distribution fitted to a bounded window of
recent intervals.  ``phi = 1`` means a 10% chance the peer is merely late, ``phi = 8`` one in
10^8.

Like Akka: the mean is padded by ``acceptable_pause``, the standard deviation is floored at
``min_std``, the window is seeded with two intervals around ``first_interval`` so the first
heartbeats give a usable estimate, an interval that ends a suspected failure (phi already
over ``threshold``) is not added to the window (one long outage would skew it), and the
normal CDF is the logistic approximation ``1 / (1 + exp(-y (1.5976 + 0.070566 y^2)))``
(Bowling et al., "A logistic approximation to the cumulative normal distribution", 2009).

Hostile or broken clocks: a ``now`` that is NaN or infinite raises ValueError; a heartbeat
earlier than the last one is ignored; ``phi`` before the last heartbeat is 0.  Intervals
are capped at :data:`MAX_INTERVAL` so squares never overflow.  ``phi`` is finite and
non-decreasing in ``now`` for a fixed history.
"""

import math
from collections import deque

from .checks import finite

MAX_INTERVAL = 1e9  # seconds (~32 years); longer intervals are stored as this
_Y_MAX = 1e6  # |y| beyond this changes nothing a caller can act on; keeps phi finite
_A, _B = 1.5976, 0.070566  # the logistic approximation's coefficients
_Z_LINEAR = 40.0  # above this log10(1 + e^z) == z / ln 10 to double precision
_PHI_AT_LINEAR = math.log10(1.0 + math.exp(_Z_LINEAR))


class PhiDetector:
    """One monitored peer's heartbeat history and its suspicion level ``phi``."""

    __slots__ = (
        "_acceptable_pause",
        "_intervals",
        "_last",
        "_mean",
        "_min_std",
        "_reach",
        "_std",
        "threshold",
    )

    def __init__(
        self,
        *,
        window: int = 200,
        min_std: float = 0.1,
        acceptable_pause: float = 0.0,
        first_interval: float = 1.0,
        threshold: float = 8.0,
    ) -> None:
        """Raises ValueError for a window under 2 or a non-finite or out-of-range setting."""
        if window < 2:
            raise ValueError("window must hold at least 2 intervals")
        if not finite("min_std", min_std) > 0.0:
            raise ValueError("min_std must be positive")
        if not finite("acceptable_pause", acceptable_pause) >= 0.0:
            raise ValueError("acceptable_pause must be >= 0")
        if not 0.0 < finite("first_interval", first_interval) <= MAX_INTERVAL:
            raise ValueError(f"first_interval must be in (0, {MAX_INTERVAL}]")
        if not finite("threshold", threshold) > 0.0:
            raise ValueError("threshold must be positive")
        self._min_std = min_std
        self._acceptable_pause = acceptable_pause
        self.threshold = threshold
        self._last: float | None = None
        spread = first_interval / 4
        self._intervals: deque[float] = deque(
            (first_interval - spread, first_interval + spread), maxlen=window
        )
        self._mean = first_interval
        self._std = spread
        self._reach = (math.nan, 0.0)  # (threshold, y at which phi reaches it): reaches()

    def __len__(self) -> int:
        """How many intervals the window holds (at most ``window``)."""
        return len(self._intervals)

    @property
    def last_heartbeat(self) -> float | None:
        return self._last

    @property
    def mean(self) -> float:
        """Mean inter-arrival time of the window (seconds)."""
        return self._mean

    @property
    def std(self) -> float:
        """Standard deviation of the window's intervals (before the ``min_std`` floor)."""
        return self._std

    def heartbeat(self, now: float) -> None:
        """Record a heartbeat at ``now``.  Raises ValueError if ``now`` is not finite.

        A heartbeat earlier than the last one is ignored; one that ends a suspected failure
        (phi over ``threshold``) resets the clock but does not enter the window."""
        finite("now", now)
        last = self._last
        if last is not None:
            if now < last:
                return
            if self.available(now):
                self._intervals.append(min(now - last, MAX_INTERVAL))
                n = len(self._intervals)
                self._mean = math.fsum(self._intervals) / n
                self._std = math.sqrt(math.fsum((x - self._mean) ** 2 for x in self._intervals) / n)
        self._last = now

    def phi(self, now: float) -> float:
        """The suspicion level at ``now``: 0 before the first heartbeat or at an earlier time.

        Raises ValueError if ``now`` is not finite."""
        finite("now", now)
        last = self._last
        if last is None or now < last:
            return 0.0
        mean = self._mean + self._acceptable_pause
        std = max(self._std, self._min_std)
        y = min(max((min(now - last, MAX_INTERVAL) - mean) / std, -_Y_MAX), _Y_MAX)
        z = y * (_A + _B * y * y)
        # -log10(1 - CDF) = -log10(e / (1 + e)) with e = exp(-z), i.e. log10(1 + exp(z)):
        # one monotone expression, linear once exp(z) would swamp the 1
        if z < _Z_LINEAR:
            return math.log10(1.0 + math.exp(z))
        return max(_PHI_AT_LINEAR, z / math.log(10.0))

    def reaches(self, threshold: float | None = None) -> float:
        """When ``phi`` reaches ``threshold`` (default: the detector's own) if no heartbeat
        comes first: ``inf`` before the first heartbeat, never before the last one.

        The inverse of :meth:`phi`: ``log10(1 + e^z) = t`` gives ``z = ln(10^t - 1)``, and
        ``y (A + B y^2) = z`` has one real root (Cardano, then a Newton step).  A timer armed
        for this time sees ``phi`` at the threshold up to rounding, so callers compare
        times, not ``phi``.  Raises ValueError for a threshold that is not positive."""
        t = self.threshold if threshold is None else threshold
        if not finite("threshold", t) > 0.0:
            raise ValueError("threshold must be positive")
        last = self._last
        if last is None:
            return math.inf
        if self._reach[0] == t:
            y = self._reach[1]
        else:  # once per threshold: a link asks at every timer
            ln10 = math.log(10.0)
            z = math.log(math.expm1(t * ln10)) if t < _PHI_AT_LINEAR else t * ln10
            p, q = _A / _B, -z / _B  # y^3 + p y + q = 0, p > 0: one real root
            root = math.sqrt(q * q / 4 + p * p * p / 27)
            y = math.cbrt(-q / 2 + root) + math.cbrt(-q / 2 - root)
            y -= (y * (_A + _B * y * y) - z) / (_A + 3 * _B * y * y)
            y = min(max(y, -_Y_MAX), _Y_MAX)
            self._reach = (t, y)
        mean = self._mean + self._acceptable_pause
        return max(last, last + mean + y * max(self._std, self._min_std))

    def available(self, now: float, threshold: float | None = None) -> bool:
        """True while ``phi(now)`` is under ``threshold`` (default: the detector's own).

        Raises ValueError if ``now`` is not finite."""
        return self.phi(now) < (self.threshold if threshold is None else threshold)
