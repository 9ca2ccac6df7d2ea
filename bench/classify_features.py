"""Features of a captured UDP flow window, and the cross-validated classifier over them.

A *window* is a fixed stretch (``bench/classify.py --window``, 5 s by default) of one UDP
flow (one pair of ports on loopback): every datagram's time, payload length, direction and
first payload bytes.  Direction 0 is the side that sent more bytes in the window (an
observer cannot tell caller from callee, but sees which side sends more).

Two feature sets, and a third to look closer:

* ``flow``: what the literature on multimedia-tunnel detection uses (Barradas, Santos and
  Araujo, "Effective Detection of Multimedia Protocol Tunneling using Machine Learning",
  USENIX Security 2018): the packet-length frequency distribution (bins), length
  quantiles and moments, inter-arrival time statistics, bursts, and bytes and packets per
  direction in time bins (their variation and autocorrelation), each for both directions
  together and for each direction.
* ``all``: ``flow`` plus the *protocol view*: how an on-path observer demultiplexes the
  datagrams by their first byte (RFC 7983: STUN 0-3, DTLS 20-63, RTP/RTCP 128-191), the
  DTLS content types (23 is application data: a data channel is DTLS application data
  only; SRTP media is not DTLS at all), and the cleartext RTP header of SRTP (RFC 3550
  section 5.1: version, marker, payload type, sequence number, timestamp, SSRC) and the
  RTCP packet types (RFC 5761 section 4).
* ``timing``: the ``flow`` features that do not use sizes (counts and times only).

The classifier is XGBoost, stratified k-fold cross-validation (10 folds), ROC AUC per
fold.
"""

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from xgboost import XGBClassifier

Floats = npt.NDArray[np.float64]

SIZE_BINS = np.arange(0, 1501, 50)  # bytes; one more bin above 1500
SIZE_Q = (5, 10, 25, 50, 75, 90, 95)
IAT_Q = (10, 25, 50, 75, 90)
BURST_GAP = 0.005  # s: packets closer than this (either direction) are one burst
TIME_BINS = (0.01, 0.1, 1.0)  # s: bytes per bin, per direction


@dataclass
class Window:
    """One window of one flow: times (s from the window's start), payload lengths,
    directions (0: the side that sent more bytes), the first payload bytes."""

    kind: str
    session: str
    flow: str
    length: float
    t: Floats
    size: Floats
    direction: npt.NDArray[np.int8]
    heads: list[bytes]


def _stats(prefix: str, values: Floats, quantiles: Sequence[int]) -> dict[str, float]:
    """Mean, standard deviation, minimum, maximum and quantiles (0 for no values)."""
    out: dict[str, float] = {}
    empty = values.size == 0
    out[f"{prefix}_mean"] = 0.0 if empty else float(values.mean())
    out[f"{prefix}_std"] = 0.0 if empty else float(values.std())
    out[f"{prefix}_min"] = 0.0 if empty else float(values.min())
    out[f"{prefix}_max"] = 0.0 if empty else float(values.max())
    qs = np.zeros(len(quantiles)) if empty else np.percentile(values, quantiles)
    for q, v in zip(quantiles, qs, strict=True):
        out[f"{prefix}_p{q}"] = float(v)
    return out


def _autocorr(series: Floats, lag: int) -> float:
    """The lag-``lag`` autocorrelation of a series (0 when flat or too short)."""
    if series.size <= lag + 1:
        return 0.0
    a, b = series[:-lag] - series.mean(), series[lag:] - series.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _bursts(prefix: str, t: Floats, size: Floats, length: float) -> dict[str, float]:
    """Bursts: runs of packets each within ``BURST_GAP`` of the one before."""
    if t.size == 0:
        starts = np.zeros(0, dtype=np.int64)
    else:
        starts = np.flatnonzero(np.concatenate(([True], np.diff(t) > BURST_GAP)))
    ends = np.append(starts[1:], t.size)
    packets = (ends - starts).astype(np.float64)
    nbytes = np.add.reduceat(size, starts) if starts.size else np.zeros(0)
    gaps = t[starts[1:]] - t[ends[:-1] - 1] if starts.size > 1 else np.zeros(0)
    out = {f"{prefix}_per_s": starts.size / length}
    out |= _stats(f"{prefix}_packets", packets, (50, 90))
    out |= _stats(f"{prefix}_bytes", nbytes, (50, 90))
    out |= _stats(f"{prefix}_gap", gaps, (10, 50, 90))
    return out


