// The browser's crypto backend for zMesh: the raw primitives of zmesh/crypto/_pyca.py, on
// the noble libraries.  build_wasm.py bundles this file with esbuild into
// web/dist/zmesh-crypto.js, an IIFE that sets `globalThis.zmeshCrypto`, so it loads the same
// way in a page, in a Web Worker (importScripts or a module import) and in Node.
// zmesh/crypto/_noble.py calls it through the Pyodide FFI.
//
// Every function takes and returns Uint8Array (booleans for verify).  Errors are thrown as
// `Error`s whose message starts with "zmesh:"; _noble.py maps them to the same Python
// exceptions _pyca.py raises.  Nothing here keeps state between calls.

import { gcm } from "@noble/ciphers/aes.js";
import { chacha20, chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { ml_dsa44 } from "@noble/post-quantum/ml-dsa.js";
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";

const MLKEM768_EK = 1184;
const MLKEM768_CT = 1088;
const MLDSA44_PK = 1312;

function u8(value, name) {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`zmesh: ${name} must be a Uint8Array`);
  }
  return value;
}

function sized(value, size, name) {
  u8(value, name);
  if (value.length !== size) {
    throw new RangeError(`zmesh: ${name} must be ${size} bytes, got ${value.length}`);
  }
  return value;
}

/** A protocol error: _noble.py turns these into RemoteProtocolError. */
function remote(message) {
  const err = new Error(`zmesh: ${message}`);
  err.name = "RemoteProtocolError";
  return err;
}

/** XOR `data` with the ChaCha20 keystream (RFC 8439, counter 0, 12-byte nonce). */
// The ChaCha20 keystream from block counter 1, as RFC 8439's AEAD encrypts (D40).
function chacha20Xor(key, nonce, data) {
  return chacha20(sized(key, 32, "key"), sized(nonce, 12, "nonce"), u8(data, "data"), undefined, 1);
}

/** ChaCha20-Poly1305 seal (RFC 8439): ciphertext || tag. */
function aeadSeal(key, nonce, plaintext, ad) {
  sized(key, 32, "key");
  sized(nonce, 12, "nonce");
  return chacha20poly1305(key, nonce, u8(ad, "ad")).encrypt(u8(plaintext, "plaintext"));
}

/** ChaCha20-Poly1305 open; a bad tag (or a ciphertext shorter than one) is a remote error. */
function aeadOpen(key, nonce, ciphertext, ad) {
  sized(key, 32, "key");
  sized(nonce, 12, "nonce");
  u8(ciphertext, "ciphertext");
  u8(ad, "ad");
  try {
    return chacha20poly1305(key, nonce, ad).decrypt(ciphertext);
  } catch {
    throw remote("AEAD authentication failed");
  }
}

// The record layer of TLS inside circuits (zmesh/runtime/tls.py): AES-GCM (16- or 32-byte
// keys) and ChaCha20-Poly1305, arguments (key, nonce, ad, data) so that the bulk data comes
// last.  A bad tag is a remote error (tls.py turns it into tlslite's "bad record MAC").
const TLS_AEADS = {
  aesGcm(key) {
    u8(key, "key");
    if (key.length !== 16 && key.length !== 32) throw new RangeError("zmesh: AES-GCM keys are 16 or 32 bytes");
    return (nonce, ad) => gcm(key, sized(nonce, 12, "nonce"), u8(ad, "ad"));
  },
  chachaPoly(key) {
    sized(key, 32, "key");
    return (nonce, ad) => chacha20poly1305(key, sized(nonce, 12, "nonce"), u8(ad, "ad"));
  },
};

function tlsSeal(kind) {
  return (key, nonce, ad, plaintext) => TLS_AEADS[kind](key)(nonce, ad).encrypt(u8(plaintext, "plaintext"));
}

function tlsOpen(kind) {
  return (key, nonce, ad, ciphertext) => {
    const cipher = TLS_AEADS[kind](key)(nonce, ad);
    try {
      return cipher.decrypt(u8(ciphertext, "ciphertext"));
    } catch {
      throw remote("AEAD authentication failed");
    }
  };
}

function x25519Public(sk) {
  return x25519.getPublicKey(sized(sk, 32, "X25519 private key"));
}

/** Raw X25519 (RFC 7748); a low-order point (all-zero output) or a bad length is remote. */
function x25519Exchange(sk, pk) {
  u8(sk, "X25519 private key");
  u8(pk, "X25519 public key");
  if (sk.length !== 32 || pk.length !== 32) {
    throw remote("X25519 keys are 32 bytes");
  }
  try {
    return x25519.getSharedSecret(sk, pk);
  } catch {
    // noble rejects exactly the points whose output would be all zero (RFC 7748, 6.1).
    throw remote("X25519 produced the all-zero value");
  }
}

/** ML-KEM-768 key generation from the 64-byte seed d || z: [decapsulation key, ek]. */
function mlkem768Keygen(seed) {
  const { secretKey, publicKey } = ml_kem768.keygen(sized(seed, 64, "ML-KEM seed"));
  return [secretKey, publicKey];
}

