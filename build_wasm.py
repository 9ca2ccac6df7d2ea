#!/usr/bin/env python3
"""Assemble the browser node's files in web/dist/ from pinned inputs.

    python build_wasm.py                 # web/dist/: Pyodide, the zmesh wheel, the bundles
    python build_wasm.py --test-wheels   # also the wheels the Pyodide test run unpacks

Steps, each reported as it runs:

1. ``npm ci`` in web/ when web/node_modules is missing or does not match
   web/package-lock.json (install scripts are not run);
2. copy the Pyodide core (interpreter, standard library, its lock) from
   web/node_modules/pyodide/ to web/dist/pyodide/;
3. build the pure-Python zmesh wheel into web/dist/wheels/ with this interpreter's hatchling,
   and download the wheels of its Pyodide dependencies (h11, tlslite-ng and what it
   needs, certifi), pinned with hashes in
   web/requirements.txt, next to it;
4. write web/dist/zmesh-lock.json, a Pyodide lock file naming those wheels with their
   sha256, so the browser checks their integrity when it loads them;
5. bundle web/src/crypto.js into web/dist/zmesh-crypto.js (an IIFE that sets
   ``globalThis.zmeshCrypto``), web/src/x509.js into web/dist/zmesh-x509.js (an ES module
   the worker imports on the first https fetch), and web/src/{worker,page,embed}.js where
   they exist;
6. copy web/static/* into web/dist/;
7. make the Pyodide memory snapshot (web/snapshot.mjs, in Node): the interpreter with zmesh
   and h11 imported, before any node exists; written gzipped as zmesh-snapshot.bin.gz, with
   zmesh-snapshot.json naming its sha256, the Pyodide version and the wheels it was made
   from (their sha256 and where the page must write them), so that worker.js uses it only
   with exactly those wheels and that Pyodide, and boots without it otherwise (D52).

Everything the browser loads is then under web/dist/; nothing is fetched at run time.
The browser node loads it as::

    const { loadPyodide } = await import("./pyodide/pyodide.mjs");
    const pyodide = await loadPyodide({ lockFileURL: new URL("zmesh-lock.json", base).href });
    await pyodide.loadPackage("zmesh");  // after zmesh-crypto.js has run; loads h11 too

``--out DIR`` assembles the same files elsewhere.  A wheel built from this tree (``pip
wheel .`` or ``python -m build``) carries them as ``zmesh/web/``: hatch_build.py runs this
script for every non-editable wheel, and the wheel built in step 3 is built by hatchling
with hooks off, so that nothing recurses.

``--test-wheels`` downloads the pure wheels of pytest and its helpers, pinned with hashes
in tests/pyodide/requirements.txt, into build/pyodide-wheels/ for
tests/pyodide/run_core_tests.mjs.
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent
WEB = ROOT / "web"
SRC = WEB / "src"
STATIC = WEB / "static"
DIST = WEB / "dist"
NODE_MODULES = WEB / "node_modules"
PACKAGE_LOCK = WEB / "package-lock.json"
NPM_STAMP = NODE_MODULES / ".zmesh-package-lock.sha256"
PYODIDE_SRC = NODE_MODULES / "pyodide"
ESBUILD = NODE_MODULES / ".bin" / "esbuild"
#: zmesh's dependencies in Pyodide, pinned with hashes (see the file's header)
WHEEL_REQUIREMENTS = WEB / "requirements.txt"
#: the environment markers of Pyodide (PEP 508), to tell which dependencies apply there
PYODIDE_MARKERS = {"platform_system": "Emscripten", "sys_platform": "emscripten", "extra": ""}

TEST_REQUIREMENTS = ROOT / "tests" / "pyodide" / "requirements.txt"
TEST_WHEELS = ROOT / "build" / "pyodide-wheels"
TEST_PYTHON_VERSION = "3.14"  # Pyodide 314.x runs CPython 3.14

# What loadPyodide needs, all of it local: the loader (ESM for module workers, classic for
# importScripts), the Emscripten module, the interpreter, the standard library and the
# lock whose ABI our own lock repeats.
PYODIDE_FILES = (
    "pyodide.mjs",
    "pyodide.js",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
)
LOCK_NAME = "zmesh-lock.json"
SNAPSHOT_SCRIPT = WEB / "snapshot.mjs"
SNAPSHOT_NAME = "zmesh-snapshot.bin.gz"
SNAPSHOT_MANIFEST = "zmesh-snapshot.json"
SNAPSHOT_FORMAT = 1  # worker.js refuses a manifest of another format
CRYPTO_BUNDLE = "zmesh-crypto.js"
# The browser node's entry points (web/src/<name>) and their output format.  The worker
# is ESM so that it can `import` the Pyodide loader, which stays a separate file.
ENTRY_POINTS = {"worker.js": "esm", "page.js": "iife", "embed.js": "iife", "mediaframes.js": "iife"}
ESBUILD_COMMON = ("--bundle", "--target=es2022", "--charset=utf8", "--legal-comments=eof")
X509_BUNDLE = "zmesh-x509.js"  # web/src/x509.js: certificate checks for https fetches (D51)
EXTERNALS = ("--external:./pyodide/*", f"--external:./{CRYPTO_BUNDLE}")


class BuildError(Exception):
    """A step failed; the message says which and what to do."""


def step(message: str) -> None:
    print(f"build_wasm: {message}", flush=True)


def run(command: Sequence[str | Path], cwd: Path, what: str) -> None:
    argv = [str(c) for c in command]
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BuildError(f"{what}: {argv[0]} is not installed or not on PATH") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise BuildError(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{output}")


def pip_download(requirements: Path, dest: Path, what: str) -> None:
    """Download hash-pinned pure-Python wheels for Pyodide's Python into ``dest``."""
    run(
        [
            sys.executable, "-m", "pip", "download", "-q", "--no-deps",
            "--only-binary=:all:", "--python-version", TEST_PYTHON_VERSION, "--platform", "any",
            "--require-hashes", "-r", requirements, "-d", dest,
        ],
        ROOT,
        f"downloading {what}",
    )  # fmt: skip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# 1. npm


