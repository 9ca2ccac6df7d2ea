"""The daemon's bootstrap loop retries with the core's backoff and resets it on success."""

import asyncio

import pytest

from zmesh.errors import ZMeshError
from zmesh.rng import DeterministicRng
from zmesh.runtime import daemon
from zmesh.signaling.backoff import BASE, CAP


class _FlakyDriver:
    """``bootstrap`` fails for each URL the given number of times, then links."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.rng = DeterministicRng(9, b"bootstrap")
        self.failures = dict(failures)
        self.linked: list[str] = []

    async def bootstrap(self, url: str) -> bytes:
        if self.failures[url] > 0:
            self.failures[url] -= 1
            raise ZMeshError(f"{url}: unreachable")
        self.linked.append(url)
        return bytes(32)


def test_keep_bootstrapping_backs_off_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def no_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(daemon.asyncio, "sleep", no_sleep)
    driver = _FlakyDriver({"http://a": 1, "http://b": 7})
    asyncio.run(daemon.keep_bootstrapping(driver, ["http://a", "http://b", "http://a"]))  # type: ignore[arg-type]
    assert driver.linked == ["http://a", "http://b"]
    assert len(slept) == 7
    # round 1 fails both; round 2 links a (reset), so its retry starts at the base again
    nominals = [BASE, BASE] + [min(CAP, BASE * 2**n) for n in range(1, 6)]
    for delay, nominal in zip(slept, nominals, strict=True):
        assert nominal / 2 <= delay <= nominal
    assert max(slept) <= CAP
