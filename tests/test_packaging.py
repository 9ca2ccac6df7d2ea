"""The wheel carries the browser node: built with pip, installed in a fresh venv outside
the checkout, its `zmesh web` serves the packaged page, and that page joins a mesh of
relays run from the same venv (issue 14, item 2)."""

import asyncio
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import browserpage
import netmesh
import pytest

from zmesh.runtime.harness import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


def _build_wheel(out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("zmesh-*-py3-none-any.whl")
    return wheel


def _check_contents(wheel: Path, tmp: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for needed in ("index.html", "page.js", "worker.js", "zmesh-lock.json"):
            assert f"zmesh/web/{needed}" in names
        assert "zmesh/web/pyodide/pyodide.asm.wasm" in names
        (inner,) = [n for n in names if re.fullmatch(r"zmesh/web/wheels/zmesh-.*\.whl", n)]
        zf.extract(inner, tmp)
    with zipfile.ZipFile(tmp / inner) as inner_zf:  # the page's own wheel: no page inside
        assert not [n for n in inner_zf.namelist() if n.startswith("zmesh/web/")]
        assert "zmesh/node.py" in inner_zf.namelist()


def _fresh_venv(tmp: Path, wheel: Path) -> tuple[str, dict[str, str]]:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
        cwd=tmp,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    where = subprocess.run(
        [python, "-c", "import zmesh; print(zmesh.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed wheel, not the checkout
    return python, env


async def _joins(url: str) -> dict[str, object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=browserpage.chromium(), args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(permissions=browserpage.PERMISSIONS)
            page = await context.new_page()
            await page.goto(url)
            try:
                await asyncio.wait_for(page.evaluate("() => zmesh.ready"), READY_TIMEOUT)
            finally:
                status: dict[str, object] = await page.evaluate("() => zmesh.status()")
                print(f"the page's status: {status}")
            return status
        finally:
            await browser.close()


@pytest.mark.slow
def test_the_wheel_serves_a_page_that_joins(tmp_path: Path) -> None:
    pytest.importorskip("playwright.async_api", reason="playwright is in the test extras")
    browserpage.chromium()
    browserpage.ensure_dist()  # web/node_modules current, once across xdist workers
    wheel = _build_wheel(tmp_path / "wheels")
    _check_contents(wheel, tmp_path)
    python, env = _fresh_venv(tmp_path, wheel)

    procs: list[netmesh.Proc] = []
    try:
        first = netmesh.start_relay(tmp_path, "relay0", [], exit_=True, python=python, env=env)
        procs.append(first)
        for i in (1, 2):  # a circuit needs three relays
            relay = netmesh.start_relay(tmp_path, f"relay{i}", [first.url], python=python, env=env)
            procs.append(relay)
        args = ["web", "--port", "0"]  # no --dist: the packaged bundle
        for relay in procs:
            args += ["--bootstrap", relay.url]
        web = netmesh.start(args, tmp_path / "web.log", "web", python, env)
        procs.append(web)
        line = netmesh._read_line(web.popen, r"serving .* on http://", 30)
        served = re.fullmatch(r"zmesh web: serving (\S+) on (http://\S+)", line)
        assert served is not None, line
        assert Path(served[1]).is_relative_to(tmp_path / "venv"), line
        status = asyncio.run(_joins(served[2]))
        assert status["ready"] and status["peers"] >= 1, status
    finally:
        for proc in reversed(procs):
            netmesh.stop(proc)


def test_a_wheel_without_node_says_so(tmp_path: Path) -> None:
    """Building a wheel where Node.js is missing fails with a message that says so."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bare)}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert done.returncode != 0
    assert "needs Node.js 20+ with npm" in done.stdout + done.stderr
