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
  contentDb, // zmesh/runtime/browser_store.py: JsContentDb
};

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

async function start(config) {
  post({ t: "boot", stage: "loading Pyodide" });
  const { loadPyodide } = await import(new URL("pyodide/pyodide.mjs", base).href);
  const pyodide = await loadPyodide({
    indexURL: new URL("pyodide/", base).href,
    lockFileURL: new URL("zmesh-lock.json", base).href, // names our wheel, with its sha256
  });
  boot.pyodideLoaded = now();
  post({ t: "boot", stage: "loading zMesh" });
  await import(new URL("zmesh-crypto.js", base).href); // sets globalThis.zmeshCrypto
  // certificate checks of https fetches (zmesh/runtime/tls.py), loaded on the first one
  let x509 = null;
  self.zmeshX509 = Object.freeze({
    async verify(...args) {
      x509 ||= import(new URL("zmesh-x509.js", base).href);
      return (await x509).verify(...args);
    },
  });
  await pyodide.loadPackage(["zmesh"], { messageCallback: () => {}, errorCallback: (m) => console.warn(m) });
  const browser = pyodide.pyimport("zmesh.runtime.browser");
  boot.packagesLoaded = now();
  post({ t: "boot", stage: "joining the mesh" });
  const full = { ...config, boot: { ...(config.boot || {}), ...boot } };
  node = await browser.main(JSON.stringify(full), host);
  for (const msg of early.splice(0)) dispatch(msg);
}
