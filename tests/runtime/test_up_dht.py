"""``zmesh up --relays 12`` finds its relays through the DHT, with flooding off (issue 9).

Real processes: twelve relays and the SOCKS5 proxy, all with ``NodeConfig.dht`` and gossip
off (:func:`zmesh.runtime.daemon.relay_config`).  Each relay bootstraps from relay 0 and
the proxy from relays 0 and 1 only, so every other relay it knows, it learned through DHT
lookups (and dialled by posting an offer to the signaling URL of the relay's node
record).  curl fetches a file through the proxy over a 3-hop circuit; the proxy's status
says what it knows and how it learned it.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from netmesh import curl, file_server, free_port

from zmesh.dht.sample import SampleConfig
from zmesh.runtime.daemon import PROXY_BOOTSTRAPS

pytestmark = pytest.mark.slow

RELAYS = 12
UP_TIMEOUT = 180.0
MEASURE_S = 20.0  # the window over which the proxy's DHT traffic is measured


def _status(port: int) -> dict[str, Any]:
    """``zmesh up``'s status with its proxy's part: the proxy's fields are null when it did
    not answer ``zmesh up`` within PROXY_STATUS_TIMEOUT (a loaded machine), so ask again."""
    cmd = [sys.executable, "-m", "zmesh", "status", "--control", f"127.0.0.1:{port}", "--json"]
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
        doc: dict[str, Any] = json.loads(done.stdout)
        if doc["discovery"] is not None or time.monotonic() > deadline:
            return doc
        time.sleep(1)


def _pids_under(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_zmesh_up_12_relays_discovers_through_the_dht_and_carries_socks(tmp_path: Path) -> None:
    data, control, socks = tmp_path / "mesh", free_port(), free_port()
    # the page is served too when a bundle is here: that no longer turns flooding on (D46)
    web = f"127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "zmesh", "up", "--relays", str(RELAYS), "--web", web]
    cmd += ["--socks", f"127.0.0.1:{socks}", "--control", f"127.0.0.1:{control}"]
    cmd += ["--data", str(data)]
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + UP_TIMEOUT
        while "Press Ctrl-C" not in out.read_text():
            assert proc.poll() is None, out.read_text() + err.read_text()[-5000:]
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        assert "SHA-256 verified" in out.read_text()  # the self-test, through 3 hops

        with file_server(1_000_000) as server:
            code, body, took = curl(socks, server.url, timeout=60)
        assert code == 0 and hashlib.sha256(body).hexdigest() == server.sha256

        first = _status(control)
        relays = {r["node_id"] for r in first["relays"]}
        assert len(relays) == RELAYS and all(r["alive"] for r in first["relays"])
        found = first["discovery"]
        assert found["gossip"] is False and found["dht"] is True  # flooding was off
        # only the bootstrap relays' descriptors are in the directory (no flooding) ...
        assert found["directory_size"] <= PROXY_BOOTSTRAPS
        # ... the rest came from DHT lookups, into a bounded sample it picks paths from
        assert first["relays_known"] == first["sample_size"]
        assert PROXY_BOOTSTRAPS < first["sample_size"] <= found["sample_slots"]
        assert found["sample_slots"] == SampleConfig().size
        assert found["requests_out"] > 0 and found["dials"]["http"] > 0
        assert set(first["links"]) <= relays  # it dialled relays it was never told of
        assert len(first["links"]) > PROXY_BOOTSTRAPS
        open_ = [c for c in first["circuits"] if c["state"] == "open"]
        assert open_ and all(len(c["path"]) == 3 and set(c["path"]) <= relays for c in open_)
        exit_id = first["relays"][0]["node_id"]
        assert all(c["path"][-1] == exit_id for c in open_)

        time.sleep(MEASURE_S)
        second = _status(control)
        moved = [d["discovery"]["bytes_in"] + d["discovery"]["bytes_out"] for d in (first, second)]
        rate = (moved[1] - moved[0]) / (second["uptime_s"] - first["uptime_s"])
        print(
            f"zmesh up --relays {RELAYS}: the proxy knows {second['relays_known']} relays of "
            f"{RELAYS} (sample {second['sample_size']}/{found['sample_slots']}, directory "
            f"{second['discovery']['directory_size']}), {len(second['links'])} links, "
            f"curl 1 MB in {took:.2f} s; DHT traffic {second['discovery']['bytes_per_s']:.0f} "
            f"B/s since start, {rate:.0f} B/s over the last {MEASURE_S:.0f} s"
        )

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert out.read_text().rstrip().endswith("zmesh up: stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _pids_under(str(data)):
            os.killpg(pid, signal.SIGKILL)
