"""Trace where the first byte on an open circuit goes: per hop, per process (issue 12, item 4).

``zmesh up --relays 4`` runs with a tracer in every process: each ``zmesh`` interpreter
imports the ``sitecustomize`` this script writes into a temporary directory (put on
``PYTHONPATH``), which wraps five points of the runtime and records a monotonic time
(``CLOCK_MONOTONIC``, one clock for every process on the machine) at each:

* ``rx``: a message reaches Python on libdatachannel's thread (``WebRTCTransport``);
* ``drain``: the event loop takes the held messages (``DataChannel._drain``);
* ``call``: one driver input (``AsyncNode.call``: the node's work and its sends) and
  how long it took;
* ``cell``: a session cell built, with its frames (``Session.cells_to_send``);
* ``tx``: a message handed to libdatachannel (``WebRTCTransport._transmit``).

The script then times first bytes on an open circuit (SOCKS connect and a tiny GET, as
``bench/vs_tor.py``), ``GAP`` idle before each, and prints:

* per process, the medians of rx -> drain (the hand-off from libdatachannel's thread to
  the event loop) and of a ``call`` that handled a received message (the node's work,
  sends included);
* the median time from a ``tx`` to the next ``rx`` of a message of the same size in
  another process (the transport: libdatachannel, DTLS, SCTP and loopback, both ends);
* the cells each request made, by their frames;
* the timeline of the last sample, every event in order (``--timeline``: of every one).

The tracer is for measuring only: it wraps private methods, so a rename in the runtime
makes this script fail loudly (it checks that every process recorded events).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import vs_tor
from _harness import note, print_table
from capture import descendants

TRACER = r"""
import atexit, os, signal, sys, threading, time
OUT = os.environ.get("ZMESH_LATENCY_TRACE")
if OUT and "zmesh" in " ".join(getattr(sys, "orig_argv", [])):
    EVENTS = []
    mono = time.monotonic

    def dump(*_):
        with open(os.path.join(OUT, f"{os.getpid()}.trace"), "w") as f:
            f.writelines(f"{t:.6f}\t{what}\t{detail}\n" for t, what, detail in EVENTS)

    atexit.register(dump)
    signal.signal(signal.SIGUSR1, dump)

    def install():
        from zmesh.link import transport
        from zmesh.runtime import aio, webrtc
        from zmesh.session import multipath

        t = webrtc.WebRTCTransport
        native_message, transmit = t._native_message, t._transmit

        def _native_message(self, data):
            EVENTS.append((mono(), "rx", len(data)))
            return native_message(self, data)

        def _transmit(self, data):
            EVENTS.append((mono(), "tx", len(data)))
            return transmit(self, data)

        t._native_message, t._transmit = _native_message, _transmit
        drain = transport.DataChannel._drain

        def _drain(self):
            EVENTS.append((mono(), "drain", len(self._inbox)))
            return drain(self)

        transport.DataChannel._drain = _drain
        call = aio.AsyncNode.call

        def _call(self, action):
            start = mono()
            try:
                return call(self, action)
            finally:
                EVENTS.append((start, "call", round((mono() - start) * 1e6)))

        aio.AsyncNode.call = _call
        cells = multipath.Session.cells_to_send

        def cells_to_send(self, now):
            out = cells(self, now)
            for _leg, frames in out:
                names = "+".join(type(f).__name__.removesuffix("Frame") for f in frames)
                EVENTS.append((mono(), "cell", names))
            return out

        multipath.Session.cells_to_send = cells_to_send

    def wait_and_install():  # the runtime imports after site; patch before any link exists
        while "zmesh.runtime.aio" not in sys.modules or "zmesh.runtime.webrtc" not in sys.modules:
            time.sleep(0.01)
        time.sleep(0.05)
        install()

    threading.Thread(target=wait_and_install, daemon=True).start()
