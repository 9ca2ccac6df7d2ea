"""The ``zmesh`` command line (also ``python -m zmesh``).

This is a driver: it may read the clock and write to the terminal.  The core it drives
stays sans-I/O.
"""

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .. import __version__
from ..circuit.sessions import DEFAULT_LEGS
from ..runtime.content_cli import add_content_commands, add_rate_option
from ..runtime.control import DEFAULT_CONTROL
from ..runtime.processes import MAX_RELAYS, MIN_RELAYS
from ..runtime.push_cli import add_push_service
from ..session.multipath import MAX_LEGS
from ..shaping import MODES
from ..sim.demo import DemoError, DemoResult, run_demo
from ..sim.network import LinkModel
from .args import (
    Progress,
    fmt_bytes,
    milliseconds,
    parse_size,
    positive_int,
    probability,
    relay_count,
)
from .sim import add_sim


def print_demo(result: DemoResult, out: TextIO) -> None:
    w = out.write
    w("\nPath: " + " -> ".join(result.path) + "\n")
    w(
        f"Circuit built in {result.build_sim * 1000:.1f} ms simulated, "
        f"{result.build_wall * 1000:.1f} ms wall (one round trip)\n"
    )
    mb = result.size / 1e6
    sim_rate = mb / result.transfer_sim if result.transfer_sim else float("inf")
    wall_rate = mb / result.transfer_wall if result.transfer_wall else float("inf")
    w(
        f"Transferred {fmt_bytes(result.size)} in {result.transfer_sim:.2f} s simulated "
        f"({sim_rate:.1f} MB/s), {result.transfer_wall:.2f} s wall ({wall_rate:.1f} MB/s); "
        f"{result.cells_relayed} cells relayed\n"
    )
    w(f"sent     SHA-256 {result.sent_sha256}\n")
    w(f"received SHA-256 {result.received_sha256}\n")
    match = result.sent_sha256 == result.received_sha256
    w(f"SHA-256 match: {'yes' if match else 'NO'}\n")
    w("\nWhat each hop learned about the circuit:\n")
    for hop in result.hops:
        verdict = (
            "saw BOTH source and destination"
            if hop.saw_source and hop.saw_destination
            else "never saw both source and destination"
        )
        w(f"  {hop.node:<24} predecessor {hop.predecessor:<24} successor {hop.successor:<24}")
        w(f" {verdict}\n")
    w(f"\nTrace digest: {result.trace_digest}\n")
    w("OK: verified transfer\n" if result.ok else "FAILED\n")


def cmd_demo(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr, sys.stderr.isatty() and not args.quiet)
    model = LinkModel(latency=args.latency, loss=args.loss)
    print(
        f"zmesh demo: {args.nodes} nodes, {args.hops} relays, {fmt_bytes(args.size)}, "
        f"seed {args.seed}",
        flush=True,
    )
    try:
        result = run_demo(
            nodes=args.nodes,
            hops=args.hops,
            size=args.size,
            seed=args.seed,
            model=model,
            clock=time.perf_counter,
            progress=progress,
        )
    except DemoError as exc:
        print(f"zmesh demo: error: {exc}", file=sys.stderr)
        return 1
    print_demo(result, sys.stdout)
    return 0 if result.ok else 1


def cmd_relay(args: argparse.Namespace) -> int:
    from ..runtime.daemon import RelayOptions, main_relay

    opts = RelayOptions(
        listen=args.listen,
        data=Path(args.data),
        exit=args.exit,
        allow_private=args.allow_private_exits,
        bootstrap=args.bootstrap,
        loopback=args.loopback,
        log_hops=args.log_hops,
        rate=args.rate,
        stun_port=args.stun_port,
        shape=args.shape,
        transport=args.transport,
    )
    return main_relay(opts)


def _legs(text: str) -> int:
    try:
        legs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= legs <= MAX_LEGS:
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_LEGS} legs")
    return legs


def cmd_proxy(args: argparse.Namespace) -> int:
    from ..runtime.proxy import ProxyOptions, main_proxy

    if not args.bootstrap:
        print("zmesh proxy: error: give at least one --bootstrap URL", file=sys.stderr)
        return 2
    data = Path(args.data) if args.data else None
    opts = ProxyOptions(
        socks=args.socks,
        bootstrap=args.bootstrap,
        data=data,
        loopback=args.loopback,
        keep_trying=args.keep_trying,
        log_hops=args.log_hops,
        control=None if args.control == "off" else args.control,
        legs=args.legs,
        shape=args.shape,
        transport=args.transport,
    )
    return main_proxy(opts)


