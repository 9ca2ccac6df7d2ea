// The main thread's half of the browser node's WebRTC: Chromium has no RTCPeerConnection
// in workers, so the page owns the connections and the worker (Pyodide, the zMesh core)
// drives them by message.  This file is deliberately thin: no protocol logic, no retries.
//
// Worker -> page, {t: "rtc", op, pc, id?, ...}:
//   dial    {id, pc}        new connection + our channel; replies with the offer SDP
//   answer  {id, pc, sdp}   apply a remote offer; replies with the answer SDP
//   remote  {id, pc, sdp}   (dialler) apply the remote answer; replies when applied
//   ice     {id, sdp}       the STUN servers for new connections: a JSON list of
//                           "stun:host:port" URIs (the mesh's native nodes, D50)
//   send    {pc, data}      an ArrayBuffer (transferred) for the channel
//   close   {pc}            close the channel and the connection
//   cert    {id}            the SHA-256 fingerprint of the certificate kept for dials by
//                           push (web/src/wake.js), "AA:BB:..."
//   pushsub {id, sdp}       subscribe to push for a wake node: {key, scope} as JSON;
//                           replies with the subscription's JSON (D54)
//   pushdial {id, pc, sdp}  a connection dialled by push: {ufrag, pwd, answer} as JSON; an
//                           offer with the kept certificate and those ICE credentials,
//                           then the answer applied; replies with the local SDP
//   mdial   {id, pc}        a media connection (D58): a canvas track, VP8 only, with
//                           RTCRtpScriptTransforms (web/src/mediaframes.js); replies with
//                           the offer createOffer made (not yet local)
//   mlocal  {id, pc, sdp}   set that offer, as the node rewrote it, as the local
//                           description; replies with it once gathered
// Replies: {t: "rtc-reply", id, ok, sdp?, error?}
// Events, page -> worker: {t: "rtc-ev", pc, ev, ...}:
//   open; message {data: ArrayBuffer, transferred}; close {reason};
//   buffered {handed, amount}: bytes handed to the channel so far and its bufferedAmount
//   ports {ports: [pull, frames]}: a media connection's two MessagePorts, transferred: the
//     sender transform asks for each frame on the first, the receiver's frames come on
//     the second (the worker talks to the transforms directly); open when connected
//
// Every connection has exactly one data channel, negotiated out of band (label "zmesh",
// id 0, ordered), as zmesh/runtime/webrtc.py creates it natively.  The only ICE servers are
// the STUN responders of the native nodes the worker names (op "ice"), so a tab that hides
// its host addresses behind mDNS names still offers a server-reflexive candidate; no TURN.

import { subscribeWake, wakeCertificate, wakeFingerprint } from "./wake.js";

const GATHER_TIMEOUT_MS = 3000;
const BUFFERED_REPORT_MS = 50;
const MAX_CONNECTIONS = 128;
const MAX_ICE_SERVERS = 4;
const MEDIA_MAX_BITRATE = 8000000; // the encoder's rate does not matter: the frames are ours
const MEDIA_WORKER = typeof document !== "undefined"
  ? new URL("mediaframes.js", (document.currentScript && document.currentScript.src) || location.href).href
  : "";
const STUN_URI = /^stun:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$/;

/** The RTCIceServer list for a JSON list of stun: URIs; throws on anything else. */
export function iceServers(json) {
  const list = JSON.parse(json);
  if (!Array.isArray(list) || list.length > MAX_ICE_SERVERS) throw new Error("bad ICE server list");
  for (const uri of list) {
    if (typeof uri !== "string" || !STUN_URI.test(uri)) throw new Error("bad STUN URI");
  }
  return list.map((urls) => ({ urls }));
}

