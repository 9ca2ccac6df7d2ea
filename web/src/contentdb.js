// The browser node's content store on IndexedDB (zmesh/runtime/browser_store.py drives it
// through host.contentDb).  One database per node id, three object stores:
//   content: hex digest -> {manifest: Uint8Array, pinned: bool, used: number}
//   proofs:  [hex digest, group] -> Uint8Array
//   pieces:  [hex digest, index] -> Uint8Array
// write(name, batch) applies one batch (deletes first) in ONE readwrite transaction, so a
// batch is stored whole or not at all; a full origin quota rejects with an Error whose
// message names QuotaExceededError.

const VERSION = 1;
const opened = new Map(); // name -> Promise<IDBDatabase>

function open(name) {
  if (!opened.has(name)) {
    opened.set(name, new Promise((resolve, reject) => {
      const request = indexedDB.open(name, VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        for (const store of ["content", "proofs", "pieces"]) {
          if (!db.objectStoreNames.contains(store)) db.createObjectStore(store);
        }
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error("IndexedDB is blocked by another tab"));
    }));
    opened.get(name).catch(() => opened.delete(name)); // try again next time
  }
  return opened.get(name);
}

function describe(error) {
  if (!error) return new Error("IndexedDB transaction aborted");
  return new Error(`${error.name || "Error"}: ${error.message || error}`);
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(describe(tx.error));
    tx.onabort = () => reject(describe(tx.error));
  });
}

const range = (hex) => IDBKeyRange.bound([hex, 0], [hex, Infinity]);

export const contentDb = {
  async load(name) {
    const db = await open(name);
    const tx = db.transaction(["content", "proofs", "pieces"], "readonly");
    const out = { contents: [], proofs: [], pieces: [] };
    const all = (storeName, push) => new Promise((resolve, reject) => {
      const request = tx.objectStore(storeName).openCursor();
      request.onsuccess = () => {
        const cursor = request.result;
        if (!cursor) return resolve();
        push(cursor.key, cursor.value);
        cursor.continue();
      };
      request.onerror = () => reject(describe(request.error));
    });
    await Promise.all([
      all("content", (k, v) => out.contents.push([k, v.manifest, v.pinned, v.used])),
      all("proofs", (k, v) => out.proofs.push([k[0], k[1], v])),
      all("pieces", (k, v) => out.pieces.push([k[0], k[1], v])),
    ]);
    return out;
  },

  async write(name, batch) {
    const db = await open(name);
    const tx = db.transaction(["content", "proofs", "pieces"], "readwrite");
    const finished = done(tx);
    try {
      const content = tx.objectStore("content");
      const proofs = tx.objectStore("proofs");
      const pieces = tx.objectStore("pieces");
      for (const hex of batch.deletes) {
        content.delete(hex);
        proofs.delete(range(hex));
        pieces.delete(range(hex));
      }
      for (const [hex, manifest, pinned, used] of batch.contents) {
        content.put({ manifest, pinned, used }, hex);
      }
      for (const [hex, group, proof] of batch.proofs) proofs.put(proof, [hex, group]);
      for (const [hex, index, piece] of batch.pieces) pieces.put(piece, [hex, index]);
    } catch (error) {
      try { tx.abort(); } catch (_) { /* already finished */ }
      finished.catch(() => {});
      throw describe(error);
    }
    await finished;
  },
};
