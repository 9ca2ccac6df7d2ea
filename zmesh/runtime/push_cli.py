"""The ``zmesh push-service`` subcommand's arguments (kept out of zmesh/cli, whose
imports stay light: the service's own modules load only when it runs)."""

import argparse
from pathlib import Path


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _origin(text: str) -> str:
    if not text.startswith(("http://", "https://")) or "/" in text.split("://", 1)[1]:
        raise argparse.ArgumentTypeError(
            f"expected an origin like https://HOST[:PORT], not {text!r}"
        )
    return text


def cmd_push_service(args: argparse.Namespace) -> int:
    from .push_server import PushServiceOptions, main_push_service  # noqa: PLC0415 (lazy)

    host, port = args.listen
    data = Path(args.data) if args.data else None
    return main_push_service(PushServiceOptions(host, port, data, args.origin))


def add_push_service(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``push-service`` to the ``zmesh`` subcommands ``sub``."""
    push = sub.add_parser(
        "push-service",
        help="run a self-hostable Web Push service (RFC 8030, VAPID, Firefox's protocol)",
        description=(
            "Serve Web Push on HOST:PORT: RFC 8030 push messages (POST to a subscription's "
            "endpoint, with TTL, Urgency and Topic), RFC 8292 VAPID checks, and the "
            "WebSocket protocol Firefox speaks to its push server (set Firefox's "
            "dom.push.serverURL to ws://HOST:PORT/).  Messages wait, bounded, until "
            "acknowledged or past their TTL."
        ),
    )
    push.add_argument("--listen", type=_listen, required=True, metavar="HOST:PORT")
    push.add_argument(
        "--data",
        metavar="DIR",
        help="keep subscriptions and messages in DIR/push.sqlite3 (default: in memory)",
    )
    push.add_argument(
        "--origin",
        type=_origin,
        help="the public origin behind a proxy (default http://HOST:PORT); push endpoints "
        "are under it and VAPID tokens must name it as aud",
    )
    push.set_defaults(func=cmd_push_service)
