"""Helpers shared by the test modules (importable as ``import helpers``)."""

import random
from collections.abc import Iterator, Sequence

from zmesh.session.frames import AckFrame, DataFrame, StreamFrame
from zmesh.session.stream import Stream


def splits(data: bytes, rng: random.Random, max_chunk: int = 64) -> Iterator[bytes]:
    """Cut ``data`` into random pieces of 0..max_chunk bytes (empty pieces included)."""
    i = 0
    while i < len(data):
        n = rng.randint(0, max_chunk)
        yield data[i : i + n]
        i += n


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class Network:
    """One direction of an in-process link: delivers every frame, in order, once."""

    def carry(self, frames: list[StreamFrame]) -> list[StreamFrame]:
        return frames

    def drain(self) -> list[StreamFrame]:
        """Release everything held back (called when both ends are idle)."""
        return []


class MessyNetwork(Network):
    """Reorders frames within and across rounds and duplicates some (as multipath may).

    Never loses a frame: the streams have no retransmission of their own.
    """

    def __init__(self, rng: random.Random, dup_rate: float = 0.3, hold_rate: float = 0.3):
        self.rng = rng
        self.dup_rate = dup_rate
        self.hold_rate = hold_rate
        self.held: list[StreamFrame] = []

    def carry(self, frames: list[StreamFrame]) -> list[StreamFrame]:
        batch = self.held + frames + [f for f in frames if self.rng.random() < self.dup_rate]
        self.rng.shuffle(batch)
        hold = [self.rng.random() < self.hold_rate for _ in batch]
        self.held = [f for f, h in zip(batch, hold, strict=True) if h]
        return [f for f, h in zip(batch, hold, strict=True) if not h]

    def drain(self) -> list[StreamFrame]:
        out, self.held = self.held, []
        return out


class FlowViolationError(AssertionError):
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
                raise FlowViolationError(
                    f"DATA up to {f.offset + len(f.data)} > credit {self.credit}"
                )

    def note_ack(self, frames: Sequence[StreamFrame]) -> None:
        for f in frames:
            if isinstance(f, AckFrame):
                self.credit = max(self.credit, f.max_data)

    def deliver(self, frames: Sequence[StreamFrame]) -> None:
        for f in frames:
            self.frames += 1
            self.delivered += self.receiver.receive(f)


class Link:
    """Two streams joined by a :class:`Network` in each direction.

    :meth:`run` lets both sides produce their frames (``frames_to_send``) round after
    round, carries each batch across its network and delivers it, until neither side has
    anything to send and nothing is in flight.  It asserts that no DATA frame ever
    exceeds the credit the receiver advertised in the ACKs it sent.
    """

    def __init__(
        self,
        a: Stream,
        b: Stream,
        *,
        max_data_len: int = 1000,
        budget: int = 1 << 30,
        a_to_b: Network | None = None,
        b_to_a: Network | None = None,
    ) -> None:
        self.a, self.b = a, b
        self.max_data_len, self.budget = max_data_len, budget
        self.net_ab = a_to_b or Network()
        self.net_ba = b_to_a or Network()
        self.to_a, self.to_b = _Direction(a), _Direction(b)

    def run(self, max_rounds: int = 100_000) -> tuple[bytes, bytes]:
        """Run until idle; return the bytes delivered to ``a`` and to ``b`` in this run."""
        start_a, start_b = len(self.to_a.delivered), len(self.to_b.delivered)
        for _ in range(max_rounds):
            from_a = self.a.frames_to_send(self.max_data_len, self.budget)
            from_b = self.b.frames_to_send(self.max_data_len, self.budget)
            self.to_b.check(from_a)
            self.to_a.check(from_b)
            # b grants a credit with the ACKs b sends (checked from the next round on)
            self.to_b.note_ack(from_b)
            self.to_a.note_ack(from_a)
            if from_a or from_b:
                deliver_ab, deliver_ba = self.net_ab.carry(from_a), self.net_ba.carry(from_b)
            else:
                deliver_ab, deliver_ba = self.net_ab.drain(), self.net_ba.drain()
                if not deliver_ab and not deliver_ba:
                    return (
                        bytes(self.to_a.delivered[start_a:]),
                        bytes(self.to_b.delivered[start_b:]),
                    )
            self.to_b.deliver(deliver_ab)
            self.to_a.deliver(deliver_ba)
        raise AssertionError(f"streams still busy after {max_rounds} rounds")


def shuttle(
    a: Stream,
    b: Stream,
    *,
    max_data_len: int = 1000,
    budget: int = 1 << 30,
    a_to_b: Network | None = None,
    b_to_a: Network | None = None,
) -> tuple[bytes, bytes]:
    """Exchange frames between two fresh streams until idle (see :class:`Link`).

    Returns the bytes delivered to ``a`` and to ``b``.
    """
    link = Link(a, b, max_data_len=max_data_len, budget=budget, a_to_b=a_to_b, b_to_a=b_to_a)
    return link.run()
