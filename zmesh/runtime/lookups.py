"""Provider lookups through a circuit: the fetcher's side and the final hop's side.

The protocol and its reasons are in :mod:`zmesh.dht.relayed`.  :class:`ProviderFinder`
keeps one one-leg session to a lookup hop (a node of the relay view, drawn at random) and
opens a stream per lookup; a hop that fails, stalls, refuses or sends a forged record is
dropped for :data:`HOP_PENALTY` seconds and the next lookup goes through another.
:class:`LookupServer` runs at every node with a DHT: it reads one key per stream, runs the
provider lookup as its own and answers with the verified records.

Budgets at the final hop (the client is anonymous, so per session, the hop's view of one
client, and in all): :data:`PER_SESSION` lookups at once per session and
:data:`MAX_RELAYED` in all (a small share of the DHT's own ``max_lookups``, so relayed
lookups never starve the node's own); beyond them a stream is reset at once
(:data:`RESET_BUSY`).  A request must arrive within :data:`REQUEST_TIMEOUT` and be exactly
one key; a lookup that has not finished within :data:`LOOKUP_TIMEOUT` is answered with
what it found (nothing).
"""

import asyncio
import contextlib
import functools
import logging
import time

from ..dht.records import Record, RecordType
from ..dht.relayed import (
    LOOKUP_TARGET,
    MAX_REPLY_SIZE,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from ..dht.routing import ID_SIZE
from ..dht.service import LookupDone, LookupKind
from ..errors import LocalProtocolError, RemoteProtocolError, ZMeshError
from ..identity import short_id
from ..node import Event
from ..onion.paths import NoPathError, choice
from ..session.endpoint import StreamData, StreamFinished
from .aio import AsyncNode, wall_clock
from .content import RESET_BUSY, RESET_PROTOCOL, on_event
from .streams import StreamClosedError, StreamPipe

log = logging.getLogger("zmesh.lookup")

PER_SESSION = 2
MAX_RELAYED = 8
REQUEST_TIMEOUT = 10.0
LOOKUP_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0  # the lookup session's first leg, then the stream's CONNECTED
REPLY_TIMEOUT = LOOKUP_TIMEOUT + 10.0
HOP_PENALTY = 60.0  # a hop that failed us is not drawn again for this long
MAX_PENALIZED = 256


class RelayedLookupError(ZMeshError):
    """A lookup through a circuit failed (no hop, a refusal, a timeout, a bad reply)."""


async def read_all(pipe: StreamPipe, limit: int, timeout: float) -> bytes:
    """The stream's bytes until the peer finishes it.  Raises StreamClosedError if it is
    reset or its session closes, RemoteProtocolError past ``limit`` bytes, TimeoutError
    after ``timeout`` seconds in all."""
    driver, sessions = pipe.driver, pipe.driver.node.sessions
    parts: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout):
        while True:
            event = await pipe.receive()
            if isinstance(event, StreamFinished):
                return b"".join(parts)
            if not isinstance(event, StreamData):
                raise StreamClosedError("the stream was reset or its session closed")
            size += len(event.data)
            if size > limit:
                raise RemoteProtocolError(f"more than {limit} bytes on a lookup stream")
            parts.append(event.data)
            driver.call(
                functools.partial(sessions.consume, pipe.session_id, pipe.sid, len(event.data))
            )


def send_and_finish(pipe: StreamPipe, data: bytes) -> None:
    """Queue ``data`` on the stream and finish our direction, still listening (unlike
    :meth:`StreamPipe.finish`) for the peer's reply."""
    sessions = pipe.driver.node.sessions

    def act(now: float) -> None:
        sessions.send(pipe.session_id, pipe.sid, data, now)
        sessions.finish(pipe.session_id, pipe.sid, now)

    pipe.driver.call(act)