def _node_modules_current() -> bool:
    """True if node_modules was installed from exactly this package-lock.json."""
    if not NPM_STAMP.is_file() or not PACKAGE_LOCK.is_file():
        return False
    if NPM_STAMP.read_text().strip() != sha256_file(PACKAGE_LOCK):
        return False
    lock = json.loads(PACKAGE_LOCK.read_text())
    for key, entry in lock.get("packages", {}).items():
        if not key.startswith("node_modules/") or entry.get("optional"):
            continue
        manifest = WEB / key / "package.json"
        if not manifest.is_file():
            return False
        if json.loads(manifest.read_text()).get("version") != entry.get("version"):
            return False
    return ESBUILD.exists()


def npm_ci() -> None:
    if not PACKAGE_LOCK.is_file():
        raise BuildError(f"{PACKAGE_LOCK.relative_to(ROOT)} is missing")
    if _node_modules_current():
        step("web/node_modules matches package-lock.json")
        return
    if shutil.which("npm") is None:
        raise BuildError("npm is not installed (Node 20+ with npm is needed to build web/dist)")
    step("npm ci (web/node_modules is missing or stale)")
    # --ignore-scripts: no package runs code at install (esbuild works without its
    # postinstall, which only checks and links the platform binary).
    run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], WEB, "npm ci")
    NPM_STAMP.write_text(sha256_file(PACKAGE_LOCK) + "\n")
    if not _node_modules_current():
        raise BuildError("npm ci finished but web/node_modules does not match the lock")


# 2. Pyodide


