"""Child zMesh processes on this machine (``zmesh up``, the harness): start, wait, stop."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import ZMeshError

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0  # after SIGTERM, how long the children get before SIGKILL
MIN_RELAYS = 3  # a 3-hop circuit needs three relays
MAX_RELAYS = 12  # what one machine runs as a local mesh (each relay is a process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalProcesses:
    """``python -m zmesh`` children, each in its own session, stopped together.

    Their stdout is read until a readiness line, then drained in the background so a
    chatty child never blocks on a full pipe.
    """

    def __init__(self, verbosity: int = 0) -> None:
        flags = ["-" + "v" * verbosity] if verbosity else []
        self._cmd = [sys.executable, "-m", "zmesh", *flags]
        self.procs: list[asyncio.subprocess.Process] = []
        self._drains: list[asyncio.Task[None]] = []

    async def start(self, args: list[str], ready: str, timeout: float = READY_TIMEOUT) -> str:
        """Start ``zmesh ARGS`` and return its first stdout line containing ``ready``."""
        proc = await asyncio.create_subprocess_exec(
            *self._cmd, *args, stdout=subprocess.PIPE, start_new_session=True
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        stdout = proc.stdout

        async def scan() -> str:
            while line := await stdout.readline():
                text = line.decode(errors="replace").rstrip()
                if ready in text:
                    return text
            raise ZMeshError(f"`zmesh {args[0]}` exited before it was ready")

        line = await asyncio.wait_for(scan(), timeout)
        self._drains.append(asyncio.ensure_future(self._drain(stdout)))
        return line

    @staticmethod
    async def _drain(stdout: asyncio.StreamReader) -> None:
        while await stdout.readline():
            pass

    async def start_relays(
        self, count: int, base: Path, ready: Callable[[int, str], None] | None = None
    ) -> list[str]:
        """``count`` relays on loopback; the first is an exit that may reach loopback (the
        mesh is the user's own).  The first starts alone, then the others together, each
        bootstrapping from the first; ``ready(index, url)`` is called as each comes up.
        Returns their signaling URLs in index order.  Raises ZMeshError (or TimeoutError)
        if one does not come up; the others then stop starting, and :meth:`stop` ends
        every child already started."""

        async def one(i: int, bootstrap: list[str]) -> str:
            args = ["relay", "--listen", f"127.0.0.1:{free_port()}"]
            args += ["--data", str(base / f"relay-{i}")]
            if i == 0:
                args += ["--exit", "--allow-private-exits"]
            for url in bootstrap:
                args += ["--bootstrap", url]
            url = (await self.start(args, "listening on")).rsplit(" ", 1)[-1]
            if ready is not None:
                ready(i, url)
            return url

        first = await one(0, [])
        try:
            async with asyncio.TaskGroup() as group:
                others = [group.create_task(one(i, [first])) for i in range(1, count)]
        except BaseExceptionGroup as failed:  # the first failure, as a sequential start
            raise failed.exceptions[0] from None
        return [first, *(task.result() for task in others)]

    async def wait_any(self) -> None:
        """Return when any child exits."""
        waits = [asyncio.ensure_future(p.wait()) for p in self.procs]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def stop(self) -> None:
        """SIGTERM every child's process group; SIGKILL what is still there after
        :data:`STOP_TIMEOUT` (one deadline for all of them)."""
        for task in self._drains:
            task.cancel()
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in self.procs]
        if waits:
            await asyncio.wait(waits, timeout=STOP_TIMEOUT)
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        await asyncio.gather(*waits)
