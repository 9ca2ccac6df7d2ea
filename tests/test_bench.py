"""The benchmark scripts run end to end (a few rounds) and print their ratios."""

import subprocess
import sys
from pathlib import Path

import pytest
from browserpage import chromium, ensure_dist

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = [
    "setup_hop.py",
    "cell_forward.py",
    "webrtc_raw.py",
    "browser.py",
    "attacks.py",
    "signing.py",
    "stream_reassembly.py",
    "dial_on_demand.py",
    "dht_lookup.py",
    "chunks.py",
    "fresh_first_byte.py",
    "media.py",
]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_quick(script: str) -> None:
    if script == "browser.py":  # headless Chromium and a current web/dist (bench-boot.html)
        chromium()
        ensure_dist()
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--rounds" in done.stdout and "--quick" in done.stdout