def copy_pyodide(out: Path) -> dict[str, str]:
    target = out / "pyodide"
    target.mkdir(parents=True)
    for name in PYODIDE_FILES:
        source = PYODIDE_SRC / name
        if not source.is_file():
            raise BuildError(f"the pyodide package has no {name}: is web/package.json's pin right?")
        shutil.copy2(source, target / name)
    version = json.loads((PYODIDE_SRC / "package.json").read_text())["version"]
    size = sum((target / n).stat().st_size for n in PYODIDE_FILES) / 1e6
    step(f"copied Pyodide {version} core ({size:.1f} MB) to pyodide/")
    info: dict[str, str] = json.loads((PYODIDE_SRC / "pyodide-lock.json").read_text())["info"]
    return info


# 3. the zmesh wheel


def build_wheel(out: Path) -> Path:
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="zmesh-wheel-") as tmp:
        # --no-hooks: the wheel inside the page carries no page itself (hatch_build.py)
        run(
            [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "--no-hooks", "-d", tmp],
            ROOT,
            "building the zmesh wheel",
        )
        built = sorted(Path(tmp).glob("zmesh-*-py3-none-any.whl"))
        if len(built) != 1:
            raise BuildError(f"expected one pure-Python zmesh wheel, got {built}")
        wheel = wheels / built[0].name
        shutil.copy2(built[0], wheel)
    step(f"built wheels/{wheel.name} ({wheel.stat().st_size / 1e3:.0f} kB)")
    return wheel


def _pins(requirements: Path) -> dict[str, tuple[str, str]]:
    """{normalized name: (version, sha256)} from a ``name==version --hash=sha256:...`` file."""
    pins: dict[str, tuple[str, str]] = {}
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, digest = line.partition("--hash=sha256:")
        name, _, version = spec.strip().partition("==")
        pins[name.replace("-", "_").lower()] = (version, digest.strip())
    return pins


