"""Circuits for a client: a pool that builds 3-hop circuits and shares them by isolation key.

Streams with the same isolation key (the SOCKS username for the proxy, as Tor's
IsolateSOCKSAuth; the origin for the browser's ``zmesh.fetch``) share circuits; a circuit
takes new streams for at most ``max_dirtiness`` seconds after its first, and streams are
spread over up to ``circuits_per_key`` circuits.  A circuit that fails is dropped and its
relays (other than our first hop) avoided for a while, so the next request gets a fresh
path.  Runs on every runtime (CPython and Pyodide): it needs only a driver.
"""

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

from ..errors import ZMeshError
from ..identity import Descriptor, Flags, short_id
from .aio import AsyncNode, StreamClosedError

log = logging.getLogger("zmesh.circuits")

HOPS = 3
BUILD_TIMEOUT = 5.0
MAX_DIRTINESS = 600.0
SUSPECT_FOR = 60.0
BUILD_ATTEMPTS = 4


class NoPathError(ZMeshError):
    """Not enough known relays (or no exit) to build a circuit yet."""


@dataclass
class PooledCircuit:
    cid: int
    path: list[bytes]
    first_used: float
    streams: int = 0


@dataclass
class CircuitPool:
    driver: AsyncNode
    max_dirtiness: float = MAX_DIRTINESS
    circuits_per_key: int = 2
    _by_key: dict[bytes, list[PooledCircuit]] = field(default_factory=dict)
    _suspects: dict[bytes, float] = field(default_factory=dict)
    _rand: random.SystemRandom = field(default_factory=random.SystemRandom)

    def usable(self) -> bool:
        try:
            self.choose_path()
        except NoPathError:
            return False
        return True

    def choose_path(self) -> list[Descriptor]:
        """guard (a linked relay) -> middle relay -> exit, all distinct, avoiding suspects."""
        node = self.driver.node
        now = time.monotonic()
        self._suspects = {k: t for k, t in self._suspects.items() if t > now}
        relays = [
            d
            for d in node.directory.values()
            if d.flags & Flags.RELAY and d.node_id != node.node_id
        ]
        suspects = set(self._suspects)
        # Prefer unsuspected relays.  A failed circuit makes its exit a suspect too, and a
        # small mesh may have a single exit: then keep avoiding suspected middles (the
        # likely culprits) before giving up on avoidance altogether.
        for avoid, avoid_exits in ((suspects, suspects), (suspects, set()), (set(), set())):
            ok = [d for d in relays if d.node_id not in avoid]
            exits = [d for d in relays if d.flags & Flags.EXIT and d.node_id not in avoid_exits]
            guards = [d for d in ok if node.link_to(d.node_id) is not None]
            for _ in range(32):
                if not exits or not guards:
                    break
                exit_ = self._rand.choice(exits)
                guard = self._rand.choice(guards)
                middles = [d for d in ok if d.node_id not in (exit_.node_id, guard.node_id)]
                if guard.node_id != exit_.node_id and middles:
                    return [guard, self._rand.choice(middles), exit_]
        raise NoPathError("not enough relays known yet (need 3, one of them an exit)")

    async def _build(self) -> PooledCircuit:
        last: Exception | None = None
        for _ in range(BUILD_ATTEMPTS):
            path = self.choose_path()
            start = time.perf_counter()
            try:
                cid = await self.driver.build_circuit(path, timeout=BUILD_TIMEOUT)
            except (TimeoutError, StreamClosedError, ZMeshError) as exc:
                last = exc
                self._suspect(path)
                log.info("circuit event=build_failed error=%r", str(exc))
                continue
            ms = (time.perf_counter() - start) * 1000
            hops = ",".join(short_id(d.node_id) for d in path)
            log.info("circuit=%d event=circuit_built build_ms=%.1f path=%s", cid, ms, hops)
            return PooledCircuit(cid, [d.node_id for d in path], time.monotonic())
        raise ZMeshError(f"could not build a circuit: {last}")

    def _suspect(self, path: list[Descriptor] | list[bytes]) -> None:
        until = time.monotonic() + SUSPECT_FOR
        for hop in path[1:]:
            node_id = hop.node_id if isinstance(hop, Descriptor) else hop
            self._suspects[node_id] = until

    def forget(self, circuit: PooledCircuit, *, failed: bool) -> None:
        for circuits in self._by_key.values():
            if circuit in circuits:
                circuits.remove(circuit)
        if failed:
            self._suspect(circuit.path)
        with contextlib.suppress(ZMeshError):
            self.driver.call(lambda: self.driver.node.close_circuit(circuit.cid))

    async def circuit_for(self, key: bytes) -> PooledCircuit:
        now = time.monotonic()
        alive = self.driver.node.client_circuits()
        circuits = [
            c
            for c in self._by_key.get(key, [])
            if c.cid in alive and now - c.first_used < self.max_dirtiness
        ]
        self._by_key[key] = circuits
        if len(circuits) < self.circuits_per_key:
            circuit = await self._build()
            circuits.append(circuit)
        else:
            circuit = min(circuits, key=lambda c: c.streams)
        circuit.streams += 1
        return circuit
