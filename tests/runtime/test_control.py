"""The status endpoint and ``zmesh status``: the document, the refusals, the client, and
a real ``zmesh up`` that keeps running when a relay is killed."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netmesh import free_port

from zmesh.cli import build_parser
from zmesh.errors import ZMeshError
from zmesh.identity import Identity
from zmesh.link.connection import LinkStatus
from zmesh.node import Node
from zmesh.runtime import control, webrtc
from zmesh.runtime.aio import AsyncNode, wall_clock
from zmesh.runtime.control import (
    DEFAULT_CONTROL,
    MAX_CONNECTIONS,
    CircuitInfo,
    ControlServer,
    Document,
    RelayInfo,
    fetch_status,
    format_status,
    is_local_name,
    start_control,
    status_document,
    up_document,
)
from zmesh.runtime.daemon import relay_config
from zmesh.runtime.entropy import SystemRng
from zmesh.runtime.http import MAX_HEAD, ResponseError
from zmesh.runtime.processes import ready_node_id
from zmesh.runtime.proxy import SocksProxy

A, B, C, D = (bytes([i]) * 32 for i in (0xA1, 0xB2, 0xC3, 0xD4))


def _relays() -> list[RelayInfo]:
    return [
        RelayInfo(1, B.hex(), 101, False, "http://127.0.0.1:2", False),
        RelayInfo(0, A.hex(), 100, True, "http://127.0.0.1:1", True),
    ]


def _link_health() -> list[LinkStatus]:
    return [
        LinkStatus(C, None, 0.0, 0.123, 2.04),
        LinkStatus(A, 0.01234, 1 / 3, 1234.5678, 3725.0),
    ]


def _circuits() -> list[CircuitInfo]:
    return [
        CircuitInfo(9, (B, C, A), "retired", 1),
        CircuitInfo(3, (C, D, A), "open", 0, rtt_ms=41.5),
    ]


# -- the document -------------------------------------------------------------------------
def test_the_document_has_full_ids_relays_by_index_and_circuits_by_id() -> None:
    doc = status_document(
        role="proxy",
        uptime=12.345,
        node_id=D,
        links=[C, A, C],
        link_health=_link_health(),
        relays_known=4,
        relayed_circuits=2,
        streams_waiting=1,
        circuits=_circuits(),
        relays=_relays(),
    )
    assert doc == {
        "version": 1,
        "role": "proxy",
        "uptime_s": 12.3,
        "node_id": D.hex(),
        "links": [A.hex(), C.hex()],  # sorted, each peer once
        "link_health": [  # by peer
            {"peer": A.hex(), "rtt_ms": 12.3, "loss": 0.333, "phi": 1234.57, "age_s": 3725.0},
            {"peer": C.hex(), "rtt_ms": None, "loss": 0.0, "phi": 0.12, "age_s": 2.0},
        ],
        "relays_known": 4,
        "sample_size": 0,
        "discovery": None,
        "relayed_circuits": 2,
        "streams_waiting": 1,
        "guards_per_client": 0,
        "relays": [
            {
                "index": 0,
                "node_id": A.hex(),
                "pid": 100,
                "exit": True,
                "url": "http://127.0.0.1:1",
                "alive": True,
            },
            {
                "index": 1,
                "node_id": B.hex(),
                "pid": 101,
                "exit": False,
                "url": "http://127.0.0.1:2",
                "alive": False,
            },
        ],
        "circuits": [
            {
                "id": 3,
                "path": [C.hex(), D.hex(), A.hex()],
                "state": "open",
                "streams": 0,
                "rtt_ms": 41.5,
                "phi": None,
                "session": None,
            },
            {
                "id": 9,
                "path": [B.hex(), C.hex(), A.hex()],
                "state": "retired",
                "streams": 1,
                "rtt_ms": None,
                "phi": None,
                "session": None,
            },
        ],
        "circuits_total": 2,
        "sessions": [],
    }
    assert json.loads(json.dumps(doc)) == doc


def test_the_document_lists_at_most_max_listed_circuits_and_counts_them_all() -> None:
    many = [CircuitInfo(i, (A, B, C), "open", 0) for i in range(control.MAX_LISTED + 5, 0, -1)]
    doc = status_document(role="proxy", uptime=0, node_id=None, circuits=many)
    assert len(doc["circuits"]) == control.MAX_LISTED
    assert doc["circuits_total"] == control.MAX_LISTED + 5
    assert doc["circuits"][0]["id"] == 1 and doc["node_id"] is None


def test_up_document_takes_the_proxys_node_and_circuits_and_adds_its_relays() -> None:
    proxy_doc = status_document(
        role="proxy", uptime=3, node_id=D, links=[A], circuits=_circuits()
    ) | {"role": "ignored", "relays": ["ignored"], "extra": 1}
    doc = up_document(
        uptime=5, relays=_relays(), proxy_pid=7, proxy_alive=True, proxy_doc=proxy_doc
    )
    assert doc["role"] == "up" and doc["uptime_s"] == 5
    assert doc["node_id"] == D.hex() and doc["links"] == [A.hex()]
    assert [c["id"] for c in doc["circuits"]] == [3, 9]
    assert [r["index"] for r in doc["relays"]] == [0, 1] and "extra" not in doc
    assert doc["proxy"] == {"pid": 7, "alive": True, "answered": True}
    silent = up_document(uptime=5, relays=[], proxy_pid=None, proxy_alive=False, proxy_doc=None)
    assert silent["circuits"] == [] and silent["node_id"] is None
    assert silent["proxy"] == {"pid": None, "alive": False, "answered": False}


def test_format_status_prints_tables_with_short_ids() -> None:
    sessions = [
        {
            "id": 1,
            "streams": 2,
            "bytes_in": 10,
            "bytes_out": 5,
            "legs": [3, 9],
            "failovers": 1,
            "longest_stall_ms": 212.4,
        }
    ]
    doc = up_document(
        uptime=75,
        relays=_relays(),
        proxy_pid=7,
        proxy_alive=True,
        proxy_doc=status_document(
            role="proxy",
            uptime=3,
            node_id=D,
            link_health=_link_health(),
            circuits=_circuits(),
            sessions=sessions,
        ),
    )
    text = format_status(doc)
    assert text.startswith(f"zmesh up: node {D.hex()[:16]}, up 1m15s")
    assert "Relays: 2 (1 alive)" in text and "Circuits: 2" in text and "Sessions: 1" in text
    assert f"{C.hex()[:8]} > {D.hex()[:8]} > {A.hex()[:8]}" in text
    assert "42 ms" in text and "212 ms" in text and "3,9" in text
    assert "Links: 2" in text and "33%" in text and "1234.6" in text and "1h02m" in text
    assert D.hex() not in text  # whole ids only in --json
    with pytest.raises(ZMeshError, match="malformed"):
        format_status({"role": "up", "uptime_s": 1, "relays": [{"index": 0}]})
    with pytest.raises(ZMeshError, match="malformed"):
        format_status({"uptime_s": "soon"})


def test_ready_node_id_reads_a_relays_ready_line() -> None:
    assert ready_node_id(f"zmesh relay {A.hex()} listening on http://127.0.0.1:1") == A.hex()
    assert ready_node_id(f"zmesh exit relay {B.hex()} listening on http://h:1") == B.hex()
    assert ready_node_id("zmesh relay listening on http://h:1") is None
    assert ready_node_id("zmesh relay zz listening on http://h:1") is None
    assert ready_node_id("something else listening on x") is None


def test_the_proxys_own_status_names_its_node() -> None:
    async def scenario() -> Document:
        rng = SystemRng()
        node = Node(Identity.generate(rng), rng, wall_clock(), relay_config())
        driver = AsyncNode(node, rtc=webrtc)
        try:
            return SocksProxy(driver).status()
        finally:
            await driver.close()

    doc = asyncio.run(scenario())
    assert doc["role"] == "proxy" and len(doc["node_id"]) == 64
    assert doc["circuits"] == [] and doc["links"] == [] and doc["relays"] == []
    assert doc["link_health"] == []
    # a native node finds relays through the DHT, floods nothing, and says so (D46)
    assert doc["relays_known"] == doc["sample_size"] == 0
    found = doc["discovery"]
    assert found["gossip"] is False and found["dht"] is True
    assert found["sample_slots"] == 64 and found["directory_size"] == 0
    assert found["dht_table"] == 0 and found["bytes_in"] == found["bytes_out"] == 0
    assert found["dials"] == {"http": 0, "mesh": 0, "failed": 0}
    assert "relays known (DHT sample, no gossip)" in control.format_status(doc)


# -- the server ---------------------------------------------------------------------------
async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


async def _snapshot() -> Document:
    return status_document(role="proxy", uptime=1, node_id=A, circuits=_circuits())


def _get(path: str = "/status", method: str = "GET", *fields: str, host: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *fields]
    if host != "none":
        lines.append(f"Host: {host or '127.0.0.1'}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_serves_get_status_to_local_tools_and_refuses_everything_else() -> None:
    async def scenario() -> None:
        server = ControlServer(_snapshot)
        port = await server.start("127.0.0.1", 0)
        try:
            status, headers, body = await _exchange(port, _get())
            assert status == 200 and headers["content-type"] == "application/json"
            assert not any(name.startswith("access-control") for name in headers)
            assert json.loads(body)["circuits"][0]["path"] == [C.hex(), D.hex(), A.hex()]
            allowed = [
                _get(host=f"localhost:{port}"),
                _get(host=f"[::1]:{port}"),
                _get(host="127.0.0.7"),
                _get("/status", "GET", f"Origin: http://127.0.0.1:{port}"),
                _get("/status", "GET", f"Origin: http://localhost:{port}"),
                b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
            ]
            for raw in allowed:
                assert (await _exchange(port, raw))[0] == 200, raw
            refused = {
                _get(host=f"evil.example:{port}"): 403,  # DNS rebinding
                _get(host=f"127.0.0.1.evil.example:{port}"): 403,
                b"GET /status HTTP/1.0\r\n\r\n": 403,  # no Host at all
                _get("/status", "GET", "Origin: http://evil.example"): 403,
                _get("/status", "GET", "Origin: null"): 403,
                _get("/status", "GET", f"Origin: https://127.0.0.1:{port}"): 403,
                _get("/status", "GET", "Origin: http://127.0.0.1:1"): 403,  # another port
                _get("/status", "OPTIONS", "Origin: http://evil.example"): 403,  # preflight
                _get("/status", "POST", "Content-Length: 0"): 405,
                _get("/status", "HEAD"): 405,
                _get("/"): 404,
                _get("/status/x"): 404,
                _get("/status", "GET", "Content-Length: 1") + b"x": 413,
                _get("/status", "GET", "X: " + "a" * MAX_HEAD): 431,
                b"garbage\r\n\r\n": 400,
            }
            for raw, expected in refused.items():
                status, headers, body = await _exchange(port, raw)
                assert status == expected, (raw[:60], status)
                assert not any(name.startswith("access-control") for name in headers)
                assert b"circuits" not in body
            assert (await _exchange(port, _get("/status", "PUT")))[1]["allow"] == "GET"
            assert server.refused == len(refused) + 1
        finally:
            await server.close()

    asyncio.run(scenario())


def test_a_server_on_another_address_accepts_that_address_as_host() -> None:
    request = control.Request("GET", "/status", b"", ((b"host", b"192.0.2.7:9051"),))
    control.check_request(request, "192.0.2.7", 9051)
    with pytest.raises(control.HttpError) as refused:
        control.check_request(request, "127.0.0.1", 9051)
    assert refused.value.status == 403


@given(st.text(max_size=40), st.text(max_size=40))
def test_any_host_or_origin_is_served_only_when_it_names_this_machine(
    host: str, origin: str
) -> None:
    fields = ((b"host", host.encode()), (b"origin", origin.encode()))
    request = control.Request("GET", "/status", b"", fields)
    try:
        control.check_request(request, "127.0.0.1", 9051)
    except control.HttpError as exc:
        assert exc.status == 403
        return
    assert is_local_name(control._host_name(host), "127.0.0.1")
    assert origin.startswith("http://") and origin.endswith(":9051")


def test_connections_beyond_the_cap_get_503() -> None:
    async def scenario() -> None:
        server = ControlServer(_snapshot)
        port = await server.start("127.0.0.1", 0)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        try:
            await asyncio.sleep(0.1)  # let the server take them (real sockets, no protocol)
            status, _, _ = await _exchange(port, b"")  # answered at once, before a request
            assert status == 503
        finally:
            for _, writer in idle:
                writer.close()
            await server.close()

    asyncio.run(scenario())


# -- the client ---------------------------------------------------------------------------
def test_fetch_status_reads_the_document_and_says_what_went_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        server, note = await start_control("127.0.0.1:0", _snapshot)
        assert server is not None and f"--control 127.0.0.1:{server.port}" in note
        try:
            doc = await fetch_status("127.0.0.1", server.port)
            assert doc == await _snapshot()
            taken, note = await start_control(f"127.0.0.1:{server.port}", _snapshot)
            assert taken is None and note.startswith("Status: not served (127.0.0.1:")
            monkeypatch.setattr(control, "MAX_DOCUMENT", 100)
            with pytest.raises(ResponseError, match="over 100 bytes"):
                await fetch_status("127.0.0.1", server.port)
        finally:
            await server.close()
        with pytest.raises(OSError):
            await fetch_status("127.0.0.1", server.port)

    asyncio.run(scenario())


def test_fetch_status_refuses_what_is_not_a_json_object() -> None:
    async def scenario(body: Any) -> None:
        async def snapshot() -> Document:
            return body  # type: ignore[no-any-return]

        server = ControlServer(snapshot)
        port = await server.start("127.0.0.1", 0)
        try:
            await fetch_status("127.0.0.1", port)
        finally:
            await server.close()

    with pytest.raises(ResponseError, match="not a JSON object"):
        asyncio.run(scenario([1, 2]))
    with pytest.raises(ResponseError, match="answered 500"):
        asyncio.run(scenario({1j}))  # not serializable: the server's 500


def test_the_cli_defaults_and_a_status_with_nothing_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert parser.parse_args(["status"]).control == DEFAULT_CONTROL
    assert parser.parse_args(["up"]).control == DEFAULT_CONTROL
    assert parser.parse_args(["up", "--control", "off"]).control == "off"
    assert parser.parse_args(["proxy"]).control == "off"
    assert parser.parse_args(["proxy", "--control"]).control == DEFAULT_CONTROL
    others = {parser.parse_args(["up"]).socks, parser.parse_args(["up"]).web}
    assert DEFAULT_CONTROL not in others
    from zmesh.cli import main

    assert main(["status", "--control", f"127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zmesh status: error: nothing answers on 127.0.0.1:")
    assert err.count("\n") == 1


# -- a real mesh --------------------------------------------------------------------------
def _status(port: int, *extra: str) -> str:
    cmd = [sys.executable, "-m", "zmesh", "status", "--control", f"127.0.0.1:{port}", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


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


@pytest.mark.slow
def test_zmesh_up_shows_its_status_and_survives_a_killed_relay(tmp_path: Path) -> None:
    data, port = tmp_path / "mesh", free_port()
    cmd = [sys.executable, "-m", "zmesh", "up", "--relays", "4", "--web", "off"]
    cmd += ["--socks", "127.0.0.1:0", "--control", f"127.0.0.1:{port}", "--data", str(data)]
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        assert f"zmesh status --control 127.0.0.1:{port}" in out.read_text()
        table = _status(port)
        assert "Relays: 4 (4 alive)" in table, table
        doc = json.loads(_status(port, "--json"))
        assert [r["index"] for r in doc["relays"]] == [0, 1, 2, 3]
        assert all(len(r["node_id"]) == 64 and r["alive"] for r in doc["relays"])
        assert [r["exit"] for r in doc["relays"]] == [True, False, False, False]
        ids = {r["node_id"] for r in doc["relays"]}
        open_ = [c for c in doc["circuits"] if c["state"] == "open"]
        assert open_, doc  # the self-test's
        assert len(open_[0]["path"]) == 3 and set(open_[0]["path"]) <= ids
        assert open_[0]["path"][-1] == doc["relays"][0]["node_id"]  # ends at the exit
        (session,) = doc["sessions"]  # the self-test's, over its legs
        legs = [c["id"] for c in doc["circuits"] if c["session"] == session["id"]]
        assert legs and sorted(session["legs"]) == sorted(legs) and doc["proxy"]["alive"]

        victim = doc["relays"][2]
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            doc = json.loads(_status(port, "--json"))
            if not doc["relays"][2]["alive"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert [r["alive"] for r in doc["relays"]] == [True, True, False, True]
        assert proc.poll() is None
        assert f"relay 2 (pid {victim['pid']}) exited (killed by signal 9)" in err.read_text()
        assert "Relays: 4 (3 alive)" in _status(port)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert out.read_text().rstrip().endswith("zmesh up: stopped")
        assert _pids_under(str(data)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
