"""Issue 10's Done-when at a small size, with real processes (slow).

``zmesh up --relays 6``, three ``zmesh share`` seeders of one 8,000,000-byte file capped
at 1 MB/s each, and ``zmesh get --json``, which fetches from all three while one seeder
is killed with SIGKILL once the progress passes 40%; the file is intact.  The full-size
runs are ``python bench/chunks_fetch.py`` (figures in D45).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chunks_fetch
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


def test_a_fetcher_that_seeds_serves_once_the_sharer_is_gone(tmp_path: Path) -> None:
    """``zmesh get --seed`` keeps serving what it fetched: with the only sharer stopped, a
    second fetch gets the file from the first fetcher alone."""
    payload = os.urandom(600_000)
    (tmp_path / "file").write_bytes(payload)
    with chunks_fetch._mesh(tmp_path) as urls:
        boot = [a for u in urls for a in ("--bootstrap", u)]
        share = chunks_fetch._zmesh(
            "share", str(tmp_path / "file"), *boot, "--data", str(tmp_path / "s")
        )
        with subprocess.Popen(share, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              start_new_session=True) as sharer:  # fmt: skip
            assert sharer.stdout is not None
            cid = sharer.stdout.readline().strip()
            get = chunks_fetch._zmesh("get", cid, "-o", str(tmp_path / "a"), *boot, "--json",
                                      "--seed", "--data", str(tmp_path / "g1"))  # fmt: skip
            with subprocess.Popen(get, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  start_new_session=True) as seeding:  # fmt: skip
                assert seeding.stdout is not None
                first = json.loads(seeding.stdout.readline())
                assert first["sources"] and (tmp_path / "a").read_bytes() == payload
                chunks_fetch._stop(sharer)
                time.sleep(5.0)  # the fetcher publishes its provider record
                again = chunks_fetch._zmesh("get", cid, "-o", str(tmp_path / "b"), *boot, "--json")
                second = json.loads(subprocess.run(again, capture_output=True, text=True,
                                                   timeout=chunks_fetch.GET_TIMEOUT, check=True).stdout)  # fmt: skip
                assert seeding.poll() is None  # still seeding
                chunks_fetch._stop(seeding)
    assert (tmp_path / "b").read_bytes() == payload
    assert second["sources"] and set(second["sources"]).isdisjoint(first["sources"])
