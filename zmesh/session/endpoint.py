"""The two ends of a circuit: where cells are sealed and opened and streams live.

:class:`ClientEnd` holds every hop's keys; :class:`ServerEnd` is the final hop.  Both
multiplex streams the same way; only the cell layer differs.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LocalProtocolError, RemoteProtocolError
from ..onion import cell
from ..onion.geometry import Geometry
from ..onion.sphinx import HopKeys
from .frames import (
    DATA_OVERHEAD,
    CellBuilder,
    ConnectedFrame,
    LinkFrame,
    OpenFrame,
    PaddingFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    StreamFrame,
    decode_stream_frames,
    encode_stream_frames,
)
from .stream import DEFAULT_WINDOW, Stream, StreamState


@dataclass(frozen=True, slots=True)
class StreamOpened:
    stream_id: int
    target: str


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """The circuit's endpoint reached the stream's target (the client's side)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamData:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The peer sent FIN and every byte before it was delivered."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    code: int


StreamEvent = StreamOpened | StreamConnected | StreamData | StreamFinished | StreamReset

MAX_STREAMS = 256


class CircuitEnd(ABC):
    """Streams multiplexed on one circuit, and the per-direction cell counters."""

    def __init__(
        self, geometry: Geometry, *, window: int = DEFAULT_WINDOW, auto_consume: bool = True
    ) -> None:
        self.geometry = geometry
        self.window = window
        self.auto_consume = auto_consume
        self.streams: dict[int, Stream] = {}
        self._control: list[StreamFrame] = []  # OPEN, CONNECTED and RESET, sent first
        self.send_counter = 0
        self.recv_counter = 0

    @abstractmethod
    def _seal(self, counter: int, payload: bytes) -> bytes:
        """Wrap a payload in this end's cell layers."""

    @abstractmethod
    def _open(self, counter: int, cell_bytes: bytes) -> bytes:
        """Remove this end's cell layers and authenticate."""

    def seal_frame(self, frame: StreamFrame) -> bytes:
        return self.seal_payload(encode_stream_frames([frame], self.geometry.cell_payload_size))

    def seal_payload(self, payload: bytes) -> bytes:
        """Seal one encoded cell payload with the next counter."""
        out = self._seal(self.send_counter, payload)
        self.send_counter += 1
        return out

    def open_cell(self, cell_bytes: bytes) -> list[StreamEvent]:
        """Authenticate and apply one cell; raises RemoteProtocolError if it is garbled."""
        payload = self._open(self.recv_counter, cell_bytes)
        self.recv_counter += 1
        events: list[StreamEvent] = []
        for frame in decode_stream_frames(payload):
            events += self.apply(frame)
        return events

    def apply(self, frame: StreamFrame) -> list[StreamEvent]:
        if isinstance(frame, PaddingFrame):
            return []
        if isinstance(frame, LinkFrame | PingFrame | PongFrame):
            raise RemoteProtocolError("session frame on a circuit without a session")
        if isinstance(frame, OpenFrame):
            return self._peer_open(frame)
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            return []  # late frames for a stream we already dropped
        if isinstance(frame, ConnectedFrame):
            return [StreamConnected(frame.stream_id)]
        if isinstance(frame, ResetFrame):
            stream.receive(frame)
            del self.streams[frame.stream_id]
            return [StreamReset(frame.stream_id, frame.code)]
        events: list[StreamEvent] = []
        was_finished = stream.peer_finished
        data = stream.receive(frame)
        if data:
            events.append(StreamData(stream.stream_id, data))
        if stream.peer_finished and not was_finished:
            events.append(StreamFinished(stream.stream_id))
        if stream.finished and not stream.ack_due:
            del self.streams[stream.stream_id]
        return events

    def _peer_open(self, frame: OpenFrame) -> list[StreamEvent]:
        raise RemoteProtocolError("this end does not accept streams")

    def open_stream(self, stream_id: int, target: str) -> Stream:
        if stream_id in self.streams:
            raise LocalProtocolError(f"stream {stream_id} exists")
        stream = Stream(stream_id, window=self.window, auto_consume=self.auto_consume)
        self.streams[stream_id] = stream
        self._control.append(OpenFrame(stream_id, target))
        return stream

    def accept_stream(self, stream_id: int) -> None:
        """Tell the client its stream reached the target."""
        if stream_id not in self.streams:
            raise LocalProtocolError(f"no stream {stream_id}")
        self._control.append(ConnectedFrame(stream_id))

    def reset_stream(self, stream_id: int, code: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.state = StreamState.RESET
            self._control.append(ResetFrame(stream_id, code))

    def cells_to_send(self) -> list[bytes]:
        """Every cell the streams may send now, within their flow-control credit.

        Frames are packed back to back: control frames and ACKs first, then DATA sized
        to the room left in each cell.
        """
        payloads: list[bytes] = []
        builder = CellBuilder(self.geometry.cell_payload_size)

        def put(frame: StreamFrame) -> None:
            nonlocal builder
            if not builder.add(frame):
                payloads.append(builder.payload())
                builder = CellBuilder(self.geometry.cell_payload_size)
                builder.add(frame)

        control, self._control = self._control, []
        for frame in control:
            put(frame)
        for stream in list(self.streams.values()):
            if stream.ack_due and stream.state is StreamState.OPEN:
                put(stream.ack_frame())
            while True:
                if builder.room <= DATA_OVERHEAD and not builder.empty:
                    payloads.append(builder.payload())
                    builder = CellBuilder(self.geometry.cell_payload_size)
                data = stream.data_frame(builder.room - DATA_OVERHEAD)
                if data is None:
                    break
                builder.add(data)
                if data.fin:
                    break
            if stream.finished and not stream.ack_due:
                del self.streams[stream.stream_id]
        if not builder.empty:
            payloads.append(builder.payload())
        return [self.seal_payload(p) for p in payloads]


class ClientEnd(CircuitEnd):
    def __init__(self, geometry: Geometry, hops: Sequence[HopKeys], **kw: Any) -> None:
        super().__init__(geometry, **kw)
        self.hops = tuple(hops)
        self._next_stream = 1

    def _seal(self, counter: int, payload: bytes) -> bytes:
        return cell.client_seal(self.geometry, self.hops, counter, payload)

    def _open(self, counter: int, cell_bytes: bytes) -> bytes:
        return cell.client_open(self.geometry, self.hops, counter, cell_bytes)

    def new_stream(self, target: str) -> Stream:
        sid = self._next_stream
        self._next_stream += 1
        return self.open_stream(sid, target)


class ServerEnd(CircuitEnd):
    def __init__(self, geometry: Geometry, keys: HopKeys, **kw: Any) -> None:
        super().__init__(geometry, **kw)
        self.keys = keys

    def _seal(self, counter: int, payload: bytes) -> bytes:
        return cell.endpoint_seal(self.geometry, self.keys, counter, payload)

    def _open(self, counter: int, cell_bytes: bytes) -> bytes:
        return cell.endpoint_open(self.geometry, self.keys, counter, cell_bytes)

    def _peer_open(self, frame: OpenFrame) -> list[StreamEvent]:
        if frame.stream_id in self.streams:
            raise RemoteProtocolError("stream opened twice")
        if len(self.streams) >= MAX_STREAMS:
            self._control.append(ResetFrame(frame.stream_id, 1))
            return []
        self.streams[frame.stream_id] = Stream(
            frame.stream_id, window=self.window, auto_consume=self.auto_consume
        )
        return [StreamOpened(frame.stream_id, frame.target)]
