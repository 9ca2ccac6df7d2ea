"""Adaptive circuit build timeout: Tor's method (proposal 151, ``src/core/or/circuitstats.c``).

Circuit build times are modelled as a Pareto distribution; the timeout is the quantile of
the fitted curve below which ``quantile`` (80%) of builds finish, so a client on a slow
network waits longer and one on a fast network gives up sooner on a stuck relay.

As in Tor (``circuit_build_times_*``):

- the last ``max_samples`` (1000, ``CBT_NCIRCUITS_TO_OBSERVE``) outcomes are kept in a ring;
- the fit is used only once ``min_samples`` (100, ``cbtmincircs``) outcomes were recorded;
  before that, and whenever the fit is impossible, the timeout is ``default``;
- Xm is not the sample minimum but the average of the ``num_modes`` (10, ``cbtnummodes``)
  most frequent 10 ms bins, each taken at its midpoint and weighted by its count
  (``circuit_build_times_get_xm``; ties go to the lower bin);
- alpha is the maximum-likelihood estimate with samples below Xm counted at Xm
  (``circuit_build_times_update_alpha``);
- the timeout is the Pareto quantile ``Xm / (1 - quantile) ** (1 / alpha)``
  (``circuit_build_times_calculate_timeout``), clamped to ``[min_timeout, default]``;
- when ``max_recent_timeouts`` (18) of the last ``recent`` (20) builds timed out, the
  network has changed: the history is dropped and the timeout returns to ``default``
  (``circuit_build_times_network_check_changed``).

Two timeouts, as in Tor (``cbtquantile`` and ``cbtclosequantile``): past :meth:`timeout`
(the ``quantile`` point, 80%) a build is late, and the caller starts another beside it;
past :meth:`close_timeout` (the ``close_quantile`` point, 99%) it is abandoned.  A late
build that completes is a sample like any other, so the fit sees the slow tail a loaded
network has (abandoning builds at the 80% point threw away one build in five and, under
load, every rebuild of a session for seconds on end; D43).  One deliberate difference:
Tor drops circuits abandoned even at the close quantile from the fit; ignoring them would
truncate the sample at that point and ratchet it down.  An abandoned build is therefore a
right-censored sample at the time it waited, and alpha is the censored MLE Tor used from
0.2.2 to 0.4.4 (Fernández, "Bayesian estimation based on trimmed samples from Pareto
populations", eq. 4):
``alpha = completed / (sum ln(max(x, Xm) / Xm) over all samples)``.  Tor's cap of the
timeout at the largest build time seen is not applied either: with censored samples it
would keep the timeout from ever growing past the one that censored them.

Pure: the timeout is a function of the recorded samples only.  A duration that is NaN,
infinite or negative raises ValueError; durations over :data:`MAX_SAMPLE` are stored as it.
"""

import math
from collections import Counter, deque
from dataclasses import dataclass

MAX_SAMPLE = (2**31 - 1) / 1000  # Tor's CBT_BUILD_TIME_MAX, in seconds (~24.8 days)


