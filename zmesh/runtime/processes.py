"""Child zMesh processes on this machine (``zmesh up``, the harness): start, wait, stop."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..errors import ZMeshError

READY_TIMEOUT = 60.0


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

    async def start_relays(self, count: int, base: Path) -> list[str]:
        """``count`` relays on loopback; the first is an exit that may reach loopback (the
        mesh is the user's own).  Returns their signaling URLs."""
        urls: list[str] = []
        for i in range(count):
            args = [
                "relay",
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--data",
                str(base / f"relay-{i}"),
            ]
            if i == 0:
                args += ["--exit", "--allow-private-exits"]
            for url in urls[:1]:
                args += ["--bootstrap", url]
            line = await self.start(args, "listening on")
            urls.append(line.rsplit(" ", 1)[-1])
        return urls

    async def wait_any(self) -> None:
        """Return when any child exits."""
        waits = [asyncio.ensure_future(p.wait()) for p in self.procs]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def stop(self) -> None:
        """SIGTERM every child's process group; SIGKILL what is still there after 10 s."""
        for task in self._drains:
            task.cancel()
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
