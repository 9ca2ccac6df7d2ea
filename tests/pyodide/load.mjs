// Load Pyodide, the zmesh wheel and the noble crypto bundle from web/dist/ in Node, the way
// the browser node does in a Worker, with the network switched off.
//
//   import { loadZmesh } from "./load.mjs";
//   const { pyodide, timings } = await loadZmesh();
//
// Shared by tests/pyodide/run_core_tests.mjs and bench/pyodide_crypto.mjs.

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import vm from "node:vm";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DIST = path.join(ROOT, "web", "dist");

/** Refuse every network fetch: the dist must load offline (Node's Pyodide would fall back
 * to a CDN for a package file it cannot find locally). */
export function disableNetwork() {
  const refuse = (what) => {
    throw new Error(`network access is disabled in this run (tried to fetch ${what})`);
  };
  globalThis.fetch = async (input) => refuse(String(input?.url ?? input));
}

function sha256(file) {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/**
 * Load everything from `dist`.  Returns the pyodide object and the timings (ms) of each
 * stage.  Throws with a clear message if the dist is not built or a hash does not match.
 */
export async function loadZmesh({ dist = DIST, stdout, stderr } = {}) {
  const lockFile = path.join(dist, "zmesh-lock.json");
  const cryptoBundle = path.join(dist, "zmesh-crypto.js");
  const loader = path.join(dist, "pyodide", "pyodide.mjs");
  for (const file of [lockFile, cryptoBundle, loader]) {
    if (!existsSync(file)) {
      throw new Error(`${path.relative(ROOT, file)} is missing: run \`python build_wasm.py\` first`);
    }
  }
  disableNetwork();
  const timings = {};

  // Node's Pyodide reads package files from disk and skips the integrity check a browser
  // makes (fetch's `integrity`), so make the same check here: the lock must be right.
  const lock = JSON.parse(readFileSync(lockFile, "utf8"));
  for (const [name, entry] of Object.entries(lock.packages)) {
    const file = path.join(dist, entry.file_name);
    const actual = sha256(file);
    if (actual !== entry.sha256) {
      throw new Error(`${name}: ${entry.file_name} has sha256 ${actual}, the lock says ${entry.sha256}`);
    }
  }

  let t = performance.now();
  // The IIFE sets globalThis.zmeshCrypto; Python's zmesh.crypto._noble needs it at import.
  vm.runInThisContext(readFileSync(cryptoBundle, "utf8"), { filename: cryptoBundle });
  const { loadPyodide } = await import(pathToFileURL(loader).href);
  timings.crypto_bundle_and_loader_ms = performance.now() - t;

  t = performance.now();
  const pyodide = await loadPyodide({
    indexURL: path.join(dist, "pyodide") + path.sep,
    lockFileURL: lockFile, // file names in it are relative to web/dist/
    env: { PYTHONDONTWRITEBYTECODE: "1" },
    stdout,
    stderr,
  });
  timings.load_pyodide_ms = performance.now() - t;

  t = performance.now();
  const errors = [];
  await pyodide.loadPackage("zmesh", {
    messageCallback: () => {},
    errorCallback: (message) => errors.push(message),
  });
  // loadPackage reports failures through the callback and does not reject: import to check.
  const backend = pyodide.runPython(
    "import zmesh, zmesh.crypto; zmesh.crypto.backend.NAME",
  );
  timings.load_package_ms = performance.now() - t;
  if (errors.length > 0) throw new Error(`loadPackage("zmesh") failed: ${errors.join("; ")}`);
  if (backend !== "noble") throw new Error(`zmesh chose the ${backend} backend, not noble`);
  return { pyodide, timings };
}
