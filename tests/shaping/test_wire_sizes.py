"""Frame types do not show on the wire (issue 13, item 1): the sizes of the UDP datagrams
that real shaped links put on ``lo`` (libdatachannel's SCTP over DTLS underneath), captured
while a `constant`-shaped ``zmesh up`` sits idle, while it builds circuits and opens
streams, and while it carries a download, are drawn from one distribution.

Unshaped, a circuit's setup shows sizes that idle links never send (CREATE, CREATED,
DESTROY: D53's 201, 209 and 217 B); shaped, every phase sends the same few sizes.  Needs
root (a packet socket on ``lo``, as ``bench/capture.py`` uses).
"""

import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from netmesh import READY_TIMEOUT, _read_line, curl, file_server, free_port, start, stop

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from capture import Capture, ks, watch_ports

MAX_KS = 0.05  # largest gap between two phases' size distributions (D53 measured 0.000)
MAX_NEW = 0.01  # share of a phase's datagrams of a size never seen while idle


def _new_sizes(phase: list[int], idle: list[int]) -> float:
    seen = set(idle)
    return sum(1 for size in phase if size not in seen) / len(phase)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="a packet socket on lo needs root")
def test_setup_transfer_and_idle_send_the_same_datagram_sizes(tmp_path: Path) -> None:
    socks = free_port()
    args = ["up", "--relays", "4", "--socks", f"127.0.0.1:{socks}", "--data", str(tmp_path)]
    up = start(
        [*args, "--web", "off", "--control", "off", "--shape", "constant"],
        tmp_path / "up.log",
        "up",
    )
    capture = Capture()
    try:
        _read_line(up.popen, r"self-test: fetched", 3 * READY_TIMEOUT)
        with file_server(300_000) as server:
            assert curl(socks, server.url, user="warm")[0] == 0  # the links are up
            capture.start()
            watch_ports(capture, up.popen.pid, period=0.5)
            time.sleep(1.5)  # the watcher has every port
            t0 = time.monotonic()
            time.sleep(3.0)
            idle = (t0, time.monotonic())
            t0 = time.monotonic()
            for i in range(4):  # new sessions: circuits built, streams opened and closed
                assert curl(socks, server.url + "?small", user=f"fresh{i}")[0] == 0
            setup = (t0, time.monotonic())
            t0 = time.monotonic()
            code, body, _ = curl(socks, server.url, user="bulk")
            transfer = (t0, time.monotonic())
            assert code == 0 and len(body) == 300_000
        capture.stop.set()
        sizes = {
            name: capture.window(*span)
            for name, span in (("idle", idle), ("setup", setup), ("transfer", transfer))
        }
        summary = {name: Counter(s).most_common(6) for name, s in sizes.items()}
        assert all(len(s) > 100 for s in sizes.values()), summary
        for phase in ("setup", "transfer"):
            gap = ks(sizes[phase], sizes["idle"])
            assert gap is not None and gap < MAX_KS, (phase, gap, summary)
            assert _new_sizes(sizes[phase], sizes["idle"]) < MAX_NEW, (phase, summary)
    finally:
        capture.stop.set()
        stop(up)