export class RtcHost {
  /**
   * @param {(msg: object, transfer?: Transferable[]) => void} post  sends to the worker
   * @param {{capBytesPerSec?: number}} options  a cap on bytes sent (0: none); the embed uses it
   */
  constructor(post, options = {}) {
    this.post = post;
    this.conns = new Map(); // pc id -> {pc, dc, handed, reportTimer}
    this.iceServers = []; // set by the worker (op "ice")
    // paths: the selected ICE candidate pair of each opened connection, counted by
    // "local type/remote type" (host, srflx, prflx): which path links really took
    this.stats = { opened: 0, closed: 0, bytesIn: 0, bytesOut: 0, delayed: 0, paths: {} };
    // token bucket over every channel: one second of burst, at least one 64 KiB message
    this.cap = Math.max(0, options.capBytesPerSec || 0);
    this.tokens = Math.max(this.cap, 65536);
    this.refilled = performance.now();
    this.waiting = []; // [id, data] held back by the cap, in order
    this.drainTimer = 0;
  }

  /** Hand ``data`` to channel ``id`` now, or queue it until the cap allows. */
  sendCapped(id, data, requeued = false) {
    if (!this.cap) return this.send(id, data);
    const now = performance.now();
    this.tokens = Math.min(Math.max(this.cap, 65536), this.tokens + ((now - this.refilled) / 1000) * this.cap);
    this.refilled = now;
    if (!this.waiting.length && this.tokens >= data.byteLength) {
      this.tokens -= data.byteLength;
      return this.send(id, data);
    }
    this.waiting.push([id, data]);
    if (!requeued) this.stats.delayed += 1; // messages the cap held back, each counted once
    if (!this.drainTimer) {
      this.drainTimer = setTimeout(() => {
        this.drainTimer = 0;
        const queue = this.waiting;
        this.waiting = [];
        for (const [qid, qdata] of queue) this.sendCapped(qid, qdata, true);
      }, 20);
    }
  }

  /** Handle one {t: "rtc"} message from the worker. */
  handle(msg) {
    switch (msg.op) {
      case "dial":
      case "answer":
      case "remote":
      case "ice":
      case "cert":
      case "pushsub":
      case "pushdial":
      case "mdial":
      case "mlocal":
        this.request(msg).then(
          (sdp) => this.post({ t: "rtc-reply", id: msg.id, ok: true, sdp }),
          (err) => this.post({ t: "rtc-reply", id: msg.id, ok: false, error: String(err && err.message || err) }),
        );
        return;
      case "send":
        this.sendCapped(msg.pc, msg.data);
        return;
      case "close":
        this.close(msg.pc, "closed by the node");
        return;
      default:
        console.warn("zmesh rtc: unknown op", msg.op);
    }
  }

  async request(msg) {
    if (msg.op === "ice") {
      this.iceServers = iceServers(msg.sdp);
      return null;
    }
    if (msg.op === "cert") return wakeFingerprint();
    if (msg.op === "pushsub") return subscribeWake(msg.sdp);
    if (msg.op === "remote") {
      const conn = this.conns.get(msg.pc);
      if (!conn) throw new Error("no such connection");
      await conn.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      return null;
    }
    if (msg.op === "mlocal") {
      const conn = this.conns.get(msg.pc);
      if (!conn || !conn.media) throw new Error("no such media connection");
      try {
        await conn.pc.setLocalDescription({ type: "offer", sdp: msg.sdp });
        await gathered(conn.pc);
      } catch (err) {
        this.close(msg.pc, String(err));
        throw err;
      }
      return conn.pc.localDescription.sdp;
    }
    if (this.conns.has(msg.pc)) throw new Error("connection id in use");
    if (msg.op === "mdial") {
      if (this.conns.size >= MAX_CONNECTIONS) throw new Error("too many connections");
      const conn = this.openMedia(msg.pc);
      try {
        const params = conn.sender.getParameters();
        if (params.encodings && params.encodings[0]) {
          params.encodings[0].maxBitrate = MEDIA_MAX_BITRATE;
          await conn.sender.setParameters(params);
        }
        return (await conn.pc.createOffer()).sdp;
      } catch (err) {
        this.close(msg.pc, String(err));
        throw err;
      }
    }
    if (this.conns.size >= MAX_CONNECTIONS) throw new Error("too many connections");
    const dial = msg.op === "pushdial" ? parseDial(msg.sdp) : null;
    const conn = this.open(msg.pc, dial ? [await wakeCertificate()] : undefined);
    try {
      const pc = conn.pc;
      if (dial) {
        // the wake node built our offer: its ICE credentials go in before
        // setLocalDescription, and its answer is applied at once (no gathering to wait for)
        const offer = await pc.createOffer();
        const sdp = offer.sdp
          .replace(/^a=ice-ufrag:.*$/gm, `a=ice-ufrag:${dial.ufrag}`)
          .replace(/^a=ice-pwd:.*$/gm, `a=ice-pwd:${dial.pwd}`);
        await pc.setLocalDescription({ type: "offer", sdp });
        await pc.setRemoteDescription({ type: "answer", sdp: dial.answer });
        return pc.localDescription.sdp;
      }
      if (msg.op === "answer") {
        await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
      } else {
        await pc.setLocalDescription(await pc.createOffer());
      }
      await gathered(pc);
      return pc.localDescription.sdp;
    } catch (err) {
      this.close(msg.pc, String(err));
      throw err;
    }
  }

