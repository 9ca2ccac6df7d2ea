#!/usr/bin/env node
// Benchmark: zMesh's crypto in Pyodide on the noble backend, from Python, against the same
// noble calls made directly in JavaScript (the baseline: what the FFI and Python add).
//
//   python build_wasm.py && node bench/pyodide_crypto.mjs [--rounds N] [--quick]
//
// Loads web/dist/ the way the browser node does (offline), reports how long loadPyodide
// and loadPackage("zmesh") take, then medians (µs per operation) of interleaved rounds.

import { loadZmesh } from "../tests/pyodide/load.mjs";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const roundsAt = args.indexOf("--rounds");
const rounds = roundsAt >= 0 ? Number(args[roundsAt + 1]) : quick ? 5 : 30;

const { pyodide, timings } = await loadZmesh();
console.log(
  `loadPyodide ${timings.load_pyodide_ms.toFixed(0)} ms, loadPackage("zmesh") + import ` +
    `${timings.load_package_ms.toFixed(0)} ms (Node ${process.version}, offline, from web/dist/)`,
);

// Baselines: the same noble work, called from JavaScript with no Python in between.
const Z = globalThis.zmeshCrypto;
const key = new Uint8Array(32).fill(7);
const nonce = new Uint8Array(12);
const cellRest = new Uint8Array(8192 - 32);
const [dk, ek] = Z.mlkem768Keygen(new Uint8Array(64).fill(1));
const xsk = new Uint8Array(32).fill(2);
const [, ctM] = Z.mlkem768EncapsRandom(ek);
const ctX = Z.x25519Public(new Uint8Array(32).fill(3));
globalThis.zmeshBench = {
  chacha8k: (n) => {
    for (let i = 0; i < n; i++) Z.chacha20Xor(key, nonce, cellRest);
  },
  xwingDecapsParts: (n) => {
    for (let i = 0; i < n; i++) {
      Z.mlkem768Decaps(dk, ctM);
      Z.x25519Exchange(xsk, ctX);
    }
  },
};

const report = pyodide.runPython(`
import gc, hashlib, json, statistics, time
from js import zmeshBench
from zmesh.crypto import backend, lioness, xwing, signing

ROUNDS = ${rounds}
key = xwing.PrivateKey(bytes(range(32)))
ct, _ = xwing.encaps(key.public, bytes(64))
lkey = lioness.LionessKey.from_bytes(bytes(range(128)))
tweak = lioness.make_tweak(1, 0)
cell = bytes(8192)
rest = cell[32:]
k32, n12 = bytes(32), bytes(12)
sk = signing.SigningKey.from_seed(bytes(64))
msg = bytes(300)
sig = sk.sign(msg, b"bench")

def blake(n):
    for _ in range(n):
        hashlib.blake2b(rest, key=k32, digest_size=32, salt=bytes(16)).digest()

subjects = {
    # name: (batch, run(n))
    "ChaCha20 8160 B (JS baseline)": (50, lambda n: zmeshBench.chacha8k(n)),
    "ChaCha20 8160 B (backend.chacha20_xor)": (50, lambda n: [backend.chacha20_xor(k32, n12, rest) for _ in range(n)]),
    "keyed BLAKE2b 8160 B (hashlib)": (50, blake),
    "LIONESS encrypt, 8 KiB cell": (20, lambda n: [lioness.encrypt(lkey, tweak, cell) for _ in range(n)]),
    "LIONESS decrypt, 8 KiB cell": (20, lambda n: [lioness.decrypt(lkey, tweak, cell) for _ in range(n)]),
    "X-Wing decaps parts (JS baseline)": (5, lambda n: zmeshBench.xwingDecapsParts(n)),
    "X-Wing decaps (xwing.PrivateKey)": (5, lambda n: [key.decaps(ct) for _ in range(n)]),
    "X-Wing encaps, randomized (noble ML-KEM)": (5, lambda n: [xwing.encaps(key.public) for _ in range(n)]),
    "X-Wing encaps, deterministic (pure-Python ML-KEM)": (2, lambda n: [xwing.encaps(key.public, bytes(64)) for _ in range(n)]),
    "hybrid sign (Ed25519 + ML-DSA-44)": (2, lambda n: [sk.sign(msg, b"bench") for _ in range(n)]),
    "hybrid verify": (2, lambda n: [signing.verify(sk.public, sig, msg, b"bench") for _ in range(n)]),
}
samples = {name: [] for name in subjects}
for batch, run in subjects.values():
    run(batch)  # warm up the JIT and the buffers
gc.disable()
for r in range(ROUNDS):
    names = list(subjects)
    names = names[r % len(names):] + names[:r % len(names)]
    for name in names:
        batch, run = subjects[name]
        t = time.perf_counter()
        run(batch)
        samples[name].append((time.perf_counter() - t) / batch * 1e6)
gc.enable()
json.dumps({name: statistics.median(v) for name, v in samples.items()})
`);

const medians = JSON.parse(report);
const width = Math.max(...Object.keys(medians).map((k) => k.length));
console.log(`\n${"operation".padEnd(width)}  median (µs), ${rounds} rounds`);
for (const [name, us] of Object.entries(medians)) {
  console.log(`${name.padEnd(width)}  ${us.toFixed(1).padStart(9)}`);
}
const ffi = medians["ChaCha20 8160 B (backend.chacha20_xor)"] - medians["ChaCha20 8160 B (JS baseline)"];
const decapsRatio = medians["X-Wing decaps (xwing.PrivateKey)"] / medians["X-Wing decaps parts (JS baseline)"];
console.log(`\nFFI + Python overhead per chacha20_xor call: ${ffi.toFixed(1)} µs; ` +
  `X-Wing decaps ratio to its JS parts: ${decapsRatio.toFixed(2)}x`);
const cellMBps = 8192 / medians["LIONESS encrypt, 8 KiB cell"];
console.log(`one LIONESS layer per 8 KiB cell: ${cellMBps.toFixed(1)} MB/s per core`);
process.exit(0);
