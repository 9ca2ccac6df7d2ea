"""The TorPS-style anonymity run (zmesh.sim.anonymity) with and without guards.

    python bench/anonymity.py [--relays 10000] [--clients 500] [--days 30]
                              [--adversary 0.1] [--churn 0.02] [--seed 1]

Prints the compromise figures with guards against the same clients without guards (the
baseline, first hop drawn per circuit), the targets of issue 9, and the wall time.
"""

import argparse
import sys
import time

from zmesh.sim.anonymity import AnonymityConfig, simulate_anonymity


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--relays", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--adversary", type=float, default=0.1)
    p.add_argument("--churn", type=float, default=0.02)
    p.add_argument("--native-lifetime-days", type=float, default=365.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    cfg = AnonymityConfig(
        relays=a.relays,
        clients=a.clients,
        days=a.days,
        adversary=a.adversary,
        churn=a.churn,
        native_lifetime_days=a.native_lifetime_days,
        seed=a.seed,
    )

    def progress(done: int, total: int) -> None:
        if done % 24 == 0 or done == total:
            print(f"\r  day {done / 24:5.1f} of {total / 24:g}", end="", file=sys.stderr)

    start = time.perf_counter()
    r = simulate_anonymity(cfg, progress)
    wall = time.perf_counter() - start
    print(file=sys.stderr)
    f, g = r.adversary_fraction, r.guards_per_client
    print(
        f"{r.relays} relays (f = {f:g} hostile), {r.clients} clients, {r.anonymity_days:g} days,"
        f" churn {r.churn:g}/h, {r.circuits} circuits with guards; wall {wall:.1f} s"
    )
    print(f"{'':28}{'guards':>10}{'no guards':>12}{'target':>10}")
    print(
        f"{'circuits_compromised':28}{r.circuits_compromised:10.4f}"
        f"{r.circuits_compromised_no_guards:12.4f}{f * f + 0.005:10.4f}"
    )
    print(
        f"{'clients_deanonymized':28}{r.clients_deanonymized:10.4f}"
        f"{r.clients_deanonymized_no_guards:12.4f}{1 - (1 - f) ** g + 0.03:10.4f}"
    )
    print(
        f"guards_per_client {g} (at most 2); distinct guards per client over the run:"
        f" mean {r.guards_used_mean:.3f}, max {r.guards_used_max};"
        f" hostile guard share {r.hostile_guard_share:.3f}"
    )
    print(f"digest {r.digest}")


if __name__ == "__main__":
    main()
