// The join page: start the browser node's worker, own its WebRTC connections (rtc.js),
// show the live status, and give page scripts `window.zmesh`:
//
//   await zmesh.ready            // resolves once the node can build circuits
//   zmesh.status()               // {peers, circuits, bytesRelayed, maxLongTaskMs, ...}
//   const r = await zmesh.fetch("http://example.com/");   // a Response, via a 3-hop circuit
//   const id = await zmesh.share(fileOrBlob);             // "zm1...": the tab now seeds it
//   const blob = await zmesh.get(id, {onprogress, timeout}); // from its seeders, via circuits
//
// The node itself (Pyodide, the zMesh core) runs in worker.js, so nothing here takes long:
// the main thread only relays messages and draws.  Long tasks are measured anyway
// (status().maxLongTaskMs).

import { RtcHost } from "./rtc.js";
import { listenForPushes } from "./wake.js";

const CHART_SECONDS = 60;
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

const state = {
  stage: "starting",
  error: null,
  status: null, // the worker's latest status
  longTasks: { count: 0, maxMs: 0, totalMs: 0 },
  samples: [], // {t, relayed, io} once a second, for the chart
};

// -- long tasks on this (main) thread ----------------------------------------------------------
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      state.longTasks.count += 1;
      state.longTasks.totalMs += entry.duration;
      state.longTasks.maxMs = Math.max(state.longTasks.maxMs, entry.duration);
    }
  }).observe({ type: "longtask", buffered: true });
} catch (_) {
  state.longTasks.unsupported = true; // not Chromium: nothing to measure with
}

// -- the worker and the WebRTC host -------------------------------------------------------------
const worker = new Worker(new URL("worker.js", document.baseURI), { type: "module" });
// the embed's relay page passes ?cap_kbps=N: a bandwidth cap on what this node sends
const capKbps = Math.max(0, parseInt(new URLSearchParams(location.search).get("cap_kbps") || "0", 10) || 0);
const rtc = new RtcHost((msg, transfer) => worker.postMessage(msg, transfer || []), {
  capBytesPerSec: (capKbps * 1000) / 8,
});
const calls = new Map(); // id -> {resolve, reject}
let nextCall = 1;
let resolveReady;
let rejectReady;
const ready = new Promise((resolve, reject) => {
  resolveReady = resolve;
  rejectReady = reject;
});
ready.catch(() => {}); // a failure is also shown on the page and in status()

function fail(message) {
  state.error = message;
  state.stage = "failed";
  rejectReady(new Error(message));
  for (const { reject } of calls.values()) reject(new Error(message));
  calls.clear();
  render();
}

worker.onmessage = (event) => {
  const msg = event.data;
  switch (msg.t) {
    case "rtc":
      rtc.handle(msg);
      break;
    case "status":
      state.status = msg.status;
      reportProgress(msg.status);
      if (msg.status.ready) {
        state.stage = "ready";
        resolveReady(publicStatus());
      } else if (state.stage !== "failed") {
        state.stage = "joining the mesh";
      }
      break;
    case "reply": {
      const call = calls.get(msg.id);
      if (!call) break;
      calls.delete(msg.id);
      if (msg.ok) call.resolve({ value: msg.value, body: msg.body });
      else call.reject(new Error((msg.value && msg.value.error) || "failed"));
      break;
    }
    case "boot":
      if (state.stage !== "ready") state.stage = msg.stage;
      if (msg.snapshot) state.snapshot = msg.snapshot; // "used", or why not (D52)
      break;
    case "fatal":
      fail(`the node could not start: ${msg.error}`);
      break;
    default:
  }
};
worker.onerror = (event) => fail(`the node's worker failed: ${event.message || "unknown error"}`);
addEventListener("pagehide", () => rtc.closeAll());
// pushes from wake nodes (D54): the service worker hands them here, the node checks them
listenForPushes((data, arrived) => worker.postMessage({ t: "push", data, arrived }, [data]));
// ?test_hooks=1 (the harness): window.zmeshTest.isolate() blocks HTTP signaling and drops
// every link, as a censor would
const testHooks = new URLSearchParams(location.search).get("test_hooks") === "1";
if (testHooks) window.zmeshTest = Object.freeze({ isolate: () => call("isolate", {}, null) });

