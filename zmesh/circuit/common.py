"""What the relay table and the circuit builder share: configuration, events, circuit ends."""

from collections import deque
from dataclasses import dataclass

from ..errors import CloseCode, RemoteProtocolError
from ..link.connection import LinkConnection
from ..session.endpoint import CircuitEnd, StreamEvent

Side = tuple[int, int]  # (link_id, circ_id)
BUILD_TIMEOUT = 30.0
IDLE_TIMEOUT = 900.0  # a relayed or final-hop circuit with no cell this long is destroyed


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


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    circuit_id: int
    code: CloseCode


@dataclass(frozen=True, slots=True)
class CircuitStreamEvent:
    """A stream event on one of this node's circuit ends (client or final hop)."""

    circuit_id: int
    event: StreamEvent


@dataclass(frozen=True, slots=True)
class HopOpened:
    """We became a hop of a circuit: all a hop learns is its predecessor and successor.

    ``successor`` is None when this node is the circuit's final hop.  Emitted only with
    ``hop_events`` on (the demo, the tests, ``--log-hops``): a production node does not
    even make them.
    """

    predecessor: bytes
    successor: bytes | None


CircuitEvent = CircuitBuilt | CircuitClosed | CircuitStreamEvent | HopOpened


def open_cell(end: CircuitEnd, circuit_id: int, data: bytes, events: deque[CircuitEvent]) -> bool:
    """Apply one cell at a circuit's end; False if it was garbled (destroy the circuit)."""
    try:
        stream_events = end.open_cell(data)
    except RemoteProtocolError:
        return False
    events.extend(CircuitStreamEvent(circuit_id, e) for e in stream_events)
    return True


def pump(end: CircuitEnd, conn: LinkConnection | None, circ_id: int, now: float) -> bool:
    """Send every cell the end's streams may send; False if the circuit's queue overflowed."""
    if conn is None:
        return True
    return all(conn.send_cell(circ_id, cell, now) for cell in end.cells_to_send())
