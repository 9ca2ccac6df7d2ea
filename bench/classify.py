"""The judge: can a traffic classifier tell zMesh links from real WebRTC video calls?

It captures, on loopback, labelled UDP flows of several kinds, cuts each flow into windows
of fixed length, computes features per window (``bench/classify_features.py``: the
Barradas et al. 2018 flow features, and the protocol view an observer has of DTLS, RTP
and STUN headers) and trains XGBoost with stratified 10-fold cross-validation.  It reports
the ROC AUC (mean over folds, the folds' spread, all out-of-fold scores pooled) and the
true positive rate at 2% false positives, for each kind against the calls, on the
``flow`` features and on ``all`` features.  AUC 0.5: the classifier cannot tell; 1.0: it
always can.

Kinds (``--kinds``):

* ``call``: a WebRTC video call between two tabs of headless Chromium
  (``bench/call_page.html``: getUserMedia with ``--use-fake-device-for-media-stream
  --use-fake-ui-for-media-stream``, camera and microphone both ways, one
  RTCPeerConnection per tab; the offer and answer are passed between the tabs by this
  script).  Each session asks for another resolution (640x480, 1280x720, ...).
* ``plain``: ``zmesh up --relays 4 --shape off``, with a workload through its SOCKS proxy
  that mixes idle spells, web-like page loads (a page and 4-16 objects of 1-200 KB) and
  bulk downloads (1-3 MB).  Every link of the mesh (a data channel each) is a flow.
* ``video``: the same with ``--shape video`` (every node shapes every link).
* ``NAME`` given with ``--extra NAME=COMMAND``: any other transport (the media transport,
  when it exists): COMMAND is started for each session, and the UDP flows of its
  process tree are captured, after ``--warmup`` seconds, for ``--seconds``; it is then
  stopped.  Its windows are compared with the calls like the built-in kinds.

Only windows with at least ``--min-packets`` datagrams count (an idle zMesh link sends a
heartbeat now and then; such a window would be told from a call by its emptiness alone).
Windows of one flow are correlated; a fold can hold windows of a flow whose other windows
trained the model, which favours the classifier (the AUCs are upper bounds on what it
learned, not lower ones); ``--grouped`` keeps every flow's windows in one fold.

Run as root (a packet socket on lo)::

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/classify.py
    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/classify.py --quick --kinds plain,call

The exit status is non-zero only on errors.  Progress goes to stderr, results to stdout
(``--json FILE`` writes them as JSON too; ``--json -``: JSON on stdout instead of the
table).
"""

import argparse
import contextlib
import functools
import http.server
import io
import json
import os
import random
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _harness import note, print_table
from capture import Capture, watch_ports
from playwright.sync_api import sync_playwright
from vs_tor import (
    HOST,
    BenchError,
    Supervisor,
    ZmeshProc,
    socks_open,
    tail,
    unique_user,
    zmesh_argv,
)

from zmesh.runtime.harness import CHROMIUM, CHROMIUM_ARGS

try:
    import numpy as np
    from classify_features import FEATURE_SETS, Result, Window, cross_validate
except ImportError as missing:  # numpy, scikit-learn, xgboost: the bench extra
    raise SystemExit(
        f"bench/classify.py needs the bench extra (pip install -e '.[bench]'): {missing}"
    ) from missing

BENCH = Path(__file__).resolve().parent
CALL_PAGE = "call_page.html"
BASELINE = "call"
BUILT_IN = ("plain", "video", "call")
RESOLUTIONS = ((640, 480), (640, 480), (1280, 720), (1280, 720), (960, 540), (960, 540))


@dataclass
class Flow:
    """One captured UDP flow: (time, payload length, source port, first payload bytes)."""

    kind: str
    session: str
    ports: tuple[int, int]
    packets: list[tuple[float, int, int, bytes]]
    start: float  # the capture window this flow was seen in
    end: float


