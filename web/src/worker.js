// The browser node's Web Worker: boots Pyodide, loads the zmesh wheel and the noble crypto
// bundle, and runs zmesh/runtime/browser.py.  It keeps the page's main thread free: the
// page only moves WebRTC messages (web/src/rtc.js) and draws the status.
//
// Page -> worker: {t: "init", config}, {t: "rtc-reply", ...}, {t: "rtc-ev", ...} (see
// rtc.js), and {t: "call", id, method, args, body} for window.zmesh calls.
// Worker -> page: {t: "rtc", ...} (rtc.js), {t: "status", status}, {t: "reply", id, ok,
// value, body}, {t: "boot", stage, ...} and {t: "fatal", error}.
//
// The paths are relative to this script, as build_wasm.py lays out web/dist: pyodide/,
// zmesh-lock.json (a Pyodide lock naming our wheel in wheels/) and zmesh-crypto.js.  It is
// bundled as an ES module, so the page starts it with {type: "module"}.

import { contentDb } from "./contentdb.js"; // the content store's IndexedDB side

const now = () => performance.timeOrigin + performance.now();
const base = new URL(".", self.location.href);
const boot = { workerStart: now() };
const post = (msg, transfer) => self.postMessage(msg, transfer || []);

let node = null; // the Python BrowserNode
let started = false;
const early = []; // page messages that arrived before the node was up
const requests = new Map(); // rtc request id -> {resolve, reject}
let nextRequest = 1;

// -- IndexedDB: one object store of bytes ------------------------------------------------------
let dbPromise = null;
function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const open = indexedDB.open("zmesh", 1);
      open.onupgradeneeded = () => open.result.createObjectStore("kv");
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
      open.onblocked = () => reject(new Error("IndexedDB is blocked by another tab"));
    });
  }
  return dbPromise;
}

function idb(mode, action) {
  return db().then((database) => new Promise((resolve, reject) => {
    const tx = database.transaction("kv", mode);
    const request = action(tx.objectStore("kv"));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  }));
}

// -- the host object browser.py drives ---------------------------------------------------------
const host = {
  rtc(op, pc, sdp) {
    return new Promise((resolve, reject) => {
      const id = nextRequest++;
      requests.set(id, { resolve, reject });
      post({ t: "rtc", op, id, pc, sdp });
    });
  },
  send(pc, bytes) {
    // to_js gave us a fresh copy; transfer its buffer to the page without another copy
    let data = bytes;
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = data.slice();
    post({ t: "rtc", op: "send", pc, data: data.buffer }, [data.buffer]);
  },
  close(pc) {
    post({ t: "rtc", op: "close", pc });
  },
  publish(statusJson) {
    post({ t: "status", status: JSON.parse(statusJson) });
  },
  reply(id, ok, valueJson, body) {
    const msg = { t: "reply", id, ok, value: JSON.parse(valueJson), body: null };
    const transfer = [];
    if (body) {
      let data = body;
      if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = data.slice();
      msg.body = data.buffer;
      transfer.push(data.buffer);
    }
    post(msg, transfer);
  },
  async load(key) {
    const value = await idb("readonly", (store) => store.get(key));
    if (value instanceof Uint8Array) return value;
    return value instanceof ArrayBuffer ? new Uint8Array(value) : undefined; // undefined: None
  },
  async save(key, bytes) {
    await idb("readwrite", (store) => store.put(new Uint8Array(bytes), key));
  },
  lock(name, waitMs) {
    // Held until this worker ends (the tab closes or reloads); false if still busy after waitMs.
    if (!self.navigator || !navigator.locks) return Promise.resolve(true);
    return new Promise((resolve) => {
      const signal = AbortSignal.timeout(waitMs);
      navigator.locks
        .request(name, { signal }, () => {
          resolve(true);
          return new Promise(() => {}); // never released while we run
        })
        .catch(() => resolve(false));
    });
  },
  random(n) {
    return crypto.getRandomValues(new Uint8Array(n));
  },
  media_frame(pc, bytes) {
    // the sender transform's next frame (null: drop the encoder's), zmesh/runtime/browser_rtc.py
    const port = mediaPorts.get(pc);
    if (!port) return;
    if (!bytes) {
      port.postMessage({ data: null });
      return;
    }
    let data = bytes;
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = data.slice();
    port.postMessage({ data: data.buffer }, [data.buffer]);
  },
  contentDb, // zmesh/runtime/browser_store.py: JsContentDb
};

// A media connection's ports (web/src/rtc.js, op mdial): pc -> the sender transform's port
const mediaPorts = new Map();

