"""Session streams for the drivers: :class:`StreamPipe` couples one stream of a managed
session to the application (a TCP connection, a request, a content transfer), with
backpressure both ways; the reset codes the drivers send."""

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ZMeshError
from ..session.endpoint import StreamConnected, StreamData, StreamEvent, StreamFinished, StreamReset

if TYPE_CHECKING:
    from .aio import AsyncNode

log = logging.getLogger("zmesh.aio")

STREAM_HIGH_WATER = 1 << 20  # pause a TCP reader when this much waits for the circuit
READ_CHUNK = 64 * 1024
RESET_POLICY = 1
RESET_CONNECT_FAILED = 2
RESET_RESOLVE_FAILED = 3
RESET_CLOSED = 4
RESET_TIMEOUT = 5


class StreamClosedError(ZMeshError):
    """A stream ended abnormally (reset, or its session ended)."""


@dataclass
class StreamSlot:
    """Where the driver puts a stream's events (None once its session has closed)."""

    inbox: asyncio.Queue[StreamEvent | None]


class StreamPipe:
    """One session stream coupled to a TCP connection, with backpressure both ways."""

    def __init__(self, driver: "AsyncNode", session_id: int, sid: int, slot: StreamSlot) -> None:
        self.driver = driver
        self.session_id = session_id
        self.sid = sid
        self._slot = slot

    async def wait_connected(self, timeout: float) -> None:
        """Wait for the endpoint's CONNECTED; raise StreamClosedError if refused."""
        event = await asyncio.wait_for(self._slot.inbox.get(), timeout)
        if isinstance(event, StreamConnected):
            return
        if isinstance(event, StreamReset):
            raise StreamClosedError(f"refused by the exit (code {event.code})")
        raise StreamClosedError("the session closed before the stream connected")

    async def receive(self, timeout: float | None = None) -> StreamEvent | None:
        """The stream's next event; None once its session has closed.  TimeoutError if
        nothing arrives within ``timeout`` seconds."""
        return await asyncio.wait_for(self._slot.inbox.get(), timeout)

    def release(self) -> None:
        """Stop listening: both directions have finished."""
        self.driver._streams.pop((self.session_id, self.sid), None)

    def finish(self) -> None:
        """Finish our direction and stop listening (once the peer has finished its own)."""
        self.release()
        with contextlib.suppress(ZMeshError):
            self.driver.call(
                lambda now: self.driver.node.sessions.finish(self.session_id, self.sid, now)
            )

    def reset(self, code: int) -> None:
        self.driver._streams.pop((self.session_id, self.sid), None)
        with contextlib.suppress(ZMeshError):
            self.driver.call(
                lambda now: self.driver.node.sessions.reset(self.session_id, self.sid, code, now)
            )

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pipe until both directions finish; reset the stream on any failure."""
        node, call = self.driver.node, self.driver.call

        async def upstream() -> None:  # TCP -> session
            while data := await reader.read(READ_CHUNK):
                call(lambda now: node.sessions.send(self.session_id, self.sid, data, now))
                while node.sessions.buffered(self.session_id, self.sid) > STREAM_HIGH_WATER:
                    await self.driver._progress.wait()
            call(lambda now: node.sessions.finish(self.session_id, self.sid, now))

        async def downstream() -> None:  # session -> TCP
            while True:
                event = await self._slot.inbox.get()
                if isinstance(event, StreamData):
                    writer.write(event.data)
                    await writer.drain()
                    if not node.config.auto_consume:  # slide the window as the app reads
                        consume = functools.partial(
                            node.sessions.consume, self.session_id, self.sid, len(event.data)
                        )
                        call(consume)
                elif isinstance(event, StreamFinished):
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                elif event is None or isinstance(event, StreamReset):
                    raise StreamClosedError("the stream was reset or its session closed")

        up = asyncio.ensure_future(upstream())
        down = asyncio.ensure_future(downstream())
        try:
            await asyncio.gather(up, down)
        except (StreamClosedError, ConnectionError, ZMeshError) as exc:
            log.info("stream event=aborted reason=%r", str(exc))
            self.reset(RESET_CLOSED)
        finally:
            up.cancel()
            down.cancel()
            self.driver._streams.pop((self.session_id, self.sid), None)
            writer.close()


async def resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[str]:
    """The addresses of an exit's target: an IP literal as it is (``getaddrinfo`` would
    take a trip to the executor's thread for it, D64), a name through ``getaddrinfo``
    (10 s at most).  Raises OSError, TimeoutError."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=10.0
    )
    return [str(info[4][0]) for info in infos]
