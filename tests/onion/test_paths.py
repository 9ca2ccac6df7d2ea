"""Path selection: guard (linked) -> middle -> exit, distinct, suspects avoided in order."""

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.identity import Flags
from zmesh.onion.paths import NoPathError, choice, choose_path
from zmesh.rng import DeterministicRng

ME = b"me"


@dataclass(frozen=True)
class Relay:
    node_id: bytes
    flags: Flags


def relays(exits: int, middles: int) -> list[Relay]:
    out = [Relay(b"exit%d" % i, Flags.RELAY | Flags.EXIT) for i in range(exits)]
    return out + [Relay(b"relay%d" % i, Flags.RELAY) for i in range(middles)]


def ids(path: list[Relay]) -> tuple[bytes, ...]:
    return tuple(d.node_id for d in path)


def test_a_path_is_guard_middle_exit_and_distinct() -> None:
    rng = DeterministicRng(1)
    known = relays(2, 4)
    for _ in range(200):
        guard, middle, exit_ = choose_path(rng, known, {b"relay0", b"exit0"}, ME)
        assert guard.node_id in {b"relay0", b"exit0"}
        assert exit_.flags & Flags.EXIT
        assert len({guard.node_id, middle.node_id, exit_.node_id}) == 3


def test_ourselves_and_non_relays_are_never_chosen() -> None:
    known = [*relays(1, 1), Relay(ME, Flags.RELAY), Relay(b"client", Flags.NONE)]
    with pytest.raises(NoPathError):
        choose_path(DeterministicRng(1), known, {ME, b"client", b"relay0"}, ME)
    known.append(Relay(b"relay1", Flags.RELAY))
    path = choose_path(DeterministicRng(1), known, {ME, b"client", b"relay0"}, ME)
    assert ids(path) == (b"relay0", b"relay1", b"exit0")


def test_a_suspected_middle_is_avoided_even_when_the_only_exit_is_suspected() -> None:
    rng = DeterministicRng(2)
    known = relays(1, 3)
    suspects = {b"relay1", b"exit0"}  # a circuit relay0 -> relay1 -> exit0 failed
    seen = set()
    for _ in range(200):
        guard, middle, exit_ = choose_path(
            rng, known, {b"relay0", b"relay1", b"relay2"}, ME, suspects
        )
        assert exit_.node_id == b"exit0"
        assert b"relay1" not in (guard.node_id, middle.node_id)
        seen.add((guard.node_id, middle.node_id))
    assert seen == {(b"relay0", b"relay2"), (b"relay2", b"relay0")}


def test_an_unsuspected_exit_is_preferred() -> None:
    rng = DeterministicRng(3)
    known = relays(2, 2)
    for _ in range(100):
        path = choose_path(rng, known, {b"relay0", b"relay1"}, ME, {b"exit0"})
        assert path[2].node_id == b"exit1"


def test_avoidance_is_dropped_when_nothing_else_is_left() -> None:
    path = choose_path(DeterministicRng(4), relays(1, 2), {b"relay0"}, ME, {b"relay1", b"exit0"})
    assert ids(path) == (b"relay0", b"relay1", b"exit0")


def test_no_path_without_an_exit_a_link_or_three_relays() -> None:
    rng = DeterministicRng(5)
    with pytest.raises(NoPathError):
        choose_path(rng, relays(0, 4), {b"relay0"}, ME)
    with pytest.raises(NoPathError):
        choose_path(rng, relays(1, 3), set(), ME)
    with pytest.raises(NoPathError):
        choose_path(rng, relays(1, 1), {b"relay0"}, ME)
    with pytest.raises(NoPathError):  # the only linked relay is the only exit
        choose_path(rng, relays(1, 3), {b"exit0"}, ME)


def test_same_seed_same_paths_whatever_order_the_relays_were_learned_in() -> None:
    known = relays(3, 6)
    linked = {b"relay0", b"relay3", b"exit1"}
    runs = []
    for order in (known, known[::-1], sorted(known, key=lambda d: d.node_id[::-1])):
        rng = DeterministicRng(6)
        runs.append([ids(choose_path(rng, order, linked, ME)) for _ in range(20)])
    assert runs[0] == runs[1] == runs[2]
    other = DeterministicRng(7)
    assert runs[0] != [ids(choose_path(other, known, linked, ME)) for _ in range(20)]


def test_every_valid_choice_is_reachable() -> None:
    rng = DeterministicRng(8)
    known = relays(2, 2)
    linked = {b"relay0", b"relay1", b"exit0"}
    seen = {ids(choose_path(rng, known, linked, ME)) for _ in range(2000)}
    valid = {
        (g, m, e)
        for g, m, e in itertools.permutations([d.node_id for d in known], 3)
        if g in linked and e.startswith(b"exit")
    }
    assert seen == valid


def test_choice_from_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        choice(DeterministicRng(1), [])


def _triples(
    known: list[Relay], linked: set[bytes], avoid: set[bytes], avoid_exits: set[bytes]
) -> set[tuple[bytes, bytes, bytes]]:
    usable = [d for d in known if d.flags & Flags.RELAY and d.node_id != ME]
    return {
        (g.node_id, m.node_id, e.node_id)
        for g, m, e in itertools.permutations(usable, 3)
        if g.node_id in linked
        and g.node_id not in avoid
        and m.node_id not in avoid
        and e.flags & Flags.EXIT
        and e.node_id not in avoid_exits
    }


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from([0, 1, 3]), st.booleans(), st.booleans()),
        max_size=10,
    ),
    st.integers(0, 2**32),
)
def test_a_path_is_found_iff_one_exists_and_suspects_are_avoided_when_possible(
    spec: list[tuple[int, int, bool, bool]], seed: int
) -> None:
    """Against brute force: the first avoidance level with any valid triple is used."""
    by_id = {
        b"n%d" % i if i else ME: Relay(b"n%d" % i if i else ME, Flags(f)) for i, f, _, _ in spec
    }
    known = list(by_id.values())  # a repeated id: the last descriptor counts, as in choose_path
    linked = {b"n%d" % i if i else ME for i, _, link, _ in spec if link}
    suspects = {b"n%d" % i for i, _, _, bad in spec if bad and i}
    levels = [(suspects, suspects), (suspects, set()), (set(), set())]
    options = [_triples(known, linked, a, e) for a, e in levels]
    try:
        path = choose_path(DeterministicRng(seed), known, linked, ME, suspects)
    except NoPathError:
        assert not any(options)
        return
    first = next(o for o in options if o)
    assert ids(path) in first