function openMediaPorts(pc, ports) {
  if (!Array.isArray(ports) || ports.length !== 2) return;
  const [pull, frames] = ports;
  mediaPorts.set(pc, pull);
  pull.onmessage = () => node.on_rtc_event(pc, "pull", undefined, 0, 0);
  frames.onmessage = (e) => {
    if (e.data && e.data.data instanceof ArrayBuffer) {
      node.on_rtc_event(pc, "frame", new Uint8Array(e.data.data), 0, 0);
    }
  };
  mediaPorts.set(-pc, frames); // kept to close it
}

function closeMediaPorts(pc) {
  for (const key of [pc, -pc]) {
    const port = mediaPorts.get(key);
    if (port) port.close();
    mediaPorts.delete(key);
  }
}

// -- messages from the page ---------------------------------------------------------------------
function dispatch(msg) {
  switch (msg.t) {
    case "rtc-reply": {
      const request = requests.get(msg.id);
      if (!request) return;
      requests.delete(msg.id);
      if (msg.ok) request.resolve(msg.sdp ?? null);
      else request.reject(new Error(msg.error || "failed"));
      return;
    }
    case "rtc-ev": {
      if (!node) return;
      if (msg.ev === "ports") {
        openMediaPorts(msg.pc, msg.ports);
        return;
      }
      if (msg.ev === "close") closeMediaPorts(msg.pc);
      let data; // undefined reaches Python as None
      if (msg.ev === "message") data = new Uint8Array(msg.data);
      else if (msg.ev === "close") data = new TextEncoder().encode(msg.reason || "");
      node.on_rtc_event(msg.pc, msg.ev, data, msg.handed || 0, msg.amount || 0);
      return;
    }
    case "push": // a push the service worker received (D54)
      node.on_push(new Uint8Array(msg.data), msg.arrived);
      return;
    case "call": {
      const body = msg.body ? new Uint8Array(msg.body) : undefined;
      node.on_call(msg.id, msg.method, JSON.stringify(msg.args || {}), body);
      return;
    }
    default:
  }
}

self.onmessage = (event) => {
  const msg = event.data;
  if (msg && msg.t === "init") {
    if (!started) {
      started = true;
      start(msg.config || {}).catch((err) => {
        console.error("zmesh worker:", err);
        post({ t: "fatal", error: String(err && err.message || err) });
      });
    }
    return;
  }
  if (msg && msg.t === "rtc-reply") {
    dispatch(msg); // replies are needed while the node is starting
    return;
  }
  if (!node) {
    if (msg) early.push(msg); // calls, and events racing the node's start
    return;
  }
  dispatch(msg);
};

// -- boot: Pyodide, from the build's memory snapshot when it matches (D52) ---------------------
// web/snapshot.mjs made the snapshot at build time: the interpreter with zmesh and h11
// imported from their wheels (zipimport, at the paths the manifest names), and nothing else:
// no node, no key, no RNG draw.  It is used only if its manifest names this Pyodide and
// exactly the wheels of our lock; the browser checks every file's sha256 as it fetches it
// (subresource integrity).  Anything wrong: one log line and a normal boot, never a broken page.
const SNAPSHOT_MANIFEST = "zmesh-snapshot.json";
const SNAPSHOT_FORMAT = 1; // build_wasm.py's SNAPSHOT_FORMAT

async function fetchJson(name) {
  const response = await fetch(new URL(name, base));
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return response.json();
}

function integrity(sha256hex) {
  if (!/^[0-9a-f]{64}$/.test(sha256hex)) throw new Error("malformed sha256");
  const bytes = sha256hex.match(/../g).map((h) => parseInt(h, 16));
  return `sha256-${btoa(String.fromCharCode(...bytes))}`;
}

async function fetchChecked(name, sha256hex) {
  // a body that does not match makes fetch reject: a TypeError, not a wrong snapshot
  const response = await fetch(new URL(name, base), { integrity: integrity(sha256hex) });
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return response;
}

/** What a snapshot boot needs ({snapshot, wheels}, both still downloading), or an Error saying
 * why this page boots without one. */
