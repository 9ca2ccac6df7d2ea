"""The command lines of content: ``zmesh share``, ``zmesh get`` and ``--rate``.

Kept out of :mod:`zmesh.cli` (which only calls :func:`add_content_commands` and
:func:`add_rate_option`); the commands' bodies are in :mod:`zmesh.runtime.content` and
:mod:`zmesh.runtime.content_fetch`, imported when a command runs.
"""

import argparse
import re
import tempfile
from pathlib import Path

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([km]?)(?:b|b/s)?\s*$", re.IGNORECASE)
MAX_RATE = 1e12


def parse_rate(text: str) -> float:
    """``4MB`` (4,000,000), ``500k``, ``2.5M`` or ``1000``: payload bytes per second,
    decimal k and M as the CLI's other numbers (argparse type)."""
    m = _RATE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (try 4MB, 500k or 1000)")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    if not 1 <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"a rate is 1 B/s to 1 TB/s, not {text!r}")
    return value


def add_rate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate",
        type=parse_rate,
        default=None,
        metavar="R",
        help="cap the content bytes this node gives, per second (4MB = 4,000,000; default: no cap)",
    )


def _bootstrap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="URL",
        help="a relay's signaling URL (repeatable; `zmesh up` prints them)",
    )


def cmd_share(args: argparse.Namespace) -> int:
    from .daemon import RelayOptions, main_relay  # noqa: PLC0415 - heavy, load when run

    with tempfile.TemporaryDirectory(prefix="zmesh-share-") as tmp:
        opts = RelayOptions(
            listen=args.listen,
            data=Path(args.data) if args.data else Path(tmp),
            bootstrap=args.bootstrap,
            rate=args.rate,
            share=[Path(f) for f in args.files],
        )
        return main_relay(opts)


def cmd_get(args: argparse.Namespace) -> int:
    from .content_fetch import GetOptions, main_get  # noqa: PLC0415 - heavy, load when run

    opts = GetOptions(
        content_id=args.id,
        out=Path(args.output) if args.output else None,
        bootstrap=args.bootstrap,
        data=Path(args.data) if args.data else None,
        json=args.json,
        seed=args.seed,
    )
    return main_get(opts)


def add_content_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``share`` and ``get`` to the ``zmesh`` command line."""
    share = sub.add_parser(
        "share",
        help="share files: print each content id, then seed them until Ctrl-C",
        description=(
            "Cut each FILE into verifiable, erasure-coded pieces, store them pinned under "
            "--data, print each content id on stdout (one per line, nothing else), then "
            "run a relay that serves them and announces them in the DHT until Ctrl-C."
        ),
    )
    share.add_argument("files", nargs="+", metavar="FILE")
    _bootstrap(share)
    share.add_argument("--data", help="state directory (default: a temporary one)")
    share.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT for signaling (default: %(default)s)"
    )
    add_rate_option(share)
    share.set_defaults(func=cmd_share)

    get = sub.add_parser(
        "get",
        help="fetch content by id from its providers, over circuits",
        description=(
            "Find the providers of ID in the DHT, fetch pieces from several at once over "
            "3-hop circuits, verify every piece, and write OUT atomically.  With --data, a "
            "fetch that was stopped resumes from what it stored."
        ),
    )
    get.add_argument("id", metavar="ID", help="a content id (zm1...)")
    get.add_argument("-o", "--output", metavar="OUT", help="where to write (default: ./ID)")
    _bootstrap(get)
    get.add_argument("--data", help="state directory (default: a temporary one)")
    get.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object of figures on stdout; JSON progress lines on stderr",
    )
    get.add_argument(
        "--seed",
        action="store_true",
        help="after writing OUT, keep serving the content (and relaying) until Ctrl-C; "
        "without it, what --data holds is seeded by `zmesh relay --data` later",
    )
    get.set_defaults(func=cmd_get)
