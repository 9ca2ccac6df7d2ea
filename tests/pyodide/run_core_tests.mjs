#!/usr/bin/env node
// Run zMesh's core test suite inside Pyodide, on the noble crypto backend, from web/dist/.
//
//   python build_wasm.py --test-wheels        # web/dist/ and build/pyodide-wheels/
//   node tests/pyodide/run_core_tests.mjs     # the default subset
//   node tests/pyodide/run_core_tests.mjs tests/test_vectors.py -k digest   # or any pytest args
//
// - Pyodide, the zmesh wheel (through web/dist/zmesh-lock.json) and zmesh-crypto.js load
//   from web/dist/ with the network disabled.
// - pytest and its helpers are the pinned PyPI wheels in build/pyodide-wheels/, unpacked
//   into Pyodide's site-packages.
// - The repo's tests/ and scripts/ are mounted read-only in spirit (no bytecode is
//   written), with pyproject.toml copied in for pytest's configuration; zmesh itself is
//   imported from the wheel, not from the source tree.
// Prints pytest's output and exits with pytest's exit code (non-zero on any failure).

import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { loadZmesh, ROOT } from "./load.mjs";

export const SUBSET = [
  "tests/crypto",
  "tests/onion",
  "tests/link",
  "tests/session",
  "tests/sim",
  "tests/signaling",
  "tests/circuit",
  "tests/health",
  "tests/dht",
  "tests/chunks",
  "tests/test_budget.py",
  "tests/test_dialer.py",
  "tests/test_directory.py",
  "tests/test_driver.py",
  "tests/test_identity.py",
  "tests/test_codec.py",
  "tests/test_rng.py",
  "tests/test_vectors.py",
  "tests/test_node.py",
  "tests/test_node_mesh.py",
];

// Simulations at scale (thousands of nodes, days of churn) and their slow end-to-end
// runs are CPython tools: in Pyodide they would take most of an hour.  The protocol code
// they drive is in the subset above.
export const SKIPPED = [
  "--ignore=tests/sim/test_scale.py",
  "--ignore=tests/sim/test_anonymity.py",
  "--deselect=tests/dht/test_service.py::test_lookups_across_200_nodes_find_targets_in_a_few_rounds",
  "--deselect=tests/dht/test_sample.py::test_every_sample_fills_and_a_sybil_subnet_stays_under_its_cap",
  "--deselect=tests/dht/test_sample.py::test_paths_are_built_from_the_sample",
];

const WHEELS = path.join(ROOT, "build", "pyodide-wheels");
const REPO = "/repo"; // where the checkout appears inside Pyodide

function out(text) {
  process.stdout.write(text + "\n");
}

async function main(argv) {
  const started = performance.now();
  const { pyodide, timings } = await loadZmesh({ stdout: out, stderr: out });
  // Unbuffered from here on, so pytest's progress dots stay on one line.
  for (const [set, stream] of [[pyodide.setStdout, process.stdout], [pyodide.setStderr, process.stderr]]) {
    set.call(pyodide, { write: (bytes) => (stream.write(bytes), bytes.length) });
  }

  let t = performance.now();
  let wheels;
  try {
    wheels = readdirSync(WHEELS).filter((name) => name.endsWith(".whl"));
  } catch {
    wheels = [];
  }
  if (wheels.length === 0) {
    throw new Error(`no test wheels in ${path.relative(ROOT, WHEELS)}/: run \`python build_wasm.py --test-wheels\``);
  }
  const purelib = pyodide.runPython("import sysconfig; sysconfig.get_paths()['purelib']");
  for (const name of wheels.sort()) {
    const data = readFileSync(path.join(WHEELS, name));
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength); // not a Buffer
    pyodide.unpackArchive(bytes, "wheel", { extractDir: purelib });
  }
  timings.unpack_test_wheels_ms = performance.now() - t;

  const FS = pyodide.FS;
  FS.mkdirTree(REPO);
  for (const dir of ["tests", "scripts"]) {
    FS.mkdirTree(`${REPO}/${dir}`);
    pyodide.mountNodeFS(`${REPO}/${dir}`, path.join(ROOT, dir));
  }
  FS.writeFile(`${REPO}/pyproject.toml`, readFileSync(path.join(ROOT, "pyproject.toml")));

  const args = argv.length > 0 ? argv : [...SUBSET, ...SKIPPED];
  out(`pyodide: loaded in ${(timings.load_pyodide_ms / 1000).toFixed(2)} s, zmesh wheel in ` +
    `${(timings.load_package_ms / 1000).toFixed(2)} s, test wheels in ` +
    `${(timings.unpack_test_wheels_ms / 1000).toFixed(2)} s; running pytest ${args.join(" ")}`);
  pyodide.globals.set("pytest_args", pyodide.toPy(["-p", "no:cacheprovider", ...args]));
  t = performance.now();
  const code = pyodide.runPython(`
import os, sys
sys.dont_write_bytecode = True
os.chdir(${JSON.stringify(REPO)})

import pytest


class PyodideProfile:
    """Pyodide runs a few times slower than CPython: no per-example deadline and no health
    check for slow data generation.  Example counts are unchanged."""

    @staticmethod
    def pytest_configure(config):
        from hypothesis import HealthCheck, settings

        settings.register_profile(
            "pyodide", deadline=None, suppress_health_check=[HealthCheck.too_slow]
        )
        settings.load_profile("pyodide")


int(pytest.main(list(pytest_args), plugins=[PyodideProfile()]))
`);
  timings.pytest_ms = performance.now() - t;
  out(`pyodide: pytest exited ${code} after ${(timings.pytest_ms / 1000).toFixed(1)} s ` +
    `(${((performance.now() - started) / 1000).toFixed(1)} s in all)`);
  out(`pyodide-timings: ${JSON.stringify(Object.fromEntries(
    Object.entries(timings).map(([k, v]) => [k, Math.round(v)])))}`);
  return code;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`run_core_tests: ${err?.stack ?? err}\n`);
    process.exit(2);
  },
);
