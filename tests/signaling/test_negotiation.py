"""The negotiation state: offers and answers, the replay window, pending-answer caps,
deadlines.  Virtual time throughout; nothing sleeps."""

import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.errors import CloseCode, LocalProtocolError, RemoteProtocolError
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.rng import DeterministicRng
from zmesh.signaling.messages import MAX_SKEW_MS, Kind, decode_message
from zmesh.signaling.negotiation import (
    AnswerAbandoned,
    IncomingOffer,
    Limits,
    Negotiation,
    NegotiationEvent,
    OfferExpired,
    ReplayWindow,
    SignalingBusyError,
)

RNG = DeterministicRng(7, b"negotiation")
NOW = 1_800_000_000.0
SKEW = MAX_SKEW_MS / 1000
FP_A, FP_B = b"a" * 32, b"b" * 32
SDP_A, SDP_B = b"compact offer", b"compact answer"


def descriptor(identity: Identity) -> Descriptor:
    return identity.make_descriptor(
        flags=Flags.RELAY, onion_epoch=1, onion_pk=bytes(1216), published=int(NOW), lifetime=3600
    )


IDS = [Identity.generate(RNG) for _ in range(24)]
DESCS = [descriptor(i) for i in IDS]
BOB, BOB_DESC = IDS[0], DESCS[0]


_FORKS = itertools.count()


def party(identity: Identity, **limits: int | float) -> Negotiation:
    rng = RNG.fork(next(_FORKS).to_bytes(8, "big"))  # fresh nonces for every party
    return Negotiation(identity, rng, Limits(**limits))  # type: ignore[arg-type]


def offer_from(i: int, now: float = NOW, to: Descriptor = BOB_DESC) -> tuple[Negotiation, bytes]:
    """Identity ``i`` offers to ``to`` (Bob by default), carrying its descriptor."""
    alice = party(IDS[i])
    made = alice.make_offer(to, FP_A, SDP_A, now, descriptor=DESCS[i].encode())
    return alice, made.data


def open_offer(bob: Negotiation, data: bytes, now: float = NOW) -> IncomingOffer:
    return bob.open_offer(data, now, directory={})


def events(n: Negotiation) -> list[NegotiationEvent]:
    out = []
    while (event := n.next_event()) is not None:
        out.append(event)
    return out


# -- the exchange --------------------------------------------------------------------------
def test_offer_answer_round_trip() -> None:
    alice, bob = party(IDS[1]), party(BOB)
    offer = alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW, descriptor=DESCS[1].encode())
    assert offer.deadline == NOW + Limits.offer_timeout
    incoming = bob.open_offer(offer.data, NOW + 0.1, directory={})
    assert incoming.sender.node_id == IDS[1].node_id
    assert (incoming.nonce, incoming.fingerprint, incoming.session) == (offer.nonce, FP_A, SDP_A)
    assert bob.pending_answers() == bob.pending_answers(IDS[1].node_id) == 1
    answer_data = bob.make_answer(incoming, FP_B, SDP_B, NOW + 0.2)
    msg = decode_message(answer_data)
    assert msg.kind is Kind.ANSWER and msg.descriptor == b"" and msg.nonce == offer.nonce
    answer = alice.open_answer(answer_data, NOW + 0.3, origin=BOB.node_id)
    assert (answer.target, answer.fingerprint, answer.session) == (BOB_DESC, FP_B, SDP_B)
    with pytest.raises(RemoteProtocolError) as err:  # the same answer again
        alice.open_answer(answer_data, NOW + 0.4)
    assert err.value.code == CloseCode.REPLAY
    alice.offer_done(offer.nonce)
    bob.answer_done(IDS[1].node_id, offer.nonce)
    assert alice.get_timer() is None and bob.get_timer() is None
    assert bob.pending_answers() == 0


def test_a_known_sender_needs_no_carried_descriptor() -> None:
    alice, bob = party(IDS[1]), party(BOB)
    offer = alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW)
    with pytest.raises(RemoteProtocolError, match="no descriptor"):
        bob.open_offer(offer.data, NOW, directory={})
    assert bob.pending_answers() == 0 and len(bob.replay) == 0  # a refusal takes nothing
    incoming = bob.open_offer(offer.data, NOW, directory={IDS[1].node_id: DESCS[1]})
    assert incoming.sender == DESCS[1]