def cmd_up(args: argparse.Namespace) -> int:
    from ..runtime.daemon import UpOptions, main_up

    data = Path(args.data) if args.data else None
    web = None if args.web == "off" else args.web
    control = None if args.control == "off" else args.control
    opts = UpOptions(
        args.relays,
        args.socks,
        data,
        args.verbose,
        web,
        control,
        args.trust_ca or "",
        args.shape,
        args.transport,
    )
    return main_up(opts)


def cmd_status(args: argparse.Namespace) -> int:
    from ..runtime.control import main_status

    return main_status(args.control, args.json)


def cmd_harness(args: argparse.Namespace) -> int:
    from ..runtime.harness import SCENARIOS, HarnessOptions, main_harness

    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    dist = Path(args.dist) if args.dist else None
    opts = HarnessOptions(browsers=args.browsers, relays=args.relays, dist=dist)
    opts.browser = args.browser  # firefox: Debian's Firefox ESR over WebDriver BiDi (D54)
    opts.default_privacy = scenarios == ["browser-pair"]  # mDNS hiding on (D50)
    return main_harness(opts, scenarios)


def cmd_web(args: argparse.Namespace) -> int:
    from ..runtime.webserver import WebOptions, main_web

    if not args.bootstrap:
        print(
            "zmesh web: error: give at least one --bootstrap URL (a relay's signaling "
            "endpoint, as `zmesh relay` prints it: http://HOST:PORT)",
            file=sys.stderr,
        )
        return 2
    dist = Path(args.dist) if args.dist else None
    return main_web(WebOptions(args.host, args.port, dist, args.bootstrap, args.trust_ca or ""))


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0-65535), not {text!r}")
    return int(text)


def _trust_ca(path: str) -> str:
    from ..runtime.webserver import load_trust_ca

    try:
        return load_trust_ca(Path(path))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


TRUST_CA_HELP = (
    "a PEM file of CA certificates that the page's zmesh.fetch trusts for https:// beyond "
    "certifi's set (for private deployments and tests; the page gets it in config.json)"
)


def _web_address(text: str) -> str:
    if text.lower() in ("off", "none", "no"):
        return "off"
    return _hostport(text)


def _control_address(text: str) -> str:
    if text.lower() in ("off", "none", "no"):
        return "off"
    return _hostport(text)


def _hostport(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return text


def _url(text: str) -> str:
    if not text.startswith("http://") or len(text) <= len("http://"):
        raise argparse.ArgumentTypeError(f"expected a URL like http://HOST:PORT, not {text!r}")
    return text


def add_shape_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shape",
        choices=MODES,
        default="off",
        help="shape what this node sends on each link so that message sizes and times do "
        "not show what it carries: 'constant' (8 KiB every 20 ms per link, cover when idle), "
        "'video' (the cadence and sizes of a measured WebRTC video call) or 'off' (default)",
    )


