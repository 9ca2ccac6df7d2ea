"""zmesh/runtime/streams.py: how an exit resolves its target."""

import asyncio
import socket
from typing import Any

import pytest

from zmesh.runtime.streams import resolve


class _Loop:
    """An event loop's getaddrinfo, recorded (anything else is the real loop's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.asked: list[str] = []

    async def getaddrinfo(self, host: str, port: int, **kwargs: Any) -> list[Any]:
        self.asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", port))]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "2001:db8::5", "fe80::1%lo"])
def test_an_ip_literal_is_its_own_address_without_the_resolver(host: str) -> None:
    async def scenario() -> None:
        loop = _Loop(asyncio.get_running_loop())
        assert await resolve(loop, host, 80) == [host]  # type: ignore[arg-type]
        assert loop.asked == []

    asyncio.run(scenario())


def test_a_name_goes_through_getaddrinfo() -> None:
    async def scenario() -> None:
        loop = _Loop(asyncio.get_running_loop())
        assert await resolve(loop, "example.org", 443) == ["192.0.2.7"]  # type: ignore[arg-type]
        assert loop.asked == ["example.org"]
        assert await resolve(asyncio.get_running_loop(), "localhost", 80)  # the real resolver

    asyncio.run(scenario())
