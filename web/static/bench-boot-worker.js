// bench-boot.html's worker (bench/browser.py's baseline): boot Pyodide from this dist exactly
// as worker.js does (same loader, same small lock file), load nothing else, and report
// when it is up.  Times are ms since the epoch, as worker.js's.
const now = () => performance.timeOrigin + performance.now();
const workerStart = now();
const base = new URL(".", self.location.href);
const { loadPyodide } = await import(new URL("pyodide/pyodide.mjs", base).href);
await loadPyodide({
  indexURL: new URL("pyodide/", base).href,
  lockFileURL: new URL("zmesh-lock.json", base).href,
});
self.postMessage({ workerStart, loaded: now() });
