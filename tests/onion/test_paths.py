"""Path selection: guard (linked) -> middle -> exit, distinct, suspects avoided in order;
choose_leg: one more leg of a session to its exit, sharing before suspicion."""

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.identity import Flags
from zmesh.onion.paths import NoPathError, choice, choose_leg, choose_path
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


# -- choose_leg: one more leg of a session to a given exit ------------------------------------
def test_a_leg_ends_at_the_given_exit_through_a_linked_guard() -> None:
    rng = DeterministicRng(10)
    known = relays(2, 4)
    linked = {b"relay0", b"relay1", b"exit0"}
    for exit_id in (b"exit0", b"exit1"):
        for _ in range(100):
            guard, middle, exit_ = choose_leg(rng, known, linked, ME, exit_id=exit_id)
            assert exit_.node_id == exit_id
            assert guard.node_id in linked
            assert len({guard.node_id, middle.node_id, exit_id}) == 3


def test_a_leg_s_middle_avoids_the_other_legs_relays_when_it_can() -> None:
    rng = DeterministicRng(11)
    known = relays(1, 5)
    linked = {b"relay%d" % i for i in range(5)}
    used = {b"relay0", b"relay1"}  # the first leg: relay0 -> relay1 -> exit0
    guards = set()
    for _ in range(200):
        guard, middle, _ = choose_leg(rng, known, linked, ME, exit_id=b"exit0", used=used)
        assert middle.node_id not in used and guard.node_id not in used
        guards.add(guard.node_id)
    assert guards == {b"relay2", b"relay3", b"relay4"}


def test_legs_share_a_guard_before_they_share_a_middle() -> None:
    rng = DeterministicRng(12)
    known = relays(1, 3)
    linked = {b"relay0", b"relay1", b"relay2"}
    used = {b"relay0", b"relay1"}  # only relay2 is left: it must be the middle
    for _ in range(100):
        guard, middle, _ = choose_leg(rng, known, linked, ME, exit_id=b"exit0", used=used)
        assert middle.node_id == b"relay2" and guard.node_id in used


def test_a_suspect_is_taken_only_after_a_used_relay_is_shared() -> None:
    rng = DeterministicRng(13)
    known = relays(1, 3)
    linked = {b"relay0", b"relay1", b"relay2"}
    used, suspects = {b"relay0", b"relay1"}, {b"relay2"}
    seen = set()
    for _ in range(200):
        path = choose_leg(rng, known, linked, ME, exit_id=b"exit0", used=used, suspects=suspects)
        assert b"relay2" not in ids(path)
        seen.add(ids(path))
    assert seen == {(b"relay0", b"relay1", b"exit0"), (b"relay1", b"relay0", b"exit0")}
    # with no suspects, the unused relay is the middle
    path = choose_leg(rng, known, linked, ME, exit_id=b"exit0", used=used)
    assert path[1].node_id == b"relay2"


def test_a_suspected_guard_is_avoided_when_another_linked_relay_is_left() -> None:
    rng = DeterministicRng(14)
    known = relays(1, 4)
    linked = {b"relay0", b"relay1"}
    for _ in range(100):
        guard, middle, _ = choose_leg(
            rng, known, linked, ME, exit_id=b"exit0", suspects={b"relay0", b"relay2"}
        )
        assert guard.node_id == b"relay1" and middle.node_id == b"relay3"


def test_avoidance_is_given_up_when_nothing_else_is_left() -> None:
    path = choose_leg(
        DeterministicRng(15),
        relays(1, 2),
        {b"relay0"},
        ME,
        exit_id=b"exit0",
        used={b"relay0", b"relay1"},
        suspects={b"relay0", b"relay1", b"exit0"},
    )
    assert ids(path) == (b"relay0", b"relay1", b"exit0")


