"""What the relay table and the circuit builder share: configuration, events, sending."""

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CloseCode
from ..link.connection import LinkConnection
from ..session.endpoint import CircuitEnd
from ..session.frames import StreamFrame

Side = tuple[int, int]  # (link_id, circ_id)
BUILD_TIMEOUT = 30.0
IDLE_TIMEOUT = 900.0  # a relayed or final-hop circuit with no cell this long is destroyed
#: cells a client sends behind its CREATE before CREATED (the builder holds later ones)
#: and a relay keeps behind a parked CREATE (one more refuses the circuit; D49)
MAX_EARLY_CELLS = 8


@dataclass(frozen=True)
class CircuitConfig:
    stream_window: int = 1 << 20
    #: the default and the ceiling of the learned build timeout (zmesh.health.cbt); a
    #: finite number > 0, else the builder raises ValueError
    build_timeout: float = BUILD_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    #: False when the application reports what it consumed (Node.consume): receive windows
    #: then slide only as fast as it reads, e.g. as fast as a TCP socket drains
    auto_consume: bool = True
    hop_events: bool = False  # emit HopOpened (the demo, tests, --log-hops); production: no


# -- events -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CircuitBuilt:
    circuit_id: int
    seconds: float = 0.0  # from CREATE to CREATED


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    circuit_id: int
    code: CloseCode


@dataclass(frozen=True, slots=True)
class HopOpened:
    """We became a hop of a circuit: all a hop learns is its predecessor and successor.

    ``successor`` is None when this node is the circuit's final hop.  Emitted only with
    ``hop_events`` on (the demo, the tests, ``--log-hops``): a production node does not
    even make them.
    """

    predecessor: bytes
    successor: bytes | None


CircuitEvent = CircuitBuilt | CircuitClosed | HopOpened

#: where a circuit end hands the frames of each cell it opened: (circuit id, frames, now)
Deliver = Callable[[int, list[StreamFrame], float], None]


def send_frames(
    end: CircuitEnd,
    conn: LinkConnection | None,
    circ_id: int,
    frames: list[StreamFrame],
    now: float,
) -> bool:
    """Seal ``frames`` into one cell and queue it; False if the circuit's queue overflowed."""
    return conn is None or conn.send_cell(circ_id, end.seal_frames(frames), now)