def test_answers_that_answer_no_offer_of_ours_are_refused() -> None:
    alice, bob, mallory = party(IDS[1]), party(BOB), party(IDS[2])
    offer = alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW, descriptor=DESCS[1].encode())
    incoming = open_offer(bob, offer.data)
    # Mallory answers Alice's offer (she saw its nonce on the path)
    forged = mallory._sign(
        Kind.ANSWER,
        target=IDS[1].node_id,
        nonce=offer.nonce,
        fingerprint=FP_B,
        session=SDP_B,
        now=NOW,
        descriptor=b"",
    )
    with pytest.raises(RemoteProtocolError, match="no offer of ours"):
        alice.open_answer(forged, NOW)
    # a relayed answer whose frame origin is not its sender
    real = bob.make_answer(incoming, FP_B, SDP_B, NOW)
    with pytest.raises(RemoteProtocolError, match="another node"):
        alice.open_answer(real, NOW, origin=IDS[2].node_id)
    # an offer is not an answer; an answer is not an offer
    with pytest.raises(RemoteProtocolError, match="expected an ANSWER"):
        alice.open_answer(offer.data, NOW)
    with pytest.raises(RemoteProtocolError, match="expected an OFFER"):
        open_offer(bob, real)
    alice.open_answer(real, NOW, origin=BOB.node_id)  # still good after all that


def test_an_offer_relayed_for_another_node_is_refused_before_verifying() -> None:
    bob = party(BOB)
    _, data = offer_from(1)
    with pytest.raises(RemoteProtocolError, match="another node"):
        bob.open_offer(data, NOW, directory={}, origin=IDS[2].node_id)
    bob.open_offer(data, NOW, directory={}, origin=IDS[1].node_id)


def test_outstanding_offers_are_bounded() -> None:
    alice = party(IDS[1], offers=2)
    first = alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW)
    alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW)
    with pytest.raises(LocalProtocolError, match="outstanding"):
        alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW)
    alice.offer_done(first.nonce)
    alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW)
    with pytest.raises(LocalProtocolError, match="fingerprint"):
        party(IDS[1]).make_offer(BOB_DESC, b"short", SDP_A, NOW)


# -- replay ----------------------------------------------------------------------------------
def test_a_replay_is_refused() -> None:
    bob = party(BOB)
    _, data = offer_from(1)
    incoming = open_offer(bob, data)
    bob.answer_done(incoming.sender.node_id, incoming.nonce)  # even once its slot is free
    with pytest.raises(RemoteProtocolError) as err:
        open_offer(bob, data, NOW + 1)
    assert err.value.code == CloseCode.REPLAY


def test_a_replay_inside_the_window_is_refused_after_more_than_the_cap_of_other_nonces() -> None:
    cap = 4
    bob = party(BOB, replay_capacity=cap)
    _, captured = offer_from(1)
    open_offer(bob, captured)
    for k in range(3 * cap):  # honest traffic pushes it out of the count-bounded table
        t = NOW + 1 + k
        offer = open_offer(bob, offer_from(2 + k % 8, t)[1], t)
        bob.answer_done(offer.sender.node_id, offer.nonce)
    assert len(bob.replay) == cap
    later = NOW + 1 + 3 * cap
    with pytest.raises(RemoteProtocolError) as err:  # ... and it is still refused
        open_offer(bob, captured, later)
    assert err.value.code == CloseCode.REPLAY
    assert "older than the replay window" in str(err.value)
    # the window shrank, it did not close: a fresh offer is answered
    assert bob.replay.floor_ms < int(later * 1000)
    open_offer(bob, offer_from(11, later)[1], later)


def test_a_nonce_outside_the_window_is_refused_by_the_timestamp_check() -> None:
    bob = party(BOB)
    _, captured = offer_from(1)
    incoming = open_offer(bob, captured)
    bob.answer_done(incoming.sender.node_id, incoming.nonce)
    later = NOW + SKEW + 1
    bob.handle_timer(later)
    assert len(bob.replay) == 0  # forgotten by time...
    with pytest.raises(RemoteProtocolError, match="stale") as err:
        open_offer(bob, captured, later)  # ... and refused by the timestamp check
    assert err.value.code == CloseCode.AUTH
    # the wall clock steps back: the forgotten nonce stays refused
    with pytest.raises(RemoteProtocolError, match="older than the replay window"):
        open_offer(bob, captured, NOW + 1)


