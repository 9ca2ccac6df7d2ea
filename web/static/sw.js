// zMesh's service worker (D54): registered once per wake node (scope wake/<id>/), it takes
// that node's pushes and hands each payload to the zMesh pages of this origin, which
// check it (a signed dial offer) and dial.  With no page open to take it, it shows an
// honest notification: the browser requires one (userVisibleOnly), and opening the page
// is the only way the node can come back.
const MAX_PAYLOAD = 8192;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const arrived = performance.timeOrigin + performance.now();
  event.waitUntil((async () => {
    let data = null;
    try {
      data = event.data ? event.data.arrayBuffer() : null;
    } catch (_) { /* undecryptable: dropped */ }
    const pages = await self.clients.matchAll({ includeUncontrolled: true, type: "window" });
    const open = pages; // each page checks the message's shape; the node checks the rest
    if (data && data.byteLength <= MAX_PAYLOAD) {
      for (const client of open) client.postMessage({ zmeshPush: 1, data: data.slice(0), arrived });
    }
    if (!open.some((c) => c.visibilityState === "visible")) {
      await self.registration.showNotification("zMesh: a peer asks to connect", {
        body: "Open the zMesh page to relay for the mesh again.",
        tag: "zmesh-wake",
      });
    }
  })());
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.openWindow(new URL("../../index.html", self.registration.scope).href));
});
