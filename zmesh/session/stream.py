"""One reliable, ordered byte stream with flow control, independent of circuits.

Each side keeps end-to-end byte offsets.  The sender keeps every byte until the peer
acknowledges it (so a later layer can resend it on another circuit); the receiver
reassembles by offset, ignoring duplicates, and never buffers beyond the window it
advertised.  Flow control is credit-based as in QUIC: ``ACK.max_data`` is the highest
offset the sender may reach.

Reassembly buffer.  Out-of-order bytes live in fixed pages of :data:`PAGE_SIZE` bytes,
keyed by ``offset // PAGE_SIZE``; each page holds the bytes and a parallel "filled" map
(one byte per stream byte).  Storing a frame writes only the positions not yet filled
(the first frame to cover a position wins, so overlapping or duplicate frames, resent
over other circuits or hostile, add nothing), and delivery scans the filled map forward
from the read offset.  Both are slice operations and ``bytearray.find`` calls, so a frame
costs O(its length) whatever the number of gaps: a peer scattering one-byte frames over
the window cannot make each frame cost more than the last (a sorted segment list made
that quadratic, zMesh issue 7).  Pages exist only for offsets in ``[received,
max_data)``, so the buffer never exceeds ``2 * PAGE_SIZE * (window // PAGE_SIZE + 2)``
bytes, with no per-segment objects (a dict of one-byte segments cost ~100 bytes each).
"""

from enum import Enum, auto

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from .frames import AckFrame, DataFrame, ResetFrame, StreamFrame

