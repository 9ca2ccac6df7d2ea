"""``zmesh up --relays 12``, the largest local mesh: it starts, self-tests and stops cleanly.

Real processes: twelve relays (the first an exit, the rest started together once it is
up) and the SOCKS5 proxy, which relays too.
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from netmesh import free_port

pytestmark = pytest.mark.slow

RELAYS = 12
UP_TIMEOUT = 180.0  # measured: 3 to 4 s on a shared 2-core machine


def _children_of(marker: str) -> list[int]:
    """Pids of processes whose command line mentions ``marker`` (the mesh's data dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def test_zmesh_up_with_12_relays_comes_up_self_tests_and_stops(tmp_path: Path) -> None:
    data = tmp_path / "mesh"
    port = free_port()
    cmd = [sys.executable, "-m", "zmesh", "up", "--relays", str(RELAYS), "--web", "off"]
    cmd += ["--socks", f"127.0.0.1:{port}", "--data", str(data)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        while not seen or "Press Ctrl-C" not in seen[-1]:
            line = lines.get(timeout=max(0.0, started + UP_TIMEOUT - time.monotonic()))
            assert line is not None, "\n".join(seen)
            seen.append(line)
        up_after = time.monotonic() - started
        text = "\n".join(seen)
        relay_lines = re.findall(
            r"relay (\d+): (?:exit )?relay listening on \S+ \((\d+)/12 up\)", text
        )
        assert sorted(int(i) for i, _ in relay_lines) == list(range(RELAYS))
        assert [int(n) for _, n in relay_lines] == list(range(1, RELAYS + 1))
        assert "SHA-256 verified" in text
        children = [pid for pid in _children_of(str(data)) if pid != proc.pid]
        assert len(children) == RELAYS + 1  # the relays and the proxy
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        stopped_after = time.monotonic() - started - up_after
        while (line := lines.get(timeout=10)) is not None:
            seen.append(line)
        assert seen[-1] == "zmesh up: stopped"
        assert _children_of(str(data)) == []
        print(
            f"zmesh up --relays {RELAYS}: up in {up_after:.1f} s, stopped in {stopped_after:.1f} s"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _children_of(str(data)):
            os.killpg(pid, signal.SIGKILL)
        stdout.close()
