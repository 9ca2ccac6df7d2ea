"""Helpers shared by the test modules (importable as ``import helpers``)."""

import random
from collections.abc import Callable, Iterator, Sequence

from zmesh.session.frames import AckFrame, DataFrame, StreamFrame
from zmesh.session.stream import Stream

Transform = Callable[[list[StreamFrame]], list[StreamFrame]]


def splits(data: bytes, rng: random.Random, max_chunk: int = 64) -> Iterator[bytes]:
    """Cut ``data`` into random pieces of 0..max_chunk bytes (empty pieces included)."""
    i = 0
    while i < len(data):
        n = rng.randint(0, max_chunk)
        yield data[i : i + n]
        i += n


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def shuffle_and_duplicate(rng: random.Random, dup_rate: float = 0.3) -> Transform:
    """A transform that reorders a batch of frames and repeats some of them."""

    def transform(frames: list[StreamFrame]) -> list[StreamFrame]:
        out = list(frames)
        out += [f for f in frames if rng.random() < dup_rate]
        rng.shuffle(out)
        return out

    return transform


class FlowViolation(AssertionError):
    """A sender put a byte on the wire beyond the credit its peer advertised."""


class _Direction:
    """One direction of a stream pair: tracks the credit the receiver advertised."""

    def __init__(self, receiver: Stream) -> None:
        self.receiver = receiver
        self.credit = receiver.window  # both ends start with the same default credit
        self.delivered = bytearray()
        self.frames = 0

    def check(self, frames: Sequence[StreamFrame]) -> None:
        for f in frames:
            if isinstance(f, DataFrame) and f.offset + len(f.data) > self.credit:
                raise FlowViolation(f"DATA up to {f.offset + len(f.data)} > credit {self.credit}")

    def note_ack(self, frames: Sequence[StreamFrame]) -> None:
        for f in frames:
            if isinstance(f, AckFrame):
                self.credit = max(self.credit, f.max_data)

    def deliver(self, frames: Sequence[StreamFrame]) -> None:
        for f in frames:
            self.frames += 1
            self.delivered += self.receiver.receive(f)


def shuttle(
    a: Stream,
    b: Stream,
    *,
    max_data_len: int = 1000,
    budget: int = 1 << 30,
    transform: Transform | None = None,
    max_rounds: int = 100_000,
) -> tuple[bytes, bytes]:
    """Exchange frames between ``a`` and ``b`` until neither has anything to send.

    Each round both sides produce their frames (``frames_to_send``), then each batch is
    optionally reordered/duplicated by ``transform`` and delivered to the other side.
    Asserts that no DATA frame ever exceeds the credit the receiver advertised in the ACKs
    it sent.  Returns the bytes delivered to ``a`` and to ``b``.
    """
    to_a, to_b = _Direction(a), _Direction(b)
    for _ in range(max_rounds):
        from_a = a.frames_to_send(max_data_len, budget)
        from_b = b.frames_to_send(max_data_len, budget)
        if not from_a and not from_b:
            return bytes(to_a.delivered), bytes(to_b.delivered)
        to_b.check(from_a)
        to_a.check(from_b)
        # b grants a credit with the ACKs b sends (checked from the next round on)
        to_b.note_ack(from_b)
        to_a.note_ack(from_a)
        if transform is not None:
            from_a, from_b = transform(from_a), transform(from_b)
        to_b.deliver(from_a)
        to_a.deliver(from_b)
    raise AssertionError(f"streams still busy after {max_rounds} rounds")