function call(method, args, body) {
  if (state.error) return Promise.reject(new Error(state.error));
  return new Promise((resolve, reject) => {
    const id = nextCall++;
    calls.set(id, { resolve, reject });
    worker.postMessage({ t: "call", id, method, args, body: body || null }, body ? [body] : []);
  });
}

fetch("config.json", { cache: "no-store" })
  .then((response) => {
    if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
    return response.json();
  })
  .then((config) => {
    const bootstrap = Array.isArray(config.bootstrap) ? config.bootstrap.filter((u) => typeof u === "string") : [];
    if (!bootstrap.length) throw new Error("config.json lists no bootstrap relays");
    worker.postMessage({
      t: "init",
      config: {
        bootstrap,
        verbose: config.verbose | 0,
        trustCa: typeof config.trustCa === "string" ? config.trustCa : "", // --trust-ca (D51)
        testHooks,
        // ?transport=media: links inside a video track's frames (D58)
        transport: new URLSearchParams(location.search).get("transport") === "media" ? "media" : "datachannel",
        // ?shape=constant|video: shaped messages on every link (D53); the node refuses others
        shape: new URLSearchParams(location.search).get("shape") || "off",
        boot: { pageStart: performance.timeOrigin },
      },
    });
  })
  .catch((err) => fail(`no usable config.json next to the page (${err.message})`));

// -- window.zmesh ---------------------------------------------------------------------------------
function publicStatus() {
  const s = state.status || {};
  return {
    ...s,
    ready: Boolean(s.ready),
    stage: state.stage,
    capKbps,
    error: state.error,
    peers: s.peers || 0,
    circuits: s.circuits || 0,
    bytesRelayed: s.bytesRelayed || 0,
    snapshot: state.snapshot,
    maxLongTaskMs: state.longTasks.maxMs,
    longTasks: state.longTasks.count,
    page: { connections: rtc.conns.size, ...rtc.stats },
  };
}

async function zfetch(input, init) {
  const request = new Request(input, init);
  const signal = request.signal;
  if (signal && signal.aborted) throw new DOMException("The request was aborted", "AbortError");
  const method = request.method;
  const body = method === "GET" || method === "HEAD" ? null : await request.arrayBuffer();
  const pending = call("fetch", { url: request.url, method, headers: [...request.headers] }, body && body.byteLength ? body : null);
  const reply = await (signal
    ? Promise.race([pending, new Promise((_, reject) => signal.addEventListener("abort", () => reject(new DOMException("The request was aborted", "AbortError")), { once: true }))])
    : pending);
  const { status, statusText, headers } = reply.value;
  const out = new Headers();
  for (const [name, value] of headers) {
    try { out.append(name, value); } catch (_) { /* not a valid header for a Response */ }
  }
  const responseBody = NULL_BODY_STATUS.has(status) || method === "HEAD" ? null : reply.body;
  try {
    return new Response(responseBody, { status, statusText, headers: out });
  } catch (_) {
    return new Response(responseBody, { status, headers: out }); // an unusual reason phrase
  }
}

// -- content: zmesh.share / zmesh.get ----------------------------------------------------------
const progressListeners = new Map(); // content id -> Set of onprogress callbacks

function reportProgress(status) {
  const gets = (status.content && status.content.gets) || {};
  for (const [id, listeners] of progressListeners) {
    const p = gets[id];
    if (!p) continue;
    const event = { bytes: p.bytes, total: p.total, sources: p.sources };
    for (const fn of listeners) {
      try { fn(event); } catch (err) { console.error("zmesh.get onprogress:", err); }
    }
  }
}

async function share(blob) {
  let bytes;
  if (blob instanceof Blob) bytes = await blob.arrayBuffer();
  else if (blob instanceof ArrayBuffer) bytes = blob.slice(0);
  else if (ArrayBuffer.isView(blob)) bytes = blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength);
  else throw new TypeError("zmesh.share takes a Blob, a File, an ArrayBuffer or a typed array");
  const reply = await call("share", {}, bytes);
  return reply.value.id;
}

