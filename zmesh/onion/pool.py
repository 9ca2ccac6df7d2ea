"""A client's circuit pool: which circuit a new stream rides, and when a circuit closes.

Theory of operation.  Streams carry an isolation key (the SOCKS username, as Tor's
IsolateSOCKSAuth; the origin for the browser's ``zmesh.fetch``).  Streams with the same
key share circuits, spread least-loaded over up to ``circuits_per_key`` of them; streams
with different keys never share one.  A circuit is *fresh* for ``max_dirtiness`` seconds
after it was built (Tor's MaxCircuitDirtiness): only fresh circuits take new streams.
After that it is *retired*, and it is closed as soon as its last stream ends, so that the
relays on its path drop its keys.  A circuit that fails is forgotten and closed, and its
relays other than the guard are suspected: counted as failed in an
:class:`~zmesh.health.avoid.Avoidance` table (the circuit builder's, which counts failed
builds too), which path selection avoids while their decaying scores stay high.

The pool is sans-I/O.  :meth:`CircuitPool.request` returns a decision: :class:`UseCircuit`
(the stream's count is already taken) or :class:`BuildPath`; the driver builds the
circuit and reports :meth:`~CircuitPool.built` or :meth:`~CircuitPool.suspect`.  The
driver tells the pool when a stream ends (:meth:`~CircuitPool.stream_closed`) and when
the node closed a circuit on its own (:meth:`~CircuitPool.circuit_closed`), calls
:meth:`~CircuitPool.handle_timer` at :meth:`~CircuitPool.get_timer`, and after every call
closes the circuits in :meth:`~CircuitPool.circuits_to_close`.

Bounds.  At most ``max_keys`` isolation keys are held; a new key beyond that evicts the
least recently used one, whose circuits retire.  A key holds at most ``circuits_per_key``
fresh circuits (a build that lands beyond that retires the key's oldest), so fresh
circuits number at most ``max_keys * circuits_per_key``; a retired circuit is held only
while it carries a stream.  The avoidance table bounds itself.
"""

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from ..errors import LocalProtocolError
from ..health.avoid import HALF_LIFE, Avoidance
from ..rng import Rng
from .paths import Relay, choose_path

log = logging.getLogger("zmesh.pool")

MAX_DIRTINESS = 600.0
CIRCUITS_PER_KEY = 2
SUSPECT_FOR = HALF_LIFE  # a relay that failed once is avoided this long
MAX_KEYS = 256


@dataclass(eq=False, slots=True)
class PooledCircuit:
    """One of the pool's circuits; ``streams`` counts the streams it carries now."""

    cid: int
    path: list[bytes]  # node ids, guard first
    first_used: float
    streams: int = 0
    key: bytes = b""
    retired: bool = False


@dataclass(frozen=True, slots=True)
class UseCircuit:
    """Decision: open the stream on this circuit (its stream count is already taken)."""

    circuit: PooledCircuit


@dataclass(frozen=True, slots=True)
class BuildPath[D: Relay]:
    """Decision: build a circuit along ``path`` (guard, middle, exit) for ``key``."""

    key: bytes
    path: list[D]


