"""Path choice in the circuit pool: suspects are avoided, even in a mesh with one exit."""

from dataclasses import dataclass, field
from typing import Any

import pytest

from zmesh.identity import Flags
from zmesh.runtime.circuits import CircuitPool, NoPathError


@dataclass(frozen=True)
class FakeDescriptor:
    node_id: bytes
    flags: Flags


@dataclass
class FakeNode:
    node_id: bytes = b"me"
    directory: dict[bytes, FakeDescriptor] = field(default_factory=dict)
    linked: set[bytes] = field(default_factory=set)

    def link_to(self, node_id: bytes) -> int | None:
        return 1 if node_id in self.linked else None


@dataclass
class FakeDriver:
    node: FakeNode


def _pool(exits: int, relays: int, linked: list[bytes]) -> CircuitPool:
    node = FakeNode()
    for i in range(exits):
        node.directory[f"exit{i}".encode()] = FakeDescriptor(
            f"exit{i}".encode(), Flags.RELAY | Flags.EXIT
        )
    for i in range(relays):
        node.directory[f"relay{i}".encode()] = FakeDescriptor(f"relay{i}".encode(), Flags.RELAY)
    node.linked = set(linked)
    driver: Any = FakeDriver(node)
    return CircuitPool(driver)


def test_a_suspected_middle_is_avoided_even_when_the_only_exit_is_suspected() -> None:
    pool = _pool(1, 3, [b"relay0", b"relay1", b"relay2"])
    pool._suspect([b"relay0", b"relay1", b"exit0"])  # a circuit through relay1 failed
    for _ in range(200):
        guard, middle, exit_ = pool.choose_path()
        assert exit_.node_id == b"exit0"
        assert middle.node_id != b"relay1"
        assert len({guard.node_id, middle.node_id, exit_.node_id}) == 3


def test_avoidance_is_dropped_when_nothing_else_is_left() -> None:
    pool = _pool(1, 2, [b"relay0"])
    pool._suspect([b"relay0", b"relay1", b"exit0"])
    guard, middle, exit_ = pool.choose_path()
    assert (guard.node_id, middle.node_id, exit_.node_id) == (b"relay0", b"relay1", b"exit0")


def test_no_path_without_an_exit_or_a_link() -> None:
    with pytest.raises(NoPathError):
        _pool(0, 4, [b"relay0"]).choose_path()
    with pytest.raises(NoPathError):
        _pool(1, 3, []).choose_path()