def _one_side(prefix: str, t: Floats, size: Floats, length: float) -> dict[str, float]:
    out = {f"{prefix}_packets_per_s": t.size / length, f"{prefix}_bytes_per_s": size.sum() / length}
    out |= _stats(f"{prefix}_size", size, SIZE_Q)
    out[f"{prefix}_distinct_sizes"] = float(np.unique(size).size)
    hist = np.histogram(np.minimum(size, 1550), bins=[*SIZE_BINS, 1e9])[0]
    for lo, share in zip(SIZE_BINS, hist / max(t.size, 1), strict=True):
        out[f"{prefix}_len{lo:04d}"] = float(share)
    iat = np.diff(t)
    out |= _stats(f"{prefix}_iat", iat, IAT_Q)
    out[f"{prefix}_iat_under_1ms"] = float((iat < 0.001).mean()) if iat.size else 0.0
    out |= _bursts(f"{prefix}_burst", t, size, length)
    for width in TIME_BINS:
        per_bin = np.bincount(
            np.minimum((t / width).astype(np.int64), int(length / width) - 1),
            weights=size,
            minlength=int(length / width),
        )
        name = f"{prefix}_bin{round(width * 1000)}ms"
        mean = float(per_bin.mean())
        out[f"{name}_cv"] = float(per_bin.std()) / mean if mean > 0 else 0.0
        out[f"{name}_max_over_mean"] = float(per_bin.max()) / mean if mean > 0 else 0.0
        out[f"{name}_empty"] = float((per_bin == 0).mean())
        out[f"{name}_ac1"] = _autocorr(per_bin, 1)
        if width == 0.01:  # frame cadence: 30 frames/s is about 3 bins of 10 ms
            out[f"{name}_ac3"] = _autocorr(per_bin, 3)
            out[f"{name}_ac10"] = _autocorr(per_bin, 10)
    return out


def flow_features(w: Window) -> dict[str, float]:
    """The ``flow`` set: sizes and timing only, both directions and each."""
    out: dict[str, float] = {}
    out |= _one_side("both", w.t, w.size, w.length)
    for d in (0, 1):
        pick = w.direction == d
        out |= _one_side(f"d{d}", w.t[pick], w.size[pick], w.length)
    total_bytes, total_packets = float(w.size.sum()), float(w.size.size)
    heavy = w.direction == 0
    out["d0_byte_share"] = float(w.size[heavy].sum()) / total_bytes if total_bytes else 0.0
    out["d0_packet_share"] = float(heavy.sum()) / total_packets if total_packets else 0.0
    return out


def _rtp_view(prefix: str, heads: list[bytes], length: float) -> dict[str, float]:
    """RFC 7983 demultiplexing, DTLS content types, RTP and RTCP headers of one side."""
    n = max(len(heads), 1)
    stun = dtls = media = rtcp = 0
    content: dict[int, int] = {}
    pts: set[int] = set()
    ssrcs: dict[bytes, list[tuple[int, int]]] = {}  # SSRC -> (sequence number, timestamp)
    marker = extension = csrc = 0
    for h in heads:
        if not h:
            continue
        b0 = h[0]
        if b0 <= 3:
            stun += 1
        elif 20 <= b0 <= 63:
            dtls += 1
            content[b0] = content.get(b0, 0) + 1
        elif 128 <= b0 <= 191 and len(h) >= 12:
            media += 1
            if 192 <= h[1] <= 223:  # RTCP: packet types 192-223 (RFC 5761 section 4)
                rtcp += 1
                continue
            pts.add(h[1] & 0x7F)
            marker += h[1] >> 7
            extension += (b0 >> 4) & 1
            csrc += b0 & 0x0F
            seq_ts = (int.from_bytes(h[2:4], "big"), int.from_bytes(h[4:8], "big"))
            ssrcs.setdefault(bytes(h[8:12]), []).append(seq_ts)
    rtp = media - rtcp
    out = {
        f"{prefix}_stun": stun / n,
        f"{prefix}_dtls": dtls / n,
        f"{prefix}_media": media / n,
        f"{prefix}_other": (len(heads) - stun - dtls - media) / n,
        f"{prefix}_rtcp_per_s": rtcp / length,
        f"{prefix}_stun_per_s": stun / length,
    }
    for ct in (20, 21, 22, 23):  # change_cipher_spec, alert, handshake, application_data
        out[f"{prefix}_dtls_ct{ct}"] = content.get(ct, 0) / n
    out[f"{prefix}_rtp_payload_types"] = float(len(pts))
    out[f"{prefix}_rtp_ssrcs"] = float(len(ssrcs))
    out[f"{prefix}_rtp_marker"] = marker / max(rtp, 1)
    out[f"{prefix}_rtp_extension"] = extension / max(rtp, 1)
    out[f"{prefix}_rtp_csrc"] = csrc / max(rtp, 1)
    in_order = steps = 0
    timestamps = 0
    for seq_ts in ssrcs.values():
        seqs = [s for s, _ in seq_ts]
        steps += len(seqs) - 1
        in_order += sum(1 for a, b in itertools.pairwise(seqs) if (b - a) % 65536 == 1)
        timestamps = max(timestamps, len({ts for _, ts in seq_ts}))
    out[f"{prefix}_rtp_seq_in_order"] = in_order / steps if steps else 0.0
    out[f"{prefix}_rtp_frames_per_s"] = timestamps / length  # distinct timestamps, busiest SSRC
    return out


