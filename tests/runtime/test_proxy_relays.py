"""Every node relays (D22): a ``zmesh proxy`` carries another client's circuit.

Real processes on loopback: an exit relay, one more relay and two proxies.  The second
proxy needs three relays for a path and only two ``zmesh relay`` processes exist, so each
of its circuits runs through the first proxy; a verified download shows that proxy
forwarding the cells, and its ``--log-hops`` line shows the hop it served.  Flooding is
off (D46): the proxies find each other through the DHT.
"""

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from netmesh import (
    READY_TIMEOUT,
    FileServer,
    Proc,
    _read_line,
    curl,
    file_server,
    free_port,
    start,
    start_relay,
    stop,
)

from zmesh.identity import Flags
from zmesh.runtime.daemon import relay_config


def test_a_proxy_runs_with_a_relays_config_and_caps() -> None:
    """``zmesh proxy`` and ``zmesh relay`` share ``relay_config``: same flags (but EXIT),
    same link caps, so neither their descriptors nor their limits tell them apart."""
    proxy = relay_config()
    relay = relay_config(addresses=("http://127.0.0.1:1",))
    exit_relay = relay_config(Flags.EXIT, ("http://127.0.0.1:2",))
    assert proxy.flags == relay.flags == Flags.RELAY
    assert exit_relay.flags == Flags.RELAY | Flags.EXIT
    for config in (relay, exit_relay):
        assert config.max_inbound_links == proxy.max_inbound_links
        assert config.max_links == proxy.max_links
        assert config.auto_consume == proxy.auto_consume


def _start_proxy(tmp: Path, name: str, bootstrap: list[str], *extra: str) -> tuple[Proc, int]:
    port = free_port()
    args = ["proxy", "--socks", f"127.0.0.1:{port}", "--data", str(tmp / name), *extra]
    for url in bootstrap:
        args += ["--bootstrap", url]
    return start(args, tmp / f"{name}.log", name), port


def _wait_ready(proc: Proc) -> None:
    line = _read_line(proc.popen, r"SOCKS5 proxy ready", READY_TIMEOUT)
    proc.node_prefix = line.split()[2].rstrip(":")


@pytest.fixture
def server() -> Iterator[FileServer]:
    with file_server(1_000_000) as s:
        yield s


@pytest.mark.slow
def test_a_proxy_forwards_a_circuit_for_another_client(tmp_path: Path, server: FileServer) -> None:
    started: list[Proc] = []
    try:
        exit_relay = start_relay(tmp_path, "exit", [], exit_=True)
        started.append(exit_relay)
        relay = start_relay(tmp_path, "relay", [exit_relay.url])
        started.append(relay)
        urls = [exit_relay.url, relay.url]
        # A proxy is ready when it can draw a 3-hop path: each has one only by knowing
        # the other proxy as a relay, so they start together.  A proxy has no signaling
        # URL, and gossip is off: others find it by DHT lookups and reach it by signaling
        # through the relay that named it (D46).
        helper, _ = _start_proxy(tmp_path, "helper", urls, "--log-hops")
        started.append(helper)
        client, socks_port = _start_proxy(tmp_path, "client", urls)
        started.append(client)
        _wait_ready(helper)
        _wait_ready(client)

        code, body, _ = curl(socks_port, server.url, timeout=60)
        assert code == 0
        assert hashlib.sha256(body).hexdigest() == server.sha256

        paths = re.findall(r"event=circuit_built build_ms=\S+ path=(\S+)", client.log_text())
        assert paths
        for path in paths:
            hops = path.split(",")
            assert len(hops) == 3 and any(helper.node_prefix.startswith(h) for h in hops)
        hops_served = re.findall(
            r"circuit event=hop predecessor=(\w+) successor=(\w+)", helper.log_text()
        )
        peers = {client.node_prefix[:8], relay.node_prefix[:8], exit_relay.node_prefix[:8]}
        assert hops_served
        assert all(p[:8] in peers and s[:8] in peers for p, s in hops_served)
        # it relayed, and stayed a client of nobody: no exit traffic left the helper
        assert "exit event=connected" not in helper.log_text()
    finally:
        for proc in reversed(started):
            stop(proc)
