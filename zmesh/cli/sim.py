"""``zmesh sim``: the open network at scale on the simulator (zmesh/sim/scale.py)."""

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.pool import Pool
from pathlib import Path

from ..sim.anonymity import AnonymityConfig, AnonymityReport, simulate_anonymity
from .args import (
    Progress,
    churn_rate,
    days,
    non_negative_int,
    parse_duration,
    positive_int,
    probability,
)


def cmd_sim(args: argparse.Namespace) -> int:
    from ..sim.scale import ScaleConfig, simulate

    try:
        cfg = ScaleConfig(
            nodes=args.nodes,
            duration=args.duration,
            churn=args.churn,
            adversary=args.adversary,
            sybil=args.sybil,
            sybil_subnets=args.sybil_subnets,
            anonymity_days=args.anonymity_days,
            no_guards=args.no_guards,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"zmesh sim: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.json) if args.json else None
    if out is not None and not out.parent.is_dir():
        print(f"zmesh sim: error: no directory for --json {args.json!r}", file=sys.stderr)
        return 2
    progress = Progress(sys.stderr, sys.stderr.isatty() and not args.quiet)
    # the pool's exit terminates its process: an interrupted control plane leaves no orphan
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        report = simulate(
            cfg,
            clock=time.perf_counter,
            progress=progress,
            start_anonymity=partial(_start_anonymity, pool),
        )
    figures = report.to_json()
    for key, value in figures.items():
        print(f"{key:<34} {value}")
    if out is not None:
        out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _start_anonymity(pool: Pool, config: AnonymityConfig) -> Callable[[], AnonymityReport]:
    """Start the anonymity run in ``pool``'s process, beside the control plane (they share
    nothing; on two cores the run takes the longer of the two); returns the wait for its
    report."""
    return pool.apply_async(simulate_anonymity, (config,)).get


def add_sim(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``sim`` to the ``zmesh`` subcommands ``sub``."""
    sim = sub.add_parser(
        "sim",
        help="simulate an open network at scale: DHT, churn, adversaries, Sybils, anonymity",
        description=(
            "Run --nodes real DHT components (one per node, real messages and signed "
            "records, links and latencies modelled) for --duration of simulated time with "
            "churn, hostile nodes and Sybils, measuring lookups, circuit setup through the "
            "production path and guard code, and maintenance traffic; then the anonymity of "
            "guards over --anonymity-days (TorPS-style).  Prints the figures; --json writes "
            "them.  See zmesh/sim/scale.py for what is real and what is modelled."
        ),
    )
    sim.add_argument("--nodes", type=positive_int, required=True, help="nodes at the start")
    sim.add_argument(
        "--duration",
        type=parse_duration,
        required=True,
        metavar="D",
        help="simulated time, e.g. 90s, 10m or 1h",
    )
    sim.add_argument(
        "--churn",
        type=churn_rate,
        default=0.0,
        metavar="R",
        help="fraction of nodes leaving (replaced by newcomers) per simulated hour (default 0)",
    )
    sim.add_argument(
        "--adversary",
        type=probability,
        default=0.0,
        metavar="F",
        help="fraction of relays hostile and colluding (default 0)",
    )
    sim.add_argument(
        "--sybil",
        type=non_negative_int,
        default=0,
        metavar="M",
        help="extra hostile identities (default 0; needs --sybil-subnets)",
    )
    sim.add_argument(
        "--sybil-subnets",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="subnets the Sybil identities come from (default 0)",
    )
    sim.add_argument(
        "--anonymity-days",
        type=days,
        default=30.0,
        metavar="A",
        help="days of the anonymity run (default 30)",
    )
    sim.add_argument(
        "--no-guards", action="store_true", help="the baseline: circuits without guards"
    )
    sim.add_argument("--seed", type=int, required=True, metavar="S", help="seed of the run")
    sim.add_argument("--json", metavar="OUT", help="write the figures as one JSON object")
    sim.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=cmd_sim)