DEFAULT_WINDOW = 1 << 20
PAGE_SIZE = 4096
_FILLED = memoryview(b"\x01" * PAGE_SIZE)


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
        # page index -> (bytes, filled map: 1 where the byte arrived); see the module doc
        self._pages: dict[int, tuple[bytearray, bytearray]] = {}
        self._buffered = 0  # filled bytes at or after _received
        self._highest = 0  # the highest end offset of any data received
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

    @property
    def acked(self) -> int:
        """Every byte below this offset was acknowledged by the peer."""
        return self._acked

    @property
    def fin_sent(self) -> bool:
        return self._fin_sent

    @property
    def has_data_to_send(self) -> bool:
        """Written bytes (or a FIN) wait and the peer's credit allows some of them now."""
        if self.state is not StreamState.OPEN:
            return False
        if self._fin_wanted and not self._fin_sent and not self._pending:
            return True
        return bool(self._pending) and self._peer_max > self.send_offset

    def ack_frame(self) -> AckFrame:
        """The ACK for what we received so far; it counts as reported (no longer due)."""
        self._acked_up_to = self._received
        self._advertised = self._max_data
        self._ack_due = False
        return AckFrame(self.stream_id, self._received, self._max_data, self.peer_finished)

    @property
    def unreported(self) -> int:
        """Bytes delivered since the last ACK we produced."""
        return self._received - self._acked_up_to

    def data_frame(self, max_data_len: int) -> DataFrame | None:
        """The next DATA frame of at most ``max_data_len`` new bytes within the peer's
        credit (FIN set on the last one), or None if nothing may be sent."""
        if self.state is not StreamState.OPEN:
            return None
        credit = self._peer_max - self.send_offset
        n = max(0, min(max_data_len, len(self._pending), credit))
        fin = self._fin_wanted and not self._fin_sent and n == len(self._pending)
        if n == 0 and not fin:
            return None
        chunk = bytes(self._pending[:n])
        del self._pending[:n]
        frame = DataFrame(self.stream_id, self.send_offset, chunk, fin)
        self._unacked += chunk
        self.bytes_sent += n
        if fin:
            self._fin_sent = True
        return frame

    def resend_frame(self, start: int, end: int, max_data_len: int) -> DataFrame | None:
        """DATA for the still unacknowledged bytes of ``[start, end)`` (at most
        ``max_data_len`` of them, from the lowest), for resending on another circuit.

        A range ending at our FIN's offset carries the FIN again until the FIN is
        acknowledged.  None if nothing of the range is unacknowledged.
        """
        if self.state is not StreamState.OPEN:
            return None
        start = max(start, self._acked)
        end = min(end, self.send_offset, start + max(0, max_data_len))
        fin = self._fin_sent and not self.fin_acked and end == self.send_offset
        if end <= start and not (fin and start == end):
            return None
        data = bytes(self._unacked[start - self._acked : end - self._acked])
        return DataFrame(self.stream_id, start, data, fin)

    def frames_to_send(self, max_data_len: int, budget: int) -> list[StreamFrame]:
        """Up to ``budget`` frames: an ACK if one is due, then DATA within the peer's credit."""
        frames: list[StreamFrame] = []
        if self.state is not StreamState.OPEN:
            return frames
        if self._ack_due and budget > 0:
            frames.append(self.ack_frame())
        while len(frames) < budget:
            frame = self.data_frame(max_data_len)
            if frame is None:
                break
            frames.append(frame)
            if frame.fin:
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
            if end < self._highest:
                raise RemoteProtocolError("final offset below data already received")
            self._fin_offset = end
        if self._fin_offset is not None and end > self._fin_offset:
            raise RemoteProtocolError("data beyond the final offset")
        out = b""
        if end > self._received and frame.data:
            self._highest = max(self._highest, end)
            if self._buffered == 0 and frame.offset <= self._received:
                # in order with nothing held back (the common case): no copy into pages
                self._pages.clear()  # they hold only delivered bytes now
                out = frame.data[self._received - frame.offset :]
                self._received = end
            else:
                self._store(frame.offset, frame.data)
                out = self._deliver()
        if self._fin_offset is not None and self._received == self._fin_offset:
            self.peer_finished = True
            self._ack_due = True
        if out:
            self.bytes_received += len(out)
            if self._received - self._acked_up_to >= self.window // 4:
                self._ack_due = True
            if self.auto_consume:
                self.consume(len(out))
        return out

    def consume(self, n: int) -> None:
        """The application has taken ``n`` delivered bytes: slide the window by as much."""
        if n < 0 or self._consumed + n > self._received:
            raise LocalProtocolError("consumed more than was delivered")
        self._consumed += n
        self._max_data = self._consumed + self.window
        if self._max_data - self._advertised >= self.window // 4:
            self._ack_due = True

    def _store(self, offset: int, data: bytes) -> None:
        """Buffer the bytes of ``data`` at or after the read offset that no frame filled yet.

        Costs O(len(data)) slice work plus one ``find`` per gap the frame fills.
        """
        end = offset + len(data)
        pos = max(offset, self._received)
        while pos < end:
            index = pos // PAGE_SIZE
            base = index * PAGE_SIZE
            page = self._pages.get(index)
            if page is None:
                page = self._pages[index] = (bytearray(PAGE_SIZE), bytearray(PAGE_SIZE))
            buf, filled = page
            stop = min(end - base, PAGE_SIZE)
            i = filled.find(0, pos - base, stop)
            while i != -1:
                j = filled.find(b"\x01", i, stop)
                if j == -1:
                    j = stop
                buf[i:j] = data[base + i - offset : base + j - offset]
                filled[i:j] = _FILLED[: j - i]
                self._buffered += j - i
                i = filled.find(0, j, stop)
            pos = base + stop

    def _deliver(self) -> bytes:
        """Take the contiguous filled run at the read offset out of the buffer."""
        runs: list[memoryview] = []
        while True:
            index, at = divmod(self._received, PAGE_SIZE)
            page = self._pages.get(index)
            if page is None:
                break
            buf, filled = page
            stop = filled.find(0, at)
            if stop == -1:
                stop = PAGE_SIZE
            runs.append(memoryview(buf)[at:stop])
            self._received += stop - at
            self._buffered -= stop - at
            if stop < PAGE_SIZE:
                break
            del self._pages[index]
        return b"".join(runs)

    @property
    def buffered(self) -> int:
        """Out-of-order bytes held, waiting for the gap before them to fill."""
        return self._buffered

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

    def request_ack(self) -> None:
        """Report what we received in the next ACK even if nothing changed (the last one
        may have been lost with its circuit)."""
        if self.state is StreamState.OPEN:
            self._ack_due = True

    @property
    def ack_due(self) -> bool:
        return self._ack_due

    @property
    def finished(self) -> bool:
        """Both directions are done: our FIN was acknowledged and the peer's arrived."""
        return self.fin_acked and self.peer_finished