  open(id, certificates) {
    const config = { iceServers: this.iceServers };
    if (certificates) config.certificates = certificates;
    const pc = new RTCPeerConnection(config);
    const dc = pc.createDataChannel("zmesh", { negotiated: true, id: 0, ordered: true });
    dc.binaryType = "arraybuffer";
    const conn = { pc, dc, handed: 0, reportTimer: 0, open: false };
    this.conns.set(id, conn);
    dc.onopen = () => {
      conn.open = true;
      this.stats.opened += 1;
      this.countPath(pc);
      this.post({ t: "rtc-ev", pc: id, ev: "open" });
    };
    dc.onmessage = (event) => {
      let data = event.data;
      if (typeof data === "string") data = new TextEncoder().encode(data).buffer; // never sent by zMesh
      this.stats.bytesIn += data.byteLength;
      this.post({ t: "rtc-ev", pc: id, ev: "message", data }, [data]);
    };
    dc.onbufferedamountlow = () => this.report(id);
    dc.onclose = () => this.close(id, "channel closed");
    dc.onerror = (event) => this.close(id, `channel error: ${event.error && event.error.message || "unknown"}`);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.close(id, `connection ${pc.connectionState}`);
      }
    };
    return conn;
  }

  /** A media connection (D58): no data channel; the link rides the VP8 frames. */
  openMedia(id) {
    if (typeof RTCRtpScriptTransform === "undefined") throw new Error("no RTCRtpScriptTransform here");
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const track = canvasTrack().clone();
    const tx = pc.addTransceiver(track, { direction: "sendrecv" });
    tx.setCodecPreferences(RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/VP8"));
    const pull = new MessageChannel();
    const frames = new MessageChannel();
    const workers = [new Worker(MEDIA_WORKER), new Worker(MEDIA_WORKER)];
    tx.sender.transform = new RTCRtpScriptTransform(workers[0], { side: "send", port: pull.port2 }, [pull.port2]);
    tx.receiver.transform = new RTCRtpScriptTransform(workers[1], { side: "recv", port: frames.port2 }, [frames.port2]);
    const conn = { pc, dc: null, media: true, sender: tx.sender, track, workers, handed: 0, reportTimer: 0, open: false };
    this.conns.set(id, conn);
    this.post({ t: "rtc-ev", pc: id, ev: "ports", ports: [pull.port1, frames.port1] }, [pull.port1, frames.port1]);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected" && !conn.open) {
        conn.open = true;
        this.stats.opened += 1;
        this.countPath(pc);
        this.post({ t: "rtc-ev", pc: id, ev: "open" });
      } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.close(id, `connection ${pc.connectionState}`);
      }
    };
    return conn;
  }

  /** Count the selected candidate pair's types in stats.paths (best effort). */
  countPath(pc) {
    pc.getStats().then((report) => {
      for (const s of report.values()) {
        if (s.type !== "transport" || !s.selectedCandidatePairId) continue;
        const pair = report.get(s.selectedCandidatePairId);
        const local = pair && report.get(pair.localCandidateId);
        const remote = pair && report.get(pair.remoteCandidateId);
        if (!local || !remote) continue;
        const key = `${local.candidateType}/${remote.candidateType}`;
        if (Object.keys(this.stats.paths).length < 16 || key in this.stats.paths) {
          this.stats.paths[key] = (this.stats.paths[key] || 0) + 1;
        }
      }
    }, () => {});
  }

  send(id, data) {
    const conn = this.conns.get(id);
    if (!conn || !conn.dc || conn.dc.readyState !== "open") return;
    try {
      conn.dc.send(data);
    } catch (err) {
      this.close(id, `send failed: ${err.message || err}`);
      return;
    }
    conn.handed += data.byteLength;
    this.stats.bytesOut += data.byteLength;
    if (!conn.reportTimer) {
      conn.reportTimer = setTimeout(() => {
        conn.reportTimer = 0;
        this.report(id);
      }, BUFFERED_REPORT_MS);
    }
  }

  report(id) {
    const conn = this.conns.get(id);
    if (!conn || !conn.dc) return;
    this.post({ t: "rtc-ev", pc: id, ev: "buffered", handed: conn.handed, amount: conn.dc.bufferedAmount });
  }

  close(id, reason) {
    const conn = this.conns.get(id);
    if (!conn) return;
    this.conns.delete(id);
    if (conn.reportTimer) clearTimeout(conn.reportTimer);
    if (conn.dc) {
      conn.dc.onopen = conn.dc.onmessage = conn.dc.onclose = conn.dc.onerror = null;
      conn.dc.onbufferedamountlow = null;
    }
    conn.pc.onconnectionstatechange = null;
    if (conn.dc) try { conn.dc.close(); } catch (_) { /* already closed */ }
    if (conn.media) {
      conn.track.stop();
      for (const worker of conn.workers) worker.terminate();
    }
    try { conn.pc.close(); } catch (_) { /* already closed */ }
    if (conn.open) this.stats.closed += 1;
    this.post({ t: "rtc-ev", pc: id, ev: "close", reason });
  }

  closeAll() {
    for (const id of [...this.conns.keys()]) this.close(id, "page closing");
  }
}

