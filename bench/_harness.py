"""Shared timing harness for the benchmarks: interleaved rounds, medians, paired ratios.

The machine is noisy, so a subject is never timed in a block of its own.  Every round
times each subject once (a batch of operations), in an order that rotates from round to
round, so slow drift (frequency scaling, a neighbour's load) hits the baseline and the
subjects alike.  The figures are medians over rounds; each subject's ratio is the median
of its per-round ratios against the baseline timed in the same round.
"""

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Op = Callable[[int], None]  # run the operation this many times


@dataclass
class Subject:
    name: str
    run: Op
    samples: list[float] = field(default_factory=list)  # ns per operation, one per round
    after: Op | None = None  # untimed, after each batch (cleanup that is not the subject)

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples) / 1000.0


def measure(subjects: Sequence[Subject], rounds: int, batch: int, warmup: int = 2) -> None:
    """Time every subject ``rounds`` times, ``batch`` operations a time, interleaved.

    ``subjects[0]`` is the baseline.  Setup objects are frozen out of the garbage
    collector's view and collection is off while timing, so no round pays for a sweep.
    """
    for subject in subjects:
        subject.run(warmup * batch)
        if subject.after is not None:
            subject.after(warmup * batch)
    n = len(subjects)
    gc.collect()
    gc.freeze()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for k in range(n):
                subject = subjects[(r + k) % n]
                t0 = time.perf_counter_ns()
                subject.run(batch)
                subject.samples.append((time.perf_counter_ns() - t0) / batch)
                if subject.after is not None:
                    subject.after(batch)
    finally:
        if gc_was_enabled:
            gc.enable()
        gc.unfreeze()


def paired_ratio(subject: Subject, baseline: Subject) -> float:
    """The median of per-round ratios subject/baseline (same round, same conditions)."""
    return statistics.median(s / b for s, b in zip(subject.samples, baseline.samples, strict=True))


def quartiles_us(subject: Subject) -> tuple[float, float]:
    q = statistics.quantiles(subject.samples, n=4)
    return q[0] / 1000.0, q[2] / 1000.0


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = _row(headers, widths)
    print(line)
    print("-" * len(line))
    for row in rows:
        print(_row(row, widths))


def note(message: str) -> None:
    """Progress on stderr, so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)
