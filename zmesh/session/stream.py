"""One reliable, ordered byte stream with flow control, independent of circuits.

Each side keeps end-to-end byte offsets.  The sender keeps every byte until the peer
acknowledges it (so a later layer can resend it on another circuit); the receiver
reassembles by offset, ignoring duplicates, and never buffers beyond the window it
advertised.  Flow control is credit-based as in QUIC: ``ACK.max_data`` is the highest
offset the sender may reach.
"""

from enum import Enum, auto

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from .frames import AckFrame, DataFrame, ResetFrame, StreamFrame

DEFAULT_WINDOW = 1 << 20


class StreamState(Enum):
    OPEN = auto()
    CLOSED = auto()
    RESET = auto()


class Stream:
    def __init__(
        self, stream_id: int, *, window: int = DEFAULT_WINDOW, auto_consume: bool = True
    ) -> None:
        self.stream_id = stream_id
        self.state = StreamState.OPEN
        self.window = window
        # send side
        self._pending = bytearray()  # written, not yet sent
        self._unacked = bytearray()  # sent, not yet acknowledged
        self._acked = 0  # offset of _unacked[0]
        self._peer_max = window  # both ends start with the same default credit
        self._fin_wanted = False
        self._fin_sent = False
        self.fin_acked = False
        # receive side
        self._received = 0  # everything below this offset was delivered
        self._segments: dict[int, bytes] = {}
        self._max_data = window
        self._acked_up_to = 0  # last `received` we reported
        self._advertised = window  # last `max_data` we reported
        self.auto_consume = auto_consume
        self._consumed = 0
        self._fin_offset: int | None = None
        self.peer_finished = False
        self._ack_due = False
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- sending ---------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._fin_wanted or self.state is not StreamState.OPEN:
            raise LocalProtocolError("write on a closed stream")
        self._pending += data

    def finish(self) -> None:
        """Send FIN after all written data."""
        if self.state is not StreamState.OPEN:
            raise LocalProtocolError("finish on a closed stream")
        self._fin_wanted = True

    @property
    def send_offset(self) -> int:
        return self._acked + len(self._unacked)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def frames_to_send(self, max_data_len: int, budget: int) -> list[StreamFrame]:
        """Up to ``budget`` frames: an ACK if one is due, then DATA within the peer's credit."""
        frames: list[StreamFrame] = []
        if self.state is not StreamState.OPEN:
            return frames
        if self._ack_due and budget > 0:
            frames.append(
                AckFrame(self.stream_id, self._received, self._max_data, self.peer_finished)
            )
            self._acked_up_to = self._received
            self._advertised = self._max_data
            self._ack_due = False
        while len(frames) < budget:
            credit = self._peer_max - self.send_offset
            n = min(max_data_len, len(self._pending), credit)
            fin = self._fin_wanted and not self._fin_sent and n == len(self._pending)
            if n <= 0 and not fin:
                break
            chunk = bytes(self._pending[:n])
            del self._pending[:n]
            frames.append(DataFrame(self.stream_id, self.send_offset, chunk, fin))
            self._unacked += chunk
            self.bytes_sent += n
            if fin:
                self._fin_sent = True
                break
        return frames

    # -- receiving -------------------------------------------------------------
    def receive(self, frame: StreamFrame) -> bytes:
        """Apply a frame from the peer; return newly in-order bytes for the application.

        Raises RemoteProtocolError on a flow-control or offset violation.
        """
        if isinstance(frame, DataFrame):
            return self._receive_data(frame)
        if isinstance(frame, AckFrame):
            self._receive_ack(frame)
        elif isinstance(frame, ResetFrame):
            self.state = StreamState.RESET
        return b""

    def _receive_data(self, frame: DataFrame) -> bytes:
        end = frame.offset + len(frame.data)
        if end > self._max_data:
            raise RemoteProtocolError("peer exceeded the stream window", CloseCode.RESOURCE)
        if frame.fin:
            if self._fin_offset is not None and self._fin_offset != end:
                raise RemoteProtocolError("conflicting final offsets")
            highest = max([self._received, *(o + len(d) for o, d in self._segments.items())])
            if end < highest:
                raise RemoteProtocolError("final offset below data already received")
            self._fin_offset = end
        if self._fin_offset is not None and end > self._fin_offset:
            raise RemoteProtocolError("data beyond the final offset")
        if end > self._received and frame.data:
            self._store(frame.offset, frame.data)
        out = bytearray()
        # segments are disjoint and start at or after _received: deliver the contiguous run
        while self._received in self._segments:
            data = self._segments.pop(self._received)
            out += data
            self._received += len(data)
        if self._fin_offset is not None and self._received == self._fin_offset:
            self.peer_finished = True
            self._ack_due = True
        if out:
            self.bytes_received += len(out)
            if self._received - self._acked_up_to >= self.window // 4:
                self._ack_due = True
            if self.auto_consume:
                self.consume(len(out))
        return bytes(out)

    def consume(self, n: int) -> None:
        """The application has taken ``n`` delivered bytes: slide the window by as much."""
        if n < 0 or self._consumed + n > self._received:
            raise LocalProtocolError("consumed more than was delivered")
        self._consumed += n
        self._max_data = self._consumed + self.window
        if self._max_data - self._advertised >= self.window // 4:
            self._ack_due = True

    def _store(self, offset: int, data: bytes) -> None:
        """Buffer only the bytes of ``data`` no stored segment holds yet.

        Keeping segments disjoint bounds the buffer by the window even when a peer sends
        overlapping or duplicate frames (resends over other circuits, or hostile input).
        """
        end = offset + len(data)
        cursor = max(offset, self._received)
        pieces: list[tuple[int, int]] = []
        for o in sorted(self._segments):
            o_end = o + len(self._segments[o])
            if o >= end:
                break
            if o_end <= cursor:
                continue
            if o > cursor:
                pieces.append((cursor, o))
            cursor = max(cursor, o_end)
        if cursor < end:
            pieces.append((cursor, end))
        for a, b in pieces:
            self._segments[a] = data[a - offset : b - offset]

    def _receive_ack(self, frame: AckFrame) -> None:
        if frame.received > self.send_offset:
            raise RemoteProtocolError("peer acknowledged bytes never sent")
        if frame.received > self._acked:
            del self._unacked[: frame.received - self._acked]
            self._acked = frame.received
        self._peer_max = max(self._peer_max, frame.max_data)
        # only an ACK that says it saw our FIN acknowledges it (a stale one may not)
        if frame.fin and self._fin_sent and self._acked == self.send_offset:
            self.fin_acked = True

    @property
    def ack_due(self) -> bool:
        return self._ack_due

    @property
    def finished(self) -> bool:
        """Both directions are done: our FIN was acknowledged and the peer's arrived."""
        return self.fin_acked and self.peer_finished
