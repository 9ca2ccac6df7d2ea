"""The asyncio circuit pool over the core policy: path choice, builds, stale circuits closed."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from zmesh.errors import LocalProtocolError
from zmesh.health.avoid import Avoidance
from zmesh.identity import Flags
from zmesh.runtime.circuits import CircuitPool, NoPathError


@dataclass(frozen=True)
class FakeDescriptor:
    node_id: bytes
    flags: Flags


class FakeBuilder:
    """The circuit builder's shared table of failed relays (all the pool reads of it)."""

    def __init__(self) -> None:
        self.avoidance = Avoidance()


@dataclass
class FakeNode:
    node_id: bytes = b"me"
    directory: dict[bytes, FakeDescriptor] = field(default_factory=dict)
    linked: set[bytes] = field(default_factory=set)
    circuits: set[int] = field(default_factory=set)
    closed: list[int] = field(default_factory=list)
    on_close: asyncio.Event | None = None
    builder: FakeBuilder = field(default_factory=FakeBuilder)

    def link_to(self, node_id: bytes) -> int | None:
        return 1 if node_id in self.linked else None

    def client_circuits(self) -> set[int]:
        return set(self.circuits)

    def close_circuit(self, cid: int) -> None:
        if cid not in self.circuits:
            raise LocalProtocolError(f"no circuit {cid}")
        self.circuits.discard(cid)
        self.closed.append(cid)
        if self.on_close is not None:
            self.on_close.set()


@dataclass
class FakeDriver:
    """Builds succeed at once, except through a middle relay in ``bad``."""

    node: FakeNode
    bad: set[bytes] = field(default_factory=set)
    next_cid: int = 1

    async def build_circuit(self, path: list[FakeDescriptor], timeout: float) -> int:
        if path[1].node_id in self.bad:
            raise TimeoutError("no answer")
        cid, self.next_cid = self.next_cid, self.next_cid + 1
        self.node.circuits.add(cid)
        return cid

    def call(self, action: Any) -> Any:
        return action()


def _pool(exits: int, relays: int, linked: list[bytes], **kw: Any) -> CircuitPool:
    node = FakeNode()
    for i in range(exits):
        node.directory[b"exit%d" % i] = FakeDescriptor(b"exit%d" % i, Flags.RELAY | Flags.EXIT)
    for i in range(relays):
        node.directory[b"relay%d" % i] = FakeDescriptor(b"relay%d" % i, Flags.RELAY)
    node.linked = set(linked)
    driver: Any = FakeDriver(node)
    return CircuitPool(driver, **kw)


def test_a_suspected_middle_is_avoided_even_when_the_only_exit_is_suspected() -> None:
    pool = _pool(1, 3, [b"relay0", b"relay1", b"relay2"])
    pool.core.suspect([b"relay0", b"relay1", b"exit0"], pool.clock())  # that circuit failed
    for _ in range(200):
        guard, middle, exit_ = pool.choose_path()
        assert exit_.node_id == b"exit0"
        assert middle.node_id != b"relay1"
        assert len({guard.node_id, middle.node_id, exit_.node_id}) == 3


def test_a_relay_that_failed_a_build_is_avoided_by_the_pool() -> None:
    """The pool and the circuit builder share one table: a relay the builder blamed for a
    failed build is avoided by path choice too."""
    pool = _pool(1, 3, [b"relay0", b"relay1", b"relay2"])
    assert pool.core.avoidance is pool.driver.node.builder.avoidance
    pool.driver.node.builder.avoidance.failed(b"relay2", pool.clock())
    assert all(pool.choose_path()[1].node_id != b"relay2" for _ in range(100))


def test_avoidance_is_dropped_when_nothing_else_is_left() -> None:
    pool = _pool(1, 2, [b"relay0"])
    pool.core.suspect([b"relay0", b"relay1", b"exit0"], pool.clock())
    guard, middle, exit_ = pool.choose_path()
    assert (guard.node_id, middle.node_id, exit_.node_id) == (b"relay0", b"relay1", b"exit0")


def test_no_path_without_an_exit_or_a_link() -> None:
    with pytest.raises(NoPathError):
        _pool(0, 4, [b"relay0"]).choose_path()
    with pytest.raises(NoPathError):
        _pool(1, 3, []).choose_path()
    assert not _pool(1, 3, []).usable()
    assert _pool(1, 3, [b"relay0"]).usable()


def test_keys_share_circuits_and_a_failed_build_is_retried_on_another_path() -> None:
    async def main() -> None:
        pool = _pool(1, 3, [b"relay0"], circuits_per_key=1)
        pool.driver.bad = {b"relay1"}  # type: ignore[attr-defined]
        a = await pool.circuit_for(b"alice")
        assert a.path == [b"relay0", b"relay2", b"exit0"]
        assert await pool.circuit_for(b"alice") is a and a.streams == 2
        b = await pool.circuit_for(b"bob")
        assert b is not a and b.path == a.path

    asyncio.run(main())


def test_a_stale_circuit_is_closed_by_the_timer_and_a_busy_one_when_its_stream_ends() -> None:
    async def main() -> None:
        pool = _pool(1, 3, [b"relay0"], max_dirtiness=0.2)
        node = pool.driver.node
        node.on_close = asyncio.Event()  # type: ignore[attr-defined]
        busy = await pool.circuit_for(b"alice")
        idle = await pool.circuit_for(b"bob")
        pool.stream_closed(idle)
        assert node.closed == []  # fresh: kept for the next stream
        await asyncio.wait_for(node.on_close.wait(), 5)  # type: ignore[attr-defined]
        assert node.closed == [idle.cid]  # the timer closed it; busy is past dirtiness too
        assert busy.cid in node.circuits
        pool.stream_closed(busy)
        assert node.closed == [idle.cid, busy.cid]
        assert pool.core.circuit_ids() == [] and pool.core.get_timer() is None

    asyncio.run(main())


def test_forget_closes_the_circuit_and_a_failure_steers_the_next_path() -> None:
    async def main() -> None:
        pool = _pool(2, 3, [b"relay0"], circuits_per_key=1)
        node = pool.driver.node
        a = await pool.circuit_for(b"k")
        pool.forget(a, failed=True)
        assert node.closed == [a.cid]
        b = await pool.circuit_for(b"k")
        assert b is not a and not set(a.path[1:]) & set(b.path[:2])  # guard and middle
        pool.forget(b, failed=False)
        pool.forget(b, failed=False)
        assert node.closed == [a.cid, b.cid]

    asyncio.run(main())


def test_a_circuit_the_node_closed_is_replaced_without_a_second_close() -> None:
    async def main() -> None:
        pool = _pool(1, 3, [b"relay0"], circuits_per_key=1)
        node = pool.driver.node
        a = await pool.circuit_for(b"k")
        node.circuits.discard(a.cid)  # a DESTROY from a relay
        b = await pool.circuit_for(b"k")
        assert b is not a and node.closed == []
        assert pool.core.circuit_ids() == [b.cid]

    asyncio.run(main())
