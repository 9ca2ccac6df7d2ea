"""Child zMesh processes on this machine (``zmesh up``, the harness): start, wait, stop."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


Process = asyncio.subprocess.Process


@dataclass(frozen=True, slots=True)
class RelayChild:
    """A relay :meth:`LocalProcesses.start_relays` started.  ``node_id`` is the hex id its
    ready line printed (None if that line carried none)."""

    index: int
    url: str
    node_id: str | None
    process: Process
    exit: bool

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


def ready_node_id(line: str) -> str | None:
    """The node id (hex) a relay's ready line ``zmesh [exit ]relay ID listening on URL``
    names, or None."""
    words = line.partition(" listening on ")[0].split()
    if len(words) < 3 or words[0] != "zmesh":
        return None
    try:
        return bytes.fromhex(words[-1]).hex() or None
    except ValueError:
        return None


class LocalProcesses:
    """``python -m zmesh`` children, each in its own session, stopped together.

    Their stdout is read until a readiness line, then drained in the background so a
    chatty child never blocks on a full pipe.
    """

    def __init__(self, verbosity: int = 0, relay_args: Sequence[str] = ()) -> None:
        flags = ["-" + "v" * verbosity] if verbosity else []
        self._cmd = [sys.executable, "-m", "zmesh", *flags]
        self._relay_args = list(relay_args)  # added to every `zmesh relay` started
        self.procs: list[Process] = []
        self.relays: list[RelayChild] = []  # as they come up, by start_relays
        self._drains: list[asyncio.Task[None]] = []

    async def start(self, args: list[str], ready: str, timeout: float = READY_TIMEOUT) -> str:
        """Start ``zmesh ARGS`` and return its first stdout line containing ``ready``."""
        return (await self.start_process(args, ready, timeout))[1]

    async def start_process(
        self, args: list[str], ready: str, timeout: float = READY_TIMEOUT
    ) -> tuple[Process, str]:
        """As :meth:`start`, and the process too.  ZMeshError if it exits before it is
        ready, TimeoutError if it is not ready within ``timeout`` seconds."""
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
        return proc, line

    @staticmethod
    async def _drain(stdout: asyncio.StreamReader) -> None:
        while await stdout.readline():
            pass

    async def start_relays(
        self,
        count: int,
        base: Path,
        ready: Callable[[int, str], None] | None = None,
    ) -> list[str]:
        """``count`` relays on loopback; the first is an exit that may reach loopback (the
        mesh is the user's own).  The first starts alone, then the others together, each
        bootstrapping from the first (the DHT finds the rest); ``ready(index, url)`` is
        called as each comes up.
        Returns their signaling URLs in index order.  Raises ZMeshError (or TimeoutError)
        if one does not come up; the others then stop starting, and :meth:`stop` ends
        every child already started.  Each relay is added to :attr:`relays` as it comes up."""

        async def one(i: int, bootstrap: list[str]) -> str:
            args = ["relay", "--listen", f"127.0.0.1:{free_port()}"]
            args += ["--data", str(base / f"relay-{i}"), *self._relay_args]
            if i == 0:
                args += ["--exit", "--allow-private-exits"]
            for url in bootstrap:
                args += ["--bootstrap", url]
            proc, line = await self.start_process(args, "listening on")
            url = line.rsplit(" ", 1)[-1]
            self.relays.append(RelayChild(i, url, ready_node_id(line), proc, i == 0))
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

    async def watch(self, exited: Callable[[Process], None]) -> None:
        """Call ``exited(process)`` as each child started so far exits; return when all
        have (cancel it to stop watching, before :meth:`stop`)."""
        waits = {asyncio.ensure_future(p.wait()): p for p in self.procs}
        try:
            while waits:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exited(waits.pop(task))
        finally:
            for task in waits:
                task.cancel()

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