async function snapshotPlan(version) {
  const [manifest, lock] = await Promise.all([fetchJson(SNAPSHOT_MANIFEST), fetchJson("zmesh-lock.json")]);
  if (manifest.format !== SNAPSHOT_FORMAT) throw new Error(`manifest format ${manifest.format}`);
  if (manifest.pyodide !== version) throw new Error(`made for Pyodide ${manifest.pyodide}, not ${version}`);
  const packages = Object.entries(lock.packages || {});
  const made = manifest.wheels || {};
  if (packages.length !== Object.keys(made).length) throw new Error("made from other wheels than the lock's");
  const wheels = packages.map(([name, entry]) => {
    const m = made[name];
    if (!m || m.sha256 !== entry.sha256 || m.file_name !== entry.file_name || !/^\/zmesh-wheels\/[\w.+-]+\.whl$/.test(m.path)) {
      throw new Error(`made from another ${name} wheel than the lock's`);
    }
    const bytes = fetchChecked(entry.file_name, entry.sha256).then((r) => r.arrayBuffer());
    bytes.catch(() => {}); // reported where fsInit awaits it (never, if the snapshot failed first)
    return { path: m.path, bytes };
  });
  const snapshot = fetchChecked(manifest.file, manifest.sha256).then(async (response) => {
    const raw = response.body.pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(raw).arrayBuffer());
  });
  return { snapshot, wheels };
}

/** Pyodide's _snapshotDeserializer: web/snapshot.mjs recorded the JS objects Python held as
 * their paths from globalThis (the crypto bundle's); find them again in this worker. */
function fromGlobalPath(recorded) {
  const path = recorded && recorded.global;
  if (!Array.isArray(path) || path[0] !== "zmeshCrypto") throw new Error("unexpected JS object in the snapshot");
  const value = path.reduce((obj, key) => (obj == null ? undefined : obj[key]), globalThis);
  if (value === undefined) throw new Error(`globalThis.${path.join(".")} is missing`);
  return value;
}

// Python state a snapshot shares with every page restored from it, made fresh for this one.
// (The zMesh node draws its keys and seeds from crypto.getRandomValues, after this.)
const RESEED = "import sys\nif 'random' in sys.modules: sys.modules['random'].seed()";

async function bootPyodide() {
  const [{ loadPyodide, version }] = await Promise.all([
    import(new URL("pyodide/pyodide.mjs", base).href),
    import(new URL("zmesh-crypto.js", base).href), // sets globalThis.zmeshCrypto
  ]);
  const options = {
    indexURL: new URL("pyodide/", base).href,
    lockFileURL: new URL("zmesh-lock.json", base).href, // names our wheel, with its sha256
  };
  let plan = null;
  try {
    plan = await snapshotPlan(version);
  } catch (err) {
    console.warn(`zmesh worker: booting without the memory snapshot (${err.message || err})`);
    boot.snapshot = `not used: ${err.message || err}`;
  }
  if (plan) {
    let wheelError = null;
    try {
      const pyodide = await loadPyodide({
        ...options,
        _loadSnapshot: plan.snapshot,
        _snapshotDeserializer: fromGlobalPath,
        async fsInit(FS) {
          // the wheels where the snapshot's zipimport expects them, before Python resumes
          // (an error here must not stall Emscripten's start: it is rethrown below)
          try {
            FS.mkdirTree("/zmesh-wheels");
            for (const wheel of plan.wheels) FS.writeFile(wheel.path, new Uint8Array(await wheel.bytes));
          } catch (err) {
            wheelError = err;
          }
        },
      });
      if (wheelError) throw wheelError;
      pyodide.runPython(RESEED);
      boot.pyodideLoaded = now();
      boot.snapshot = "used";
      return pyodide;
    } catch (err) {
      console.warn(`zmesh worker: the memory snapshot failed (${err.message || err}); booting without it`);
      boot.snapshot = `failed: ${err.message || err}`;
    }
  }
  const pyodide = await loadPyodide(options);
  boot.pyodideLoaded = now();
  post({ t: "boot", stage: "loading zMesh" });
  await pyodide.loadPackage(["zmesh"], { messageCallback: () => {}, errorCallback: (m) => console.warn(m) });
  return pyodide;
}

// certificate checks of https fetches (zmesh/runtime/tls.py), loaded on the first one
let x509 = null;
self.zmeshX509 = Object.freeze({
  async verify(...args) {
    x509 ||= import(new URL("zmesh-x509.js", base).href);
    return (await x509).verify(...args);
  },
});

// Pyodide boots as soon as the worker runs, while the page fetches its config.
const booting = bootPyodide();
booting.catch(() => {}); // reported by start()

async function start(config) {
  post({ t: "boot", stage: "loading Pyodide" });
  const pyodide = await booting;
  const browser = pyodide.pyimport("zmesh.runtime.browser");
  boot.packagesLoaded = now();
  post({ t: "boot", stage: "joining the mesh", snapshot: boot.snapshot });
  const { snapshot: _, ...times } = boot;
  const full = { ...config, boot: { ...(config.boot || {}), ...times } };
  node = await browser.main(JSON.stringify(full), host);
  for (const msg of early.splice(0)) dispatch(msg);
}
