// Drives the page's real RtcHost (web/src/rtc.js) with a recording data channel, to check
// the embed's bandwidth cap: what goes out over time stays within cap * t + the burst,
// nothing is lost or reordered, and an uncapped host sends at once.
import { RtcHost } from "../../web/src/rtc.js";

const [capBytesPerSec, messages, size] = process.argv.slice(2).map(Number);
const sent = [];
const host = new RtcHost(() => {}, { capBytesPerSec });
host.conns.set(1, {
  handed: 0,
  reportTimer: 0,
  dc: { readyState: "open", bufferedAmount: 0, send: (d) => sent.push([performance.now(), d]) },
});
const start = performance.now();
for (let i = 0; i < messages; i++) {
  const data = new Uint8Array(size);
  data[0] = i % 256;
  host.handle({ t: "rtc", op: "send", pc: 1, data: data.buffer });
}
const immediate = sent.length;
await new Promise((resolve) => {
  const poll = setInterval(() => {
    if (sent.length === messages) { clearInterval(poll); resolve(); }
  }, 10);
});
const elapsed = (performance.now() - start) / 1000;
const burst = Math.max(capBytesPerSec, 65536);
let worst = 0; // the largest excess of bytes sent over what the cap allowed by then
let total = 0;
for (const [t, d] of sent) {
  total += d.byteLength;
  worst = Math.max(worst, total - (capBytesPerSec * (t - start)) / 1000 - burst);
}
const inOrder = sent.every(([, d], i) => new Uint8Array(d)[0] === i % 256);
for (const conn of host.conns.values()) clearTimeout(conn.reportTimer);
console.log(JSON.stringify({ immediate, elapsed, total, worst, inOrder, delayed: host.stats.delayed }));