def test_future_dated_nonces_are_kept_until_their_timestamps_go_stale() -> None:
    bob = party(BOB)
    ahead = NOW + SKEW - 1  # signed by a clock two minutes ahead of ours
    _, captured = offer_from(1, ahead)
    incoming = open_offer(bob, captured)
    bob.answer_done(incoming.sender.node_id, incoming.nonce)
    bob.handle_timer(NOW + 2 * SKEW - 2)  # still fresh at our clock: kept
    assert len(bob.replay) == 1
    with pytest.raises(RemoteProtocolError, match="replayed"):
        open_offer(bob, captured, NOW + 2 * SKEW - 2)


def test_the_replay_window_needs_room() -> None:
    with pytest.raises(LocalProtocolError):
        ReplayWindow(0)


# -- pending-answer caps ---------------------------------------------------------------------
def test_one_source_flooding_offers_is_capped_and_others_are_still_answered() -> None:
    bob = party(BOB, answers_per_source=3, answers_total=8)
    mallory = party(IDS[1])
    accepted, busy = 0, 0
    for _ in range(20):
        data = mallory.make_offer(BOB_DESC, FP_A, SDP_A, NOW, descriptor=DESCS[1].encode()).data
        try:
            open_offer(bob, data)
            accepted += 1
        except SignalingBusyError:
            busy += 1
    assert (accepted, busy) == (3, 17)
    assert bob.pending_answers(IDS[1].node_id) == 3 and len(bob.replay) == 3
    honest = open_offer(bob, offer_from(2)[1])  # another source is answered
    bob.make_answer(honest, FP_B, SDP_B, NOW)


