"""Benchmark: the failover stall of sessions on real nodes in the simulator (issue 8).

Runs :func:`zmesh.sim.heal.run_heal`: sessions of two legs echo random bytes through
exits while relays on their legs crash or go silent (a blackhole) in turn, every
``--fault-every`` simulated seconds.  Prints the bytes lost (the goal is none), the stall
of the sessions that lost a leg with data in flight (p50, p99, max: the longest gap in
the data they received around the failover) and, as the baseline of the same run, the
longest gap of the sessions that lost nothing.  Deterministic from ``--seed``.
"""

import argparse
import sys
import time

from zmesh.link.frames import SEND_BATCH
from zmesh.sim.heal import run_heal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="sessions (default 1000)")
    parser.add_argument("--size", type=int, default=256 * 1024, help="bytes each (256 KiB)")
    parser.add_argument("--fault-every", type=float, default=0.5, help="seconds (0.5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--batch",
        type=int,
        default=SEND_BATCH,
        help=f"bytes of frames per link message ({SEND_BATCH}; 0: one frame each)",
    )
    args = parser.parse_args()
    if args.sessions < 1 or args.size < 1 or args.fault_every <= 0 or args.batch < 0:
        parser.error("sessions, size and fault interval must be positive")
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total} sessions done", end="", file=sys.stderr, flush=True)

    report = run_heal(
        args.seed,
        sessions=args.sessions,
        size=args.size,
        fault_every=args.fault_every,
        batch=args.batch,
        progress=progress,
    )
    print(file=sys.stderr)
    print(report.summary())
    print(f"faults: {len(report.faults)} ({report.faults[0]} ... {report.faults[-1]})")
    print(f"wall time {time.monotonic() - start:.0f} s")
    return 0 if report.bytes_lost == 0 and report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
