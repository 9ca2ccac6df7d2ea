// Certificate checks for https:// through circuits (zmesh/runtime/tls.py, D51): RFC 5280
// path validation with pkijs (signatures through WebCrypto, validity dates, basicConstraints
// and keyUsage of the issuers) against the trust anchors Python passes (certifi's CA set plus
// --trust-ca), then the server's name (RFC 6125: subjectAltName dNSName or iPAddress only,
// no common-name fallback; a wildcard only as the whole left-most label) and, if present,
// an extendedKeyUsage that allows serverAuth.
//
// build_wasm.py bundles this file into web/dist/zmesh-x509.js (ESM); the worker imports it on
// the first https fetch and exposes it as `globalThis.zmeshX509`.  verify() never throws for
// a bad certificate: it resolves to "" when the chain checks out, else to the reason.

import * as asn1js from "asn1js";
import * as pkijs from "pkijs";

const SAN = "2.5.29.17";
const EKU = "2.5.29.37";
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const ANY_EKU = "2.5.29.37.0";
const MAX_CHAIN = 10;
const MAX_ANCHOR_SETS = 2;

const anchorSets = new Map(); // PEM text -> parsed pkijs.Certificate[]

function fromBase64(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function parse(der) {
  const asn1 = asn1js.fromBER(der);
  if (asn1.offset === -1 || asn1.offset !== der.byteLength) throw new Error("malformed DER");
  return new pkijs.Certificate({ schema: asn1.result });
}

/** The CERTIFICATE blocks of `pem`, parsed once per text (certificates pkijs cannot parse
 * are left out: they can anchor nothing). */
function anchors(pem) {
  let parsed = anchorSets.get(pem);
  if (parsed) return parsed;
  parsed = [];
  const re = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/g;
  for (const match of pem.matchAll(re)) {
    try {
      parsed.push(parse(fromBase64(match[1].replace(/\s+/g, ""))));
    } catch {
      // skip it
    }
  }
  if (anchorSets.size >= MAX_ANCHOR_SETS) anchorSets.clear();
  anchorSets.set(pem, parsed);
  return parsed;
}

function extension(cert, oid) {
  return (cert.extensions || []).find((e) => e.extnID === oid);
}

function hex(bytes) {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** RFC 6125, section 6.4: `pattern` (a dNSName) matches `host`; "*" only as a whole label
 * on the left, matching exactly one label, and never directly under a public suffix-like
 * single label ("*.com"). */
function dnsMatches(pattern, host) {
  const p = pattern.toLowerCase().replace(/\.$/, "");
  const h = host.toLowerCase().replace(/\.$/, "");
  if (!p.startsWith("*.")) return p === h;
  const rest = p.slice(2);
  if (!rest.includes(".") || rest.includes("*")) return false;
  const dot = h.indexOf(".");
  return dot > 0 && h.slice(dot + 1) === rest;
}

/** "" if the leaf names `host` (`ipHex`: its packed address for an IP host, else ""). */
function checkName(leaf, host, ipHex) {
  const san = extension(leaf, SAN);
  if (!san || !san.parsedValue || !Array.isArray(san.parsedValue.altNames)) {
    return "the certificate has no subjectAltName";
  }
  const names = [];
  for (const name of san.parsedValue.altNames) {
    if (name.type === 2 && typeof name.value === "string") {
      names.push(name.value);
      if (!ipHex && dnsMatches(name.value, host)) return "";
    } else if (name.type === 7 && name.value && name.value.valueBlock) {
      const address = hex(name.value.valueBlock.valueHexView);
      names.push(`IP ${address}`);
      if (ipHex && address === ipHex) return "";
    }
  }
  return `the certificate names ${names.slice(0, 5).join(", ") || "nothing usable"}, not ${host}`;
}

function checkUsage(leaf) {
  const eku = extension(leaf, EKU);
  if (!eku || !eku.parsedValue || !Array.isArray(eku.parsedValue.keyPurposes)) return "";
  const purposes = eku.parsedValue.keyPurposes;
  return purposes.includes(SERVER_AUTH) || purposes.includes(ANY_EKU)
    ? ""
    : "the certificate is not for TLS servers (extendedKeyUsage)";
}

/**
 * Check `chain` (DER Uint8Arrays, leaf first) for `host` at `nowMs` against the
 * certificates in `anchorsPem`.  Resolves to "" if it checks out, else to the reason.
 */
export async function verify(chain, host, ipHex, nowMs, anchorsPem) {
  if (!Array.isArray(chain) || !chain.length) return "the server sent no certificate";
  if (chain.length > MAX_CHAIN) return `the server sent over ${MAX_CHAIN} certificates`;
  let certs;
  try {
    certs = chain.map((der) => parse(der));
  } catch (err) {
    return `the server's certificate is malformed (${err.message})`;
  }
  const leaf = certs[0];
  const nameError = checkName(leaf, host, ipHex) || checkUsage(leaf);
  if (nameError) return nameError;
  const trusted = anchors(anchorsPem);
  if (!trusted.length) return "no usable trust anchors";
  const engine = new pkijs.CertificateChainValidationEngine({
    trustedCerts: trusted,
    certs,
    checkDate: new Date(nowMs),
  });
  let result;
  try {
    result = await engine.verify();
  } catch (err) {
    return `the chain does not validate (${err && err.message ? err.message : err})`;
  }
  if (!result.result) return `the chain does not validate: ${result.resultMessage}`;
  return "";
}
