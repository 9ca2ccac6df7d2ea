"""The two kinds of protocol error, after h11 and wsproto.

A :class:`RemoteProtocolError` means a peer sent something malformed or hostile; the
node turns it into a clean drop or close at one boundary.  A
:class:`LocalProtocolError` means our own program misused an API.
"""

from enum import IntEnum


class CloseCode(IntEnum):
    """Wire codes carried by DESTROY and link close frames."""

    NONE = 0
    PROTOCOL = 1
    INTERNAL = 2
    REQUESTED = 3
    HANDSHAKE = 4
    REPLAY = 5
    AUTH = 6
    RESOURCE = 7
    CONNECTION_FAILED = 8
    TIMEOUT = 9


class ZMeshError(Exception):
    """Base class for every error zMesh raises on purpose."""


class RemoteProtocolError(ZMeshError):
    """A peer sent malformed, oversized, forged or replayed data."""

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ZMeshError):
    """Our own program called an API in a state or with arguments it does not allow."""


class UsageError(ZMeshError):
    """Something the user gave (a path, a file) cannot be used; it says which and why.

    Commands report it in one line and exit with status 2, as argparse does for its own
    errors."""