class CircuitPool:
    """Circuits shared by isolation key; see the module's theory of operation."""

    def __init__(
        self,
        rng: Rng,
        *,
        max_dirtiness: float = MAX_DIRTINESS,
        circuits_per_key: int = CIRCUITS_PER_KEY,
        max_keys: int = MAX_KEYS,
        avoidance: Avoidance | None = None,
    ) -> None:
        """``avoidance``: the table of failed relays to share (a new one if None).  Raises
        ValueError for a non-positive limit."""
        if max_dirtiness <= 0 or min(circuits_per_key, max_keys) < 1:
            raise ValueError("pool limits must be positive")
        self._rng = rng
        self.max_dirtiness = max_dirtiness
        self.circuits_per_key = circuits_per_key
        self.max_keys = max_keys
        self.avoidance = avoidance if avoidance is not None else Avoidance()
        # Fresh circuits per key, oldest first; keys least recently used first.
        self._keys: dict[bytes, list[PooledCircuit]] = {}
        self._circuits: dict[int, PooledCircuit] = {}  # every circuit held, fresh or retired
        self._to_close: list[int] = []

    # -- decisions ------------------------------------------------------------------
    def request[D: Relay](
        self,
        key: bytes,
        now: float,
        relays: Iterable[D],
        linked: Collection[bytes],
        own_id: bytes,
    ) -> UseCircuit | BuildPath[D]:
        """Choose a circuit for a new stream with isolation key ``key``.

        Reuses the least-loaded fresh circuit once the key has ``circuits_per_key`` of
        them, else asks for a new one along a path drawn from ``relays`` (see
        :meth:`choose_path`).  Raises NoPathError when a build is needed and no path
        exists."""
        fresh = self._keys.get(key)
        if fresh is not None:
            for circuit in [c for c in fresh if self._dirty(c, now)]:
                self._retire(circuit)
            fresh = self._keys.get(key)
        if fresh is not None and len(fresh) >= self.circuits_per_key:
            self._keys[key] = self._keys.pop(key)  # most recently used now
            circuit = min(fresh, key=lambda c: c.streams)
            circuit.streams += 1
            return UseCircuit(circuit)
        return BuildPath(key, self.choose_path(relays, linked, own_id, now))

    def choose_path[D: Relay](
        self, relays: Iterable[D], linked: Collection[bytes], own_id: bytes, now: float
    ) -> list[D]:
        """A guard -> middle -> exit path avoiding current suspects; NoPathError if none
        (see :func:`zmesh.onion.paths.choose_path`)."""
        suspects = set(self.avoidance.avoided_ids(now))
        return choose_path(self._rng, relays, linked, own_id, suspects)

    # -- inputs ---------------------------------------------------------------------
    def built(self, key: bytes, cid: int, path: Sequence[bytes], now: float) -> PooledCircuit:
        """A circuit asked for by :class:`BuildPath` is up and carries the requesting
        stream.  Returns it.  Raises LocalProtocolError if ``cid`` is already held."""
        if cid in self._circuits:
            raise LocalProtocolError(f"circuit {cid} is already in the pool")
        circuit = PooledCircuit(cid, list(path), now, streams=1, key=key)
        self._circuits[cid] = circuit
        fresh = self._keys.pop(key, [])
        fresh.append(circuit)
        self._keys[key] = fresh
        while len(fresh) > self.circuits_per_key:  # concurrent builds for one key
            self._retire(fresh[0])
        while len(self._keys) > self.max_keys:
            oldest = next(iter(self._keys))
            log.debug("pool event=key_evicted keys=%d", len(self._keys))
            for old in list(self._keys[oldest]):
                self._retire(old)
        return circuit

    def suspect(self, path: Sequence[bytes], now: float) -> None:
        """A circuit along ``path`` failed (to build or later): count a failure of each of
        its relays after the guard."""
        for node_id in path[1:]:
            self.avoidance.failed(node_id, now)

    def forget(self, circuit: PooledCircuit, now: float, *, failed: bool) -> None:
        """Stop using ``circuit`` and close it; if it ``failed``, suspect its path."""
        if failed:
            self.suspect(circuit.path, now)
        if self._circuits.get(circuit.cid) is circuit:
            self._close(circuit)

    def stream_closed(self, circuit: PooledCircuit, now: float) -> None:
        """One of ``circuit``'s streams ended; a retired circuit closes with its last."""
        if self._circuits.get(circuit.cid) is not circuit or circuit.streams == 0:
            return
        circuit.streams -= 1
        if not circuit.retired and self._dirty(circuit, now):
            self._retire(circuit)
        elif circuit.retired and circuit.streams == 0:
            self._close(circuit)

    def circuit_closed(self, cid: int) -> None:
        """The node closed circuit ``cid`` itself (a DESTROY, a lost link): drop it."""
        circuit = self._circuits.pop(cid, None)
        if circuit is not None:
            self._unlist(circuit)

    def handle_timer(self, now: float) -> None:
        """Retire the circuits past ``max_dirtiness``; close those without streams."""
        for fresh in list(self._keys.values()):
            for circuit in [c for c in fresh if self._dirty(c, now)]:
                self._retire(circuit)

    # -- outputs --------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When the next fresh circuit turns dirty, or None if none is held."""
        deadlines = [c.first_used for fresh in self._keys.values() for c in fresh]
        return min(deadlines) + self.max_dirtiness if deadlines else None

    def circuits_to_close(self) -> list[int]:
        """The ids of the circuits the driver must close now (each is given once)."""
        out, self._to_close = self._to_close, []
        return out

    def circuit_ids(self) -> list[int]:
        """Every circuit the pool holds, fresh or retired."""
        return list(self._circuits)

    def suspects(self, now: float) -> list[bytes]:
        """The node ids avoided at ``now``, least recently failed first."""
        return self.avoidance.avoided_ids(now)

    def keys(self) -> list[bytes]:
        """The isolation keys held, least recently used first."""
        return list(self._keys)

    # -- internals ------------------------------------------------------------------
    def _dirty(self, circuit: PooledCircuit, now: float) -> bool:
        return now - circuit.first_used >= self.max_dirtiness

    def _retire(self, circuit: PooledCircuit) -> None:
        self._unlist(circuit)
        circuit.retired = True
        if circuit.streams == 0:
            self._close(circuit)

    def _close(self, circuit: PooledCircuit) -> None:
        self._unlist(circuit)
        del self._circuits[circuit.cid]
        self._to_close.append(circuit.cid)
        log.debug("circuit=%d event=pool_close", circuit.cid)

    def _unlist(self, circuit: PooledCircuit) -> None:
        if circuit.retired:
            return
        fresh = self._keys.get(circuit.key)
        if fresh is not None and circuit in fresh:
            fresh.remove(circuit)
            if not fresh:
                del self._keys[circuit.key]


__all__ = [
    "CIRCUITS_PER_KEY",
    "MAX_DIRTINESS",
    "MAX_KEYS",
    "SUSPECT_FOR",
    "BuildPath",
    "CircuitPool",
    "PooledCircuit",
    "UseCircuit",
]
