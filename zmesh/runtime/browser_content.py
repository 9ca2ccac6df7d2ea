"""The browser node's content: its chunk store in IndexedDB, the seeder, and the page's
``zmesh.share`` and ``zmesh.get`` calls (D45, "In the browser")."""

import asyncio
import json
import logging
import time
from typing import Any, Final

from ..chunks import ContentId, encode_content
from ..chunks.errors import ContentError
from ..errors import ZMeshError
from .aio import AsyncNode
from .browser_rtc import Host
from .browser_store import BrowserChunkStore, ContentDb, MemoryContentDb
from .chunkstore import ChunkStoreError
from .content import Seeder
from .content_fetch import Fetch
from .lookups import LookupServer

log = logging.getLogger("zmesh.browser")

MAX_GETS: Final = 4  # contents fetched at once by zmesh.get
GET_TIMEOUT: Final = 300.0  # seconds a zmesh.get may take unless the page says otherwise


class BrowserContent:
    """What the tab shares, fetches and seeds (see the module doc)."""

    def __init__(self, driver: AsyncNode, host: Host) -> None:
        self.driver = driver
        self.host = host
        self.store: BrowserChunkStore | None = None
        self.seeder: Seeder | None = None
        self.content_note = "opening once the node is ready"
        self.shares = 0
        self.gets = 0
        self.get_failures = 0
        self._fetching: dict[ContentId, tuple[Fetch, asyncio.Future[None]]] = {}
        self._opened = asyncio.Event()

    async def start(self, db: ContentDb) -> None:
        """Open the content store on ``db`` (IndexedDB in the tab) and seed what it holds:
        a :class:`~zmesh.runtime.content.Seeder` serves it and publishes provider records.
        If ``db`` cannot be read the store lives in memory only (the status says so)."""
        began = time.perf_counter()
        try:
            store = await BrowserChunkStore.open(db, self.store_name())
            took = (time.perf_counter() - began) * 1000
            self.content_note = (
                f"IndexedDB ({len(store.contents())} contents loaded and verified in {took:.0f} ms)"
            )
        except ChunkStoreError as exc:
            log.warning("browser event=content_store_unusable reason=%r", str(exc))
            store = await BrowserChunkStore.open(MemoryContentDb(), self.store_name())
            self.content_note = f"memory only: {exc}"
        self.store = store
        self.seeder = Seeder(self.driver, store)
        self.seeder.start()
        LookupServer(self.driver)  # runs provider lookups for others, as every DHT node does
        self._opened.set()

    def store_name(self) -> str:
        """One content store per node id: the identity's Web Lock keeps it to one tab."""
        return f"zmesh-content-{self.driver.node.node_id.hex()[:16]}"

    async def close(self) -> None:
        if self.seeder is not None:
            await self.seeder.close()

    def status(self) -> dict[str, Any]:
        """The store, what the tab served, and each zmesh.get under way (by content id):
        bytes rebuildable so far, the total, and the bytes each source delivered."""
        store, seeder = self.store, self.seeder
        gets = {
            str(cid): {
                "bytes": fetch.progress(),
                "total": fetch.total,
                "sources": {s.hex(): n for s, n in sorted(fetch.rates().items())},
            }
            for cid, (fetch, _) in self._fetching.items()
        }
        if store is None or seeder is None:
            return {"store": self.content_note, "gets": gets}
        contents = store.contents()
        return {
            "store": self.content_note,
            "contents": len(contents),
            "pinned": sum(1 for c in contents if c.pinned),
            "pinnedBytes": store.pinned_bytes,
            "cachedBytes": store.cached_bytes,
            "cacheQuota": store.cache_quota,
            "pinnedQuota": store.pinned_quota,
            "writes": store.writes,
            "writeFailures": store.write_failures,
            "shares": self.shares,
            "gets": gets,
            "getsDone": self.gets,
            "getFailures": self.get_failures,
            "streamsServed": seeder.stats.streams,
            "piecesServed": seeder.stats.pieces,
            "bytesServed": seeder.stats.bytes,
            "published": seeder.stats.published,
        }

    async def _content_store(self) -> BrowserChunkStore:
        """The store, once :meth:`start` has opened it (calls made before wait for it)."""
        await self._opened.wait()
        assert self.store is not None
        return self.store

    async def share(self, call_id: int, data: bytes) -> None:
        """``zmesh.share(blob)``: encode, pin, wait until IndexedDB has it, answer the id.
        The seeder announces it within seconds."""
        try:
            store = await self._content_store()
            if not data:
                raise ZMeshError("cannot share an empty file")
            if len(data) > store.pinned_quota - store.pinned_bytes:
                raise ChunkStoreError(
                    f"the file ({len(data)} bytes) does not fit in this tab's share quota "
                    f"({store.pinned_quota - store.pinned_bytes} of {store.pinned_quota} "
                    "bytes left)"
                )
            encoded = encode_content(data)
            cid = store.pin(encoded)
            await store.flush(cid)
        except (ZMeshError, ContentError) as exc:
            self.host.reply(call_id, False, json.dumps({"error": str(exc)}), None)
            return
        self.shares += 1
        log.info("browser event=shared bytes=%d", len(data))
        value = {"id": str(cid), "bytes": len(data)}
        self.host.reply(call_id, True, json.dumps(value), None)

    async def get(self, call_id: int, args: dict[str, Any]) -> None:
        """``zmesh.get(id)``: fetch through circuits to the providers (or from the store),
        wait until IndexedDB has it, answer the file; the tab then seeds it."""
        try:
            text, timeout = args.get("id"), args.get("timeout", GET_TIMEOUT)
            if not isinstance(text, str):
                raise ZMeshError("zmesh.get needs a content id (a string, zm1...)")
            if not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
                raise ZMeshError("timeout must be a number of seconds from 0 to 3600")
            try:
                cid = ContentId.parse(text.strip())
            except ContentError as exc:
                raise ZMeshError(f"not a content id: {exc}") from None
            store = await self._content_store()
            running = self._fetching.get(cid)
            if running is None:
                if len(self._fetching) >= MAX_GETS:
                    raise ZMeshError(f"at most {MAX_GETS} contents can be fetched at once")
                fetch = Fetch(self.driver, store, cid)
                running = (fetch, asyncio.ensure_future(fetch.run()))
                self._fetching[cid] = running
                running[1].add_done_callback(lambda _: self._fetching.pop(cid, None))
            fetch, task = running
            try:
                await asyncio.wait_for(asyncio.shield(task), float(timeout))
            except TimeoutError:
                task.cancel()  # stop fetching (another call for this id is told so)
                found = "no provider found" if fetch.started is None else "stalled"
                raise ZMeshError(f"zmesh.get timed out after {timeout:g} s ({found})") from None
            except asyncio.CancelledError:
                if not task.cancelled():  # this call itself was cancelled
                    raise
                raise ZMeshError("zmesh.get stopped: another call for it timed out") from None
            except ZMeshError as exc:
                await store.flush(cid)  # a failed IndexedDB write is the better reason
                raise ZMeshError(f"zmesh.get failed: {exc}") from None
            await store.flush(cid)
            data = store.read(cid)
        except (ZMeshError, ContentError) as exc:
            self.get_failures += 1
            self.host.reply(call_id, False, json.dumps({"error": str(exc)}), None)
            return
        self.gets += 1
        sources = {s.hex(): n for s, n in sorted(fetch.rates().items()) if n}
        value = {"id": str(cid), "bytes": len(data), "sources": sources}
        self.host.reply(call_id, True, json.dumps(value), data)