def _pyodide_requirements(wheel: Path) -> list[Requirement]:
    """The Requires-Dist entries of ``wheel`` that apply in Pyodide."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(metadata).decode().splitlines()
    requirements = [
        Requirement(line.partition(":")[2]) for line in lines if line.startswith("Requires-Dist:")
    ]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(PYODIDE_MARKERS)]


def dependency_wheels(out: Path, zmesh_wheel: Path) -> list[Path]:
    """Download the wheels that zmesh needs in Pyodide, as pinned in web/requirements.txt.

    BuildError if a dependency is not pinned there, a pin is outside zmesh's range, or a
    wheel does not match its hash."""
    pins = _pins(WHEEL_REQUIREMENTS)
    where = WHEEL_REQUIREMENTS.relative_to(ROOT)
    for requirement in _pyodide_requirements(zmesh_wheel):
        key = requirement.name.replace("-", "_").lower()
        if key not in pins:
            raise BuildError(f"zmesh needs {requirement} in Pyodide: pin it in {where}")
        if not requirement.specifier.contains(pins[key][0], prereleases=True):
            raise BuildError(f"{where} pins {key}=={pins[key][0]}, outside zmesh's {requirement}")
    wheels = out / "wheels"
    pip_download(WHEEL_REQUIREMENTS, wheels, "zmesh's dependency wheels")
    found = []
    for key, (version, digest) in pins.items():
        matches = [
            p for p in wheels.glob("*.whl") if p.name.lower().startswith(f"{key}-{version}-")
        ]
        if len(matches) != 1 or sha256_file(matches[0]) != digest:
            raise BuildError(f"the {key} wheel in wheels/ does not match {where}")
        found.append(matches[0])
        step(f"added wheels/{matches[0].name} (sha256 {digest[:16]}…)")
    return found


# 4. the lock


def _wheel_version(wheel: Path) -> str:
    # PEP 427: {distribution}-{version}(-{build tag})?-{python tag}-{abi tag}-{platform tag}.whl
    return wheel.name.split("-")[1]


def _top_level_packages(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/")[0] for n in zf.namelist() if "/" in n}
    return sorted(t for t in tops if not t.endswith((".dist-info", ".data")))


def _lock_entry(wheel: Path, depends: list[str]) -> dict[str, object]:
    # Pyodide looks packages up by their PEP 503 name (tlslite_ng -> tlslite-ng)
    return {
        "name": re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower(),
        "version": _wheel_version(wheel),
        "file_name": f"wheels/{wheel.name}",
        "install_dir": "site",
        "sha256": sha256_file(wheel),
        "package_type": "package",
        "imports": _top_level_packages(wheel),
        "depends": depends,
        "unvendored_tests": False,
    }


def write_lock(
    out: Path, info: dict[str, str], wheel: Path, dependencies: Sequence[Path]
) -> dict[str, object]:
    """A Pyodide lock (same ABI info as Pyodide's own) naming only what web/dist ships:
    zmesh, and the wheels it depends on (loaded with it by ``loadPackage("zmesh")``).

    The file names are relative to the lock's own URL (Pyodide's default packageBaseUrl),
    and each sha256 is its wheel's: browsers verify it as the fetch's subresource
    integrity, so a wheel that does not match is refused.  Pyodide's other packages are
    left out on purpose: web/dist does not ship them and nothing may be fetched elsewhere.
    """
    deps = [_lock_entry(dep, []) for dep in dependencies]
    entry = _lock_entry(wheel, sorted(str(d["name"]) for d in deps))
    packages = {str(e["name"]): e for e in [entry, *deps]}
    lock = {"info": info, "packages": packages}
    (out / LOCK_NAME).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    depends = ", ".join(n for n in packages if n != "zmesh")
    step(
        f"wrote {LOCK_NAME} (zmesh {entry['version']}, "
        f"sha256 {str(entry['sha256'])[:16]}…; with {depends or 'no dependencies'})"
    )
    return lock


# 5. bundles


def esbuild(entry: Path, outfile: Path, fmt: str, extra: Sequence[str] = ()) -> None:
    if not ESBUILD.exists():
        raise BuildError("esbuild is missing from web/node_modules (npm ci did not install it)")
    run(
        [ESBUILD, entry, *ESBUILD_COMMON, f"--format={fmt}", f"--outfile={outfile}", *extra],
        WEB,
        f"esbuild {entry.relative_to(ROOT)}",
    )
    size = outfile.stat().st_size / 1e3
    step(f"bundled {entry.relative_to(WEB)} -> {outfile.name} ({fmt}, {size:.0f} kB)")


def bundle(out: Path) -> None:
    esbuild(SRC / "crypto.js", out / CRYPTO_BUNDLE, "iife", ["--minify"])
    esbuild(SRC / "x509.js", out / X509_BUNDLE, "esm", ["--minify"])
    for name, fmt in ENTRY_POINTS.items():
        if (SRC / name).is_file():
            esbuild(SRC / name, out / name, fmt, EXTERNALS)


# 6. static files


def copy_static(out: Path) -> None:
    if not STATIC.is_dir():
        return
    shutil.copytree(STATIC, out, dirs_exist_ok=True)
    count = sum(1 for p in STATIC.rglob("*") if p.is_file())
    step(f"copied {count} file(s) from web/static/")


# 7. the memory snapshot


def make_snapshot(out: Path, lock: dict[str, Any]) -> None:
    """Run web/snapshot.mjs on the assembled ``out`` and write the gzipped snapshot and its
    manifest (see the module doc).  BuildError if Node is missing or the script fails."""
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is not installed (Node 20+ is needed to make the snapshot)")
    raw = out / "zmesh-snapshot.bin"
    # TZ: the interpreter reads the time zone at start; the build machine's has no business
    # in every page's snapshot
    env = {"PATH": os.environ.get("PATH", ""), "TZ": "UTC"}
    try:
        done = subprocess.run(
            [node, str(SNAPSHOT_SCRIPT), str(out), str(raw)],
            cwd=WEB, capture_output=True, text=True, check=False, env=env, timeout=600,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BuildError("making the snapshot took over 600 s") from None
    if done.returncode != 0:
        raise BuildError(f"making the snapshot failed: {(done.stdout + done.stderr).strip()}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    packages: dict[str, dict[str, Any]] = lock["packages"]
    wheels = {
        name: {
            "file_name": entry["file_name"],
            "sha256": entry["sha256"],
            "path": report["wheels"][name],
        }
        for name, entry in packages.items()
    }
    packed = out / SNAPSHOT_NAME
    # mtime=0: the same snapshot gives the same file
    with (
        raw.open("rb") as source,
        packed.open("wb") as sink,
        gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as gz,
    ):
        shutil.copyfileobj(source, gz, 1 << 20)
    raw.unlink()
    version = json.loads((PYODIDE_SRC / "package.json").read_text())["version"]
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "file": SNAPSHOT_NAME,
        "sha256": sha256_file(packed),
        "bytes": packed.stat().st_size,
        "rawBytes": report["bytes"],
        "pyodide": version,
        "wheels": wheels,
    }
    (out / SNAPSHOT_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    step(
        f"made {SNAPSHOT_NAME} ({report['bytes'] / 1e6:.1f} MB of memory, "
        f"{manifest['bytes'] / 1e6:.1f} MB gzipped, sha256 {str(manifest['sha256'])[:16]}…; "
        f"boot {report['ms']['boot'] / 1e3:.1f} s, imports {report['ms']['import'] / 1e3:.1f} s)"
    )


# --test-wheels


def test_wheels() -> None:
    pins = {
        f"{name}-{version}-": digest for name, (version, digest) in _pins(TEST_REQUIREMENTS).items()
    }

    def have() -> bool:
        for prefix, digest in pins.items():
            found = [p for p in TEST_WHEELS.glob("*.whl") if p.name.lower().startswith(prefix)]
            if len(found) != 1 or sha256_file(found[0]) != digest:
                return False
        return True

    if TEST_WHEELS.is_dir() and have():
        step(f"test wheels present in {TEST_WHEELS.relative_to(ROOT)}/ ({len(pins)}, hashes match)")
        return
    step(f"downloading {len(pins)} pinned test wheels into {TEST_WHEELS.relative_to(ROOT)}/")
    TEST_WHEELS.mkdir(parents=True, exist_ok=True)
    for stale in TEST_WHEELS.glob("*.whl"):
        stale.unlink()
    pip_download(TEST_REQUIREMENTS, TEST_WHEELS, "the test wheels")
    if not have():
        raise BuildError(f"the wheels in {TEST_WHEELS} do not match {TEST_REQUIREMENTS}")


def build(out: Path = DIST, with_test_wheels: bool = False) -> None:
    """Assemble the bundle in ``out`` (replaced whole once complete)."""
    start = time.monotonic()
    npm_ci()
    staging = out.parent / f".{out.name}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        info = copy_pyodide(staging)
        wheel = build_wheel(staging)
        lock = write_lock(staging, info, wheel, dependency_wheels(staging, wheel))
        bundle(staging)
        copy_static(staging)
        make_snapshot(staging, lock)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    if with_test_wheels:
        test_wheels()
    step(f"{out} is ready ({time.monotonic() - start:.1f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Assemble web/dist/ (Pyodide, the zmesh wheel and its dependencies, their "
        "lock, the JS bundles) from the pins in web/package-lock.json, web/requirements.txt "
        "and pyproject.toml.",
    )
    parser.add_argument(
        "--test-wheels",
        action="store_true",
        help="also download the pinned test wheels (tests/pyodide/requirements.txt) into "
        "build/pyodide-wheels/ for tests/pyodide/run_core_tests.mjs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DIST,
        metavar="DIR",
        help="where to assemble the bundle (default web/dist; replaced whole when complete)",
    )
    args = parser.parse_args(argv)
    try:
        build(args.out.resolve(), args.test_wheels)
    except BuildError as exc:
        print(f"build_wasm: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
