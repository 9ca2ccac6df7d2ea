"""Traffic shaping: what a link sends on the wire no longer shows what it carries.

Theory of operation (docs/decisions.md D53).  Without shaping, a link sends one message
per frame, and frame types have telling sizes (CREATE 4,768 B, CREATED 136 B, CELL
8,200 B, CREDIT 8 B, DESTROY 9 B): an observer of the data channel's datagrams sees
circuit setups and teardowns.  With shaping, the node hands each link's messages to the
link's :class:`~zmesh.shaping.scheduler.LinkShaper`, which keeps them as a byte stream
and sends, on the profile's clock, messages whose sizes the profile alone decides
(:mod:`zmesh.shaping.profile`): each carries the next piece of the stream (frames cut
anywhere, small control frames riding with cells) and cover for the rest
(:mod:`zmesh.shaping.carrier`).  The peer's :class:`~zmesh.shaping.carrier.Deshaper`
rebuilds whole frames for the link's decoder, so the link protocol above (handshake,
credit, cells) is unchanged.  Every node unwraps shaped messages; shaping what it sends
is its own choice (``NodeConfig.shape``, ``--shape``).

Flow control.  A frame in the shaper's queue is sent as far as the link's credit knows,
so the link's window bounds the queue: when the profile sends less than the link would,
the window fills, the link's backlog takes the rest, and the circuits feeding it are
refused as without shaping.

Sans-I/O: ``now`` and an :class:`~zmesh.rng.Rng` come in, timers are pulled
(:meth:`~zmesh.shaping.scheduler.Shaping.get_timer`), nothing is read from the clock or
the OS.
"""

from .carrier import SHAPED, Deshaper, shaped_message
from .profile import MODES, NO_SHAPING, Mode, ShapeConfig, VideoProfile
from .scheduler import LinkShaper, Shaping

__all__ = [
    "MODES",
    "NO_SHAPING",
    "SHAPED",
    "Deshaper",
    "LinkShaper",
    "Mode",
    "ShapeConfig",
    "Shaping",
    "VideoProfile",
    "shaped_message",
]
