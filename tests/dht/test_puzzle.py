"""The S/Kademlia static puzzle on node ids, and its benchmark script."""

import subprocess
import sys
from pathlib import Path

import pytest

from zmesh.crypto import sha256
from zmesh.dht.puzzle import check, leading_zero_bits, puzzle_hash, satisfies, solve
from zmesh.errors import CloseCode, LocalProtocolError, RemoteProtocolError
from zmesh.identity import Identity
from zmesh.rng import DeterministicRng

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dht_puzzle.py"


def test_leading_zero_bits() -> None:
    assert leading_zero_bits(bytes(32)) == 256
    assert leading_zero_bits(b"\x80" + bytes(31)) == 0
    assert leading_zero_bits(b"\x00\x01" + bytes(30)) == 15
    assert leading_zero_bits(b"\x00\x00\x7f" + bytes(29)) == 17


def test_the_puzzle_is_sha256_of_the_node_id() -> None:
    identity = Identity(bytes(32), bytes(64))
    assert puzzle_hash(identity.node_id) == sha256(identity.node_id)
    assert satisfies(identity.node_id, 0)


@pytest.mark.parametrize("difficulty", [0, 4, 8])
def test_solve_finds_an_identity_that_passes(difficulty: int) -> None:
    identity, attempts = solve(DeterministicRng(difficulty, b"puzzle"), difficulty)
    assert attempts >= 1
    assert satisfies(identity.node_id, difficulty)
    check(identity.node_id, difficulty)
    assert leading_zero_bits(puzzle_hash(identity.node_id)) >= difficulty
    # the id is the ordinary one: the puzzle does not change how ids are derived
    assert identity.node_id == Identity(identity.kem_seed, identity.signing.seed).node_id
    assert identity.signing.deterministic  # a reproducible rng, as Identity.generate


def test_solve_is_reproducible() -> None:
    a, n = solve(DeterministicRng(5, b"puzzle"), 6)
    b, m = solve(DeterministicRng(5, b"puzzle"), 6)
    assert a.node_id == b.node_id and n == m


def test_a_failing_id_is_rejected() -> None:
    rng = DeterministicRng(9, b"ids")
    failing = next(i for i in (rng.bytes(32) for _ in range(100)) if not satisfies(i, 4))
    with pytest.raises(RemoteProtocolError) as exc:
        check(failing, 4)
    assert exc.value.code is CloseCode.AUTH


def test_solve_limits() -> None:
    with pytest.raises(LocalProtocolError):
        solve(DeterministicRng(1), 65)
    with pytest.raises(LocalProtocolError, match="attempts"):
        solve(DeterministicRng(1), 30, max_attempts=3)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "emscripten", reason="no subprocess in Pyodide")
def test_bench_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout
