"""The node's guard component: first hops from the guard set, dialling guards, failures
(links, dials, builds), the young-node rule, timers, and the persisted state."""

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import pytest

from zmesh.circuit.guarding import (
    BUILD_FAILURES,
    SAVE_INTERVAL,
    UPDATE_INTERVAL,
    Guards,
    GuardStateChanged,
)
from zmesh.identity import Flags
from zmesh.link.table import LinkTable
from zmesh.onion.guards import (
    DAY,
    GUARD_SUBNET_CAP,
    IN_USE,
    MIN_GUARD_AGE,
    N_PRIMARY,
    GuardStateError,
)
from zmesh.onion.paths import subnet_of
from zmesh.rng import DeterministicRng


@dataclass(frozen=True)
class R:
    node_id: bytes
    flags: Flags
    addresses: tuple[str, ...]


def rid(n: int | str) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def relay(n: int | str, host: str) -> R:
    return R(rid(n), Flags.RELAY, (f"http://{host}:9000",))


def spread(n: int, start: int = 0) -> dict[bytes, Any]:
    return {r.node_id: r for r in (relay(i, f"10.{i}.1.1") for i in range(start, start + n))}


class Harness:
    def __init__(self, relays: dict[bytes, Any], *, private: bool, now: float = 0.0) -> None:
        self.relays = relays
        self.dialled: list[bytes] = []
        self.guards = Guards(
            b"me" * 16,
            relays,
            LinkTable(),
            DeterministicRng(7),
            now,
            dial=self.dial,
            private=private,
        )

    def dial(self, desc: Any, now: float) -> bool:
        self.dialled.append(desc.node_id)
        return True


def test_first_hops_are_the_first_usable_guards_and_are_dialled() -> None:
    h = Harness(spread(10), private=True)
    hops = h.guards.first_hops(0.0)
    assert len(hops) == IN_USE and len(set(hops)) == IN_USE
    assert hops == h.guards.primary()[:IN_USE]
    assert h.dialled == hops  # no link to either: the node dials its guards
    assert h.guards.first_hops(1.0) == hops  # stable


def test_a_failed_link_or_dial_moves_to_the_next_guard_until_it_answers() -> None:
    h = Harness(spread(10), private=True)
    first, second = h.guards.first_hops(0.0)
    h.guards.link_failed(first, 10.0)
    hops = h.guards.first_hops(10.0)
    assert first not in hops and hops[0] == second and len(hops) == IN_USE
    h.guards.link_up(first, 20.0)  # it answered: first again
    assert h.guards.first_hops(20.0)[0] == first
    h.guards.link_failed(second, 30.0)  # a dial that failed counts the same
    assert second not in h.guards.first_hops(30.0)
    h.guards.link_failed(rid("stranger"), 30.0)  # not a guard: ignored


def test_builds_count_against_a_guard_only_several_in_a_row() -> None:
    h = Harness(spread(10), private=True)
    first = h.guards.first_hops(0.0)[0]
    cid = 1
    for _ in range(BUILD_FAILURES - 1):
        h.guards.build_started(cid, first)
        h.guards.build_ended(cid, False, 1.0)
        cid += 1
    h.guards.build_started(cid, first)
    h.guards.build_ended(cid, True, 1.0)  # a success resets the count
    cid += 1
    for _ in range(BUILD_FAILURES - 1):
        h.guards.build_started(cid, first)
        h.guards.build_ended(cid, False, 2.0)
        cid += 1
    assert h.guards.first_hops(2.0)[0] == first
    h.guards.build_started(cid, first)
    h.guards.forget(cid)  # we closed it ourselves: says nothing of the guard
    h.guards.build_ended(cid, False, 2.0)
    assert h.guards.first_hops(2.0)[0] == first
    h.guards.build_started(cid + 1, first)
    h.guards.build_ended(cid + 1, False, 3.0)
    assert first not in h.guards.first_hops(3.0)
    h.guards.build_ended(999, False, 3.0)  # unknown: ignored


def test_build_memory_is_bounded() -> None:
    h = Harness(spread(5), private=True)
    for cid in range(5000):
        h.guards.build_started(cid, rid(cid))
    assert len(h.guards._builds) <= 512


def test_a_public_node_prefers_aged_relays_and_caps_subnets() -> None:
    old = spread(6)
    h = Harness(dict(old), private=False)
    h.guards.update(0.0)
    # a young node: every relay seen counts, and it gets guards at once
    assert len(h.guards.first_hops(0.0)) == IN_USE
    # a flood of one /16 arrives later; after the guard age the old relays are eligible,
    # the flood is not (too young), and would hold at most GUARD_SUBNET_CAP if it were
    flood = {r.node_id: r for r in (relay(f"s{i}", f"66.66.{i}.1") for i in range(200))}
    h.relays.update(flood)
    later = MIN_GUARD_AGE + DAY
    h.guards.update(later)
    sampled = [g.node_id for g in h.guards.set.guards]
    assert not set(sampled) & set(flood)
    subnets = [g.subnet for g in h.guards.set.guards]
    assert len(subnets) == len(set(subnets))  # one guard per subnet
    assert all(subnets.count(s) <= GUARD_SUBNET_CAP for s in subnets)


def test_a_young_public_node_under_a_flood_gets_at_most_one_guard_of_it() -> None:
    relays = spread(4)
    relays.update({r.node_id: r for r in (relay(f"s{i}", f"66.66.{i}.1") for i in range(500))})
    h = Harness(relays, private=False)
    h.guards.update(0.0)
    flooded = [g for g in h.guards.set.guards if g.subnet == subnet_of(relay(0, "66.66.0.1"))]
    assert len(flooded) <= 1
    assert len(h.guards.set.guards) >= N_PRIMARY


def test_the_timer_never_spins() -> None:
    h = Harness(spread(10), private=True)
    h.guards.handle_timer(0.0)
    assert 0.0 < h.guards.get_timer() <= UPDATE_INTERVAL
    first = h.guards.first_hops(0.0)[0]
    h.guards.link_failed(first, 5.0)
    assert h.guards.get_timer() == 5.0  # resample at once
    h.guards.handle_timer(5.0)
    retry = h.guards.get_timer()
    assert 5.0 < retry < math.inf
    h.guards.handle_timer(retry + 1000.0)  # past the retry time: the next timer is later
    assert h.guards.get_timer() > retry + 1000.0


def test_state_round_trip_and_offers() -> None:
    h = Harness(spread(10), private=False)
    h.guards.update(0.0)
    offers = [e for e in h.guards.events if isinstance(e, GuardStateChanged)]
    assert offers  # the set changed: store it
    state = json.loads(json.dumps(offers[-1].state))
    h.guards.events.clear()
    h.guards.update(UPDATE_INTERVAL)  # nothing changed: nothing offered
    assert not h.guards.events
    h.guards.update(SAVE_INTERVAL + 1.0)  # but at least every SAVE_INTERVAL
    assert h.guards.events
    fresh = Harness(spread(10), private=False)
    fresh.guards.restore(state, 0.0)
    assert fresh.guards.primary() == h.guards.primary()
    assert dict(fresh.guards.familiarity) == dict(h.guards.familiarity)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"version": 1},
        {"version": 2, "guards": {}, "familiarity": {}},
        {"version": 1, "guards": {"version": 1, "guards": "x"}, "familiarity": {}},
        {"version": True, "guards": {}, "familiarity": {}},
    ],
)
def test_a_corrupt_state_is_refused_and_changes_nothing(bad: object) -> None:
    h = Harness(spread(10), private=True)
    before = h.guards.first_hops(0.0)
    with pytest.raises(GuardStateError):
        h.guards.restore(bad, 0.0)
    assert h.guards.first_hops(0.0) == before
