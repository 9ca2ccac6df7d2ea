// The page's half of waking by push (D54): the long-lived DTLS certificate for dials by
// push, kept in IndexedDB, and one push subscription per wake node, each under a service
// worker registration of its own scope (web/static/sw.js), restricted to that node's key.

const CERT_DB = "zmesh-wake";
const CERT_KEY = "dtls-certificate";
const CERT_LIFETIME_MS = 30 * 24 * 3600 * 1000;
const RENEW_BEFORE_MS = 2 * 24 * 3600 * 1000;
const KEY = /^[A-Za-z0-9_-]{87}$/; // a P-256 public key, base64url (65 bytes)
const SCOPE = /^[0-9a-f]{16}$/;

function openDb() {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(CERT_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore("kv");
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

function tx(db, mode, action) {
  return new Promise((resolve, reject) => {
    const t = db.transaction("kv", mode);
    const request = action(t.objectStore("kv"));
    t.oncomplete = () => resolve(request.result);
    t.onerror = () => reject(t.error);
  });
}

let certificate = null;

/** The stored RTCCertificate (made and stored when missing or about to expire). */
export async function wakeCertificate() {
  if (certificate && certificate.expires > Date.now() + RENEW_BEFORE_MS) return certificate;
  let db = null;
  try {
    db = await openDb();
    const stored = await tx(db, "readonly", (s) => s.get(CERT_KEY));
    if (stored && stored.expires > Date.now() + RENEW_BEFORE_MS) certificate = stored;
  } catch (_) { /* no IndexedDB: a certificate for this page's life only */ }
  if (!certificate || certificate.expires <= Date.now() + RENEW_BEFORE_MS) {
    certificate = await RTCPeerConnection.generateCertificate({ name: "ECDSA", namedCurve: "P-256", expires: CERT_LIFETIME_MS });
    if (db) await tx(db, "readwrite", (s) => s.put(certificate, CERT_KEY)).catch(() => {});
  }
  return certificate;
}

/** The stored certificate's SHA-256 fingerprint, "AA:BB:..." */
export async function wakeFingerprint() {
  const cert = await wakeCertificate();
  const fp = cert.getFingerprints().find((f) => f.algorithm.toLowerCase() === "sha-256");
  if (!fp) throw new Error("the certificate has no SHA-256 fingerprint");
  return fp.value;
}

/** Subscribe under scope wake/<scope>/ with the wake node's key; the subscription JSON. */
export async function subscribeWake(json) {
  const { key, scope } = JSON.parse(json);
  if (typeof key !== "string" || !KEY.test(key) || typeof scope !== "string" || !SCOPE.test(scope)) {
    throw new Error("bad wake node key or scope");
  }
  if (!navigator.serviceWorker || !window.PushManager) throw new Error("this browser has no Web Push");
  const url = new URL(`sw.js`, document.baseURI);
  const registration = await navigator.serviceWorker.register(url, { scope: new URL(`wake/${scope}/`, document.baseURI).href });
  const b64 = key.replace(/-/g, "+").replace(/_/g, "/") + "=";
  const applicationServerKey = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  let subscription = await registration.pushManager.getSubscription();
  const same = subscription && subscription.options && subscription.options.applicationServerKey &&
    new Uint8Array(subscription.options.applicationServerKey).every((b, i) => b === applicationServerKey[i]);
  if (subscription && !same) {
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) {
    // userVisibleOnly: Chromium requires it; the worker shows an honest notification
    // when no page is open to take the push (web/static/sw.js)
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
  }
  return JSON.stringify(subscription.toJSON());
}

/** Pushes the service worker hands to the pages: ``onpush(bytes ArrayBuffer, arrivedMs)``. */
export function listenForPushes(onpush) {
  let container = null;
  try {
    container = navigator.serviceWorker; // throws in a sandboxed iframe (the embed)
  } catch (_) { /* no service workers here: no wake by push */ }
  if (!container) return;
  container.addEventListener("message", (event) => {
    const msg = event.data;
    if (!msg || msg.zmeshPush !== 1 || !(msg.data instanceof ArrayBuffer) || typeof msg.arrived !== "number") return;
    onpush(msg.data, msg.arrived);
  });
  container.startMessages();
}
