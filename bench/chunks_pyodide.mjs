#!/usr/bin/env node
// Benchmark: bench/chunks.py inside Pyodide (Node), where erasure coding runs on the
// pure-Python backend (zmesh.chunks._gf256), after checking that backend against
// tests/vectors/erasure.json (the bytes zfec produces on CPython).
//
//   (cd web && npm ci) && node bench/chunks_pyodide.mjs [--rounds N] [--mb M] [--quick]
//
// Needs only web/node_modules/pyodide (no web/dist build): the worktree is mounted into
// Pyodide's file system and imported from source.  Arguments go to bench/chunks.py.

import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PYODIDE = path.join(ROOT, "web", "node_modules", "pyodide");
const { loadPyodide } = await import(pathToFileURL(path.join(PYODIDE, "pyodide.mjs")).href);
const pyodide = await loadPyodide({
  indexURL: PYODIDE + path.sep,
  env: { PYTHONDONTWRITEBYTECODE: "1" },
});
pyodide.FS.mkdir("/repo");
pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: ROOT }, "/repo");
pyodide.globals.set("bench_args", pyodide.toPy(process.argv.slice(2)));
// The last expression is the exit status (argparse's SystemExit must not reach Emscripten).
process.exitCode = await pyodide.runPythonAsync(`
import hashlib, json, sys
sys.path[:0] = ["/repo", "/repo/bench"]
from zmesh.chunks import encode_content, erasure
from zmesh.rng import DeterministicRng, randbelow

assert erasure.BACKEND == "gf256", erasure.BACKEND
vectors = json.load(open("/repo/tests/vectors/erasure.json"))
rng = DeterministicRng(vectors["seed"].encode())
for code in vectors["codes"]:  # replays the generator's draws (tests/chunks/test_erasure.py)
    k, n = code["k"], code["n"]
    blocks = [rng.bytes(len(bytes.fromhex(code["data"][0]))) for _ in range(k)]
    pool = list(range(n))
    [pool.pop(randbelow(rng, len(pool))) for _ in range(k)]
    assert [b.hex() for b in blocks] == code["data"]
    assert [p.hex() for p in erasure.encode(blocks, n)] == code["parity"]
    every = blocks + [bytes.fromhex(p) for p in code["parity"]]
    assert erasure.decode({s: every[s] for s in code["decode_from"]}, k, n) == blocks
c = vectors["content"]
data = rng.bytes(7 * 4096 + 100)
assert hashlib.sha256(data).hexdigest() == c["data_sha256"]
enc = encode_content(data, c["chunk_size"], c["k"], c["n"])
assert enc.manifest.encode().hex() == c["manifest"]
assert str(enc.manifest.content_id) == c["content_id"]
assert [hashlib.sha256(p).hexdigest() for p in enc.pieces] == c["piece_sha256"]
print(f"Python {sys.version.split()[0]} on {sys.platform}: tests/vectors/erasure.json holds "
      f"on the gf256 backend ({len(vectors['codes'])} codes and the content)", file=sys.stderr)

sys.argv = ["bench/chunks.py", *bench_args]
import chunks
try:
    status = chunks.main(list(bench_args))
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else 1
status
`);