async function get(id, options = {}) {
  if (typeof id !== "string") throw new TypeError("zmesh.get takes a content id (a string, zm1...)");
  id = id.trim();
  const { onprogress, timeout, type } = options;
  const args = { id };
  if (timeout !== undefined) args.timeout = Number(timeout);
  const fn = typeof onprogress === "function" ? onprogress : null;
  if (fn) {
    if (!progressListeners.has(id)) progressListeners.set(id, new Set());
    progressListeners.get(id).add(fn);
  }
  try {
    const reply = await call("get", args, null);
    const size = reply.value.bytes;
    if (fn) fn({ bytes: size, total: size, sources: reply.value.sources, done: true });
    return new Blob([reply.body || new ArrayBuffer(0)], { type: type || "application/octet-stream" });
  } finally {
    if (fn) {
      const set = progressListeners.get(id);
      set.delete(fn);
      if (!set.size) progressListeners.delete(id);
    }
  }
}

window.zmesh = Object.freeze({
  ready,
  status: publicStatus,
  fetch: zfetch,
  share,
  get,
});

// -- the page ---------------------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function fmtMs(ms) {
  return ms == null ? "–" : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function setText(id, text) {
  const el = $(id);
  if (el && el.textContent !== text) el.textContent = text;
}

// In the embed's iframe (relay.html), tell the embedding card what is true: joining, linked
// (with peers and bytes relayed), or failed with the reason.  Only counts and the stage
// go out: nothing a host page could not see from the card itself.
const embedded = window.parent !== window;
let lastReport = "";

// What the embed's card says: failed (a fatal error, or no link while every bootstrap relay
// has failed; the node keeps retrying them), linked, or joining.
function embedderStage(s) {
  if (s.error) return ["failed", s.error];
  if (s.peers > 0) return ["linked", null];
  const boot = s.bootstrap || [];
  if (boot.length && boot.every((b) => b.state === "failed")) {
    const why = boot.map((b) => `${b.url}: ${b.error}`).join("; ");
    return ["failed", `no bootstrap relay reachable (${why}); retrying`];
  }
  return ["joining", null];
}

function reportToEmbedder(s) {
  if (!embedded) return;
  const [stage, error] = embedderStage(s);
  const report = { zmeshRelay: 1, stage, error, peers: s.peers, bytesRelayed: s.bytesRelayed };
  const text = JSON.stringify(report);
  if (text === lastReport) return;
  lastReport = text;
  try {
    window.parent.postMessage(report, "*"); // the embedder's origin is any site's
  } catch (_) { /* the embedder went away */ }
}

function render() {
  const s = publicStatus();
  reportToEmbedder(s);
  setText("stage", s.error ? `Error: ${s.error}` : s.ready ? "Connected: you are relaying for the mesh" : `${s.stage}…`);
  const stageEl = $("stage");
  if (stageEl) stageEl.dataset.state = s.error ? "error" : s.ready ? "ready" : "busy";
  setText("node-id", s.nodeId ? s.nodeId.slice(0, 16) : "–");
  setText("peers", String(s.peers));
  setText("circuits", `${s.circuits} (${s.circuitsRelayed || 0} relayed, ${s.circuitsOwn || 0} own)`);
  setText("relayed", fmtBytes(s.bytesRelayed));
  setText("relays", s.relaysKnown == null ? "–" : `${s.relaysKnown} (${s.exitsKnown} exits)`);
  setText("longtask", `${Math.round(s.maxLongTaskMs)} ms (${s.longTasks} over 50 ms)`);
  const t = s.timings || {};
  setText("timings", `Pyodide ${fmtMs(t.pyodideBootMs)}, zMesh ${fmtMs(t.packageLoadMs)}, first link ${fmtMs(t.firstLinkMs)}, ready ${fmtMs(t.readyMs)} after opening the page`);
  const list = $("bootstrap");
  if (list && s.bootstrap) {
    const text = s.bootstrap.map((b) => `${b.url}: ${b.state}${b.error ? ` (${b.error})` : ""}`);
    if (list.dataset.text !== text.join("\n")) {
      list.dataset.text = text.join("\n");
      list.replaceChildren(...text.map((line, i) => {
        const li = document.createElement("li");
        li.textContent = line;
        li.dataset.state = s.bootstrap[i].state;
        return li;
      }));
    }
  }
}

function sample() {
  const s = publicStatus();
  state.samples.push({ relayed: s.bytesRelayed, io: rtc.stats.bytesIn + rtc.stats.bytesOut });
  if (state.samples.length > CHART_SECONDS + 1) state.samples.shift();
  drawChart();
}

