"""bench/vs_tor.py parses its arguments and documents itself (fast: starts no network)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "vs_tor.py"


def test_vs_tor_help() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--quick", "--tor-only", "--install"):
        assert option in done.stdout


def test_vs_tor_rejects_conflicting_options() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tor-only", "--zmesh-only"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "exclude" in done.stderr
