"""The sans-I/O rule is enforced by tools, not by convention: check that they bite."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(RUFF is None, reason="ruff is installed with the test extras")
@pytest.mark.parametrize(
    "source",
    [
        "import time\n",
        "import random\n",
        "from os import urandom\n",
        "import asyncio\n",
        "import socket\n",
        "import secrets\n",
    ],
)
def test_ruff_bans_io_in_the_core(source: str) -> None:
    assert RUFF is not None
    cmd = [RUFF, "check", "--select", "TID251", "--stdin-filename", "zmesh/onion/new.py", "-"]
    proc = subprocess.run(cmd, input=source, capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 1, proc.stdout
    assert "TID251" in proc.stdout


def test_drivers_may_use_the_clock() -> None:
    assert RUFF is not None
    cmd = [RUFF, "check", "--select", "TID251", "--stdin-filename", "zmesh/cli/__init__.py", "-"]
    proc = subprocess.run(
        cmd, input="import time\n", capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stdout


def test_import_linter_forbids_io_modules_in_the_core() -> None:
    config = (ROOT / ".importlinter").read_text()
    forbidden = config.split("forbidden_modules =")[1].split("[")[0].split()
    for module in ("time", "random", "secrets", "socket", "asyncio", "os", "datetime"):
        assert module in forbidden
    for package in ("zmesh.crypto", "zmesh.onion", "zmesh.link", "zmesh.session", "zmesh.node"):
        assert package in config.split("forbidden_modules =")[0]
