"""The application's streams on this node's circuit ends: the client's, or the final hop's.

Every call takes ``now``, finds the circuit's end (raising LocalProtocolError if the circuit
is not open here), applies the stream operation, sends the cells it allows, and lets the
node settle (close failed links, collect events).
"""

from collections.abc import Callable

from ..errors import LocalProtocolError
from ..session.endpoint import CircuitEnd, ClientEnd
from ..session.stream import Stream
from .builder import CircuitBuilder
from .relay import RelayTable


class Streams:
    def __init__(
        self, builder: CircuitBuilder, relay: RelayTable, settle: Callable[[float], None]
    ) -> None:
        self._builder = builder
        self._relay = relay
        self._settle = settle

    def _end(self, circuit_id: int) -> tuple[CircuitEnd, RelayTable | CircuitBuilder]:
        end: CircuitEnd | None = self._builder.end(circuit_id)
        if end is not None:
            return end, self._builder
        end = self._relay.end(circuit_id)
        if end is not None:
            return end, self._relay
        raise LocalProtocolError(f"circuit {circuit_id} is not open here")

    def _apply(self, circuit_id: int, now: float, action: Callable[[CircuitEnd], None]) -> None:
        end, owner = self._end(circuit_id)
        action(end)
        owner.pump(circuit_id, now)
        self._settle(now)

    def open(self, circuit_id: int, target: str, now: float) -> int:
        """Open a stream to ``target`` on one of our client circuits; returns its id."""
        end, _ = self._end(circuit_id)
        if not isinstance(end, ClientEnd):
            raise LocalProtocolError("only the circuit's client opens streams")
        stream_id = end.new_stream(target).stream_id
        self._apply(circuit_id, now, lambda e: None)
        return stream_id

    def send(self, circuit_id: int, stream_id: int, data: bytes, now: float) -> None:
        self._apply(circuit_id, now, lambda e: _stream(e, stream_id).write(data))

    def finish(self, circuit_id: int, stream_id: int, now: float) -> None:
        """Send FIN after what was written."""
        self._apply(circuit_id, now, lambda e: _stream(e, stream_id).finish())

    def consume(self, circuit_id: int, stream_id: int, n: int, now: float) -> None:
        """With ``auto_consume`` off: the application took ``n`` bytes (slides the window).
        A stream that ended meanwhile is ignored."""

        def consume(end: CircuitEnd) -> None:
            if (stream := end.streams.get(stream_id)) is not None:
                stream.consume(n)

        self._apply(circuit_id, now, consume)

    def accept(self, circuit_id: int, stream_id: int, now: float) -> None:
        """At a circuit's final hop: the stream's target is reached (sends CONNECTED)."""
        self._apply(circuit_id, now, lambda e: e.accept_stream(stream_id))

    def reset(self, circuit_id: int, stream_id: int, code: int, now: float) -> None:
        self._apply(circuit_id, now, lambda e: e.reset_stream(stream_id, code))

    def buffered(self, circuit_id: int, stream_id: int) -> int:
        """Bytes written to a stream and not yet sent (the sender's backpressure signal)."""
        end, _ = self._end(circuit_id)
        stream = end.streams.get(stream_id)
        return stream.pending if stream is not None else 0


def _stream(end: CircuitEnd, stream_id: int) -> Stream:
    stream = end.streams.get(stream_id)
    if stream is None:
        raise LocalProtocolError(f"no stream {stream_id}")
    return stream
