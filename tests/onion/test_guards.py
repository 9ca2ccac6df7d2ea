"""Persistent guards: sampling, primaries, lifetime and rotation, unreachable guards and
their retry schedule, unlisted guards, the age and subnet rules under a Sybil flood, and
the state's round trip and strict validation."""

import hashlib
import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.identity import Flags
from zmesh.onion.guards import (
    DAY,
    FAMILIAR_MAX,
    FAMILIAR_PER_SUBNET,
    GUARD_LIFETIME,
    GUARD_SUBNET_CAP,
    HOUR,
    IN_USE,
    MIN_GUARD_AGE,
    MINUTE,
    N_PRIMARY,
    REMOVE_UNLISTED_AFTER,
    SAMPLE_MAX,
    Familiarity,
    GuardSet,
    GuardStateError,
    eligible_guards,
    retry_delay,
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


def relay(n: int | str, host: str, flags: Flags = Flags.RELAY) -> R:
    return R(rid(n), flags, (f"http://{host}:9000",))


def spread(n: int, start: int = 0) -> list[R]:
    """``n`` relays, each in its own /16."""
    return [relay(i, f"{10 + i // 250}.{i % 250}.1.1") for i in range(start, start + n)]


def setup(
    n: int = 40, seed: int = 1
) -> tuple[GuardSet, DeterministicRng, list[R], dict[bytes, float], set[bytes]]:
    relays = spread(n)
    first_seen = {r.node_id: -30 * DAY for r in relays}
    return GuardSet(), DeterministicRng(seed), relays, first_seen, {r.node_id for r in relays}


def update(gs: GuardSet, rng: DeterministicRng, relays: list[R], now: float) -> None:
    first_seen = {r.node_id: -30 * DAY for r in relays}
    eligible = eligible_guards(relays, first_seen, now, own_id=b"me")
    gs.update(now, rng, eligible, {r.node_id for r in relays})


# -- sampling and use -----------------------------------------------------------------------
def test_a_paths_exit_is_passed_over_for_the_next_primary() -> None:
    """A session's exit cannot be its guard: its two guards are the first two others."""
    gs, rng, relays, _, _ = setup()
    update(gs, rng, relays, 0)
    first, second, third = gs.primary()
    assert gs.in_use(0, exclude=first) == [second, third]
    assert gs.in_use(0, exclude=third) == [first, second]


def test_a_new_set_samples_primaries_and_uses_two_at_a_time() -> None:
    gs, rng, relays, _, _ = setup()
    update(gs, rng, relays, 0)
    assert len(gs) == N_PRIMARY == len(gs.primary())
    assert gs.in_use(0) == gs.primary()[:IN_USE]
    assert len({g.subnet for g in gs.guards}) == len(gs)
    for g in gs.guards:
        assert GUARD_LIFETIME[0] <= g.expires_at - g.added_at <= GUARD_LIFETIME[1]
    before = list(gs.in_use(0))
    for hour in range(24 * 20):  # weeks of updates change nothing while all is well
        update(gs, rng, relays, hour * HOUR)
        assert gs.in_use(hour * HOUR) == before


def test_lifetimes_spread_over_30_to_60_days() -> None:
    lifetimes = []
    for seed in range(60):
        gs, rng, relays, _, _ = setup(seed=seed)
        update(gs, rng, relays, 0)
        lifetimes += [g.expires_at - g.added_at for g in gs.guards]
    assert min(lifetimes) < 35 * DAY and max(lifetimes) > 55 * DAY


def test_an_expired_guard_is_rotated_out() -> None:
    gs, rng, relays, _, _ = setup()
    update(gs, rng, relays, 0)
    first = min(gs.guards, key=lambda g: g.expires_at)
    assert gs.get_timer() == first.expires_at
    update(gs, rng, relays, first.expires_at - 1)
    assert first.usable(first.expires_at - 1) and first.node_id in gs.primary()
    assert not first.usable(first.expires_at)  # expiry applies at once
    update(gs, rng, relays, first.expires_at)
    assert first.node_id not in [g.node_id for g in gs.guards]
    assert len(gs) == N_PRIMARY  # a replacement was sampled
    for g in gs.guards:  # the replacement's lifetime starts now
        assert g.added_at in (0, first.expires_at)


def test_an_unreachable_guard_is_retried_on_the_schedule_and_the_next_serves_meanwhile() -> None:
    gs, rng, relays, _, _ = setup()
    update(gs, rng, relays, 0)
    a, b, c = gs.primary()
    gs.note_failure(a, 100)
    assert gs.in_use(100) == [b, c]
    assert gs.get_timer() == 100 + 10 * MINUTE
    assert gs.in_use(100 + 10 * MINUTE) == [a, b]  # due for a retry: tried first again
    gs.note_failure(a, 100 + 10 * MINUTE)
    assert gs.in_use(100 + 10 * MINUTE) == [b, c]
    gs.note_success(a, 100 + 20 * MINUTE)
    assert gs.in_use(100 + 20 * MINUTE) == [a, b]
    gs.note_failure(rid("stranger"), 0)  # unknown ids are ignored


def test_the_retry_schedule_is_guard_spec_appendix_a1() -> None:
    assert retry_delay(0, primary=True) == 10 * MINUTE
    assert retry_delay(6 * HOUR, primary=True) == 90 * MINUTE
    assert retry_delay(6 * HOUR + 4 * DAY, primary=True) == 4 * HOUR
    assert retry_delay(6 * HOUR + 7 * DAY, primary=True) == 9 * HOUR
    assert retry_delay(0, primary=False) == HOUR
    assert retry_delay(100 * DAY, primary=False) == 36 * HOUR


def test_failing_guards_make_room_but_the_sample_stays_bounded() -> None:
    gs, rng, relays, _, _ = setup(n=60)
    now = 0.0
    for _ in range(100):  # every guard fails as soon as it is sampled
        update(gs, rng, relays, now)
        for g in gs.in_use(now):
            gs.note_failure(g, now)
        now += 1
    assert len(gs) == SAMPLE_MAX
    assert gs.in_use(now) == []  # none usable until a retry is due
    assert gs.in_use(now + 10 * MINUTE)  # the primaries first
    assert set(gs.in_use(now + 10 * MINUTE)) <= set(gs.primary())


def test_a_guard_that_left_is_skipped_then_removed_after_20_days() -> None:
    gs, rng, relays, _, _ = setup()
    update(gs, rng, relays, 0)
    a, b, c = gs.primary()
    rest = [r for r in relays if r.node_id != a]
    update(gs, rng, rest, HOUR)
    assert a not in gs.in_use(HOUR) and gs.in_use(HOUR) == [b, c]
    assert len(gs) == N_PRIMARY + 1  # a spare is sampled so that three stay usable
    update(gs, rng, relays, 2 * HOUR)  # back: used again
    assert gs.in_use(2 * HOUR) == [a, b]
    update(gs, rng, rest, 3 * HOUR)
    update(gs, rng, rest, 3 * HOUR + REMOVE_UNLISTED_AFTER - 1)
    assert a in [g.node_id for g in gs.guards]
    update(gs, rng, rest, 3 * HOUR + REMOVE_UNLISTED_AFTER)
    assert a not in [g.node_id for g in gs.guards]


def test_no_eligible_relay_no_guard() -> None:
    gs = GuardSet()
    gs.update(0, DeterministicRng(1), [], set())
    assert gs.in_use(0) == [] and len(gs) == 0


# -- eligibility: age and subnets ---------------------------------------------------------
def test_a_relay_is_eligible_only_after_the_minimum_age() -> None:
    old, new = relay("old", "10.0.0.1"), relay("new", "11.0.0.1")
    first_seen = {old.node_id: 0.0, new.node_id: 5 * DAY}
    at = MIN_GUARD_AGE
    assert eligible_guards([old, new], first_seen, at, own_id=b"me") == [old]
    both = eligible_guards([old, new], first_seen, 5 * DAY + MIN_GUARD_AGE, own_id=b"me")
    assert sorted(both, key=lambda r: r.node_id) == both and set(both) == {old, new}
    unknown = relay("unknown", "12.0.0.1")  # never seen: not eligible
    assert unknown not in eligible_guards([unknown], first_seen, 100 * DAY, own_id=b"me")


def test_ourselves_and_non_relays_are_never_guards() -> None:
    me, client = relay("me", "10.0.0.1"), relay("client", "11.0.0.1", Flags.NONE)
    first_seen = {me.node_id: 0.0, client.node_id: 0.0}
    assert eligible_guards([me, client], first_seen, 100 * DAY, own_id=me.node_id) == []
    assert eligible_guards([me, client], {}, 0, own_id=me.node_id, private=True) == []


def test_a_sybil_flood_from_one_subnet_gets_no_guard_slot_until_old_then_at_most_the_cap() -> None:
    """10,000 fresh ids from one /16 next to 50 honest relays: while young they are not
    eligible at all; once old, the subnet holds GUARD_SUBNET_CAP eligible relays and one
    slot of each client's sample at most."""
    honest = spread(50)
    sybils = [relay(f"sybil{i}", f"66.6.{i // 250}.{i % 250}") for i in range(10_000)]
    first_seen = {r.node_id: -30 * DAY for r in honest} | {r.node_id: 0.0 for r in sybils}
    everyone = honest + sybils
    listed = {r.node_id for r in everyone}
    young = eligible_guards(everyone, first_seen, DAY, own_id=b"me")
    assert young == sorted(honest, key=lambda r: r.node_id)
    aged = eligible_guards(everyone, first_seen, 60 * DAY, own_id=b"me")
    in_flood = [r for r in aged if subnet_of(r) == "66.6.0.0/16"]
    assert len(in_flood) == GUARD_SUBNET_CAP
    sybil_ids = {r.node_id for r in sybils}
    hits = 0
    for seed in range(200):
        gs = GuardSet()
        gs.update(60 * DAY, DeterministicRng(seed), aged, listed)
        picked = [g.node_id for g in gs.guards]
        assert sum(i in sybil_ids for i in picked) <= 1  # one guard per subnet
        hits += any(i in sybil_ids for i in picked)
    assert hits < 200 * 0.25  # about N_PRIMARY * 2 / 52 of clients


def test_the_subnet_cap_keeps_the_longest_known() -> None:
    a = relay("a", "10.0.0.1")
    b = relay("b", "10.0.9.9")
    c = relay("c", "10.0.7.7")
    first_seen = {a.node_id: 0.0, b.node_id: -5 * DAY, c.node_id: -9 * DAY}
    got = eligible_guards([a, b, c], first_seen, 100 * DAY, own_id=b"me")
    assert set(got) == {b, c}  # the subnet's two oldest; a newcomer cannot displace them


def test_private_waives_age_and_subnets() -> None:
    loopback = [relay(i, "127.0.0.1") for i in range(6)]
    assert eligible_guards(loopback, {}, 0, own_id=b"me") == []
    mesh = eligible_guards(loopback, {}, 0, own_id=b"me", private=True)
    assert len(mesh) == 6
    gs = GuardSet(private=True)
    gs.update(0, DeterministicRng(1), mesh, {r.node_id for r in loopback})
    assert len(gs) == N_PRIMARY and len(gs.in_use(0)) == IN_USE


# -- Familiarity -------------------------------------------------------------------------
def test_familiarity_records_first_sightings_and_forgets_the_long_gone() -> None:
    fam = Familiarity()
    a, b = relay("a", "10.0.0.1"), relay("b", "11.0.0.1")
    fam.observe([a], 0)
    fam.observe([a, b], DAY)
    assert fam[a.node_id] == 0 and fam[b.node_id] == DAY and len(fam) == 2
    fam.observe([b], DAY + REMOVE_UNLISTED_AFTER + 1)
    assert a.node_id not in fam and b.node_id in fam
    fam.observe([a], 2 * DAY + REMOVE_UNLISTED_AFTER)
    assert fam[a.node_id] == 2 * DAY + REMOVE_UNLISTED_AFTER  # a stranger again
    assert eligible_guards([b], fam, DAY + MIN_GUARD_AGE, own_id=b"me") == [b]


def test_familiarity_is_bounded_per_subnet_and_in_all_and_sheds_the_newest() -> None:
    fam = Familiarity()
    honest = spread(10)
    fam.observe(honest, 0)
    flood = [relay(f"s{i}", f"66.6.{i // 250}.{i % 250}") for i in range(5000)]
    fam.observe(flood, 1)
    assert len(fam) == 10 + FAMILIAR_PER_SUBNET
    many = spread(FAMILIAR_MAX + 100, start=10)
    fam.observe(many, 2)
    assert len(fam) == FAMILIAR_MAX
    assert all(r.node_id in fam for r in honest)  # the old stay, the newest are shed


def test_familiarity_state_round_trips_through_json() -> None:
    fam = Familiarity()
    fam.observe(spread(30), 5.5)
    back = Familiarity.from_state(json.loads(json.dumps(fam.to_state())))
    assert dict(back) == dict(fam)
    assert back.to_state() == fam.to_state()


# -- state ---------------------------------------------------------------------------------
def test_state_round_trips_through_json() -> None:
    gs, rng, relays, _, _ = setup()
    update(gs, rng, relays, 0)
    a = gs.primary()[0]
    gs.note_failure(a, 50)
    update(gs, rng, [r for r in relays if r.node_id != gs.primary()[1]], 60)
    back = GuardSet.from_state(json.loads(json.dumps(gs.to_state())))
    assert back.guards == gs.guards
    assert back.in_use(70) == gs.in_use(70) and back.get_timer() == gs.get_timer()
    assert len(json.dumps(gs.to_state())) < 400 * SAMPLE_MAX


def good_state() -> dict[str, object]:
    gs, rng, relays, _, _ = setup()
    update(gs, rng, relays, 0)
    return gs.to_state()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(version=2), "version"),
        (lambda s: s.update(version=True), "version"),
        (lambda s: s.pop("guards"), "keys"),
        (lambda s: s.update(extra=1), "keys"),
        (lambda s: s.update(guards="x"), "list"),
        (lambda s: s.update(guards=s["guards"] * 8), "at most"),
        (lambda s: s["guards"].append(dict(s["guards"][0])), "twice"),
        (lambda s: s["guards"][0].update(id="zz" * 32), "hex"),
        (lambda s: s["guards"][0].update(id="ab"), "hex digits"),
        (lambda s: s["guards"][0].update(subnet=""), "subnet"),
        (lambda s: s["guards"][0].update(subnet="é"), "subnet"),
        (lambda s: s["guards"][0].update(subnet=s["guards"][1]["subnet"]), "one subnet"),
        (lambda s: s["guards"][0].update(added_at=float("nan")), "finite"),
        (lambda s: s["guards"][0].update(added_at=-1), "non-negative"),
        (lambda s: s["guards"][0].update(added_at="0"), "number"),
        (lambda s: s["guards"][0].update(retry_at=True), "number"),
        (lambda s: s["guards"][0].update(expires_at=1e300), "finite"),
        (lambda s: s["guards"][0].update(expires_at=s["guards"][0]["added_at"] + 1), "lifetime"),
        (lambda s: s["guards"][0].pop("retry_at"), "exactly"),
        (lambda s: s["guards"].__setitem__(0, []), "exactly"),
    ],
)
def test_a_bad_state_is_a_clear_error(mutate, match) -> None:  # type: ignore[no-untyped-def]
    state = json.loads(json.dumps(good_state()))
    mutate(state)
    with pytest.raises(GuardStateError, match=match):
        GuardSet.from_state(state)


