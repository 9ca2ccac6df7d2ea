"""Fetching content: ``zmesh get``, the driver around :class:`~zmesh.chunks.schedule.Scheduler`.

Theory of operation.  The fetcher is a node like the proxy (it relays too).  It looks the
content id up in the DHT (provider records: each carries its provider's descriptor), and
for each provider (up to :data:`MAX_PROVIDERS`) opens a managed session whose final hop
is that provider (:meth:`~zmesh.circuit.sessions.Sessions.connect` with ``exit_id``), and
on it a stream to the content id.  The provider sees only the last relay.  Lookups are
made by the node itself, not through a circuit: the DHT API has no lookup over a
session yet, so DHT nodes near the content id learn that this node asked (noted in D45).

Per stream: the manifest (checked against the id) and the provider's Have bitmaps,
then proofs and pieces as the scheduler assigns them.  A piece is verified against its
group's proof before it is stored (a piece that arrives before its proof waits, at most
:data:`MAX_PARKED`); a bad one is dropped and its source scored down; a source that
breaks the protocol is closed.  Every kept piece is written to the chunk store (one
transaction), so a fetch killed at any point resumes from what it stored.  Once every
group has enough pieces, the file is rebuilt from the store (erasure decoding where
chunks are missing) and written to ``OUT`` atomically (a temporary file in the same
directory, fsync, rename).
"""

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..chunks import ContentId, GroupProof, Manifest, manifest_for, verify_group_proof
from ..chunks import verify_piece as check_piece
from ..chunks.errors import ContentError
from ..chunks.protocol import (
    Cancel,
    Have,
    ManifestReply,
    ManifestRequest,
    MessageDecoder,
    NotHeld,
    PieceReply,
    ProofReply,
    Role,
    Wanted,
    encode,
)
from ..chunks.schedule import Scheduler, SourceDropped
from ..circuit.sessions import DEFAULT_LEGS
from ..errors import LocalProtocolError, UsageError, ZMeshError
from ..identity import Descriptor, Identity, short_id
from ..node import Node
from ..onion.paths import NoPathError
from ..session.endpoint import StreamData
from . import run_command
from .aio import AsyncNode, wall_clock
from .chunkstore import ChunkStore, ChunkStoreError
from .content import Seeder
from .lookups import LookupServer, ProviderFinder, RelayedLookupError
from .streams import StreamClosedError, StreamPipe

log = logging.getLogger("zmesh.get")

MAX_PROVIDERS = 8  # providers fetched from at once
MAX_KNOWN = 64  # providers remembered
MAX_PARKED = 64  # pieces waiting for their group's proof
LOOKUP_EVERY = 2.0  # seconds between provider lookups while fewer than 3 sources
FIND_TIMEOUT = 90.0  # no provider found for this long: give up
IDLE_TIMEOUT = 120.0  # no piece kept for this long: give up
CONNECT_TIMEOUT = 30.0
RETRY_PROVIDER = 10.0  # a provider that failed is tried again after this
TICK = 0.2
RESET_DONE = 0


@dataclass
class _Source:
    provider: bytes
    session_id: int
    pipe: StreamPipe | None = None
    task: asyncio.Future[None] | None = None
    ready: bool = False  # its manifest arrived: it is a scheduler source


