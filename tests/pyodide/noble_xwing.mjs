#!/usr/bin/env node
// noble's own X-Wing (`ml_kem768_x25519` of @noble/post-quantum/hybrid.js), driven from
// tests/browser/test_noble_xwing.py to check it against zmesh.crypto.xwing byte for byte.
//
// stdin: a JSON list of {seed, randomness, ciphertext} (hex; 32, 64 and 1120 bytes).
// stdout: a JSON list of {public_key, secret_key, ciphertext, shared_secret, decapsulated}:
// keygen(seed), encapsulate(public_key, randomness) and decapsulate(ciphertext, secret_key).

import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const HYBRID = path.join(ROOT, "web", "node_modules", "@noble", "post-quantum", "hybrid.js");
const { ml_kem768_x25519: xwing } = await import(pathToFileURL(HYBRID).href);

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const bytes = (text) => new Uint8Array(Buffer.from(text, "hex"));

const cases = JSON.parse(readFileSync(0, "utf8"));
const results = cases.map((c) => {
  const { secretKey, publicKey } = xwing.keygen(bytes(c.seed));
  const { cipherText, sharedSecret } = xwing.encapsulate(publicKey, bytes(c.randomness));
  return {
    public_key: hex(publicKey),
    secret_key: hex(secretKey),
    ciphertext: hex(cipherText),
    shared_secret: hex(sharedSecret),
    decapsulated: hex(xwing.decapsulate(bytes(c.ciphertext), secretKey)),
  };
});
process.stdout.write(JSON.stringify(results) + "\n");
