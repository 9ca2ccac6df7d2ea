"""Circuits for a client: the asyncio driver of the core pool (:mod:`zmesh.onion.pool`).

The policy (which path, which circuit a stream rides, when a circuit retires or closes)
lives in the sans-I/O :class:`zmesh.onion.pool.CircuitPool`; this wrapper feeds it the
wall clock, the node's directory and links, builds the circuits it asks for, closes the
circuits it gives up (DESTROY, so every relay on the path drops the circuit's keys) and
keeps one timer armed for its next deadline.  Callers tell it when a stream ends
(:meth:`CircuitPool.stream_closed`) and when a circuit failed (:meth:`CircuitPool.forget`).
Runs on every runtime (CPython and Pyodide): it needs only a driver.
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ZMeshError
from ..identity import Descriptor, short_id
from ..onion import pool as onion_pool
from ..onion.paths import HOPS, NoPathError
from ..onion.pool import PooledCircuit, UseCircuit
from ..rng import Rng
from .aio import AsyncNode, StreamClosedError, wall_clock
from .entropy import SystemRng

log = logging.getLogger("zmesh.circuits")

BUILD_TIMEOUT = 5.0
MAX_DIRTINESS = onion_pool.MAX_DIRTINESS
SUSPECT_FOR = onion_pool.SUSPECT_FOR
BUILD_ATTEMPTS = 4


@dataclass(eq=False)
class CircuitPool:
    """Circuits shared by isolation key (see :mod:`zmesh.onion.pool`), driven on asyncio."""

    driver: AsyncNode
    max_dirtiness: float = MAX_DIRTINESS
    circuits_per_key: int = onion_pool.CIRCUITS_PER_KEY
    rng: Rng = field(default_factory=SystemRng)
    clock: Callable[[], float] = wall_clock
    core: onion_pool.CircuitPool = field(init=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False)
    _timer_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.core = onion_pool.CircuitPool(
            self.rng,
            max_dirtiness=self.max_dirtiness,
            circuits_per_key=self.circuits_per_key,
            avoidance=self.driver.node.builder.avoidance,  # one table: builds and circuits
        )

    def usable(self) -> bool:
        """Whether a path can be drawn now (enough relays known, an exit, a link)."""
        try:
            self.choose_path()
        except NoPathError:
            return False
        return True

    def choose_path(self) -> list[Descriptor]:
        """guard (a linked relay) -> middle relay -> exit, all distinct, avoiding suspects;
        NoPathError if the node does not know enough relays yet."""
        return self.core.choose_path(*self._relays(), self.clock())

    def _relays(self) -> tuple[list[Descriptor], set[bytes], bytes]:
        node = self.driver.node
        linked = {node_id for node_id in node.directory if node.link_to(node_id) is not None}
        return list(node.directory.values()), linked, node.node_id

    async def circuit_for(self, key: bytes) -> PooledCircuit:
        """A circuit for one new stream with isolation key ``key``, built if need be.

        The caller owes :meth:`stream_closed` when the stream ends.  Raises NoPathError
        when no path exists and ZMeshError when every build attempt failed."""
        self._drop_closed()
        last: Exception | None = None
        for _ in range(BUILD_ATTEMPTS):
            decision = self.core.request(key, self.clock(), *self._relays())
            if isinstance(decision, UseCircuit):
                return decision.circuit
            ids = [d.node_id for d in decision.path]
            start = time.perf_counter()
            try:
                cid = await self.driver.build_circuit(decision.path, timeout=BUILD_TIMEOUT)
            except (TimeoutError, StreamClosedError, ZMeshError) as exc:
                last = exc
                self.core.suspect(ids, self.clock())
                log.info("circuit event=build_failed error=%r", str(exc))
                continue
            ms = (time.perf_counter() - start) * 1000
            hops = ",".join(short_id(i) for i in ids)
            log.info("circuit=%d event=circuit_built build_ms=%.1f path=%s", cid, ms, hops)
            circuit = self.core.built(key, cid, ids, self.clock())
            self._apply()
            return circuit
        raise ZMeshError(f"could not build a circuit: {last}")

    def stream_closed(self, circuit: PooledCircuit) -> None:
        """A stream that :meth:`circuit_for` placed on ``circuit`` ended."""
        self.core.stream_closed(circuit, self.clock())
        self._apply()

    def forget(self, circuit: PooledCircuit, *, failed: bool) -> None:
        """Stop using ``circuit`` and close it; if it ``failed``, avoid its relays a while."""
        self.core.forget(circuit, self.clock(), failed=failed)
        self._apply()

    def _drop_closed(self) -> None:
        alive = self.driver.node.builder.built()
        for cid in self.core.circuit_ids():
            if cid not in alive:
                self.core.circuit_closed(cid)

    def _apply(self) -> None:
        """Close what the core gave up, then re-arm the one timer for its next deadline."""
        node = self.driver.node
        for cid in self.core.circuits_to_close():
            log.info("circuit=%d event=closed_by_pool", cid)
            with contextlib.suppress(ZMeshError):
                self.driver.call(functools.partial(node.close_circuit, cid))
        deadline = self.core.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self._drop_closed()
        self.core.handle_timer(self.clock())
        self._apply()


__all__ = [
    "BUILD_ATTEMPTS",
    "BUILD_TIMEOUT",
    "HOPS",
    "MAX_DIRTINESS",
    "SUSPECT_FOR",
    "CircuitPool",
    "NoPathError",
    "PooledCircuit",
]