def _check(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Fit:
    """The Pareto curve fitted to the samples, and the timeout it gives (seconds)."""

    xm: float
    alpha: float
    timeout: float
    close_timeout: float


class BuildTimes:
    """The ring of recent circuit build times and timeouts, and the timeout they imply."""

    __slots__ = (
        "_fit",
        "_recent",
        "_samples",
        "bin_width",
        "close_quantile",
        "default",
        "max_recent_timeouts",
        "min_samples",
        "min_timeout",
        "num_modes",
        "quantile",
        "resets",
    )

    def __init__(
        self,
        *,
        default: float = 30.0,
        min_timeout: float = 1.0,
        quantile: float = 0.8,
        close_quantile: float = 0.99,
        num_modes: int = 10,
        min_samples: int = 100,
        max_samples: int = 1000,
        bin_width: float = 0.010,
        recent: int = 20,
        max_recent_timeouts: int = 18,
    ) -> None:
        """Raises ValueError for settings out of range (see Tor's consensus parameter bounds)."""
        if not 0.0 < _check("min_timeout", min_timeout) <= _check("default", default):
            raise ValueError("need 0 < min_timeout <= default")
        if not 0.0 < quantile <= close_quantile < 1.0:
            raise ValueError("need 0 < quantile <= close_quantile < 1")
        if not 1 <= min_samples <= max_samples:
            raise ValueError("need 1 <= min_samples <= max_samples")
        if num_modes < 1:
            raise ValueError("num_modes must be >= 1")
        if not _check("bin_width", bin_width) > 0.0:
            raise ValueError("bin_width must be positive")
        if not 1 <= max_recent_timeouts <= recent:
            raise ValueError("need 1 <= max_recent_timeouts <= recent")
        self.default = default
        self.min_timeout = min_timeout
        self.quantile = quantile
        self.close_quantile = close_quantile
        self.num_modes = num_modes
        self.min_samples = min_samples
        self.bin_width = bin_width
        self.max_recent_timeouts = max_recent_timeouts
        #: how many times a run of timeouts reset the history
        self.resets = 0
        # (seconds, completed): a timeout is a censored sample at the time it waited
        self._samples: deque[tuple[float, bool]] = deque(maxlen=max_samples)
        self._recent: deque[bool] = deque(maxlen=recent)  # True: timed out
        self._fit: Fit | None = None

    def __len__(self) -> int:
        """How many outcomes (build times and timeouts) the ring holds."""
        return len(self._samples)

    @property
    def timeouts(self) -> int:
        """How many of the held outcomes are timeouts."""
        return sum(1 for _, completed in self._samples if not completed)

    def add(self, seconds: float) -> None:
        """Record a circuit that was built in ``seconds``.

        Raises ValueError if ``seconds`` is NaN, infinite or negative."""
        self._record(min(_check("seconds", seconds), MAX_SAMPLE), completed=True)

    def add_timeout(self, seconds: float | None = None) -> None:
        """Record a build abandoned after ``seconds`` (default: the current close timeout).

        Raises ValueError if ``seconds`` is NaN, infinite or negative."""
        waited = self.close_timeout() if seconds is None else _check("seconds", seconds)
        self._record(min(waited, MAX_SAMPLE), completed=False)
        if sum(self._recent) >= self.max_recent_timeouts:
            self._samples.clear()
            self._recent.clear()
            self._fit = None
            self.resets += 1

    def _record(self, seconds: float, *, completed: bool) -> None:
        self._samples.append((seconds, completed))
        self._recent.append(not completed)
        self._fit = None

    def fit(self) -> Fit | None:
        """The fitted curve, or None while there are too few samples or none completed."""
        if self._fit is None and len(self._samples) >= self.min_samples:
            self._fit = self._compute()
        return self._fit

    def timeout(self) -> float:
        """How long a new circuit build may take before it is late (seconds): then the
        caller builds another beside it."""
        fit = self.fit()
        return self.default if fit is None else fit.timeout

    def close_timeout(self) -> float:
        """How long a build may take before it is abandoned (seconds)."""
        fit = self.fit()
        return self.default if fit is None else fit.close_timeout

    def _compute(self) -> Fit | None:
        width = self.bin_width
        histogram = Counter(int(x // width) for x, completed in self._samples if completed)
        if not histogram:
            return None  # every held build timed out: nothing to fit (Tor: Xm == 0)
        modes = sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))[: self.num_modes]
        xm = sum((b + 0.5) * width * n for b, n in modes) / sum(n for _, n in modes)
        completed = sum(histogram.values())
        log_xm = math.log(xm)
        spread = math.fsum(math.log(x) - log_xm for x, _ in self._samples if x > xm)
        alpha = math.inf if spread <= 0.0 else completed / spread  # inf: a wall at Xm
        return Fit(
            xm,
            alpha,
            self._point(xm, alpha, self.quantile),
            self._point(xm, alpha, self.close_quantile),
        )

    def _point(self, xm: float, alpha: float, quantile: float) -> float:
        """The Pareto quantile ``Xm / (1 - q) ** (1 / alpha)``, in logs so that a tiny
        alpha cannot overflow, clamped to ``[min_timeout, default]``."""
        log_point = math.log(xm) - math.log1p(-quantile) / alpha
        return min(
            max(math.exp(min(log_point, math.log(self.default))), self.min_timeout), self.default
        )