/** FIPS 203 ML-KEM.Decaps (implicit rejection); a wrong length is a remote error. */
function mlkem768Decaps(dk, ct) {
  u8(dk, "decapsulation key");
  u8(ct, "ciphertext");
  if (ct.length !== MLKEM768_CT) {
    throw remote("malformed ML-KEM ciphertext");
  }
  return ml_kem768.decapsulate(ct, dk);
}

/**
 * FIPS 203 ML-KEM.Encaps with fresh randomness: [shared key, ciphertext], the order of
 * _pyca.mlkem768_encaps_random.  A wrong length or a key failing the modulus check
 * (FIPS 203, section 7.2) is a remote error.
 */
function mlkem768EncapsRandom(ek) {
  u8(ek, "encapsulation key");
  if (ek.length !== MLKEM768_EK) {
    throw remote("malformed ML-KEM-768 encapsulation key");
  }
  let result;
  try {
    result = ml_kem768.encapsulate(ek, randomBytes(32));
  } catch {
    throw remote("malformed ML-KEM-768 encapsulation key");
  }
  return [result.sharedSecret, result.cipherText];
}

function x25519Generate() {
  return randomBytes(32);
}

function ed25519Public(seed) {
  return ed25519.getPublicKey(sized(seed, 32, "Ed25519 seed"));
}

function ed25519Sign(seed, message) {
  return ed25519.sign(u8(message, "message"), sized(seed, 32, "Ed25519 seed"));
}

/** RFC 8032 verification (strict encodings, not ZIP-215), as OpenSSL does; never throws. */
function ed25519Verify(pk, signature, message) {
  try {
    if (pk.length !== 32 || signature.length !== 64) return false;
    return ed25519.verify(signature, message, pk, { zip215: false });
  } catch {
    return false;
  }
}

function mldsa44Public(seed) {
  return ml_dsa44.keygen(sized(seed, 32, "ML-DSA seed")).publicKey;
}

/**
 * FIPS 204 ML-DSA-44 signing with a context string, in the deterministic variant
 * (rnd = 0^32): the same key and message always give the same signature.
 */
function mldsa44Sign(seed, message, context) {
  u8(message, "message");
  u8(context, "context");
  if (context.length > 255) {
    throw new RangeError("zmesh: ML-DSA contexts are at most 255 bytes");
  }
  const { secretKey } = ml_dsa44.keygen(sized(seed, 32, "ML-DSA seed"));
  try {
    return ml_dsa44.sign(message, secretKey, { context, extraEntropy: false });
  } finally {
    secretKey.fill(0);
  }
}

function mldsa44Verify(pk, signature, message, context) {
  try {
    if (pk.length !== MLDSA44_PK || context.length > 255) return false;
    return ml_dsa44.verify(signature, message, pk, { context });
  } catch {
    return false;
  }
}

/** `n` bytes from the platform CSPRNG (crypto.getRandomValues, 64 KiB per call at most). */
function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let offset = 0; offset < n; offset += 65536) {
    globalThis.crypto.getRandomValues(out.subarray(offset, Math.min(n, offset + 65536)));
  }
  return out;
}

const PRIMITIVES = {
  chacha20Xor,
  aesGcmSeal: tlsSeal("aesGcm"),
  aesGcmOpen: tlsOpen("aesGcm"),
  chachaPolySeal: tlsSeal("chachaPoly"),
  chachaPolyOpen: tlsOpen("chachaPoly"),
  aeadSeal,
  aeadOpen,
  x25519Public,
  x25519Exchange,
  x25519Generate,
  mlkem768Keygen,
  mlkem768Decaps,
  mlkem768EncapsRandom,
  ed25519Public,
  ed25519Sign,
  ed25519Verify,
  mldsa44Public,
  mldsa44Sign,
  mldsa44Verify,
  randomBytes,
};

/**
 * The FFI entry point of _noble.py: one crossing per primitive call.
 *
 * Converting each Python `bytes` argument to a Uint8Array costs a few microseconds, so
 * Python concatenates the arguments into one buffer (a Uint8Array it reuses per length)
 * and passes their lengths; the last argument takes the rest.  An array result is
 * concatenated into one Uint8Array, which Python splits at the known sizes.  The input
 * buffer is zeroed afterwards, since it held keys.
 */
function call(name, buf, ...sizes) {
  const fn = PRIMITIVES[name];
  if (fn === undefined) throw new TypeError(`zmesh: no primitive named ${name}`);
  u8(buf, "buffer");
  try {
    const args = [];
    let offset = 0;
    for (const size of sizes) {
      args.push(buf.subarray(offset, offset + size));
      offset += size;
    }
    args.push(buf.subarray(offset));
    const result = fn(...args);
    if (!Array.isArray(result)) return result;
    const out = new Uint8Array(result.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of result) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  } finally {
    buf.fill(0);
  }
}

globalThis.zmeshCrypto = Object.freeze({
  version: 1,
  ...PRIMITIVES,
  ffi: Object.freeze({ call }),
});