@dataclass
class Fetch:
    """One content being fetched by ``driver`` into ``store`` (see the module doc)."""

    driver: AsyncNode
    store: ChunkStore
    cid: ContentId
    legs: int = DEFAULT_LEGS
    manifest: Manifest | None = None
    scheduler: Scheduler | None = None
    proofs: dict[int, GroupProof] = field(default_factory=dict)
    parked: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    providers: dict[bytes, float] = field(default_factory=dict)  # provider -> retry after
    sources: dict[bytes, _Source] = field(default_factory=dict)
    circuits: set[int] = field(default_factory=set)
    delivered: dict[bytes, int] = field(default_factory=dict)  # provider -> bytes kept
    started: float | None = None  # the first provider contacted
    last_byte: float = 0.0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    finals: dict[bytes, Descriptor] = field(default_factory=dict)  # provider -> descriptor
    _finder: ProviderFinder | None = None
    _finding: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        manifest = self.store.manifest(self.cid)
        if manifest is not None:  # resume
            self._start(manifest)
        self._finder = ProviderFinder(self.driver)

    # -- progress -------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return 0 if self.manifest is None else self.manifest.layout.size

    def progress(self) -> int:
        """Bytes of the file the pieces held can rebuild."""
        sched = self.scheduler
        if sched is None:
            return 0
        layout = sched.layout
        done = 0
        counts: dict[int, int] = {}
        for index in sched.held:
            group, _ = layout.locate(index)
            counts[group] = counts.get(group, 0) + 1
        for group, count in counts.items():
            start, end = layout.chunk_range(group)
            need = layout.group_data_count(group)
            done += (end - start) * min(count, need) // need
        return done

    def rates(self) -> dict[bytes, int]:
        """Piece bytes each provider delivered that were kept (gone ones included)."""
        return dict(self.delivered)

    # -- running --------------------------------------------------------------------------
    async def run(self) -> None:
        """Fetch until every group can be rebuilt; raises ZMeshError if no provider is
        found or nothing arrives for too long."""
        ticker = asyncio.ensure_future(self._tick())
        try:
            if not (self.scheduler is not None and self.scheduler.done):
                await self.finished.wait()
            if self.error is not None:
                raise ZMeshError(self.error)
        finally:
            ticker.cancel()
            if self._finding is not None:
                self._finding.cancel()
            if self._finder is not None:
                self._finder.close()
            for source in list(self.sources.values()):
                self._close(source)

    async def _tick(self) -> None:
        began, last_lookup = time.monotonic(), -LOOKUP_EVERY
        while True:
            now = time.monotonic()
            usable = sum(1 for s in self.sources.values() if s.ready)
            if usable < 3 and now - last_lookup >= LOOKUP_EVERY:
                last_lookup = now
                self._lookup()
            self._connect_providers()
            if self.scheduler is not None:
                self.scheduler.handle_timer(now)
                self._pump(now)
            for source in self.sources.values():
                self.circuits.update(self.driver.node.sessions.legs_of(source.session_id))
            if self.started is None and now - began > FIND_TIMEOUT:
                self._fail(f"no provider of {self.cid} found in {FIND_TIMEOUT:g} s")
            elif self.last_byte and now - self.last_byte > IDLE_TIMEOUT:
                self._fail(f"no piece arrived for {IDLE_TIMEOUT:g} s")
            await asyncio.sleep(TICK)

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.finished.set()

    def _lookup(self) -> None:
        if self._finding is None or self._finding.done():
            self._finding = asyncio.ensure_future(self._find())

    async def _find(self) -> None:
        assert self._finder is not None
        try:
            records = await self._finder.find(self.cid.digest)
        except (RelayedLookupError, NoPathError) as exc:
            log.info("get event=lookup_failed reason=%r", str(exc))
            return
        own = self.driver.node.node_id
        for record in records:
            known = record.publisher in self.finals or len(self.finals) < MAX_KNOWN
            if record.publisher != own and known:
                self.providers.setdefault(record.publisher, 0.0)
                self.finals[record.publisher] = record.descriptor

    def _connect_providers(self) -> None:
        now = time.monotonic()
        sessions = self.driver.node.sessions
        for provider, retry in list(self.providers.items()):
            if len(self.sources) >= MAX_PROVIDERS:
                return
            if provider in self.sources or retry > now:
                continue
            try:
                final = self.finals[provider]
                connect = functools.partial(sessions.connect, legs=self.legs, final=final)
                session_id = self.driver.call(connect)
            except (NoPathError, LocalProtocolError) as exc:
                log.info("get event=no_path provider=%s reason=%r", short_id(provider), str(exc))
                self.providers[provider] = now + LOOKUP_EVERY
                continue
            if self.started is None:
                self.started = now
            source = _Source(provider, session_id)
            self.sources[provider] = source
            source.pipe = self.driver.open_stream(session_id, str(self.cid))
            source.task = asyncio.ensure_future(self._serve_source(source))

    async def _serve_source(self, source: _Source) -> None:
        pipe = source.pipe
        assert pipe is not None
        name = short_id(source.provider)
        try:
            await pipe.wait_connected(CONNECT_TIMEOUT)
            self._send(source, encode(ManifestRequest()))
            decoder = MessageDecoder(Role.FETCHER)
            while True:
                event = await pipe.receive()
                if not isinstance(event, StreamData):
                    raise StreamClosedError("the provider ended the stream")
                consume = functools.partial(
                    self.driver.node.sessions.consume, pipe.session_id, pipe.sid, len(event.data)
                )
                self.driver.call(consume)
                if source.ready and self.scheduler is not None:
                    self.scheduler.progress(source.provider, time.monotonic())
                decoder.feed(event.data)
                while (message := decoder.next_message()) is not None:
                    self._on_message(source, message)
                self._pump(time.monotonic())
        except ContentError as exc:
            log.warning("get event=bad_source provider=%s reason=%r", name, str(exc))
            if source.ready and self.scheduler is not None:
                self.scheduler.strike(source.provider, str(exc))
        except ChunkStoreError as exc:  # our store: full (quota, disk) or unusable
            self._fail(str(exc))
        except (ZMeshError, TimeoutError) as exc:
            log.info("get event=source_lost provider=%s reason=%r", name, str(exc) or "timeout")
        self._drop(source)

    def _on_message(self, source: _Source, message: object) -> None:
        provider = source.provider
        match message:
            case ManifestReply(data):
                manifest = manifest_for(self.cid, data)  # raises ManifestError for a liar
                if self.scheduler is None:
                    self.store.add(manifest, pinned=False)
                    self._start(manifest)
                assert self.scheduler is not None
                self.scheduler.add_source(provider, time.monotonic())
                source.ready = True
            case Have(start, bitmap) if source.ready and self.scheduler is not None:
                self.scheduler.have(provider, Have(start, bitmap).indices())
            case ProofReply(group, proof) if self.scheduler is not None and source.ready:
                self._on_proof(provider, group, proof)
            case PieceReply(index, data) if self.scheduler is not None and source.ready:
                self._on_piece(provider, index, data)
            case NotHeld(Wanted.PIECE, index) if self.scheduler is not None and source.ready:
                self.scheduler.failed(provider, index, bad=False)
            case NotHeld(Wanted.PROOF, group) if self.scheduler is not None and source.ready:
                self.scheduler.proof_failed(provider, group, bad=False)
            case _:
                raise ContentError("a reply before the manifest")

    def _start(self, manifest: Manifest) -> None:
        self.manifest = manifest
        held = self.store.held(self.cid)
        groups = sorted({manifest.layout.locate(i)[0] for i in held})
        for group in groups:
            proof = self.store.proof(self.cid, group)
            if proof is not None:
                self.proofs[group] = proof
        self.scheduler = Scheduler(manifest.layout, held, proofs=self.proofs)
        if self.scheduler.done:
            self.finished.set()

    def _on_proof(self, provider: bytes, group: int, proof: GroupProof) -> None:
        assert self.scheduler is not None and self.manifest is not None
        try:
            verify_group_proof(self.manifest, group, proof)
        except ContentError:
            self.scheduler.proof_failed(provider, group, bad=True)
            return
        self.proofs[group] = proof
        self.scheduler.proof_received(provider, group)
        layout = self.manifest.layout
        for index in [i for i in self.parked if layout.locate(i)[0] == group]:
            sender, data = self.parked.pop(index)
            if sender in self.scheduler.sources():
                self._keep(sender, index, data, proof)

    def _on_piece(self, provider: bytes, index: int, data: bytes) -> None:
        assert self.scheduler is not None and self.manifest is not None
        try:
            group, _ = self.manifest.layout.locate(index)
        except ContentError:
            self.scheduler.strike(provider, f"piece {index} is outside the content")
            return
        proof = self.proofs.get(group)
        if proof is not None:
            self._keep(provider, index, data, proof)
        elif len(self.parked) < MAX_PARKED and self.scheduler.wanted(index):
            self.parked[index] = (provider, data)
        else:
            self.scheduler.failed(provider, index, bad=False)

    def _keep(self, provider: bytes, index: int, data: bytes, proof: GroupProof) -> None:
        sched, manifest = self.scheduler, self.manifest
        assert sched is not None and manifest is not None
        try:
            check_piece(manifest, index, data, proof)
        except ContentError as exc:
            log.warning("get event=bad_piece provider=%s reason=%r", short_id(provider), str(exc))
            sched.failed(provider, index, bad=True)
            return
        keep = sched.wanted(index)
        if keep:
            group, _ = manifest.layout.locate(index)
            self.store.put(self.cid, group, proof, {index: data})
            self.last_byte = time.monotonic()
            self.delivered[provider] = self.delivered.get(provider, 0) + len(data)
        for other in sched.received(provider, index, len(data)):
            target = self.sources.get(other)
            if target is not None and target.ready:
                self._send(target, encode(Cancel(index)))
        if sched.done:
            self.finished.set()

    def _pump(self, now: float) -> None:
        sched = self.scheduler
        if sched is None:
            return
        while (event := sched.next_event()) is not None:
            if isinstance(event, SourceDropped):
                log.warning("get event=source_dropped provider=%s reason=%r",
                            short_id(event.source), event.reason)  # fmt: skip
                dropped = self.sources.get(event.source)
                if dropped is not None:
                    self._close(dropped)
        for source in list(self.sources.values()):
            if source.ready and source.provider in sched.sources():
                requests = sched.requests(source.provider, now)
                if requests:
                    self._send(source, b"".join(encode(r) for r in requests))

    def _send(self, source: _Source, data: bytes) -> None:
        pipe = source.pipe
        if pipe is None:
            return
        with contextlib.suppress(ZMeshError):
            self.driver.call(
                lambda now: self.driver.node.sessions.send(pipe.session_id, pipe.sid, data, now)
            )

    def _drop(self, source: _Source) -> None:
        """A source's stream ended: forget it, retry its provider later."""
        if self.sources.get(source.provider) is source:
            del self.sources[source.provider]
            self.providers[source.provider] = time.monotonic() + RETRY_PROVIDER
        if self.scheduler is not None:
            self.scheduler.remove_source(source.provider)
        with contextlib.suppress(ZMeshError):
            self.driver.call(lambda now: self.driver.node.sessions.close(source.session_id, now))

    def _close(self, source: _Source) -> None:
        if source.task is not None:
            source.task.cancel()
        self._drop(source)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync
    and rename: a reader sees the old file or the whole new one.  Raises UsageError."""
    directory = path.parent if str(path.parent) else Path()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- zmesh get ---------------------------------------------------------------------------
@dataclass
class GetOptions:
    content_id: str
    out: Path | None
    bootstrap: list[str]
    data: Path | None
    json: bool = False
    legs: int = DEFAULT_LEGS
    seed: bool = False  # keep serving what was fetched until Ctrl-C


def _bar(fetch: Fetch, start: float) -> str:
    total, done = fetch.total, fetch.progress()
    width = 30
    filled = width * done // total if total else 0
    elapsed = max(time.monotonic() - start, 1e-3)
    rates = "  ".join(
        f"{short_id(s)} {n / elapsed / 1e6:.1f} MB/s" for s, n in sorted(fetch.rates().items())
    )
    pct = 100 * done // total if total else 0
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {pct:3d}% "
        f"{done / 1e6:.1f}/{total / 1e6:.1f} MB  {rates}"
    )


async def _report(fetch: Fetch, as_json: bool, write: Callable[[str], None]) -> None:
    start = time.monotonic()
    while True:
        if as_json:
            write(json.dumps({"bytes": fetch.progress(), "total": fetch.total}) + "\n")
        else:
            write(_bar(fetch, start))
        await asyncio.sleep(0.25)


async def _seed(
    driver: AsyncNode, store: ChunkStore, cid: ContentId, write: Callable[[str], None]
) -> None:
    """``zmesh get --seed``: serve what was fetched (and relay) until Ctrl-C."""
    from .daemon import stop_requested  # noqa: PLC0415 - native only

    stop = stop_requested()
    seeder = Seeder(driver, store)
    LookupServer(driver)
    seeder.start()
    write(f"seeding {cid}; press Ctrl-C to stop\n")
    try:
        await stop.wait()
    finally:
        await seeder.close()


async def run_get(opts: GetOptions) -> int:
    from . import webrtc  # noqa: PLC0415 - native only (the browser imports Fetch)
    from .daemon import keep_bootstrapping, relay_config  # noqa: PLC0415
    from .entropy import SystemRng  # noqa: PLC0415
    from .store import Store  # noqa: PLC0415

    try:
        cid = ContentId.parse(opts.content_id)
    except ContentError as exc:
        raise UsageError(str(exc)) from None
    if not opts.bootstrap:
        raise UsageError("give at least one --bootstrap URL (`zmesh up` prints them)")
    out = opts.out if opts.out is not None else Path(str(cid))
    rng = SystemRng()
    with contextlib.ExitStack() as stack:
        data = opts.data or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zm-")))
        state = Store(data) if opts.data is not None else None
        identity = state.load_or_create_identity(rng) if state else Identity.generate(rng)
        loopback = all("127.0.0.1" in u or "localhost" in u for u in opts.bootstrap)
        node = Node(identity, rng, wall_clock(), relay_config(private=loopback))
        driver = AsyncNode(node, rtc=webrtc, store=state, loopback=loopback)
        store = ChunkStore(data)
        stack.callback(store.close)
        boot = asyncio.ensure_future(keep_bootstrapping(driver, opts.bootstrap))
        fetch = Fetch(driver, store, cid, opts.legs)

        def write(text: str) -> None:
            sys.stderr.write(text)
            sys.stderr.flush()

        reporter = asyncio.ensure_future(_report(fetch, opts.json, write))
        try:
            await fetch.run()
            reporter.cancel()
            if not opts.json:
                write(_bar(fetch, time.monotonic()) + "\n")
            content = store.read(cid)
            write_atomically(out, content)
            seconds = fetch.last_byte - fetch.started if fetch.started and fetch.last_byte else 0.0
            sources = sorted(s.hex() for s, n in fetch.rates().items() if n)
            result = {
                "id": str(cid),
                "bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "sources": sources,
                "circuits": len(fetch.circuits),
                "seconds": round(seconds, 3),
            }
            if opts.json:
                print(json.dumps(result), flush=True)
            else:
                write(
                    f"{out}: {len(content)} bytes from {len(sources)} sources, SHA-256 verified\n"
                )
            if opts.seed:
                await _seed(driver, store, cid, write)
        finally:
            reporter.cancel()
            boot.cancel()
            await driver.close()
    return 0


def main_get(opts: GetOptions) -> int:
    return run_command("get", run_get(opts))
