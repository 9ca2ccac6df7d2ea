"""LocalProcesses.start_relays: the exit first, the rest together, one clear error on failure.

The children are a stand-in script (no zMesh import), so this runs in about a second.
"""

import asyncio
import sys
from pathlib import Path

import pytest

from zmesh.errors import ZMeshError
from zmesh.runtime.processes import LocalProcesses

# Prints a relay's readiness line, then waits to be stopped; a relay whose --data ends in
# a name listed in FAIL exits at once instead.
STAND_IN = """
import sys, time
args = sys.argv[1:]
data = args[args.index("--data") + 1]
if data.rsplit("-", 1)[-1] in {fail!r}:
    sys.exit(1)
role = "exit relay" if "--exit" in args else "relay"
boot = args[args.index("--bootstrap") + 1] if "--bootstrap" in args else "none"
print(f"zmesh {{role}} 00 listening on http://" + data.rsplit("-", 1)[-1] + "/" + boot,
      flush=True)
time.sleep(60)
"""


def _children(fail: set[str]) -> LocalProcesses:
    procs = LocalProcesses()
    procs._cmd = [sys.executable, "-c", STAND_IN.format(fail=fail), "zmesh"]
    return procs


def test_relays_start_exit_first_and_report_each(tmp_path: Path) -> None:
    async def run() -> tuple[list[str], list[tuple[int, str]]]:
        procs = _children(set())
        seen: list[tuple[int, str]] = []
        try:
            urls = await procs.start_relays(5, tmp_path, lambda i, url: seen.append((i, url)))
        finally:
            await procs.stop()
        assert all(p.returncode is not None for p in procs.procs)
        return urls, seen

    urls, seen = asyncio.run(run())
    assert urls[0] == "http://0/none"  # the exit bootstraps from nobody
    assert urls[1:] == [f"http://{i}/http://0/none" for i in range(1, 5)]  # the rest from it
    assert seen[0] == (0, urls[0])
    assert sorted(seen) == list(enumerate(urls))


def test_a_relay_that_dies_at_start_is_one_clear_error(tmp_path: Path) -> None:
    async def run() -> LocalProcesses:
        procs = _children({"3"})
        try:
            with pytest.raises(ZMeshError, match="exited before it was ready"):
                await procs.start_relays(5, tmp_path)
        finally:
            await procs.stop()
        return procs

    procs = asyncio.run(run())
    assert all(p.returncode is not None for p in procs.procs)  # nothing left running
