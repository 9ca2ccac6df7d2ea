"""The fetcher's scheduler: rarest first, endgame, failures, stalls, resume."""

import pytest

from zmesh.chunks import Layout
from zmesh.chunks.protocol import PieceRequest, ProofRequest
from zmesh.chunks.schedule import Scheduler, SourceDropped
from zmesh.errors import LocalProtocolError

LAYOUT = Layout(20 * 4096, 4096, k=4, n=6)  # 5 groups of 4 data + 2 parity: 30 pieces
ALL = range(LAYOUT.pieces)
A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def pieces(requests: list[PieceRequest | ProofRequest]) -> list[int]:
    return [r.index for r in requests if isinstance(r, PieceRequest)]


def proofs(requests: list[PieceRequest | ProofRequest]) -> list[int]:
    return [r.group for r in requests if isinstance(r, ProofRequest)]


def deliver(s: Scheduler, source: bytes, requests: list[PieceRequest | ProofRequest]) -> None:
    for r in requests:
        if isinstance(r, ProofRequest):
            s.proof_received(source, r.group)
        elif s.wanted(r.index):
            s.received(source, r.index, LAYOUT.piece_length(r.index))


def test_three_sources_fetch_everything_once_data_first() -> None:
    s = Scheduler(LAYOUT, depth=3)
    for src in (A, B, C):
        s.add_source(src, 0.0)
        s.have(src, ALL)
    asked: list[int] = []
    while not s.done:
        for src in (A, B, C):
            r = s.requests(src, 1.0)
            asked += pieces(r)
            deliver(s, src, r)
    assert len(asked) == len(set(asked)) == 20  # no duplicates, no parity needed
    assert all(LAYOUT.locate(i)[1] < 4 for i in asked)
    assert s.proofs == set(range(LAYOUT.groups))
    assert sum(s.delivered(x) for x in (A, B, C)) == LAYOUT.size


def test_rarest_first_and_group_need() -> None:
    s = Scheduler(LAYOUT, depth=2)
    s.add_source(A, 0.0)
    s.add_source(B, 0.0)
    s.have(A, ALL)
    s.have(B, range(6))  # group 0 is common, everything else is rare
    first = s.requests(A, 0.0)
    assert proofs(first) == [1] and pieces(first) == [6, 7]  # rarest: pieces only A has
    assert pieces(s.requests(B, 0.0)) == [0, 1]


def test_parity_rebuilds_a_group_a_source_lacks_data_of() -> None:
    s = Scheduler(Layout(4 * 4096, 4096, k=4, n=6), depth=8)
    s.add_source(A, 0.0)
    s.have(A, [0, 1, 4, 5])  # two data chunks and both parity pieces
    assert pieces(s.requests(A, 0.0)) == [0, 1, 4, 5]


def test_endgame_asks_more_and_cancels() -> None:
    s = Scheduler(Layout(4 * 4096, 4096, k=4, n=6), depth=8)
    s.add_source(A, 0.0)
    s.have(A, range(6))
    s.add_source(B, 0.0)
    s.have(B, range(6))
    assert pieces(s.requests(A, 0.0)) == [0, 1, 2, 3]
    extra = pieces(s.requests(B, 0.0))
    assert extra[:2] == [4, 5]  # unasked parity first, then duplicates
    assert sorted(extra[2:]) == [0, 1, 2, 3]
    assert s.received(B, 0, 4096) == [A]  # tell A to cancel
    assert s.in_flight(A) == [1, 2, 3]


def test_stall_releases_and_others_take_over() -> None:
    s = Scheduler(LAYOUT, depth=4, stall=2.0)
    s.add_source(A, 0.0)
    s.have(A, ALL)
    got = pieces(s.requests(A, 0.0))
    assert s.get_timer() == 2.0
    s.handle_timer(1.9)
    assert s.in_flight(A) == got
    s.handle_timer(2.0)
    assert s.in_flight(A) == [] and s.requests(A, 2.0) == [] and s.usable() == 0
    s.add_source(B, 2.0)
    s.have(B, ALL)
    assert pieces(s.requests(B, 2.0)) == got
    s.progress(A, 3.0)  # A delivers again: it may be asked again
    assert pieces(s.requests(A, 3.0))


def test_bad_pieces_strike_and_drop_a_source() -> None:
    s = Scheduler(LAYOUT, depth=4, max_strikes=2)
    for src in (A, B):
        s.add_source(src, 0.0)
        s.have(src, ALL)
    got = pieces(s.requests(A, 0.0))
    s.failed(A, got[0], bad=True)
    assert s.next_event() is None
    s.failed(A, got[1], bad=True)
    assert s.next_event() == SourceDropped(A, f"piece {got[1]} failed its proof")
    assert s.sources() == [B]
    assert set(got) <= set(pieces(s.requests(B, 0.0)) + pieces(s.requests(B, 0.0)))


def test_not_held_and_removal_requeue() -> None:
    s = Scheduler(LAYOUT, depth=2)
    for src in (A, B):
        s.add_source(src, 0.0)
        s.have(src, ALL)
    first = pieces(s.requests(A, 0.0))
    s.failed(A, first[0], bad=False)
    assert first[0] not in pieces(s.requests(A, 0.0))
    s.remove_source(A)
    assert first[0] in pieces(s.requests(B, 0.0))
    with pytest.raises(LocalProtocolError):
        s.requests(A, 0.0)


def test_resume_from_held_pieces() -> None:
    held = [0, 1, 2, 3, 6, 7, 8]
    s = Scheduler(LAYOUT, held, proofs=[0, 1])
    assert s.complete(0) and not s.complete(1)
    s.add_source(A, 0.0)
    s.have(A, ALL)
    asked = pieces(s.requests(A, 0.0))
    assert asked[0] == 9 and not set(asked) & set(held)


def test_bounds() -> None:
    s = Scheduler(LAYOUT, max_sources=1)
    s.add_source(A, 0.0)
    with pytest.raises(LocalProtocolError, match="at most 1 sources"):
        s.add_source(B, 0.0)
    s.have(A, [-1, LAYOUT.pieces, 5])  # outside the layout: ignored
    assert pieces(s.requests(A, 0.0)) == [5]
