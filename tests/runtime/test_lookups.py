"""The final hop's side of lookups through a circuit (zmesh/runtime/lookups.py): its
budgets, bad requests, and a lookup answered with the records the DHT verified.  A fake
driver and pipe stand in for the node (the real path is tests/runtime/test_content.py:
``zmesh get`` finds its providers only this way)."""

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from dhtrecords import NOW, key, node_record, provider

from zmesh.dht.relayed import decode_reply, encode_request
from zmesh.dht.service import LookupDone, LookupKind
from zmesh.errors import LocalProtocolError
from zmesh.runtime import lookups
from zmesh.runtime.content import RESET_BUSY, RESET_PROTOCOL
from zmesh.session.endpoint import StreamData, StreamFinished


@dataclass
class FakeSessions:
    sent: list[bytes] = field(default_factory=list)
    finished: int = 0

    def accept(self, session: int, sid: int, now: float) -> None: ...
    def consume(self, session: int, sid: int, n: int, now: float) -> None: ...
    def send(self, session: int, sid: int, data: bytes, now: float) -> None:
        self.sent.append(data)

    def finish(self, session: int, sid: int, now: float) -> None:
        self.finished += 1


@dataclass
class FakeDht:
    busy: bool = False
    started: list[bytes] = field(default_factory=list)

    def find_providers(self, key: bytes, now: float) -> int:
        if self.busy:
            raise LocalProtocolError("64 lookups are in flight")
        self.started.append(key)
        return len(self.started)


@dataclass
class FakeNode:
    dht: FakeDht | None = field(default_factory=FakeDht)
    sessions: FakeSessions = field(default_factory=FakeSessions)


class FakeDriver:
    def __init__(self) -> None:
        self.node = FakeNode()
        self.on_event: Any = None
        self.lookup: Any = None
        self._streams: dict[tuple[int, int], object] = {}

    def call(self, action: Any) -> Any:
        return action(NOW)


class FakePipe:
    def __init__(self, driver: FakeDriver, session_id: int, inbox: list[object]) -> None:
        self.driver, self.session_id, self.sid = driver, session_id, 1
        self.resets: list[int] = []
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        for item in inbox:
            self._inbox.put_nowait(item)

    async def receive(self, timeout: float | None = None) -> object:
        return await self._inbox.get()

    def reset(self, code: int) -> None:
        self.resets.append(code)

    def release(self) -> None:
        pass


def request(k: bytes) -> list[object]:
    return [StreamData(1, encode_request(k)), StreamFinished(1)]


def serve(driver: FakeDriver, pipe: FakePipe) -> None:
    server = lookups.LookupServer(driver)  # type: ignore[arg-type]
    asyncio.run(server.serve(pipe))  # type: ignore[arg-type]


def test_a_lookup_is_answered_with_the_providers_the_dht_verified() -> None:
    driver = FakeDriver()
    server = lookups.LookupServer(driver)  # type: ignore[arg-type]
    records = (provider(1, key(7)), node_record(2), provider(3, key(7)))

    async def run() -> None:
        pipe = FakePipe(driver, 5, request(key(7)))
        task = asyncio.ensure_future(server.serve(pipe))  # type: ignore[arg-type]
        while not driver.node.dht.started:  # type: ignore[union-attr]
            await asyncio.sleep(0)
        driver.on_event(
            LookupDone(1, LookupKind.PROVIDERS, key(7), (), records, 2, 6, 0, False, 0.1, 0)
        )
        await task
        assert not pipe.resets

    asyncio.run(run())
    (reply,) = driver.node.sessions.sent
    kept, refused = decode_reply(reply, key(7), NOW)
    assert kept == [records[0], records[2]] and refused == 0  # only provider records go out
    assert server.served == 1 and not server.per_session


def test_budgets_per_session_and_in_all_refuse_at_once() -> None:
    driver = FakeDriver()
    server = lookups.LookupServer(driver)  # type: ignore[arg-type]
    server.per_session[5] = lookups.PER_SESSION
    pipe = FakePipe(driver, 5, request(key(7)))
    asyncio.run(server.serve(pipe))  # type: ignore[arg-type]
    assert pipe.resets == [RESET_BUSY]
    server.per_session = dict.fromkeys(range(100, 100 + lookups.MAX_RELAYED), 1)
    pipe = FakePipe(driver, 6, request(key(7)))
    asyncio.run(server.serve(pipe))  # type: ignore[arg-type]
    assert pipe.resets == [RESET_BUSY] and server.refused == 2
    assert not driver.node.dht.started  # type: ignore[union-attr]


def test_a_node_without_a_dht_or_with_its_lookups_full_refuses() -> None:
    driver = FakeDriver()
    driver.node.dht = None
    pipe = FakePipe(driver, 5, request(key(7)))
    serve(driver, pipe)
    assert pipe.resets == [RESET_BUSY]
    driver = FakeDriver()
    driver.node.dht.busy = True  # type: ignore[union-attr]
    pipe = FakePipe(driver, 5, request(key(7)))
    serve(driver, pipe)
    assert pipe.resets == [RESET_BUSY]


@pytest.mark.parametrize(
    "inbox",
    [
        [StreamData(1, key(7) + b"x"), StreamFinished(1)],  # too long
        [StreamData(1, key(7)[:20]), StreamFinished(1)],  # too short
        [StreamData(1, b"\x00" * 5000)],  # past the limit before any FIN
    ],
)
def test_bad_requests_are_reset(inbox: list[object]) -> None:
    driver = FakeDriver()
    pipe = FakePipe(driver, 5, inbox)
    serve(driver, pipe)
    assert pipe.resets == [RESET_PROTOCOL]
    assert not driver.node.sessions.sent


def test_a_request_that_never_comes_is_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookups, "REQUEST_TIMEOUT", 0.05)
    driver = FakeDriver()
    pipe = FakePipe(driver, 5, [])
    serve(driver, pipe)
    assert pipe.resets == [RESET_PROTOCOL]


def test_a_lookup_that_never_ends_is_answered_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookups, "LOOKUP_TIMEOUT", 0.05)
    driver = FakeDriver()
    pipe = FakePipe(driver, 5, request(key(7)))
    serve(driver, pipe)
    assert not pipe.resets
    assert driver.node.sessions.sent == [b"\x00"]