def test_a_bad_familiarity_state_is_a_clear_error() -> None:
    for bad in (
        None,
        {"version": 1},
        {"version": 1, "relays": [["00" * 32, "10.0.0.0/16", 5, 1]]},
        {"version": 1, "relays": [["00" * 32, "10.0.0.0/16", 1, 5]] * 2},
        {"version": 1, "relays": [[rid(i).hex(), "10.0.0.0/16", 1, 5] for i in range(9)]},
        {"version": 1, "relays": [[]] * (FAMILIAR_MAX + 1)},
        {"version": 1, "relays": [["00" * 32, 7, 1, 5]]},
    ):
        with pytest.raises(GuardStateError):
            Familiarity.from_state(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzzed_state_parses_or_raises_the_state_error(state: object) -> None:
    for parse in (GuardSet.from_state, Familiarity.from_state):
        try:
            parse(state)
        except GuardStateError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_fields_of_a_good_state_parse_or_raise_the_state_error(data: st.DataObject) -> None:
    state = json.loads(json.dumps(good_state()))
    guards = state["guards"]
    assert isinstance(guards, list)
    entry = data.draw(st.sampled_from(guards))
    key = data.draw(st.sampled_from(sorted(entry)))
    entry[key] = data.draw(json_values)
    try:
        back = GuardSet.from_state(state)
    except GuardStateError:
        return
    assert len(back) == len(guards)