let sharedTrack = null;

/** The synthetic video every media connection sends a clone of: a 1280x720 canvas (the
 * measured call's size) that changes every 10 ms, so the encoder makes frames at 30/s. */
function canvasTrack() {
  if (sharedTrack && sharedTrack.readyState === "live") return sharedTrack;
  const canvas = document.createElement("canvas");
  canvas.width = 1280;
  canvas.height = 720;
  const g = canvas.getContext("2d");
  let n = 0;
  setInterval(() => {
    g.fillStyle = `rgb(${(n * 7) % 256},${(n * 3) % 256},90)`;
    g.fillRect(0, 0, 64, 64);
    n += 1;
  }, 10);
  sharedTrack = canvas.captureStream(30).getVideoTracks()[0];
  return sharedTrack;
}

const ICE_CHARS = /^[A-Za-z0-9+/]{4,256}$/;

/** A pushdial request's {ufrag, pwd, answer}; throws if it is not one. */
function parseDial(json) {
  const dial = JSON.parse(json);
  if (!dial || !ICE_CHARS.test(dial.ufrag) || !ICE_CHARS.test(dial.pwd) || typeof dial.answer !== "string") {
    throw new Error("bad pushdial request");
  }
  return dial;
}

/** Resolve once ICE gathering is complete (or after GATHER_TIMEOUT_MS, with what we have). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
