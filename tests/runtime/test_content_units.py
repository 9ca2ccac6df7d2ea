"""Content's small runtime pieces: --rate parsing, the rate bucket, atomic writes."""

import argparse
import asyncio
import time
from pathlib import Path

import pytest

from zmesh.cli import build_parser
from zmesh.errors import UsageError
from zmesh.runtime.content import Rate
from zmesh.runtime.content_cli import parse_rate
from zmesh.runtime.content_fetch import write_atomically


@pytest.mark.parametrize(
    ("text", "value"),
    [("4MB", 4e6), ("4M", 4e6), ("500k", 5e5), ("2.5MB/s", 2.5e6), ("1000", 1000.0)],
)
def test_parse_rate_is_decimal(text: str, value: float) -> None:
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["", "fast", "4GiB", "0", "-1M", "4 MiB"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rate(text)


def test_cli_takes_share_get_and_rate() -> None:
    parser = build_parser()
    args = parser.parse_args(["share", "a", "b", "--rate", "4MB", "--bootstrap", "http://x:1"])
    assert args.files == ["a", "b"] and args.rate == 4e6 and args.bootstrap == ["http://x:1"]
    args = parser.parse_args(["get", "zm1x", "-o", "out", "--json"])
    assert args.id == "zm1x" and args.output == "out" and args.json
    args = parser.parse_args(["relay", "--listen", "127.0.0.1:0", "--data", "d", "--rate", "2M"])
    assert args.rate == 2e6


def test_rate_caps_bytes_per_second() -> None:
    async def run() -> float:
        rate = Rate(1e6)  # a bucket of 100 kB
        start = time.monotonic()
        for _ in range(4):  # 1.1 MB, the first 100 kB from the full bucket
            await rate.take(275_000)
        return time.monotonic() - start

    took = asyncio.run(run())
    assert 1.0 <= took < 1.5
    with pytest.raises(UsageError):
        Rate(0)


def test_write_atomically(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    write_atomically(out, b"new" * 1000)
    assert out.read_bytes() == b"new" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary file left
    with pytest.raises(UsageError, match="cannot write"):
        write_atomically(tmp_path / "missing" / "out", b"x")
