"""A token bucket: how much work a peer may make us do per second.

Work caused by unauthenticated input (decapsulations, signature checks, relayed signals)
is budgeted per peer (docs/decisions.md, D32): a bucket holds at most ``burst`` tokens and
refills at ``rate`` tokens per second of the caller's clock.
"""

from dataclasses import dataclass

# Refills are computed in floating point: a bucket due to hold exactly ``n`` tokens at
# ``ready_at`` may hold n - 1e-12.  Without the tolerance a timer armed for ``ready_at``
# would fire, take nothing and be armed for the same instant again.
_EPSILON = 1e-6


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # the most tokens the bucket holds
    tokens: float = -1.0  # starts full
    updated: float = 0.0

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if the bucket holds them; False (taking nothing) if not."""
        tokens = self.tokens
        if tokens < 0:
            tokens, self.updated = self.burst, now
        elif now > self.updated:
            tokens = min(self.burst, tokens + (now - self.updated) * self.rate)
            self.updated = now
        if tokens + _EPSILON < n:
            self.tokens = tokens
            return False
        self.tokens = tokens - n if tokens > n else 0.0
        return True

    def ready_at(self, now: float, n: float = 1.0) -> float:
        """When ``n`` tokens will be available (``now`` if they already are)."""
        if self.tokens < 0:
            return now
        have = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        return now if have + _EPSILON >= n else now + (n - have) / self.rate
