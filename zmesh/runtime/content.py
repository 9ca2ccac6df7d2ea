"""Seeding content: a node serves what its chunk store holds and announces it in the DHT.

Theory of operation.  A stream whose target is a content id (``zm1...``) reaches
:meth:`Seeder.serve` at the session's final hop, which is the provider itself: the
fetcher's circuit ends here, so the provider sees only the last relay.  The stream speaks
:mod:`zmesh.chunks.protocol`: requests are read into a bounded
:class:`~zmesh.chunks.protocol.ServeQueue` and answered in order from the
:class:`~zmesh.runtime.chunkstore.ChunkStore`.

Budgets.  A piece is read from the store only when the stream has taken the previous
ones (its unsent bytes are under :data:`SEND_HIGH_WATER`) and the node's token bucket
(``--rate``, payload bytes per second, :class:`Rate`) allows it: a fetcher cannot make
the provider read faster than it receives.  At most :data:`STREAMS_PER_SESSION` content
streams per session (a session is the provider's view of one fetcher) and
:data:`MAX_STREAMS` in all; beyond them a stream is reset at once.  A request stream that
breaks the protocol is reset (:data:`RESET_PROTOCOL`).

Announcing.  Every content in the store is published as a provider record (its key the
content id's digest, signed with the node's descriptor inside, so a fetcher can build a
circuit to us) once the node has links, again a minute later (a record published while
the DHT was still bootstrapping may have reached few nodes), then every
:data:`REPUBLISH` seconds, as new contents appear.
"""

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..budget import TokenBucket
from ..chunks import ContentId, encode_content
from ..chunks.errors import ContentError
from ..chunks.protocol import (
    ChunkProtocolError,
    ManifestReply,
    ManifestRequest,
    MessageDecoder,
    NotHeld,
    PieceReply,
    PieceRequest,
    ProofReply,
    ProofRequest,
    Reply,
    Request,
    Role,
    ServeQueue,
    Wanted,
    encode,
    have_messages,
)
from ..dht.records import RecordType, sign_record
from ..errors import LocalProtocolError, UsageError, ZMeshError
from ..node import Event
from ..session.endpoint import StreamData, StreamFinished
from .aio import AsyncNode, wall_clock
from .chunkstore import ChunkStore, ChunkStoreError
from .streams import StreamPipe

log = logging.getLogger("zmesh.content")

SEND_HIGH_WATER = 512 * 1024  # unsent bytes on a stream before the next piece is read
STREAMS_PER_SESSION = 4
MAX_STREAMS = 256
REPUBLISH = 20 * 60.0
FIRST_PUBLISH_DELAY = 3.0
SECOND_PUBLISH_DELAY = 60.0
RESET_NOT_HELD = 16
RESET_BUSY = 17
RESET_PROTOCOL = 18
MAX_SHARE_SIZE = 1 << 32  # bytes of one shared file (encoded in memory)