"""

Event = tuple[float, str, str]


def role_of(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [a.decode(errors="replace") for a in argv]
    role = next((w for w in words if w in ("relay", "proxy", "up")), "?")
    if role == "relay" and "--exit" in words:
        role = "exit"
    return f"{role}-{pid}"


def read_traces(directory: Path, names: dict[int, str]) -> dict[str, list[Event]]:
    traces: dict[str, list[Event]] = {}
    for pid, name in names.items():
        path = directory / f"{pid}.trace"
        if not path.exists():
            continue
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        traces[name] = [(float(t), what, detail) for t, what, detail in rows]
    return traces


def analyse(
    traces: dict[str, list[Event]], windows: list[tuple[float, float]], timeline: bool
) -> None:
    def within(t: float) -> bool:
        return any(a <= t <= b for a, b in windows)

    handoff: dict[str, list[float]] = defaultdict(list)
    work: dict[str, list[float]] = defaultdict(list)
    cells: Counter[str] = Counter()
    for name, events in traces.items():
        last_rx: float | None = None
        drained = False  # the next call handles what the drain took
        for t, what, detail in events:
            if not within(t):
                continue
            if what == "rx" and last_rx is None:
                last_rx = t
            elif what == "drain" and last_rx is not None:
                handoff[name].append((t - last_rx) * 1e3)
                last_rx, drained = None, True
            elif what == "call" and drained:
                work[name].append(int(detail) / 1e3)
                drained = False
            elif what == "cell":
                cells[detail] += 1
    # the transport: a tx in one process to the next rx of the same size in another
    txs = sorted((t, name, d) for name, ev in traces.items() for t, w, d in ev if w == "tx")
    rxs = sorted((t, name, d) for name, ev in traces.items() for t, w, d in ev if w == "rx")
    crossing: list[float] = []
    j = 0
    for t, name, size in txs:
        if not within(t):
            continue
        while j < len(rxs) and rxs[j][0] < t:
            j += 1
        match = next((r for r in rxs[j : j + 20] if r[1] != name and r[2] == size), None)
        if match is not None and match[0] - t < 0.05:
            crossing.append((match[0] - t) * 1e3)
    rows = [
        [
            name,
            f"{statistics.median(handoff[name]):.3f}" if handoff[name] else "-",
            f"{statistics.median(work[name]):.3f}" if work[name] else "-",
            str(len(handoff[name])),
        ]
        for name in sorted(traces)
    ]
    print("per process (ms, medians over the samples' messages):")
    print_table(["process", "rx -> drain", "call (node + sends)", "messages"], rows)
    if crossing:
        print(
            f"transport, tx -> the next rx of that size elsewhere: median "
            f"{statistics.median(crossing):.3f} ms, p90 "
            f"{sorted(crossing)[int(0.9 * (len(crossing) - 1))]:.3f} ms ({len(crossing)} messages)"
        )
    n = len(windows)
    print(f"session cells built per request (both ends, {n} requests), by their frames:")
    for frames, count in cells.most_common():
        print(f"  {count / n:5.1f}  {frames}")
    for a, b in windows if timeline else windows[-1:]:
        print(f"timeline of a sample ({(b - a) * 1e3:.2f} ms), ms from the SOCKS connect:")
        rows_t = sorted(
            (t, name, what, detail)
            for name, events in traces.items()
            for t, what, detail in events
            if a <= t <= b
        )
        for t, name, what, detail in rows_t:
            print(f"  {(t - a) * 1e3:8.3f}  {name:>14}  {what:<5} {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--samples", type=int, default=10, help="first bytes (10)")
    parser.add_argument("--timeline", action="store_true", help="print every sample's events")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be positive")
    payload = vs_tor.Payload(1000)
    server, http_port = vs_tor.start_http_server(payload)
    with tempfile.TemporaryDirectory(prefix="zmesh-trace-") as tmp:
        root = Path(tmp)
        (root / "site").mkdir()
        (root / "site" / "sitecustomize.py").write_text(TRACER)
        (root / "traces").mkdir()
        env = dict(os.environ, ZMESH_LATENCY_TRACE=str(root / "traces"))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root / "site"), env.get("PYTHONPATH", "")) if p
        )
        (socks,) = vs_tor.free_ports(1)
        argv_up = [*vs_tor.zmesh_argv(), "up", "--relays", "4", "--socks", f"127.0.0.1:{socks}"]
        argv_up += ["--data", str(root / "mesh")]
        note(f"starting {' '.join(argv_up[1:])} with the tracer ...")
        proc = subprocess.Popen(
            argv_up,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        lines: list[str] = []
        assert proc.stdout is not None
        out = proc.stdout
        threading.Thread(
            target=lambda: lines.extend(raw.decode(errors="replace") for raw in out), daemon=True
        ).start()
        try:
            deadline = time.monotonic() + 120
            while not any(vs_tor.READY_LINE in line for line in lines):
                if proc.poll() is not None or time.monotonic() > deadline:
                    note("zmesh up did not come up:\n" + "".join(lines[-20:]))
                    return 1
                time.sleep(0.1)
            user = vs_tor.unique_user("open")
            vs_tor.retry_until(
                "fetching through the exit",
                lambda: vs_tor.fetch_small(socks, user, http_port),
                60.0,
            )
            vs_tor.warm_up(socks, user, http_port)
            windows: list[tuple[float, float]] = []
            samples: list[float] = []
            for i in range(args.samples):
                time.sleep(vs_tor.GAP)
                start = time.monotonic()
                samples.append(vs_tor.first_byte_ms(socks, user, http_port))
                windows.append((start, time.monotonic()))
                note(f"  first byte {i + 1}/{args.samples}: {samples[-1]:.2f} ms")
            names = {pid: role_of(pid) for pid in descendants(proc.pid)}
            for pid in names:
                os.kill(pid, signal.SIGUSR1)
            time.sleep(1.0)
            traces = read_traces(root / "traces", names)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
            server.shutdown()
            server.server_close()
        quiet = [n for n, events in traces.items() if not events and not n.startswith("up")]
        if quiet or not traces:
            note(f"error: no trace events from {quiet or 'any process'} (a runtime rename?)")
            return 1
        print(
            f"first byte on an open circuit: median {statistics.median(samples):.2f} ms "
            f"of {len(samples)} ({min(samples):.2f}-{max(samples):.2f})"
        )
        analyse(traces, windows, args.timeline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