@dataclass
class Settings:
    seconds: float
    warmup: float
    sessions: dict[str, int]
    window: float
    min_packets: int
    seed: int
    extra: dict[str, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Progress on stderr


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", 0)

    def bar(self, label: str, done: float, total: float) -> None:
        share = min(max(done / total, 0.0), 1.0) if total else 1.0
        filled = round(share * 30)
        line = f"{label:<34} [{'#' * filled}{'.' * (30 - filled)}] {share * 100:3.0f}%"
        if self.tty:
            print(f"\r{line}", end="" if share < 1 else "\n", file=sys.stderr, flush=True)
        elif share >= 1 or (label, int(share * 4)) != self.last:  # a line per quarter
            print(line, file=sys.stderr, flush=True)
        self.last = (label, int(share * 4))

    def wait(self, label: str, seconds: float, check: Callable[[], None]) -> None:
        """Sleep ``seconds`` with a bar; ``check`` raises if what runs has failed."""
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            self.bar(label, elapsed, seconds)
            check()
            time.sleep(min(1.0, seconds - elapsed))
        self.bar(label, seconds, seconds)


# --------------------------------------------------------------------------------------
# Capturing: the mesh with its workload, the call, an extra command


def serve_sizes() -> tuple[http.server.ThreadingHTTPServer, int]:
    """An HTTP server on loopback: ``GET /N`` answers N pseudo-random bytes (N <= 8 MB)."""
    blob = os.urandom(8 << 20)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            try:
                n = int(self.path.lstrip("/"))
            except ValueError:
                n = -1
            if not 0 <= n <= len(blob):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(blob[:n])

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server, server.server_address[1]


def fetch(proxy: int, user: str, http_port: int, n: int) -> None:
    """GET ``n`` bytes through the SOCKS proxy; raises BenchError if fewer arrive."""
    with socks_open(proxy, user, http_port) as sock:
        sock.sendall(f"GET /{n} HTTP/1.0\r\nHost: {HOST}:{http_port}\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(1 << 16):
            data += chunk
    body = bytes(data).partition(b"\r\n\r\n")[2]
    if len(body) != n:
        raise BenchError(f"asked for {n} bytes through the proxy, got {len(body)}")


@dataclass
class Workload:
    """Idle spells, web-like page loads and bulk downloads through the proxy, until stopped."""

    proxy: int
    http_port: int
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    counts: dict[str, int] = field(default_factory=lambda: {"idle": 0, "page": 0, "bulk": 0})
    bytes: int = 0
    errors: int = 0
    last_error: str = ""

    def run(self) -> None:
        sites = [unique_user("site") for _ in range(4)]
        while not self.stop.is_set():
            roll = self.rng.random()
            try:
                if roll < 0.3:
                    self.counts["idle"] += 1
                    self.stop.wait(self.rng.uniform(0.5, 4.0))
                elif roll < 0.8:
                    self.page(
                        self.rng.choice(sites) if self.rng.random() < 0.8 else unique_user("new")
                    )
                else:
                    self.counts["bulk"] += 1
                    n = self.rng.randrange(1 << 20, 3 << 20)
                    fetch(self.proxy, unique_user("bulk"), self.http_port, n)
                    self.bytes += n
            except (BenchError, OSError) as exc:
                self.errors += 1
                self.last_error = str(exc)
                self.stop.wait(1.0)

    def page(self, user: str) -> None:
        """A page and its objects (sizes log-uniform, 1-200 KB), then reading time."""
        self.counts["page"] += 1
        sizes = [self.rng.randrange(20_000, 80_000)]
        sizes += [round(1000 * 200 ** self.rng.random()) for _ in range(self.rng.randint(4, 16))]
        for n in sizes:
            if self.stop.is_set():
                return
            fetch(self.proxy, user, self.http_port, n)
            self.bytes += n
        self.stop.wait(self.rng.uniform(1.0, 5.0))


def capture_mesh(kind: str, session: int, s: Settings, progress: Progress) -> list[Flow]:
    """``zmesh up`` (shaped ``off`` for plain, ``video`` for video) with a workload."""
    shape = {"plain": "off", "video": "video"}[kind]
    supervisor = Supervisor()
    root = Path(tempfile.mkdtemp(prefix=f"zmesh-classify-{kind}-"))
    server, http_port = serve_sizes()
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        socks = probe.getsockname()[1]
    argv = [*zmesh_argv(), "-v", "up", "--relays", "4", "--socks", f"{HOST}:{socks}"]
    argv += ["--data", str(root), "--web", "off", "--control", "off", "--shape", shape]
    capture = Capture(only_ports=True)
    workload = Workload(socks, http_port, random.Random(s.seed * 1000 + session))
    label = f"{kind} {session + 1}/{s.sessions[kind]}"
    try:
        zp = ZmeshProc(supervisor.start("zmesh up", argv, None, pipe=True), root / "zmesh.log")
        threading.Thread(target=zp.pump, name="zmesh-log", daemon=True).start()
        started = time.monotonic()
        while not any(line.startswith("self-test") for _, line in zp.snapshot()):
            if zp.proc.poll() is not None or time.monotonic() - started > 180:
                raise BenchError(f"zmesh up did not get ready:\n{tail(zp.log)}")
            progress.bar(f"{label}: starting zmesh up", time.monotonic() - started, 180)
            time.sleep(0.5)
        progress.bar(f"{label}: starting zmesh up", 1, 1)
        capture.start()
        watch_ports(capture, zp.proc.pid)
        threading.Thread(target=workload.run, name="workload", daemon=True).start()

        def alive() -> None:
            if zp.proc.poll() is not None:
                raise BenchError(f"zmesh up exited:\n{tail(zp.log)}")

        progress.wait(f"{label}: warm-up", s.warmup, alive)
        t0 = time.monotonic()
        progress.wait(f"{label}: capture", s.seconds, alive)
        t1 = time.monotonic()
    finally:
        workload.stop.set()
        capture.stop.set()
        supervisor.stop_all()
        server.shutdown()
    shutil.rmtree(root, ignore_errors=True)  # kept when the run failed: zmesh.log is there
    note(
        f"  {label}: workload {workload.counts}, {workload.bytes / 1e6:.1f} MB fetched, "
        f"{workload.errors} errors" + (f" (last: {workload.last_error})" if workload.errors else "")
    )
    return captured(kind, session, capture, t0, t1)


def serve_bench() -> tuple[http.server.ThreadingHTTPServer, int]:
    """bench/ over HTTP on loopback (a secure context, so getUserMedia works)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        (HOST, 0), functools.partial(Quiet, directory=str(BENCH))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server, server.server_address[1]


def camera_y4m(path: Path, width: int, height: int, seconds: float, seed: int) -> None:
    """A camera-like clip for Chromium's fake camera (``--use-file-for-fake-video-capture``,
    YUV4MPEG2, 4:2:0, 30 frames/s): a still room, a head and shoulders that sway, and sensor
    noise on every pixel of every frame, as a webcam has (the built-in fake camera's
    pattern is noiseless and compresses far better than a camera's picture)."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * 30)
    yy, xx = np.mgrid[0:height, 0:width]
    room = np.where(yy > height * 0.6, 130, 90).astype(np.int16)  # a wall and a desk
    chroma = np.full((height // 2) * (width // 2), 128, dtype=np.uint8).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(frames):
            cx = width * (0.5 + 0.05 * np.sin(n / 37))
            cy = height * (0.45 + 0.03 * np.sin(n / 23))
            r = height * 0.17
            y = room.copy()
            y[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = 170  # the head
            y[(abs(xx - cx) < r * 1.8) & (yy > cy + r * 1.1)] = 60  # the shoulders
            y[(abs(xx - cx) < r * 0.4) & (abs(yy - cy - r * 0.4 - 6 * np.sin(n / 5)) < 6)] = 40
            y += rng.integers(-6, 7, size=y.shape, dtype=np.int16)  # sensor noise
            out.write(b"FRAME\n" + np.clip(y, 0, 255).astype(np.uint8).tobytes() + chroma + chroma)


def capture_call(session: int, s: Settings, progress: Progress) -> list[Flow]:
    """A video call between two tabs of headless Chromium with fake camera and microphone.

    Sessions alternate between Chromium's built-in fake camera (a noiseless animated
    pattern) and a camera-like clip (:func:`camera_y4m`), and cycle through resolutions."""
    width, height = RESOLUTIONS[session % len(RESOLUTIONS)]
    camera = "pattern" if session % 2 == 0 else "clip"
    label = f"call {session + 1}/{s.sessions['call']} ({width}x{height}, {camera})"
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    clip_dir = tempfile.TemporaryDirectory(prefix="zmesh-classify-camera-")
    if camera == "clip":
        clip = Path(clip_dir.name) / "camera.y4m"
        camera_y4m(clip, width, height, 4.0, s.seed * 1000 + session)
        args.append(f"--use-file-for-fake-video-capture={clip}")
    server, port = serve_bench()
    url = f"http://{HOST}:{port}/{CALL_PAGE}"
    capture = Capture(only_ports=True)
    stats: dict[str, dict[str, object]] = {}
    t0 = t1 = 0.0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
            try:
                capture.start()
                watch_ports(capture, os.getpid(), 0.5)  # Chromium runs under this process
                context = browser.new_context()
                caller, callee = context.new_page(), context.new_page()
                caller.goto(url)
                callee.goto(url)
                offer = caller.evaluate(f"offer({width}, {height})")
                answer = callee.evaluate(f"([o]) => answer({width}, {height}, o)", [offer])
                caller.evaluate("([a]) => accept(a)", [answer])

                def connected() -> None:
                    for page in (caller, callee):
                        state = page.evaluate("pc.connectionState")
                        if state in ("failed", "closed"):
                            raise BenchError(f"the call's connection is {state}")

                progress.wait(f"{label}: warm-up", s.warmup, connected)
                t0 = time.monotonic()
                progress.wait(f"{label}: capture", s.seconds, connected)
                t1 = time.monotonic()
                stats = {"caller": caller.evaluate("stats()"), "callee": callee.evaluate("stats()")}
            finally:
                browser.close()
    finally:
        capture.stop.set()
        server.shutdown()
        clip_dir.cleanup()
    for side, st in stats.items():
        if st["framesDecoded"] < 10 * s.seconds or st["audioPackets"] < 10 * s.seconds:
            raise BenchError(f"the call did not carry video and audio ({side}: {st})")
    note(f"  {label}: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return captured("call", session, capture, t0, t1)


def capture_command(kind: str, session: int, s: Settings, progress: Progress) -> list[Flow]:
    """The UDP flows of ``--extra KIND=COMMAND``'s process tree."""
    supervisor = Supervisor()
    log = Path(tempfile.mkdtemp(prefix=f"zmesh-classify-{kind}-")) / "command.log"
    capture = Capture(only_ports=True)
    label = f"{kind} {session + 1}/{s.sessions[kind]}"
    try:
        proc = supervisor.start(kind, s.extra[kind], log)
        capture.start()
        watch_ports(capture, proc.pid)

        def alive() -> None:
            if proc.poll() is not None:
                raise BenchError(f"{kind} exited with status {proc.returncode}:\n{tail(log)}")

        progress.wait(f"{label}: warm-up", s.warmup, alive)
        t0 = time.monotonic()
        progress.wait(f"{label}: capture", s.seconds, alive)
        t1 = time.monotonic()
    finally:
        capture.stop.set()
        supervisor.stop_all()
    shutil.rmtree(log.parent, ignore_errors=True)  # kept when the run failed
    return captured(kind, session, capture, t0, t1)


def captured(kind: str, session: int, capture: Capture, t0: float, t1: float) -> list[Flow]:
    """The flows of one session; raises BenchError if the capture overflowed."""
    if capture.overflow:
        raise BenchError(f"more than {capture.limit} datagrams in one capture: shorten --seconds")
    return [
        Flow(kind, f"{kind}-{session}", ports, packets, t0, t1)
        for ports, packets in capture.flows(t0, t1).items()
    ]


def capture_kind(kind: str, s: Settings, progress: Progress) -> list[Flow]:
    flows: list[Flow] = []
    for session in range(s.sessions[kind]):
        if kind == "call":
            flows += capture_call(session, s, progress)
        elif kind in ("plain", "video"):
            flows += capture_mesh(kind, session, s, progress)
        else:
            flows += capture_command(kind, session, s, progress)
    return flows


# --------------------------------------------------------------------------------------
# Windows; saving and loading captures


def windows(flows: list[Flow], length: float, min_packets: int) -> list[Window]:
    """Each flow cut into windows of ``length`` seconds; windows with fewer than
    ``min_packets`` datagrams are dropped."""
    out: list[Window] = []
    for flow in flows:
        t = np.array([p[0] for p in flow.packets], dtype=np.float64)
        size = np.array([p[1] for p in flow.packets], dtype=np.float64)
        src = np.array([p[2] for p in flow.packets])
        for i in range(int((flow.end - flow.start) // length)):
            lo = flow.start + i * length
            pick = np.flatnonzero((t >= lo) & (t < lo + length))
            if pick.size < min_packets:
                continue
            a, b = flow.ports
            sent_a = size[pick][src[pick] == a].sum()
            heavy = a if sent_a * 2 >= size[pick].sum() else b
            out.append(
                Window(
                    kind=flow.kind,
                    session=flow.session,
                    flow=f"{a}-{b}",
                    length=length,
                    t=t[pick] - lo,
                    size=size[pick],
                    direction=(src[pick] != heavy).astype(np.int8),
                    heads=[flow.packets[j][3] for j in pick],
                )
            )
    return out


def save(path: Path, flows: list[Flow]) -> None:
    """The captured flows as a compressed NumPy archive (``--load`` reads it back)."""
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, f in enumerate(flows):
        meta.append(
            {"kind": f.kind, "session": f.session, "ports": f.ports, "start": f.start, "end": f.end}
        )
        arrays[f"t{i}"] = np.array([p[0] for p in f.packets], dtype=np.float64)
        arrays[f"n{i}"] = np.array([p[1] for p in f.packets], dtype=np.int32)
        arrays[f"s{i}"] = np.array([p[2] for p in f.packets], dtype=np.int32)
        arrays[f"h{i}"] = np.array([p[3].ljust(16, b"\0")[:16] for p in f.packets], dtype="S16")
        arrays[f"l{i}"] = np.array([len(p[3]) for p in f.packets], dtype=np.int8)
    arrays["meta"] = np.array(json.dumps(meta))
    with path.open("wb") as out:
        np.savez_compressed(out, **arrays)


def load(path: Path) -> list[Flow]:
    """Flows saved by :func:`save`; raises ValueError on a file that is not one."""
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
        try:
            meta = json.loads(str(data["meta"]))
            flows = []
            for i, m in enumerate(meta):
                heads = [bytes(h)[:k] for h, k in zip(data[f"h{i}"], data[f"l{i}"], strict=True)]
                packets = list(
                    zip(
                        data[f"t{i}"].tolist(),
                        data[f"n{i}"].tolist(),
                        data[f"s{i}"].tolist(),
                        heads,
                        strict=True,
                    )
                )
                flows.append(
                    Flow(m["kind"], m["session"], tuple(m["ports"]), packets, m["start"], m["end"])
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a capture saved by bench/classify.py: {exc}") from exc
    return flows


# --------------------------------------------------------------------------------------
# Report


def report(results: list[Result], counts: dict[str, int]) -> None:
    print("\nWindows per kind: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    print("ROC AUC of XGBoost telling each kind from the video calls (stratified k-fold CV;")
    print("0.5: cannot tell, 1.0: always can; TPR at 2% FPR from the pooled out-of-fold scores):\n")
    rows = [
        [
            f"{r.positive} vs {r.negative}",
            r.feature_set,
            f"{r.n_positive}/{r.n_negative}",
            f"{r.folds}{' by flow' if r.grouped else ''}",
            f"{r.mean_auc:.3f}",
            f"{np.std(r.fold_auc):.3f}",
            f"{min(r.fold_auc):.3f}-{max(r.fold_auc):.3f}",
            f"{r.pooled_auc:.3f}",
            f"{r.tpr_at_2pct_fpr:.2f}",
        ]
        for r in results
    ]
    print_table(
        [
            "comparison",
            "features",
            "windows",
            "folds",
            "AUC mean",
            "sd",
            "fold range",
            "pooled",
            "TPR@2%",
        ],
        rows,
    )
    print("\nWhat told them apart (top features by total gain, a model on every window):")
    for r in results:
        top = ", ".join(name for name, _ in r.top_features[:4])
        print(f"  {r.positive} vs {r.negative}, {r.feature_set}: {top}")


def parse_extra(text: str) -> tuple[str, list[str]]:
    name, sep, command = text.partition("=")
    if not sep or not name.isidentifier() or name in BUILT_IN or not command.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND with a new NAME, not {text!r}")
    return name, shlex.split(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:4]),
    )
    parser.add_argument(
        "--kinds",
        default="plain,video,call",
        help="comma-separated (default %(default)s; call is the baseline)",
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="capture per session (default %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=10.0,
        help="seconds before each capture (default %(default)s)",
    )
    parser.add_argument("--call-sessions", type=int, default=6, help="calls (default %(default)s)")
    parser.add_argument(
        "--mesh-sessions",
        type=int,
        default=2,
        help="sessions of each mesh kind and extra (default %(default)s)",
    )
    parser.add_argument(
        "--window", type=float, default=5.0, help="window length, s (default %(default)s)"
    )
    parser.add_argument(
        "--min-packets", type=int, default=50, help="datagrams a window needs (default %(default)s)"
    )
    parser.add_argument(
        "--folds", type=int, default=10, help="cross-validation folds (default %(default)s)"
    )
    parser.add_argument(
        "--max-windows",
        type=int,
        default=400,
        help="windows per kind at most, drawn at random (default %(default)s)",
    )
    parser.add_argument(
        "--features",
        default="flow,all",
        help="feature sets, comma-separated: flow, all, timing (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--grouped",
        action="store_true",
        help="folds by flow: no flow has windows in both training and test (a stricter judge)",
    )
    parser.add_argument(
        "--extra",
        type=parse_extra,
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another kind: a command whose UDP flows are captured",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one short session per kind, 2.5 s windows, 5 folds (a smoke run)",
    )
    parser.add_argument("--save", type=Path, help="write the captured flows here (.npz)")
    parser.add_argument(
        "--load",
        type=Path,
        action="append",
        default=[],
        help="use flows saved by --save (repeatable); kinds they lack are captured",
    )
    parser.add_argument(
        "--json", help="write the results as JSON to this file ('-': stdout, no table)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.window = min(args.seconds, 25.0), min(args.warmup, 5.0), 2.5
        args.call_sessions, args.mesh_sessions, args.folds = 1, 1, 5
        args.min_packets = min(args.min_packets, 25)
    kinds = list(dict.fromkeys([*args.kinds.split(","), *(name for name, _ in args.extra)]))
    kinds = [k for k in kinds if k]  # an extra also named in --kinds is one kind
    unknown = [k for k in kinds if k not in BUILT_IN and k not in dict(args.extra)]
    if unknown or BASELINE not in kinds or len(kinds) < 2:
        parser.error(
            f"--kinds needs call and another kind of {BUILT_IN} or --extra (not {unknown})"
        )
    feature_sets = [f for f in args.features.split(",") if f]
    if not feature_sets or any(f not in FEATURE_SETS for f in feature_sets):
        parser.error(f"--features takes some of {', '.join(FEATURE_SETS)}")
    settings = Settings(
        seconds=args.seconds,
        warmup=args.warmup,
        sessions={k: args.call_sessions if k == BASELINE else args.mesh_sessions for k in kinds},
        window=args.window,
        min_packets=args.min_packets,
        seed=args.seed,
        extra=dict(args.extra),
    )
    progress = Progress()
    flows: list[Flow] = []
    try:
        for path in args.load:
            flows += load(path)
        loaded = {f.kind for f in flows}
        missing = [k for k in kinds if k not in loaded]  # captured, saved flows or not
        if missing and os.geteuid() != 0:
            print(
                f"bench/classify.py needs root to capture {', '.join(missing)} "
                "(a packet socket on lo)",
                file=sys.stderr,
            )
            return 2
        for kind in missing:
            flows += capture_kind(kind, settings, progress)
    except (BenchError, ValueError, OSError) as exc:
        print(f"bench/classify.py: {exc}", file=sys.stderr)
        return 1
    if args.save:
        save(args.save, flows)
    rng = random.Random(args.seed)
    by_kind: dict[str, list[Window]] = {}
    for kind in kinds:
        ws = windows([f for f in flows if f.kind == kind], args.window, args.min_packets)
        if len(ws) > args.max_windows:
            ws = rng.sample(ws, args.max_windows)
        by_kind[kind] = ws
    counts = {k: len(v) for k, v in by_kind.items()}
    results: list[Result] = []
    try:
        for kind in kinds:
            if kind == BASELINE:
                continue
            for feature_set in feature_sets:
                label = f"CV {kind} vs call, {feature_set}"
                results.append(
                    cross_validate(
                        by_kind[kind],
                        by_kind[BASELINE],
                        feature_set,
                        folds=args.folds,
                        seed=args.seed,
                        grouped=args.grouped,
                        progress=lambda i, k, label=label: progress.bar(label, i, k),
                    )
                )
    except ValueError as exc:
        print(f"bench/classify.py: {exc} (windows per kind: {counts})", file=sys.stderr)
        return 1
    doc = {
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("save", "load", "json", "extra")
        }
        | {"extra": {k: shlex.join(v) for k, v in args.extra}},
        "windows": counts,
        "results": [asdict(r) | {"mean_auc": r.mean_auc} for r in results],
    }
    if args.json == "-":
        print(json.dumps(doc, indent=1))
    else:
        report(results, counts)
        if args.json:
            Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
