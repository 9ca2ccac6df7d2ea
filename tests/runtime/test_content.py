"""Issue 10's Done-when at a small size, with real processes (slow).

``zmesh up --relays 6``, three ``zmesh share`` seeders of one 8,000,000-byte file capped
at 1 MB/s each, and ``zmesh get --json``, which fetches from all three while one seeder
is killed with SIGKILL once the progress passes 40%; the file is intact.  The full-size
runs are ``python bench/chunks_fetch.py`` (figures in D45).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from chunks_fetch import fetch_run

pytestmark = pytest.mark.slow


def test_three_seeders_one_killed_at_40_percent(tmp_path: Path) -> None:
    result = fetch_run(tmp_path, 8_000_000, "1MB", seeders=3, kill_at=0.4)
    assert result["intact"]
    assert result["bytes"] == 8_000_000
    assert len(result["sources"]) >= 3
    assert result["killed_at"] is not None and result["killed_at"] < 1.0
    assert result["circuits"] >= 3
    assert result["progress"] >= 2 * result["seconds"]  # a line at least every 0.5 s
    assert set(result) >= {"id", "bytes", "sha256", "sources", "circuits", "seconds"}
