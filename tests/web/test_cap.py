"""The embed's bandwidth cap, in the page's real WebRTC bridge (web/src/rtc.js), under Node."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("cap.mjs")
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")


def run(cap: int, messages: int, size: int) -> dict[str, float]:
    proc = subprocess.run(
        ["node", str(SCRIPT), str(cap), str(messages), str(size)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def test_capped_sends_stay_within_the_budget_in_order() -> None:
    cap = 200_000  # bytes per second
    r = run(cap, 100, 8200)
    assert r["total"] == 820_000 and r["inOrder"]
    assert r["worst"] <= 8200  # never more than one message beyond cap * t + burst
    # 820 kB at 200 kB/s with a 200 kB burst needs about 3.1 s; it must not finish early
    assert r["elapsed"] >= (820_000 - 200_000) / cap * 0.9
    assert r["immediate"] < 100 and r["delayed"] == 100 - r["immediate"]


def test_uncapped_sends_go_out_at_once() -> None:
    r = run(0, 100, 8200)
    assert r["immediate"] == 100 and r["delayed"] == 0 and r["inOrder"]