def test_many_sources_flooding_offers_cannot_lock_out_an_honest_one() -> None:
    """Fewer identities than ``answers_total`` (see the next test for the limit), each
    flooding: the table fills and stays full, yet a newcomer takes the busiest's slot."""
    per_source, total = 4, 8
    bob = party(BOB, answers_per_source=per_source, answers_total=total)
    attackers = range(1, 1 + total // 2)
    refused = 0
    for attacker in attackers:
        for _ in range(2 * per_source):
            try:
                open_offer(bob, offer_from(attacker)[1])
            except SignalingBusyError:
                refused += 1
    assert refused > 0 and bob.pending_answers() == total
    shed = [e for e in events(bob) if isinstance(e, AnswerAbandoned)]
    assert shed and all(e.shed for e in shed)
    assert max(bob.pending_answers(IDS[a].node_id) for a in attackers) <= per_source
    honest = open_offer(bob, offer_from(20)[1])
    assert bob.pending_answers() == total and bob.pending_answers(IDS[20].node_id) == 1
    bob.make_answer(honest, FP_B, SDP_B, NOW)
    # each shed slot's owner learns nothing; its answer can no longer be made
    (victim,) = [e for e in events(bob) if isinstance(e, AnswerAbandoned)]
    assert victim.sender != IDS[20].node_id


def test_shedding_is_bounded_and_the_limit_is_one_slot_per_source() -> None:
    """The documented limit: ``answers_total`` identities holding one slot each refuse a
    newcomer until a deadline frees a slot."""
    total = 6
    bob = party(BOB, answers_per_source=4, answers_total=total)
    for attacker in range(1, total + 1):
        open_offer(bob, offer_from(attacker)[1])
    with pytest.raises(SignalingBusyError):
        open_offer(bob, offer_from(20)[1])
    assert events(bob) == []
    later = NOW + Limits.answer_timeout
    bob.handle_timer(later)
    assert bob.pending_answers() == 0
    open_offer(bob, offer_from(20, later)[1], later)


def test_a_refused_offer_costs_no_signature_check_and_takes_nothing() -> None:
    bob = party(BOB, answers_per_source=1, answers_total=4)
    open_offer(bob, offer_from(1)[1])
    _, data = offer_from(1)
    forged = data[:-1] + bytes([data[-1] ^ 1])  # a bad signature: refused as busy first
    with pytest.raises(SignalingBusyError):
        open_offer(bob, forged)
    assert len(bob.replay) == 1
    # once there is room, the same forgery is refused for its signature
    bob.handle_timer(NOW + Limits.answer_timeout)
    with pytest.raises(RemoteProtocolError, match="signature"):
        open_offer(bob, forged, NOW + 1)
    assert bob.pending_answers() == 0


# -- deadlines ------------------------------------------------------------------------------
def test_deadlines_expire_pending_answers_and_offers() -> None:
    alice, bob = party(IDS[1]), party(BOB)
    offer = alice.make_offer(BOB_DESC, FP_A, SDP_A, NOW, descriptor=DESCS[1].encode())
    assert alice.get_timer() == NOW + Limits.offer_timeout
    incoming = open_offer(bob, offer.data, NOW + 1)
    assert bob.get_timer() == NOW + 1 + Limits.answer_timeout
    bob.handle_timer(NOW + Limits.answer_timeout)  # not yet
    assert events(bob) == [] and bob.pending_answers() == 1
    bob.handle_timer(NOW + 1 + Limits.answer_timeout)
    assert events(bob) == [AnswerAbandoned(IDS[1].node_id, offer.nonce, shed=False)]
    assert bob.pending_answers() == 0 and bob.get_timer() is None
    with pytest.raises(LocalProtocolError, match="slot is gone"):
        bob.make_answer(incoming, FP_B, SDP_B, NOW + 2)
    bob.answer_done(IDS[1].node_id, offer.nonce)  # late and harmless

    alice.handle_timer(NOW + Limits.offer_timeout)
    assert events(alice) == [OfferExpired(BOB.node_id, offer.nonce)]
    assert alice.get_timer() is None
    late = party(BOB)
    answer = late.make_answer(open_offer(late, offer.data), FP_B, SDP_B, NOW)
    with pytest.raises(RemoteProtocolError, match="no offer of ours"):
        alice.open_answer(answer, NOW + Limits.offer_timeout)


# -- fuzz -----------------------------------------------------------------------------------
_OFFER = offer_from(1)[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_OFFER) - 1), st.integers(0, 255)), max_size=6))
def test_fuzz_offers_either_open_or_raise_a_remote_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_OFFER)
    for pos, value in edits:
        data[pos] = value
    bob = party(BOB)
    try:
        open_offer(bob, bytes(data))
    except RemoteProtocolError:
        assert bob.pending_answers() == 0 and len(bob.replay) == 0
    else:
        assert bob.pending_answers() == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_are_refused(data: bytes) -> None:
    bob = party(BOB)
    with pytest.raises(RemoteProtocolError):
        open_offer(bob, data)
    with pytest.raises(RemoteProtocolError):
        bob.open_answer(data, NOW)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.integers(1, 6)),
        st.tuples(st.just("done"), st.integers(0, 20)),
        st.tuples(st.just("wait"), st.floats(0, 40)),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(_OPS)
@example([("offer", n) for n in (1, 4, 1, 3, 1, 2, 6, 1)])  # the window fills at one instant
def test_every_table_stays_bounded(ops: list[tuple[str, float]]) -> None:
    limits = {"answers_per_source": 2, "answers_total": 5, "replay_capacity": 6}
    bob = party(BOB, **limits)
    now, held = NOW, []
    for op, arg in ops:
        if op == "offer":
            try:
                incoming = open_offer(bob, offer_from(int(arg), now)[1], now)
                held.append(incoming)
            except SignalingBusyError:
                pass
            except RemoteProtocolError as exc:
                # a full replay window raises its floor: offers no newer are refused
                assert exc.code is CloseCode.REPLAY, exc
        elif op == "done" and held:
            got = held.pop(int(arg) % len(held))
            bob.answer_done(got.sender.node_id, got.nonce)
        else:
            now += arg
            timer = bob.get_timer()
            if timer is not None and timer <= now:
                bob.handle_timer(now)
        assert bob.pending_answers() <= limits["answers_total"]
        assert all(bob.pending_answers(i.node_id) <= 2 for i in IDS[1:7])
        assert len(bob.replay) <= limits["replay_capacity"]
        timer = bob.get_timer()
        assert timer is None or timer > now - 40