def add_transport_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transport",
        choices=("datachannel", "media"),
        default="datachannel",
        help="what this node's links to other native nodes go over: 'datachannel' (a "
        "WebRTC data channel, default) or 'media' (inside the frames of a WebRTC video "
        "track, at a measured call's cadence; needs the media extra, aiortc); a media node "
        "still answers data channels",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zmesh",
        description="zMesh: a serverless overlay network with post-quantum onion circuits.",
    )
    parser.add_argument("--version", action="version", version=f"zmesh {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run an in-process mesh and stream bytes through an onion circuit",
        description=(
            "Build an in-process mesh of real nodes (real crypto, simulated links), pick a "
            "path of --hops relays between a source and a destination, build a circuit, "
            "stream --size random bytes and check the SHA-256 at the destination."
        ),
    )
    demo.add_argument("--nodes", type=positive_int, default=12, help="mesh size (default 12)")
    demo.add_argument(
        "--hops",
        type=positive_int,
        default=3,
        help="relays between source and destination (default 3)",
    )
    demo.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("5MB"),
        help="bytes to send, e.g. 5MB or 512KiB (default 5MB)",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed for a reproducible run (default 7)")
    demo.add_argument(
        "--latency",
        type=milliseconds,
        default=0.010,
        help="one-way link latency in ms (default 10)",
    )
    demo.add_argument(
        "--loss",
        type=probability,
        default=0.0,
        help="per-message loss under the reliable channel (default 0)",
    )
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    relay = sub.add_parser(
        "relay",
        help="run a relay: WebRTC links, an HTTP signaling endpoint, optionally an exit",
        description=(
            "Run a long-lived relay.  It serves signaling on --listen, links to the mesh "
            "over WebRTC, keeps its identity and peer cache in SQLite under --data, and "
            "rotates its onion keys every epoch.  Stop it with Ctrl-C or SIGTERM."
        ),
    )
    relay.add_argument(
        "--listen", type=_hostport, required=True, help="HOST:PORT for signaling (port 0: any)"
    )
    relay.add_argument("--data", required=True, help="state directory (identity, peer cache)")
    relay.add_argument(
        "--exit", action="store_true", help="also act as an exit (opens TCP connections)"
    )
    relay.add_argument(
        "--allow-private-exits",
        action="store_true",
        help="let the exit reach private and loopback addresses (only for your own local mesh)",
    )
    relay.add_argument(
        "--bootstrap",
        type=_url,
        action="append",
        default=[],
        metavar="URL",
        help="a known node's signaling URL (repeatable)",
    )
    relay.add_argument(
        "--loopback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="offer 127.0.0.1 ICE candidates (default: when listening on loopback)",
    )
    relay.add_argument(
        "--log-hops",
        action="store_true",
        help="log each circuit's predecessor and successor (for tests of your own mesh only: "
        "such a log names who talks to whom, so production relays keep none)",
    )
    relay.add_argument(
        "--stun-port",
        type=int,
        default=0,
        metavar="PORT",
        help="UDP port of the STUN binding responder on the --listen host, published in the "
        "descriptor for browsers (default 0: an ephemeral port; -1: none)",
    )
    add_rate_option(relay)
    add_shape_option(relay)
    add_transport_option(relay)
    relay.set_defaults(func=cmd_relay)
    add_content_commands(sub)

    proxy = sub.add_parser(
        "proxy",
        help="run a SOCKS5 proxy that sends each connection through 3-hop circuits",
        description=(
            "Run a SOCKS5 server (RFC 1928: CONNECT, domain names, IPv4 and IPv6).  Each "
            "connection is a stream of a session that runs over --legs 3-hop circuits to "
            "one exit relay at once; a circuit that dies is replaced and its bytes in "
            "flight are resent on the others, so the connection survives.  A distinct SOCKS "
            "username gets a distinct session.  The proxy also relays circuits for others "
            "(it publishes the RELAY flag, never EXIT), over the links it holds."
        ),
    )
    proxy.add_argument(
        "--socks",
        type=_hostport,
        default="127.0.0.1:1080",
        help="HOST:PORT to listen on (default 127.0.0.1:1080)",
    )
    proxy.add_argument(
        "--bootstrap",
        type=_url,
        action="append",
        default=[],
        metavar="URL",
        help="a relay's signaling URL (repeatable, at least one)",
    )
    proxy.add_argument("--data", help="state directory (default: a fresh identity each run)")
    proxy.add_argument(
        "--legs",
        type=_legs,
        default=DEFAULT_LEGS,
        help=f"circuits each session runs over at once, 1 to {MAX_LEGS} (default "
        f"{DEFAULT_LEGS}; 1 still heals, with a stall while a circuit is replaced)",
    )
    proxy.add_argument(
        "--loopback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="offer 127.0.0.1 ICE candidates (default: when all bootstrap URLs are loopback)",
    )
    proxy.add_argument(
        "--keep-trying",
        action="store_true",
        help="when every bootstrap relay refuses the connection, warn and keep trying "
        "(default: say which and why, and exit)",
    )
    proxy.add_argument(
        "--log-hops",
        action="store_true",
        help="log each circuit it relays for others with its predecessor and successor (for "
        "tests of your own mesh only, as for `zmesh relay --log-hops`)",
    )
    proxy.add_argument(
        "--control",
        type=_control_address,
        nargs="?",
        const=DEFAULT_CONTROL,
        default="off",
        metavar="HOST:PORT",
        help=f"serve GET /status (JSON: its links and circuits) for `zmesh status` here "
        f"(--control alone: {DEFAULT_CONTROL}; default off: the status names this client's "
        "circuit paths to any program on this machine)",
    )
    add_shape_option(proxy)
    add_transport_option(proxy)
    proxy.set_defaults(func=cmd_proxy)

    up = sub.add_parser(
        "up",
        help="start a local mesh on loopback: relays, an exit and a SOCKS5 proxy",
        description=(
            "Start your own mesh on this machine: --relays relays (the first is an exit "
            "that may reach loopback, since the mesh is yours; the others start together "
            "once it is up, with a line for each) and a SOCKS5 proxy, which relays too.  "
            "It fetches a megabyte through the mesh as a self-test and prints how to use "
            "it; Ctrl-C stops everything."
        ),
    )
    up.add_argument(
        "--relays",
        type=relay_count,
        default=4,
        help=f"number of relays, {MIN_RELAYS} to {MAX_RELAYS} (default 4)",
    )
    up.add_argument(
        "--socks",
        type=_hostport,
        default="127.0.0.1:1080",
        help="SOCKS5 listen address (default 127.0.0.1:1080)",
    )
    up.add_argument("--data", help="state directory (default: a temporary one)")
    up.add_argument(
        "--web",
        type=_web_address,
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="serve the browser node's page here, joined to these relays (default "
        "127.0.0.1:8080; 'off' to disable; needs the browser bundle: see `zmesh web --help`)",
    )
    up.add_argument(
        "--control",
        type=_control_address,
        default=DEFAULT_CONTROL,
        metavar="HOST:PORT",
        help=f"serve GET /status (JSON: relays, circuits, sessions) for `zmesh status` here "
        f"(default {DEFAULT_CONTROL}; 'off' to disable)",
    )
    up.add_argument("--trust-ca", type=_trust_ca, default=None, metavar="FILE", help=TRUST_CA_HELP)
    add_shape_option(up)
    add_transport_option(up)
    up.set_defaults(func=cmd_up)

    status = sub.add_parser(
        "status",
        help="show a running `zmesh up` or `zmesh proxy --control`: relays, circuits, sessions",
        description=(
            "Ask the status endpoint of a running `zmesh up` (or `zmesh proxy --control`) "
            "for its state and print it as tables: the relays it started and whether each "
            "is alive, the proxy's circuits with their paths, and its sessions.  Node ids "
            "are shortened in the tables; --json prints the whole document."
        ),
    )
    status.add_argument(
        "--control",
        type=_hostport,
        default=DEFAULT_CONTROL,
        metavar="HOST:PORT",
        help=f"the status endpoint to ask (default {DEFAULT_CONTROL}, as `zmesh up`)",
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.set_defaults(func=cmd_status)

    web = sub.add_parser(
        "web",
        help="serve the browser node's page: opening it makes the browser a zMesh node",
        description=(
            "Serve the browser node (the bundle an installed zmesh wheel carries, or a "
            "source tree's web/dist, built by `make web`) and a config.json naming the "
            "--bootstrap relays.  Opening the page runs "
            "a full zMesh node in the browser (Pyodide in a Web Worker): it links to the "
            "mesh over WebRTC, relays for others and offers zmesh.fetch to page scripts."
        ),
    )
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0: any)")
    web.add_argument(
        "--dist",
        help="the built page's directory (default: the installed wheel's bundle, else web/dist "
        "of the source tree)",
    )
    web.add_argument(
        "--bootstrap",
        type=_url,
        action="append",
        default=[],
        metavar="URL",
        help="a relay's signaling URL the page joins through (repeatable, at least one)",
    )
    web.add_argument("--trust-ca", type=_trust_ca, default=None, metavar="FILE", help=TRUST_CA_HELP)
    web.set_defaults(func=cmd_web)

    add_sim(sub)
    harness = sub.add_parser(
        "harness",
        help="run headless Chromium nodes and native relays on loopback through a scenario",
        description=(
            "Start --browsers headless Chromium nodes (Debian's /usr/bin/chromium, driven by "
            "Playwright) and --relays native relays on loopback, run a scenario and print "
            "the results.  Needs the browser bundle (see `zmesh web --help`)."
        ),
    )
    harness.add_argument(
        "--browsers", type=positive_int, default=2, help="browser nodes (default 2)"
    )
    harness.add_argument(
        "--relays",
        type=positive_int,
        default=3,
        help="native relays, the first an exit (default 3)",
    )
    harness.add_argument(
        "--scenario",
        choices=[
            "join",
            "browser-circuit",
            "fetch",
            "embed",
            "browser-pair",
            "heal",
            "push",
            "all",
        ],
        default="join",
        help="what to run (default join)",
    )
    harness.add_argument(
        "--browser",
        choices=["chromium", "firefox"],
        default="chromium",
        help="Chromium (Playwright) or Firefox ESR (puppeteer-core; join, fetch and push)",
    )
    harness.add_argument("--dist", help="the browser bundle (default: as for `zmesh web`)")
    harness.set_defaults(func=cmd_harness)
    add_push_service(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
