"""Browser-to-browser links (D50): the policy that keeps them, and the ICE servers the
page is given."""

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from zmesh.identity import Flags
from zmesh.runtime.browser_peers import (
    BROWSER_LINKS,
    MAX_TRIED,
    RETRY_AFTER,
    BrowserLinks,
    linked_stun_servers,
    without_endpoint,
)
from zmesh.runtime.browser_rtc import BrowserRtc
from zmesh.signaling.sdp import CompactSdp

OFFER = CompactSdp("abcd", "p" * 22, bytes(32), "actpass", (("127.0.0.1", 9),)).to_sdp("offer")


@dataclass(frozen=True)
class Desc:
    flags: Flags = Flags.RELAY
    addresses: tuple[str, ...] = ()


@dataclass
class Sample(dict[bytes, Desc]):
    found: list[bytes] = field(default_factory=list)
    full: bool = False

    def __hash__(self) -> int:
        return id(self)

    def find(self, node_id: bytes, now: float) -> bool:
        if self.full:
            return False
        self.found.append(node_id)
        return True


class FakeNode:
    def __init__(self, node_id: bytes) -> None:
        self.node_id = node_id
        self.sample = Sample()
        self.directory: dict[bytes, Desc] = {}
        self.links: list[bytes] = []

    def peers(self) -> list[bytes]:
        return list(self.links)

    def link_to(self, node_id: bytes) -> int | None:
        return 1 if node_id in self.links else None


def _node() -> Any:
    node = FakeNode(bytes([0x50]) * 32)
    relay = Desc(addresses=("http://127.0.0.1:1", "stun:127.0.0.1:2"))
    node.sample.update({bytes([i]) * 32: Desc() for i in (0x10, 0x60, 0x70, 0x80)})
    node.sample[bytes([0x65]) * 32] = relay  # a native relay: not a browser
    node.sample[bytes([0x66]) * 32] = Desc(flags=Flags.NONE)  # not a relay
    return node


def test_endpointless_relays_are_browsers() -> None:
    assert without_endpoint(Desc())  # type: ignore[arg-type]
    assert not without_endpoint(Desc(addresses=("stun:127.0.0.1:2",)))  # type: ignore[arg-type]
    assert not without_endpoint(Desc(flags=Flags.NONE))  # type: ignore[arg-type]


def test_policy_dials_higher_ids_without_endpoint_until_enough_links() -> None:
    node = _node()
    links = BrowserLinks(node)
    assert links.check(0.0) == bytes([0x60]) * 32  # lower ids dial us; relays are skipped
    assert links.check(1.0) == bytes([0x70]) * 32  # 0x60 was tried: the next one
    node.links.append(bytes([0x80]) * 32)  # a browser linked (it dialled us, say)
    node.directory[bytes([0x80]) * 32] = Desc()
    assert links.check(2.0) is None  # 0x60 and 0x70 tried, 0x80 linked
    assert links.check(RETRY_AFTER) == bytes([0x60]) * 32  # tried again after a while
    for i in range(BROWSER_LINKS):
        peer = bytes([0x90 + i]) * 32
        node.links.append(peer)
        node.directory[peer] = Desc()
    assert links.check(10 * RETRY_AFTER) is None  # enough browser links: nothing wanted
    assert node.sample.found == [bytes([i]) * 32 for i in (0x60, 0x70, 0x60)]


def test_policy_waits_when_lookups_are_full_and_bounds_its_memory() -> None:
    node = _node()
    node.sample.full = True
    links = BrowserLinks(node)
    assert links.check(0.0) is None and links.tries == 0
    node.sample.full = False
    node.sample.clear()
    node.sample.update({(0x60 + i).to_bytes(32, "big"): Desc() for i in range(MAX_TRIED + 10)})
    node.node_id = bytes(32)
    for _ in range(MAX_TRIED + 10):
        assert links.check(0.0) is not None
    assert len(links._tried) == MAX_TRIED


def test_linked_stun_servers_come_from_linked_peers() -> None:
    node = _node()
    relay = bytes([0x65]) * 32
    node.directory[relay] = node.sample[relay]
    assert linked_stun_servers(node, loopback=True) == []  # not linked yet
    node.links.append(relay)
    assert linked_stun_servers(node, loopback=True) == ["stun:127.0.0.1:2"]
    assert linked_stun_servers(node, loopback=False) == []  # loopback only in a local mesh


class IceHost:
    def __init__(self) -> None:
        self.ops: list[tuple[str, str | None]] = []

    async def rtc(self, op: str, pc: int, sdp: str | None) -> str | None:
        self.ops.append((op, sdp))
        return None if op == "ice" else OFFER

    def close(self, pc: int) -> None:
        pass


def test_the_page_gets_the_ice_servers_when_they_change() -> None:
    servers: list[str] = []

    async def main() -> None:
        host = IceHost()
        rtc = BrowserRtc(host, stun=lambda: list(servers))  # type: ignore[arg-type]
        await rtc.dial()
        servers.append("stun:127.0.0.1:2")
        await rtc.dial()
        await rtc.dial()  # unchanged: not sent again
        servers[0] = "stun:127.0.0.1:3"
        await rtc.dial()
        ice = [json.loads(sdp or "") for op, sdp in host.ops if op == "ice"]
        assert ice == [["stun:127.0.0.1:2"], ["stun:127.0.0.1:3"]]
        assert [op for op, _ in host.ops].count("dial") == 4

    asyncio.run(main())
