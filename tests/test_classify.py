"""bench/classify.py, the traffic classifier: its features on made-up windows, its capture
files, and (slow, as root, with Chromium) a quick run end to end that must tell a plain
zMesh mesh from a real Chromium video call."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browserpage import chromium

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import classify  # noqa: E402
from classify_features import (  # noqa: E402
    Window,
    cross_validate,
    flow_features,
    matrix,
    protocol_features,
)


def rtp(seq: int, ts: int, ssrc: int, pt: int = 96, marker: bool = False) -> bytes:
    """An RTP header (RFC 3550 section 5.1): version 2, no padding/extension/CSRC."""
    return (
        bytes([0x80, (0x80 if marker else 0) | pt])
        + seq.to_bytes(2, "big")
        + ts.to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + b"\0\0\0\0"
    )


def dtls_app(seq: int) -> bytes:
    """A DTLS 1.2 application-data record header (content type 23, epoch 1)."""
    return bytes([23, 0xFE, 0xFD, 0, 1]) + seq.to_bytes(6, "big") + b"\x04\xb0" + b"\0\0\0"


def window(kind: str, t: list[float], size: list[int], heads: list[bytes], d: list[int]) -> Window:
    return Window(
        kind=kind,
        session=kind,
        flow="1-2",
        length=1.0,
        t=np.array(t),
        size=np.array(size, dtype=np.float64),
        direction=np.array(d, dtype=np.int8),
        heads=heads,
    )


def test_protocol_view_of_rtp() -> None:
    """30 video frames of 3 packets on one SSRC, audio on another, an RTCP report, a STUN
    binding request: the RFC 7983 classes, SSRCs and frames per second come out."""
    heads, t = [], []
    for f in range(30):
        for k in range(3):
            heads.append(rtp(f * 3 + k, f * 3000, 0xAAAA, marker=k == 2))
            t.append(f / 30 + k * 0.001)
    heads += [rtp(i, i * 960, 0xBBBB, pt=111) for i in range(10)]
    t += [i / 10 for i in range(10)]
    heads.append(bytes([0x81, 200]) + b"\0" * 14)  # RTCP sender report
    heads.append(b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + b"\0" * 8)  # STUN request
    t += [0.5, 0.6]
    w = window("call", t, [1000] * len(t), heads, [0] * len(t))
    out = protocol_features(w)
    n = len(heads)
    assert out["proto_media"] == pytest.approx((n - 1) / n)
    assert out["proto_stun"] == pytest.approx(1 / n)
    assert out["proto_dtls"] == 0
    assert out["proto_rtcp_per_s"] == 1.0
    assert out["proto_rtp_ssrcs"] == 2
    assert out["proto_rtp_payload_types"] == 2
    assert out["proto_rtp_frames_per_s"] == 30  # distinct timestamps of the busiest SSRC
    assert out["proto_rtp_seq_in_order"] == 1.0
    assert out["proto_rtp_marker"] == pytest.approx(30 / 100)
    assert out["proto_d1_media"] == 0  # nothing went the other way


def test_protocol_view_of_a_data_channel() -> None:
    heads = [dtls_app(i) for i in range(20)]
    w = window("plain", [i / 20 for i in range(20)], [1221] * 20, heads, [i % 2 for i in range(20)])
    out = protocol_features(w)
    assert out["proto_dtls"] == 1.0
    assert out["proto_dtls_ct23"] == 1.0
    assert out["proto_media"] == 0
    assert out["proto_rtp_ssrcs"] == 0
    assert out["proto_d0_dtls_ct23"] == 1.0 and out["proto_d1_dtls_ct23"] == 1.0


def test_protocol_view_survives_garbage() -> None:
    """Short, empty and odd first bytes count as 'other' or their class, never raise."""
    heads = [b"", b"\x80", b"\xff" * 16, b"\x17", b"\x80\x60"]
    w = window("x", [0.1 * i for i in range(5)], [1, 2, 3, 4, 5], heads, [0, 1, 0, 1, 0])
    out = protocol_features(w)
    assert out["proto_other"] == pytest.approx(4 / 5)  # RTP needs its 12-byte header
    assert out["proto_dtls"] == pytest.approx(1 / 5)
    assert all(np.isfinite(v) for v in out.values())


def test_flow_features() -> None:
    t = [i * 0.01 for i in range(100)]
    size = [100 if i % 2 else 1200 for i in range(100)]
    d = [i % 2 for i in range(100)]
    w = window("x", t, size, [b""] * 100, d)
    out = flow_features(w)
    assert out["both_packets_per_s"] == 100
    assert out["d0_size_p50"] == 1200 and out["d1_size_p50"] == 100
    assert out["d0_byte_share"] == pytest.approx(1200 / 1300)
    assert sum(v for k, v in out.items() if k.startswith("both_len")) == pytest.approx(1.0)
    assert out["both_len1200"] == 0.5 and out["both_len0100"] == 0.5
    assert out["both_iat_p50"] == pytest.approx(0.01)
    assert out["both_burst_per_s"] == 100  # 10 ms apart: no two in one burst
    empty = flow_features(window("x", [], [], [], []))
    assert empty["both_packets_per_s"] == 0 and all(np.isfinite(v) for v in empty.values())


def test_windows_cut_and_direction(tmp_path: Path) -> None:
    """A flow of 10 s cut into 5 s windows; the sparse second half is dropped; direction 0
    is the side that sent more bytes; save and load give the same flows back."""
    packets = [
        (100 + i * 0.01, 1000 if i % 2 else 50, 9000 if i % 2 else 7000, b"\x17\xfe\xfd")
        for i in range(500)
    ] + [(106.0, 60, 7000, b"")]
    flow = classify.Flow("plain", "plain-0", (7000, 9000), packets, 100.0, 110.0)
    ws = classify.windows([flow], 5.0, 50)
    assert len(ws) == 1
    (w,) = ws
    assert w.size.size == 500 and w.t.min() >= 0 and w.t.max() < 5
    assert (w.size[w.direction == 0] == 1000).all()  # 9000 sent the big ones
    path = tmp_path / "flows.npz"
    classify.save(path, [flow])
    (back,) = classify.load(path)
    assert back.packets == packets and back.ports == (7000, 9000) and back.kind == "plain"
    (tmp_path / "junk.npz").write_bytes(b"not a capture")
    with pytest.raises(ValueError):
        classify.load(tmp_path / "junk.npz")


def test_cross_validation_tells_and_cannot_tell() -> None:
    """Different size distributions: AUC near 1; the same distribution: near 0.5."""
    rng = np.random.default_rng(1)

    def kind(name: str, mean: float) -> list[Window]:
        out = []
        for _ in range(40):
            t = np.sort(rng.uniform(0, 1, 200))
            size = rng.normal(mean, 100, 200).clip(40, 1400)
            out.append(window(name, list(t), list(size), [b""] * 200, [0] * 200))
        return out

    a, b, c = kind("a", 600), kind("b", 900), kind("c", 600)
    told = cross_validate(a, b, "flow", folds=10, seed=1)
    assert told.folds == 10 and len(told.fold_auc) == 10
    assert told.mean_auc > 0.95 and told.tpr_at_2pct_fpr > 0.5
    assert told.top_features
    same = cross_validate(a, c, "flow", folds=10, seed=1)
    assert 0.25 < same.pooled_auc < 0.75
    with pytest.raises(ValueError):
        cross_validate(a[:1], b, "flow", folds=10, seed=1)
    with pytest.raises(ValueError):  # grouped: every window of a kind is one flow here
        cross_validate(a, b, "flow", folds=10, seed=1, grouped=True)
    for i, w in enumerate([*a, *b]):
        w.flow = str(i // 4)  # flows of 4 windows each
    by_flow = cross_validate(a, b, "flow", folds=5, seed=1, grouped=True)
    assert by_flow.grouped and by_flow.folds == 5 and by_flow.pooled_auc > 0.9
    X, names = matrix(a[:2], "all")
    assert X.shape == (2, len(names)) and "proto_dtls_ct23" in names
    _, timing = matrix(a[:2], "timing")
    assert timing and not any("size" in n or "bytes" in n or "len" in n for n in timing)


@pytest.mark.slow
def made_up_flow(kind: str, index: int, size: int) -> classify.Flow:
    """20 s of a flow at 100 packets a second, ``size`` bytes one way and 60 back."""
    packets = [
        (i * 0.01, size if i % 2 else 60, 9000 if i % 2 else 7000 + index, b"\x17\xfe\xfd")
        for i in range(2000)
    ]
    return classify.Flow(kind, f"{kind}-{index}", (7000 + index, 9000), packets, 0.0, 20.0)


def test_loaded_flows_are_used_and_the_kinds_they_lack_are_captured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--load`` with ``--extra``: the saved calls are used, the extra kind is captured
    (before, nothing was captured and the kind had no windows); with every kind saved,
    nothing is captured.  The capture here is a double; the real one runs below."""
    saved = tmp_path / "calls.npz"
    classify.save(saved, [made_up_flow("call", i, 1100) for i in range(3)])
    captured: list[str] = []

    def capture(kind: str, s: classify.Settings, p: classify.Progress) -> list[classify.Flow]:
        captured.append(kind)
        return [made_up_flow(kind, i, 1221) for i in range(3)]

    monkeypatch.setattr(classify, "capture_kind", capture)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    argv = ["--load", str(saved), "--kinds", "call", "--extra", "media=true", "--folds", "2"]
    assert classify.main([*argv, "--features", "flow", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert captured == ["media"] and doc["windows"] == {"call": 12, "media": 12}
    (result,) = doc["results"]
    assert result["positive"] == "media" and result["mean_auc"] > 0.9
    both = tmp_path / "both.npz"
    classify.save(both, [made_up_flow(k, i, 1221) for k in ("call", "media") for i in range(3)])
    captured.clear()
    argv = ["--load", str(both), "--kinds", "call", "--extra", "media=true", "--folds", "2"]
    assert classify.main([*argv, "--features", "flow", "--json", "-"]) == 0
    assert captured == []
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert classify.main(["--load", str(saved), "--kinds", "call,plain"]) == 2
    assert "needs root to capture plain" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs root")
def test_quick_run_tells_a_mesh_from_a_call() -> None:
    """bench/classify.py --quick: a plain zMesh mesh against a Chromium video call, end to
    end (capture, windows, features, cross-validation); the classifier must tell them."""
    chromium()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "classify.py"),
            "--quick",
            "--kinds",
            "plain,call",
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["windows"]["call"] >= 5 and doc["windows"]["plain"] >= 5, doc["windows"]
    results = {(r["positive"], r["feature_set"]): r for r in doc["results"]}
    assert set(results) == {("plain", "flow"), ("plain", "all")}
    for r in results.values():
        assert r["negative"] == "call"
        assert len(r["fold_auc"]) == r["folds"] >= 2
        assert r["mean_auc"] > 0.9, r


def test_help() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "classify.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--json" in done.stdout and "--extra" in done.stdout


def test_extra_kinds() -> None:
    """``--extra NAME=COMMAND``: a new identifier and a command, split as a shell would."""
    assert classify.parse_extra("media=python -m x --flag 'a b'") == (
        "media",
        ["python", "-m", "x", "--flag", "a b"],
    )
    for bad in ("media", "=cmd", "call=cmd", "plain=x", "me dia=cmd", "media=  "):
        with pytest.raises(argparse.ArgumentTypeError):
            classify.parse_extra(bad)
