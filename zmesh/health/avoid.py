"""Relays that failed us are avoided for a while: a bounded table of decaying failure scores.

Each failure adds its weight to the relay's score, and the score halves every
``half_life`` seconds (exponential decay, as in the decaying failure counters of Tor's
guard and circuit-build-timeout bookkeeping and Envoy's outlier detection), so a relay
that failed once is soon given another chance and one that keeps failing stays avoided.
A relay is avoided while its score is at least ``threshold``: with the defaults (a
60 s half-life, threshold 0.5) one failure avoids a relay for 60 s, two for 120 s, and
each further one for longer.  One table (``CircuitBuilder.avoidance``) counts a failed
build, a session's lost leg (its middle) and a peer whose link failed (the node adds
``LINK_FAILED``, and :meth:`Avoidance.clear` forgets it when the link is back).

Bounded against an attacker who spreads failures over many cheap identities: at most
``max_entries`` relays are tracked; a full table evicts its lowest-scoring entry (which
may be the one just added; ties go to the oldest entry), so spraying ids cannot grow
memory nor push out a relay that failed more.  An entry whose score has decayed under
``threshold / 1000`` is dropped when next looked at.  Scores are capped at
:data:`MAX_SCORE`.

A ``now`` that is NaN or infinite, or a weight that is not a finite positive number,
raises ValueError.  A ``now`` earlier than an entry's last update decays nothing.
"""

from .checks import finite

MAX_SCORE = 1e6
HALF_LIFE = 60.0
THRESHOLD = 0.5


class Avoidance:
    """Decaying failure scores keyed by node id."""

    __slots__ = ("_entries", "half_life", "max_entries", "threshold")

    def __init__(
        self,
        *,
        half_life: float = HALF_LIFE,
        threshold: float = THRESHOLD,
        max_entries: int = 1024,
    ) -> None:
        """Raises ValueError for a non-positive or non-finite setting."""
        if not finite("half_life", half_life) > 0.0:
            raise ValueError("half_life must be positive")
        if not 0.0 < finite("threshold", threshold) <= MAX_SCORE:
            raise ValueError(f"threshold must be in (0, {MAX_SCORE}]")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.half_life = half_life
        self.threshold = threshold
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, float]] = {}  # node id -> (score, as of)

    def __len__(self) -> int:
        """How many relays are tracked (decayed entries not yet dropped included)."""
        return len(self._entries)

    def _decayed(self, entry: tuple[float, float], now: float) -> float:
        score, since = entry
        elapsed = now - since
        return score if elapsed <= 0.0 else score * 0.5 ** (elapsed / self.half_life)

    def failed(self, node_id: bytes, now: float, weight: float = 1.0) -> None:
        """Count a failure of ``node_id`` at ``now``.

        Raises ValueError if ``now`` is not finite or ``weight`` not finite and positive."""
        finite("now", now)
        if not finite("weight", weight) > 0.0:
            raise ValueError("weight must be positive")
        entry = self._entries.pop(node_id, None)
        score = 0.0 if entry is None else self._decayed(entry, now)
        since = now if entry is None else max(entry[1], now)
        self._entries[node_id] = (min(score + weight, MAX_SCORE), since)
        if len(self._entries) > self.max_entries:
            self._shed(now)

    def _shed(self, now: float) -> None:
        floor = self.threshold / 1000
        scores = {k: self._decayed(e, now) for k, e in self._entries.items()}
        for key, score in scores.items():
            if score < floor:
                del self._entries[key]
        if len(self._entries) > self.max_entries:
            del self._entries[min(self._entries, key=scores.__getitem__)]

    def clear(self, node_id: bytes) -> None:
        """Forget ``node_id``'s failures (we saw it working again)."""
        self._entries.pop(node_id, None)

    def score(self, node_id: bytes, now: float) -> float:
        """The decayed failure score of ``node_id`` at ``now`` (0 if unknown).

        Raises ValueError if ``now`` is not finite."""
        finite("now", now)
        entry = self._entries.get(node_id)
        if entry is None:
            return 0.0
        score = self._decayed(entry, now)
        if score < self.threshold / 1000:
            del self._entries[node_id]
            return 0.0
        return score

    def avoided(self, node_id: bytes, now: float) -> bool:
        """True while ``node_id``'s score is at least ``threshold``.

        Raises ValueError if ``now`` is not finite."""
        return self.score(node_id, now) >= self.threshold

    def avoided_ids(self, now: float) -> list[bytes]:
        """The ids avoided at ``now``, least recently failed first.

        Raises ValueError if ``now`` is not finite."""
        return [node_id for node_id in list(self._entries) if self.avoided(node_id, now)]