class Rate:
    """A token bucket on payload bytes given, shared by every stream of the node.

    ``rate`` is bytes per second (None: no cap); the bucket holds a tenth of a second of
    it (at least ``min_burst`` bytes), and a larger message takes its bytes in parts, so
    nothing is given faster than the rate beyond that tenth of a second."""

    def __init__(self, rate: float | None, min_burst: int = 1024) -> None:
        if rate is not None and rate <= 0:
            raise UsageError(f"--rate must be positive, not {rate:g}")
        self.rate = rate
        self._burst = 0.0 if rate is None else max(rate / 10, min_burst)
        self._bucket = None if rate is None else TokenBucket(rate, self._burst)

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes may be given, and take them."""
        bucket = self._bucket
        left = float(n)
        while bucket is not None and left > 0:
            part = min(left, self._burst)
            while not bucket.take(time.monotonic(), part):
                ready = bucket.ready_at(time.monotonic(), part)
                await asyncio.sleep(max(0.001, ready - time.monotonic()))
            left -= part


@dataclass
class SeederStats:
    streams: int = 0  # content streams served, in all
    refused: int = 0  # reset at once (not held, over a budget)
    pieces: int = 0
    bytes: int = 0
    protocol_errors: int = 0
    published: int = 0  # provider records published
    per_session: dict[int, int] = field(default_factory=dict)  # open streams per session


class Seeder:
    """Serves the chunk store of ``data`` to content streams of ``driver``'s node and
    publishes provider records for it (see the module doc)."""

    def __init__(
        self, driver: AsyncNode, data: Path | ChunkStore, rate: float | None = None
    ) -> None:
        """Serve the store in directory ``data`` (opened here), or the store ``data`` (the
        browser's, :mod:`zmesh.runtime.browser_store`).  Raises ChunkStoreError."""
        self.driver = driver
        self.store = data if isinstance(data, ChunkStore) else ChunkStore(data)
        self.rate = Rate(rate)
        self.stats = SeederStats()
        self._published: dict[bytes, float] = {}  # content digest -> when
        self._task: asyncio.Future[None] | None = None
        driver.content = self.serve

    def share(self, files: list[Path]) -> list[ContentId]:
        """Encode and pin each file; their content ids, in order.  Raises UsageError for
        a file that cannot be read or is too large."""
        ids = []
        for path in files:
            try:
                size = path.stat().st_size
                if size > MAX_SHARE_SIZE:
                    raise UsageError(f"{path}: {size} bytes exceed {MAX_SHARE_SIZE}")
                data = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
            ids.append(self.store.pin(encode_content(data)))
        return ids

    def start(self) -> None:
        """Start announcing (the driver's node must run the DHT)."""
        self._task = asyncio.ensure_future(self._announce())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.store.close()

    # -- announcing ---------------------------------------------------------------------
    async def _announce(self) -> None:
        node = self.driver.node
        while not node.peers():
            await asyncio.sleep(0.5)
        await asyncio.sleep(FIRST_PUBLISH_DELAY)
        started = time.monotonic()
        second_done = False
        while True:
            due = REPUBLISH
            if not second_done and time.monotonic() - started >= SECOND_PUBLISH_DELAY:
                second_done, due = True, 0.0
            self.publish(due)
            await asyncio.sleep(5.0)

    def publish(self, older_than: float) -> int:
        """Publish a provider record for every content held whose record is older than
        ``older_than`` seconds (or was never published); how many were published."""
        node, dht = self.driver.node, self.driver.node.dht
        if dht is None:
            return 0
        count = 0
        for content in self.store.contents():
            digest = content.content_id.digest
            last = self._published.get(digest)
            now = wall_clock()
            if last is not None and now - last < older_than:
                continue

            def put(now: float, key: bytes = digest) -> None:
                record = sign_record(
                    node.identity, node.descriptor(now), RecordType.PROVIDER, key,
                    published=int(now),
                )  # fmt: skip
                dht.publish(record, now)

            try:
                self.driver.call(put)
            except LocalProtocolError as exc:  # lookups full, or an update too soon
                log.info("content event=publish_deferred reason=%r", str(exc))
                break
            self._published[digest] = now
            self.stats.published += 1
            count += 1
        return count

    # -- serving ------------------------------------------------------------------------
    async def serve(self, pipe: StreamPipe, target: str) -> None:
        """Serve one content stream until it finishes, resets or breaks the protocol."""
        session = pipe.session_id
        open_here = self.stats.per_session.get(session, 0)
        try:
            cid = ContentId.parse(target)
            manifest = self.store.manifest(cid)
        except ContentError:
            manifest = None
        if manifest is None:
            self.stats.refused += 1
            pipe.reset(RESET_NOT_HELD)
            return
        total = sum(self.stats.per_session.values())
        if open_here >= STREAMS_PER_SESSION or total >= MAX_STREAMS:
            self.stats.refused += 1
            pipe.reset(RESET_BUSY)
            return
        self.stats.streams += 1
        self.stats.per_session[session] = open_here + 1
        try:
            with contextlib.suppress(ZMeshError):
                self.driver.call(
                    lambda now: self.driver.node.sessions.accept(session, pipe.sid, now)
                )
            await self._serve(pipe, cid, ServeQueue(manifest.layout), manifest.encode())
        except ChunkProtocolError as exc:
            self.stats.protocol_errors += 1
            log.info("content event=protocol_error reason=%r", str(exc))
            pipe.reset(RESET_PROTOCOL)
        except (ChunkStoreError, ContentError) as exc:
            log.warning("content event=store_error reason=%r", str(exc))
            pipe.reset(RESET_NOT_HELD)
        except ZMeshError as exc:  # the stream or its session ended under us
            log.debug("content event=ended reason=%r", str(exc))
        finally:
            left = self.stats.per_session[session] - 1
            if left:
                self.stats.per_session[session] = left
            else:
                del self.stats.per_session[session]

    async def _serve(
        self, pipe: StreamPipe, cid: ContentId, queue: ServeQueue, manifest: bytes
    ) -> None:
        driver, sessions = self.driver, self.driver.node.sessions
        decoder = MessageDecoder(Role.PROVIDER)
        arrived = asyncio.Event()

        async def read() -> str:
            try:
                while True:
                    event = await pipe.receive()
                    if not isinstance(event, StreamData):
                        return "finished" if isinstance(event, StreamFinished) else "reset"
                    consume = functools.partial(
                        sessions.consume, pipe.session_id, pipe.sid, len(event.data)
                    )
                    driver.call(consume)
                    decoder.feed(event.data)
                    while (message := decoder.next_message()) is not None:
                        queue.add(message)  # type: ignore[arg-type]  # the decoder's role
                    arrived.set()
            finally:
                arrived.set()

        reader = asyncio.ensure_future(read())
        try:
            while True:
                if reader.done() and reader.result() == "reset":  # result() raises its error
                    return
                request = queue.next_request()
                if request is not None:
                    await self._answer(pipe, cid, request, manifest)
                elif reader.done():
                    pipe.finish()
                    return
                else:
                    arrived.clear()
                    await arrived.wait()
        finally:
            reader.cancel()

    async def _answer(
        self, pipe: StreamPipe, cid: ContentId, request: Request, manifest: bytes
    ) -> None:
        store = self.store
        match request:
            case ManifestRequest():
                replies: list[Reply] = [ManifestReply(manifest)]
                layout = store.manifest(cid)
                if layout is not None:
                    replies += have_messages(layout.layout, store.held(cid))
                await self._send(pipe, b"".join(encode(r) for r in replies))
            case ProofRequest(group):
                proof = store.proof(cid, group)
                reply = NotHeld(Wanted.PROOF, group) if proof is None else ProofReply(group, proof)
                await self._send(pipe, encode(reply))
            case PieceRequest(index):
                await self._drained(pipe)
                piece = store.piece(cid, index)
                if piece is None:
                    await self._send(pipe, encode(NotHeld(Wanted.PIECE, index)))
                    return
                await self.rate.take(len(piece))
                self.stats.pieces += 1
                self.stats.bytes += len(piece)
                await self._send(pipe, encode(PieceReply(index, piece)))

    async def _drained(self, pipe: StreamPipe) -> None:
        """Wait until the stream's unsent bytes are under :data:`SEND_HIGH_WATER`."""
        sessions = self.driver.node.sessions
        while sessions.buffered(pipe.session_id, pipe.sid) > SEND_HIGH_WATER:
            await self.driver._progress.wait()

    async def _send(self, pipe: StreamPipe, data: bytes) -> None:
        sessions = self.driver.node.sessions
        self.driver.call(lambda now: sessions.send(pipe.session_id, pipe.sid, data, now))


_handlers: "weakref.WeakKeyDictionary[AsyncNode, list[Callable[[Event], None]]]" = (
    weakref.WeakKeyDictionary()
)


def on_event(driver: AsyncNode, handler: Callable[[Event], None]) -> Callable[[], None]:
    """Call ``handler`` with every node event of ``driver``, after the driver's own event
    hook; returns the function that stops it (a browser tab runs many fetches in turn)."""
    handlers = _handlers.get(driver)
    if handlers is None:
        handlers = _handlers[driver] = []
        previous, chain = driver.on_event, handlers

        def chained(event: Event) -> None:
            if previous is not None:
                previous(event)
            for each in list(chain):
                each(event)

        driver.on_event = chained
    handlers.append(handler)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            handlers.remove(handler)

    return remove
