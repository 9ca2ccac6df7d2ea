// Make the browser node's Pyodide memory snapshot at build time (build_wasm.py runs this in
// Node; see docs/decisions.md D52).
//
//   node web/snapshot.mjs DIST OUT
//
// Boots Pyodide from DIST exactly as web/src/worker.js does (same loader, same lock), with
// `_makeSnapshot: true`, loads the zmesh wheel and imports zmesh.runtime.browser (so zmesh,
// its pure-Python dependencies and the parts of the standard library they use are imported
// and compiled), and writes `pyodide.makeMemorySnapshot()` to OUT.  Nothing else runs: no
// node, no identity, no key, no RNG draw.  JS objects that Python holds at this point must
// be reachable from globalThis (zmesh.crypto._noble holds zmeshCrypto's functions): the
// snapshot records them as paths, resolved again in the page that restores it.  Anything
// else (an object a JS call returned) makes makeMemorySnapshot throw, and the build fails.
//
// Prints one JSON line: {"bytes": N, "ms": {...}}.  Exit status 1 with a message on failure.

import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import vm from "node:vm";

const [dist, out] = process.argv.slice(2);
if (!dist || !out) {
  console.error("usage: node web/snapshot.mjs DIST OUT");
  process.exit(2);
}

// Errors are reported by their message: Node would print the minified line they come from.
process.on("uncaughtException", (err) => {
  console.error(`snapshot.mjs: ${err?.stack ?? err}`);
  process.exit(1);
});
process.on("unhandledRejection", (err) => {
  console.error(`snapshot.mjs: ${err?.stack ?? err}`);
  process.exit(1);
});

// The snapshot must be made offline, from DIST only.
globalThis.fetch = async (input) => {
  throw new Error(`snapshot.mjs: no network access (tried to fetch ${String(input?.url ?? input)})`);
};

const WHEEL_DIR = "/zmesh-wheels"; // where the page writes them again (web/src/worker.js)
const ms = {};
let t = performance.now();
// The crypto bundle sets globalThis.zmeshCrypto, which zmesh.crypto._noble reads at import.
const cryptoBundle = path.join(dist, "zmesh-crypto.js");
vm.runInThisContext(readFileSync(cryptoBundle, "utf8"), { filename: cryptoBundle });
const { loadPyodide } = await import(pathToFileURL(path.join(dist, "pyodide", "pyodide.mjs")).href);
const pyodide = await loadPyodide({
  indexURL: path.join(dist, "pyodide") + path.sep,
  lockFileURL: path.join(dist, "zmesh-lock.json"),
  _makeSnapshot: true,
  _sysExecutable: "./this.program", // what a browser's Pyodide has, not this script's path
});
ms.boot = performance.now() - t;

t = performance.now();
// The wheels go into the file system as they are and onto sys.path (zipimport), not through
// loadPackage: its bookkeeping lives in JS (pyodide.loadedPackages), which the snapshot
// cannot carry, and the files it unpacks would be lost anyway (Emscripten's file system is
// JS state, not in the snapshot).  The page that restores the snapshot writes the same
// bytes (checked against the lock's sha256) at the same paths, so that zipimport's cached
// directory of each wheel stays true and later imports find their files.
const lock = JSON.parse(readFileSync(path.join(dist, "zmesh-lock.json"), "utf8"));
const { FS } = pyodide;
FS.mkdirTree(WHEEL_DIR);
const wheelPaths = {}; // lock package name -> path
for (const [name, entry] of Object.entries(lock.packages)) {
  const target = `${WHEEL_DIR}/${path.basename(entry.file_name)}`; // file_name: wheels/NAME
  FS.writeFile(target, readFileSync(path.join(dist, entry.file_name)));
  wheelPaths[name] = target;
}
pyodide.runPython(`import sys; sys.path[1:1] = ${JSON.stringify(Object.values(wheelPaths))}`);
pyodide.pyimport("zmesh.runtime.browser").destroy();
// imported lazily by the node's first HTTP request (zmesh.runtime.browser.pyfetch_request):
// importing it here takes about 0.4 s off the join after a restore
pyodide.pyimport("pyodide.http").destroy();
ms.import = performance.now() - t;

t = performance.now();
// Python holds three JS objects at this point, all from the crypto bundle (the namespace and
// two of its functions, which it freezes, so Pyodide cannot track them as paths by itself):
// record each as its path from globalThis, for the page's _snapshotDeserializer.  Anything
// else fails the build: the snapshot must hold no JS object that a page cannot name.
const named = new Map();
(function index(value, at) {
  if (at.length > 3 || named.has(value)) return;
  named.set(value, at);
  for (const key of Object.keys(value)) {
    const child = value[key];
    if (child !== null && ["object", "function"].includes(typeof child)) index(child, [...at, key]);
  }
})(globalThis.zmeshCrypto, ["zmeshCrypto"]);
const snapshot = pyodide.makeMemorySnapshot({
  serializer(value) {
    const at = named.get(value);
    if (!at) throw new Error(`Python holds a JS object the snapshot cannot name: ${String(value).slice(0, 80)}`);
    return { global: at };
  },
});
writeFileSync(out, snapshot);
ms.snapshot = performance.now() - t;
console.log(JSON.stringify({ bytes: snapshot.length, wheels: wheelPaths, ms }));
