"""The command line: help, argument errors, and the demo's verified transfer."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from zmesh.cli import main, parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [("5MB", 5_000_000), ("512KiB", 524_288), ("1.5M", 1_500_000), ("1000", 1000), ("2 kb", 2000)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "5XB", "-1MB", "0", "2GiB", "1e6"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(Exception, match="size"):
        parse_size(text)


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["status", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage: zmesh" in capsys.readouterr().out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--hops", "0"],
        ["demo", "--size", "lots"],
        ["demo", "--nodes", "x"],
        ["demo", "--loss", "1.5"],
        ["demo", "--latency", "-3"],
        ["up", "--relays", "x"],
        ["up", "--control", "nowhere"],
        ["status", "--control", "127.0.0.1:99999"],
        ["proxy", "--control", "x"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--nodes", "4", "--hops", "3"], "at least 5 nodes"),
        (["demo", "--hops", "1"], "at least 2"),
        (["demo", "--nodes", "9", "--hops", "5"], "at most 3 relays"),
    ],
)
def test_impossible_demo_is_a_clear_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("relays", ["0", "2", "13", "100"])
def test_up_refuses_a_relay_count_outside_3_to_12(
    relays: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["up", "--relays", relays])
    assert exit_.value.code == 2
    assert "between 3 and 12" in capsys.readouterr().err


def test_up_help_names_the_relay_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["up", "--help"])
    assert "3 to 12" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("relays", [2, 13])
def test_run_up_checks_the_relay_count_too(relays: int) -> None:
    from zmesh.errors import UsageError
    from zmesh.runtime.daemon import check_relay_count

    with pytest.raises(UsageError, match="between 3 and 12"):
        check_relay_count(relays)


def test_demo_prints_a_verified_transfer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--nodes", "6", "--hops", "3", "--size", "200KB", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "SHA-256 match: yes" in out
    assert out.count("never saw both source and destination") == 4
    assert "saw BOTH" not in out
    assert "OK: verified transfer" in out


def test_demo_over_a_lossy_slow_network(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--nodes", "5", "--hops", "2", "--size", "100KB", "--loss", "0.2"]
    assert main([*argv, "--latency", "80"]) == 0
    assert "SHA-256 match: yes" in capsys.readouterr().out


@pytest.mark.slow
def test_python_m_zmesh_demo_done_criterion() -> None:
    """The issue's acceptance command, as a user runs it."""
    cmd = [sys.executable, "-m", "zmesh", "demo", "--nodes", "12", "--hops", "3"]
    argv = [*cmd, "--size", "5MB", "--seed", "7"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "SHA-256 match: yes" in proc.stdout
    assert proc.stdout.count("never saw both source and destination") == 4


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["relay", "--listen", "127.0.0.1:0", "--data", "{missing}"], "{missing}"),
        (["relay", "--listen", "127.0.0.1:0", "--data", "{file}"], "{file}"),
        (["relay", "--listen", "127.0.0.1:0", "--data", "{readonly}/state"], "{readonly}"),
        (["proxy", "--bootstrap", "http://127.0.0.1:9", "--data", "{file}"], "{file}"),
        (["up", "--data", "{file}"], "{file}"),
        (["web", "--bootstrap", "http://127.0.0.1:9", "--dist", "{missing}"], "{missing}"),
        (["harness", "--dist", "{missing}"], "{missing}"),
    ],
)
def test_an_unusable_path_is_one_clear_line_and_status_2(
    argv: list[str], path: str, tmp_path: Path
) -> None:
    """No traceback: the path, the reason, and argparse's exit status."""
    afile = tmp_path / "a-file"
    afile.write_text("not a directory")
    names = {
        "missing": "/proc/zmesh-cannot-be-here",
        "file": str(afile),
        "readonly": "/proc/self",
    }
    done = subprocess.run(
        [sys.executable, "-m", "zmesh", *(a.format(**names) for a in argv)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"zmesh {argv[0]}: error: ")
    assert path.format(**names) in lines[0]


def test_a_proxy_whose_bootstrap_relays_all_refuse_says_so_early() -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "zmesh", "proxy", "--socks", "127.0.0.1:0",
         "--bootstrap", "http://127.0.0.1:9", "--bootstrap", "http://127.0.0.1:7"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert time.monotonic() - start < 60  # not the 120 s it took before
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("zmesh proxy: error: every bootstrap relay refused")
    assert "http://127.0.0.1:9 (connection refused" in last and "http://127.0.0.1:7" in last


def test_a_proxy_told_to_keep_trying_warns_and_keeps_trying() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmesh", "proxy", "--socks", "127.0.0.1:0", "--keep-trying",
         "--bootstrap", "http://127.0.0.1:9"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "zmesh proxy: warning: every bootstrap relay refused" in line:
                assert "still trying" in line
                break
        else:
            raise AssertionError("no warning")
        assert proc.poll() is None  # still running, still trying
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
