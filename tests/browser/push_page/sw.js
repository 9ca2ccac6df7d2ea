// On a push: hand its (decrypted, padded) payload to every page of this origin, base64.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("push", (event) => {
  const bytes = new Uint8Array(event.data ? event.data.arrayBuffer() : new ArrayBuffer(0));
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  event.waitUntil(
    self.clients.matchAll({ includeUncontrolled: true, type: "window" }).then((all) => {
      for (const client of all) client.postMessage(btoa(text));
    }),
  );
});
