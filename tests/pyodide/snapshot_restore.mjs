// Restore web/dist's memory snapshot twice in Node, as web/src/worker.js does (the wheels
// written where the manifest says, the crypto bundle's objects found by path), and report
// what the two interpreters hold, for tests/browser/test_snapshot.py:
//
//   node tests/pyodide/snapshot_restore.mjs  ->  one JSON line
//
// {restores: [{zmeshImported, identities, nodes, rngs, randomBefore, randomAfter, urandom,
//              lazyImport}, ...]}: the zmesh objects that would be secrets (Identity,
// Node instances alive in the heap), Python's `random` output before and after the worker's
// reseed, os.urandom, and whether a module not imported before the snapshot still imports
// (its file must come from the wheel written at restore).

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { pathToFileURL } from "node:url";
import vm from "node:vm";
import { DIST, disableNetwork } from "./load.mjs";

// web/src/worker.js's RESEED
const RESEED = "import sys\nif 'random' in sys.modules: sys.modules['random'].seed()";

disableNetwork();
const manifest = JSON.parse(readFileSync(path.join(DIST, "zmesh-snapshot.json"), "utf8"));
const packed = readFileSync(path.join(DIST, manifest.file));
const digest = createHash("sha256").update(packed).digest("hex");
if (digest !== manifest.sha256) throw new Error(`the snapshot's sha256 is ${digest}, the manifest says ${manifest.sha256}`);
const snapshot = gunzipSync(packed);

const bundle = path.join(DIST, "zmesh-crypto.js");
vm.runInThisContext(readFileSync(bundle, "utf8"), { filename: bundle });
const { loadPyodide } = await import(pathToFileURL(path.join(DIST, "pyodide", "pyodide.mjs")).href);

async function restore() {
  const pyodide = await loadPyodide({
    indexURL: path.join(DIST, "pyodide") + path.sep,
    lockFileURL: path.join(DIST, "zmesh-lock.json"),
    _loadSnapshot: new Uint8Array(snapshot), // restoring consumes nothing, but keep them apart
    _snapshotDeserializer: (recorded) => recorded.global.reduce((obj, key) => obj[key], globalThis),
    fsInit(FS) {
      FS.mkdirTree("/zmesh-wheels");
      for (const wheel of Object.values(manifest.wheels)) {
        FS.writeFile(wheel.path, readFileSync(path.join(DIST, wheel.file_name)));
      }
    },
  });
  const report = JSON.parse(pyodide.runPython(`
import gc, json, os, sys
from zmesh.identity import Identity
from zmesh.node import Node
from zmesh.rng import DeterministicRng
from zmesh.runtime.browser_rtc import BrowserRng, JsHost
live = gc.get_objects()
imported = "zmesh.runtime.browser" in sys.modules
random_before = sys.modules["random"].getrandbits(64) if "random" in sys.modules else None
json.dumps({
    "zmeshImported": imported,
    "identities": sum(1 for o in live if isinstance(o, Identity)),
    "nodes": sum(1 for o in live if isinstance(o, Node)),
    "rngs": sum(1 for o in live if isinstance(o, DeterministicRng | BrowserRng | JsHost)),
    "randomBefore": str(random_before),  # the snapshot's state: the same in every restore
})
`));
  // the worker's reseed, then a new draw
  pyodide.runPython(RESEED);
  report.randomAfter = pyodide.runPython("import random; str(random.getrandbits(64))");
  report.urandom = pyodide.runPython("import os; os.urandom(16).hex()");
  report.lazyImport = pyodide.runPython(`
import sys
name = "zmesh.sim.scale"  # the simulator: never imported by the browser node
was = name in sys.modules
import importlib
importlib.import_module(name)
"imported" if not was else "already imported before the snapshot"
`);
  return report;
}

const restores = [await restore(), await restore()];
console.log(JSON.stringify({ restores }));