def test_no_leg_without_the_exit_a_guard_or_a_middle() -> None:
    rng = DeterministicRng(16)
    linked = {b"relay0", b"relay1"}
    with pytest.raises(NoPathError, match="exit"):  # the exit is unknown
        choose_leg(rng, relays(1, 3), linked, ME, exit_id=b"exit9")
    with pytest.raises(NoPathError, match="exit"):  # the exit is ourselves
        choose_leg(
            rng, [*relays(0, 3), Relay(ME, Flags.RELAY | Flags.EXIT)], linked, ME, exit_id=ME
        )
    with pytest.raises(NoPathError, match="exit"):  # the exit is no relay any more
        choose_leg(rng, [*relays(0, 3), Relay(b"exit0", Flags.NONE)], linked, ME, exit_id=b"exit0")
    with pytest.raises(NoPathError, match="guard"):  # no link
        choose_leg(rng, relays(1, 3), set(), ME, exit_id=b"exit0")
    with pytest.raises(NoPathError, match="guard"):  # the only linked relay is the exit
        choose_leg(rng, relays(1, 3), {b"exit0"}, ME, exit_id=b"exit0")
    with pytest.raises(NoPathError, match="guard"):  # a guard, but no middle besides it
        choose_leg(rng, relays(1, 1), {b"relay0"}, ME, exit_id=b"exit0")
    with pytest.raises(NoPathError, match="guard"):  # ourselves and clients are no middle
        known = [*relays(1, 1), Relay(ME, Flags.RELAY), Relay(b"client", Flags.NONE)]
        choose_leg(rng, known, {b"relay0", ME, b"client"}, ME, exit_id=b"exit0")


def test_same_seed_same_legs_whatever_order_the_relays_were_learned_in() -> None:
    known = relays(2, 6)
    linked = {b"relay0", b"relay3", b"relay4", b"exit1"}
    used = {b"relay0", b"relay1"}
    runs = []
    for order in (known, known[::-1], sorted(known, key=lambda d: d.node_id[::-1])):
        rng = DeterministicRng(17)
        runs.append(
            [
                ids(choose_leg(rng, order, linked, ME, exit_id=b"exit0", used=used))
                for _ in range(20)
            ]
        )
    assert runs[0] == runs[1] == runs[2]
    other = DeterministicRng(18)
    assert runs[0] != [
        ids(choose_leg(other, known, linked, ME, exit_id=b"exit0", used=used)) for _ in range(20)
    ]


def _level(node_id: bytes, used: set[bytes], suspects: set[bytes]) -> int:
    """0: neither used nor suspected; 1: used only; 2: suspected."""
    return 2 if node_id in suspects else int(node_id in used)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 8),  # id (0 is ourselves)
            st.sampled_from([0, 1, 3]),  # flags
            st.booleans(),  # linked
            st.booleans(),  # used
            st.booleans(),  # suspected
        ),
        max_size=10,
    ),
    st.integers(0, 9),
    st.integers(0, 2**32),
)
def test_a_leg_is_found_iff_one_exists_with_the_least_sharing_and_suspicion(
    spec: list[tuple[int, int, bool, bool, bool]], exit_n: int, seed: int
) -> None:
    """Against brute force: the leg is 3 distinct relays, a linked guard, the given exit;
    its middle is as little shared or suspected as any valid leg's, then its guard."""

    def name(i: int) -> bytes:
        return b"n%d" % i if i else ME

    by_id = {name(i): Relay(name(i), Flags(f)) for i, f, *_ in spec}
    known = list(by_id.values())
    linked = {name(i) for i, _, link, _, _ in spec if link}
    used = {name(i) for i, _, _, u, _ in spec if u}
    suspects = {name(i) for i, *_, bad in spec if bad}
    exit_id = name(exit_n)
    usable = {i for i, d in by_id.items() if d.flags & Flags.RELAY and i != ME}
    candidates = [
        (g, m) for g, m in itertools.permutations(sorted(usable - {exit_id}), 2) if g in linked
    ]
    try:
        path = choose_leg(
            DeterministicRng(seed), known, linked, ME, exit_id=exit_id, used=used, suspects=suspects
        )
    except NoPathError:
        assert exit_id not in usable or not candidates
        return
    guard, middle, exit_ = ids(path)
    assert exit_ == exit_id and exit_id in usable
    assert len({guard, middle, exit_}) == 3 and {guard, middle} <= usable
    assert guard in linked
    best = min((_level(m, used, suspects), _level(g, used, suspects)) for g, m in candidates)
    assert (_level(middle, used, suspects), _level(guard, used, suspects)) == best
