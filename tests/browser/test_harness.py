"""The headless harness end to end: every scenario, as `zmesh harness` runs it."""

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from browserpage import ensure_dist

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"),
    pytest.mark.skipif(shutil.which("node") is None, reason="the bundle needs node"),
]


@pytest.fixture(scope="module")
def dist() -> Path:
    return ensure_dist()


@pytest.mark.parametrize(
    ("browsers", "relays", "scenario", "expect"),
    [
        (3, 3, "browser-circuit", "(browser) -> exit"),
        (2, 3, "join", "ready in"),
        (1, 3, "fetch", "SHA-256 matches"),
        (1, 3, "embed", "the card says what is true: 'zMesh relay linked to"),
        # two Chromiums with default privacy (mDNS hiding on) link directly (D50)
        (2, 3, "browser-pair", "linked to each other directly"),
        # 6: two legs with disjoint guards and middles, and after the kill a live relay
        # for a replacement leg that shares neither with the surviving one
        (1, 6, "heal", "SHA-256 matches"),
    ],
)
def test_scenario(dist: Path, browsers: int, relays: int, scenario: str, expect: str) -> None:
    run_scenario(dist, browsers, relays, scenario, expect)


@pytest.mark.skipif(not Path("/usr/bin/firefox-esr").exists(), reason="needs Debian's firefox-esr")
def test_firefox_is_linked_by_push_alone(dist: Path) -> None:
    """Issue 11's Done-when: every relay's HTTP signaling unreachable to the page, a
    native node's push alone links it (D54)."""
    out = run_scenario(dist, 1, 3, "push", "push-to-link:", "--browser", "firefox")
    ms = float(out.split("push-to-link:")[1].split()[0])
    assert 0 < ms < 30_000


def run_scenario(
    dist: Path, browsers: int, relays: int, scenario: str, expect: str, *extra: str
) -> str:
    """Run one scenario as `zmesh harness` does; its stdout."""
    cmd = [sys.executable, "-X", "faulthandler", "-m", "zmesh", "-v", "harness", *extra]
    cmd += ["--browsers", str(browsers), "--relays", str(relays), "--scenario", scenario]
    cmd += ["--dist", str(dist)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        out, err = proc.communicate()
        pytest.fail(f"the harness hung; its output and stacks:\n{out}\n{err[-20000:]}")
    assert proc.returncode == 0, out + err[-20000:]
    assert f"scenario {scenario}: OK" in out
    assert expect in out
    return out


def test_unknown_scenario_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zmesh", "harness", "--scenario", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