def protocol_features(w: Window) -> dict[str, float]:
    """The protocol view: RFC 7983 classes, DTLS content types, RTP/RTCP headers."""
    out = _rtp_view("proto", w.heads, w.length)
    for d in (0, 1):
        heads = [h for h, di in zip(w.heads, w.direction, strict=True) if di == d]
        out |= _rtp_view(f"proto_d{d}", heads, w.length)
    return out


SIZE_WORDS = ("size", "len", "bytes", "byte_share")


def timing_features(w: Window) -> dict[str, float]:
    """The ``flow`` features that use no datagram size: packet counts and times only (what
    is left to a classifier once sizes match)."""
    return {k: v for k, v in flow_features(w).items() if not any(s in k for s in SIZE_WORDS)}


FEATURE_SETS: dict[str, Callable[[Window], dict[str, float]]] = {
    "flow": flow_features,
    "all": lambda w: flow_features(w) | protocol_features(w),
    "timing": timing_features,
}


def matrix(windows: Sequence[Window], feature_set: str) -> tuple[Floats, list[str]]:
    """The feature matrix (a row per window) and the column names."""
    rows = [FEATURE_SETS[feature_set](w) for w in windows]
    names = list(rows[0])
    return np.array([[r[k] for k in names] for r in rows], dtype=np.float64), names


@dataclass
class Result:
    """Cross-validated ROC AUC of one comparison on one feature set."""

    positive: str
    negative: str
    feature_set: str
    n_positive: int
    n_negative: int
    folds: int
    grouped: bool  # folds by flow (True) or by window
    fold_auc: list[float]
    pooled_auc: float  # over all out-of-fold scores
    tpr_at_2pct_fpr: float  # Barradas et al. report TPR at 2% FPR
    top_features: list[tuple[str, float]]  # by gain, from a model fit on every window

    @property
    def mean_auc(self) -> float:
        return float(np.mean(self.fold_auc)) if self.fold_auc else float("nan")


def _model(seed: int) -> XGBClassifier:
    return XGBClassifier(
        n_estimators=200,
        max_depth=4,
        learning_rate=0.1,
        subsample=0.8,
        colsample_bytree=0.8,
        tree_method="hist",
        n_jobs=1,  # two OpenMP threads on a loaded 2-core machine: 100x slower
        random_state=seed,
        eval_metric="logloss",
    )


def cross_validate(
    positive: Sequence[Window],
    negative: Sequence[Window],
    feature_set: str,
    *,
    folds: int,
    seed: int,
    grouped: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Stratified ``folds``-fold cross-validation of XGBoost telling ``positive`` windows
    (label 1) from ``negative`` ones (label 0); raises ValueError if a class has fewer
    than 2 windows (or flows, when grouped).  Fewer folds than asked are used when a class
    has fewer.  ``grouped``: all windows of a flow fall in one fold, so a model is never
    tested on a flow it was trained on (a fold whose test part holds one class only adds
    no fold AUC, but its scores count in the pooled AUC)."""
    everything = [*positive, *negative]
    y = np.array([1] * len(positive) + [0] * len(negative))
    groups = [f"{w.session}/{w.flow}" for w in everything]
    if grouped:
        smaller = min(len(set(groups[: len(positive)])), len(set(groups[len(positive) :])))
    else:
        smaller = min(len(positive), len(negative))
    if smaller < 2:
        raise ValueError(f"too few windows to cross-validate ({len(positive)}, {len(negative)})")
    k = min(folds, smaller)
    X, names = matrix(everything, feature_set)
    scores = np.zeros(len(y))
    fold_auc: list[float] = []
    if grouped:
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            X, y, groups
        )
    else:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y)
    for i, (train, test) in enumerate(splits):
        model = _model(seed)
        model.fit(X[train], y[train])
        scores[test] = model.predict_proba(X[test])[:, 1]
        if len(set(y[test])) == 2:
            fold_auc.append(float(roc_auc_score(y[test], scores[test])))
        if progress is not None:
            progress(i + 1, k)
    fpr, tpr, _ = roc_curve(y, scores)
    model = _model(seed)
    model.fit(X, y)
    gain = model.get_booster().get_score(importance_type="total_gain")
    top = sorted(((names[int(f[1:])], v) for f, v in gain.items()), key=lambda kv: -kv[1])[:5]
    return Result(
        positive=positive[0].kind,
        negative=negative[0].kind,
        feature_set=feature_set,
        n_positive=len(positive),
        n_negative=len(negative),
        folds=k,
        grouped=grouped,
        fold_auc=fold_auc,
        pooled_auc=float(roc_auc_score(y, scores)),
        tpr_at_2pct_fpr=float(tpr[fpr <= 0.02].max()),
        top_features=[(n, round(float(v), 1)) for n, v in top],
    )
