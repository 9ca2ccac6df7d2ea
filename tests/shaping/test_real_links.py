"""Shaped links between real processes on loopback (libdatachannel underneath): relays
shaping `constant`, a proxy shaping `video`, a download through a 3-hop circuit."""

import hashlib
import re
from pathlib import Path

import pytest
from netmesh import READY_TIMEOUT, Proc, _read_line, curl, file_server, free_port, start, stop


def _relay(tmp: Path, name: str, bootstrap: list[str], *extra: str) -> Proc:
    args = ["relay", "--listen", "127.0.0.1:0", "--data", str(tmp / name), *extra]
    for url in bootstrap:
        args += ["--bootstrap", url]
    proc = start(args, tmp / f"{name}.log", name)
    line = _read_line(proc.popen, r"listening on http://", READY_TIMEOUT)
    proc.url = line.rsplit(" ", 1)[-1]
    return proc


@pytest.mark.slow
def test_download_over_shaped_links(tmp_path: Path) -> None:
    started: list[Proc] = []
    try:
        shape = ["--shape", "constant"]
        exit_relay = _relay(tmp_path, "exit", [], "--exit", "--allow-private-exits", *shape)
        started.append(exit_relay)
        started += [_relay(tmp_path, f"r{i}", [exit_relay.url], *shape) for i in (1, 2)]
        port = free_port()
        args = ["proxy", "--socks", f"127.0.0.1:{port}", "--data", str(tmp_path / "proxy")]
        args += ["--bootstrap", exit_relay.url, "--shape", "video"]
        proxy = start(args, tmp_path / "proxy.log", "proxy")
        started.append(proxy)
        _read_line(proxy.popen, r"SOCKS5 proxy ready", READY_TIMEOUT)
        with file_server(500_000) as server:
            code, body, _ = curl(port, server.url, timeout=120)
        assert code == 0
        assert hashlib.sha256(body).hexdigest() == server.sha256
        assert re.search(r"event=circuit_built", proxy.log_text())
        for proc in started:  # no link closed for a malformed (shaped) message
            assert "unshaped" not in proc.log_text()
            assert "shaped message" not in proc.log_text()
    finally:
        for proc in reversed(started):
            stop(proc)