class ProviderFinder:
    """Finds the providers of content through a circuit (see the module doc)."""

    def __init__(self, driver: AsyncNode) -> None:
        self.driver = driver
        self.hop: bytes | None = None
        self._session: int | None = None
        self._penalized: dict[bytes, float] = {}  # hop -> usable again after (monotonic)

    async def find(self, key: bytes) -> list[Record]:
        """The verified provider records of content digest ``key``, as one hop found them.
        Raises RelayedLookupError (the hop is dropped; the next call draws another)."""
        request = encode_request(key)
        try:
            session = self._ensure_session()
            pipe = self.driver.open_stream(session, LOOKUP_TARGET)
            await pipe.wait_connected(CONNECT_TIMEOUT)
            send_and_finish(pipe, request)
            reply = await read_all(pipe, MAX_REPLY_SIZE, REPLY_TIMEOUT)
            pipe.release()  # both directions are done
            records, refused = decode_reply(reply, key, wall_clock())
        except (ZMeshError, TimeoutError) as exc:
            self._drop_hop()
            raise RelayedLookupError(f"lookup through a circuit failed: {exc}") from None
        if refused:  # an honest hop forwards only what its DHT verified
            log.info("lookup event=forged_records hop=%s refused=%d", self._hop_name(), refused)
            self._drop_hop()
        return records

    def close(self) -> None:
        """Close the lookup session."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(ZMeshError):
                self.driver.call(lambda now: self.driver.node.sessions.close(session, now))

    def _ensure_session(self) -> int:
        sessions = self.driver.node.sessions
        if self._session is not None and self._session in sessions.ids():
            return self._session
        node = self.driver.node
        view = node.sample if node.sample is not None else node.directory
        now = time.monotonic()
        for hop, until in list(self._penalized.items()):
            if until <= now:
                del self._penalized[hop]
        hops = [d for i, d in view.items() if i != node.node_id and i not in self._penalized]
        if not hops:
            raise NoPathError("no node to run the lookup for us yet")
        final = choice(self.driver.rng, hops)
        self._session = self.driver.call(lambda t: sessions.connect(t, legs=1, final=final))
        self.hop = final.node_id
        return self._session

    def _drop_hop(self) -> None:
        if self.hop is not None:
            if len(self._penalized) >= MAX_PENALIZED:
                self._penalized.pop(next(iter(self._penalized)))
            self._penalized[self.hop] = time.monotonic() + HOP_PENALTY
            self.hop = None
        self.close()

    def _hop_name(self) -> str:
        return "-" if self.hop is None else short_id(self.hop)


class LookupServer:
    """Runs provider lookups for the streams whose target is :data:`LOOKUP_TARGET`."""

    def __init__(self, driver: AsyncNode) -> None:
        self.driver = driver
        self.per_session: dict[int, int] = {}
        self.served = self.refused = 0
        self._waiting: dict[int, asyncio.Future[LookupDone]] = {}  # lookup id -> its stream
        on_event(driver, self._on_event)
        driver.lookup = self.serve

    def _on_event(self, event: Event) -> None:
        if isinstance(event, LookupDone):
            waiter = self._waiting.pop(event.lookup_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)

    async def serve(self, pipe: StreamPipe) -> None:
        """Serve one lookup stream; every failure resets it."""
        dht, session = self.driver.node.dht, pipe.session_id
        open_here = self.per_session.get(session, 0)
        if dht is None or open_here >= PER_SESSION or sum(self.per_session.values()) >= MAX_RELAYED:
            self.refused += 1
            pipe.reset(RESET_BUSY)
            return
        self.per_session[session] = open_here + 1
        lookup_id: int | None = None
        try:
            self.driver.call(lambda now: self.driver.node.sessions.accept(session, pipe.sid, now))
            key = decode_request(await read_all(pipe, ID_SIZE, REQUEST_TIMEOUT))
            lookup_id = self.driver.call(lambda now: dht.find_providers(key, now))
            waiter = self._waiting[lookup_id] = asyncio.get_running_loop().create_future()
            records: tuple[Record, ...] = ()
            with contextlib.suppress(TimeoutError):
                done = await asyncio.wait_for(waiter, LOOKUP_TIMEOUT)
                if done.kind is LookupKind.PROVIDERS:
                    records = done.records
            send_and_finish(
                pipe, encode_reply([r for r in records if r.type is RecordType.PROVIDER])
            )
            pipe.release()  # both directions are done
            self.served += 1
        except LocalProtocolError:  # the DHT's lookups are all in flight
            self.refused += 1
            pipe.reset(RESET_BUSY)
        except (RemoteProtocolError, TimeoutError) as exc:
            log.info("lookup event=bad_request reason=%r", str(exc))
            pipe.reset(RESET_PROTOCOL)
        except ZMeshError as exc:  # the stream or its session ended under us
            log.debug("lookup event=ended reason=%r", str(exc))
        finally:
            if lookup_id is not None:
                self._waiting.pop(lookup_id, None)
            left = self.per_session.pop(session) - 1
            if left:
                self.per_session[session] = left