function drawChart() {
  const canvas = $("chart");
  if (!canvas || !canvas.getContext) return;
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const rates = (key) => state.samples.slice(1).map((p, i) => Math.max(0, p[key] - state.samples[i][key]));
  const series = [
    { data: rates("io"), color: "#6a9fd8", label: "WebRTC in+out" },
    { data: rates("relayed"), color: "#3a7", label: "relayed" },
  ];
  const peak = Math.max(1024, ...series.flatMap((s) => s.data));
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#888";
  ctx.fillText(`${fmtBytes(peak)}/s`, 4, 12);
  series.forEach((s, n) => {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    s.data.forEach((v, i) => {
      const x = (i / CHART_SECONDS) * width;
      const y = height - 2 - (v / peak) * (height - 18);
      if (i) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = s.color;
    ctx.fillText(s.label, width - 110, 12 + 13 * n);
  });
}

function wireFetchForm() {
  const form = $("fetch-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = $("fetch-result");
    const url = $("fetch-url").value;
    out.textContent = `fetching ${url} through a 3-hop circuit…`;
    const start = performance.now();
    try {
      const response = await zfetch(url);
      const body = await response.arrayBuffer();
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
      const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
      out.textContent = `HTTP ${response.status}, ${fmtBytes(body.byteLength)} in ${fmtMs(performance.now() - start)}, SHA-256 ${hex}`;
    } catch (err) {
      out.textContent = `failed: ${err.message}`;
    }
  });
}

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function wireShare() {
  const drop = $("share-drop");
  const input = $("share-file");
  const out = $("share-result");
  const idEl = $("share-id");
  const copy = $("share-copy");
  if (!drop || !input || !out || !idEl || !copy) return;
  const shareFile = async (file) => {
    if (!file) return;
    copy.hidden = true;
    idEl.textContent = "";
    out.textContent = `sharing ${file.name} (${fmtBytes(file.size)})…`;
    try {
      const id = await share(file);
      out.textContent = `${file.name} (${fmtBytes(file.size)}) is shared while this page is open. Its id:`;
      idEl.textContent = id;
      copy.hidden = false;
    } catch (err) {
      out.textContent = `could not share ${file.name}: ${err.message}`;
    }
  };
  input.addEventListener("change", () => shareFile(input.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.dataset.over = "1"; });
  drop.addEventListener("dragleave", () => { delete drop.dataset.over; });
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    delete drop.dataset.over;
    shareFile(event.dataTransfer && event.dataTransfer.files[0]);
  });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(idEl.textContent);
      copy.textContent = "Copied";
    } catch (_) {
      getSelection().selectAllChildren(idEl); // no clipboard permission: select it instead
      copy.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { copy.textContent = "Copy"; }, 2000);
  });
}

let lastLink = null;

function wireGet() {
  const form = $("get-form");
  if (!form) return;
  const bar = $("get-progress");
  const out = $("get-status");
  const link = $("get-link");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = $("get-id").value.trim();
    link.hidden = true;
    if (lastLink) URL.revokeObjectURL(lastLink);
    lastLink = null;
    bar.hidden = false;
    bar.removeAttribute("value"); // indeterminate until the manifest arrives
    out.textContent = "looking for seeders…";
    const start = performance.now();
    const onprogress = (p) => {
      if (p.total) {
        bar.max = p.total;
        bar.value = p.bytes;
      }
      const sources = Object.entries(p.sources || {}).map(([s, n]) => `${s.slice(0, 8)} ${fmtBytes(n)}`);
      out.textContent = `${fmtBytes(p.bytes)} of ${p.total ? fmtBytes(p.total) : "?"}` +
        (sources.length ? `; sources: ${sources.join(", ")}` : "");
    };
    try {
      const blob = await get(id, { onprogress });
      const digest = hex(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
      lastLink = URL.createObjectURL(blob);
      link.href = lastLink;
      link.download = id;
      link.textContent = `Download ${fmtBytes(blob.size)}`;
      link.hidden = false;
      out.textContent = `verified, ${fmtBytes(blob.size)} in ${fmtMs(performance.now() - start)} ` +
        `(SHA-256 ${digest}); this page now seeds it too`;
    } catch (err) {
      bar.hidden = true;
      out.textContent = `failed: ${err.message}`;
    }
  });
}

function startUi() {
  wireFetchForm();
  wireShare();
  wireGet();
  render();
  setInterval(render, 500);
  setInterval(sample, 1000);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startUi, { once: true });
else startUi();
