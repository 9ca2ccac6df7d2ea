"""The two ends of a circuit, where cells are sealed and opened.

:class:`ClientEnd` holds every hop's keys; :class:`ServerEnd` is the final hop.  An end
turns a list of stream frames into one sealed cell and back, with a counter per
direction; the frames themselves belong to the circuit's session
(:mod:`zmesh.session.multipath`), which owns the streams.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from ..onion import cell
from ..onion.geometry import Geometry
from ..onion.sphinx import HopKeys
from .frames import StreamFrame, decode_stream_frames, encode_stream_frames


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
    """Seals and opens the cells of one circuit, counting them in each direction."""

    __slots__ = ("geometry", "recv_counter", "send_counter")

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry
        self.send_counter = 0
        self.recv_counter = 0

    @abstractmethod
    def _seal(self, counter: int, payload: bytes) -> bytes:
        """Wrap a payload in this end's cell layers."""

    @abstractmethod
    def _open(self, counter: int, cell_bytes: bytes) -> bytes:
        """Remove this end's cell layers and authenticate."""

    def seal_frames(self, frames: list[StreamFrame]) -> bytes:
        """One cell carrying ``frames``; ValueError if they do not fit in one."""
        payload = encode_stream_frames(frames, self.geometry.cell_payload_size)
        out = self._seal(self.send_counter, payload)
        self.send_counter += 1
        return out

    def open_frames(self, cell_bytes: bytes) -> list[StreamFrame]:
        """Authenticate one cell and parse its frames; RemoteProtocolError if garbled."""
        payload = self._open(self.recv_counter, cell_bytes)
        self.recv_counter += 1
        return decode_stream_frames(payload)


class ClientEnd(CircuitEnd):
    __slots__ = ("hops",)

    def __init__(self, geometry: Geometry, hops: Sequence[HopKeys]) -> None:
        super().__init__(geometry)
        self.hops = tuple(hops)

    def _seal(self, counter: int, payload: bytes) -> bytes:
        return cell.client_seal(self.geometry, self.hops, counter, payload)

    def _open(self, counter: int, cell_bytes: bytes) -> bytes:
        return cell.client_open(self.geometry, self.hops, counter, cell_bytes)


class ServerEnd(CircuitEnd):
    __slots__ = ("keys",)

    def __init__(self, geometry: Geometry, keys: HopKeys) -> None:
        super().__init__(geometry)
        self.keys = keys

    def _seal(self, counter: int, payload: bytes) -> bytes:
        return cell.endpoint_seal(self.geometry, self.keys, counter, payload)

    def _open(self, counter: int, cell_bytes: bytes) -> bytes:
        return cell.endpoint_open(self.geometry, self.keys, counter, cell_bytes)
