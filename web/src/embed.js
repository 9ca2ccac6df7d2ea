// zMesh embed: one <script> tag lets a site's visitors volunteer a relay.
//
//   <script async src="https://ZMESH_ORIGIN/embed.js"
//           data-cap-kbps="256" data-stop-when-hidden="true"></script>
//
// - Nothing runs until the visitor agrees: a small consent card asks first.
// - The relay runs in a sandboxed iframe served from the zMesh origin (relay.html), so it
//   is isolated from the host page: its own origin, its own storage, its own worker.
// - It honours a bandwidth cap (data-cap-kbps, passed to the relay) and shows a stop control.
// - It never throws into the host page and never blocks it: every step is guarded, the
//   card lives in a shadow root (the host's CSS cannot reach it), and the only global is
//   `zmeshEmbed.stop()`: a host page can stop the relay, only the visitor can start it.
(() => {
  "use strict";
  const guard = (fn) => (...args) => {
    try {
      return fn(...args);
    } catch (err) {
      // never let an error reach the host page; keep it visible for the curious
      try { console.debug("[zmesh embed]", err); } catch (_) { /* console may be gone */ }
      return undefined;
    }
  };

  guard(() => {
    const script = document.currentScript;
    if (!script || window.zmeshEmbed) return;
    const origin = new URL(script.src, location.href).origin;
    const capKbps = Math.max(16, Math.min(100000, parseInt(script.dataset.capKbps || "256", 10) || 256));
    const stopWhenHidden = (script.dataset.stopWhenHidden || "true") !== "false";
    const consentKey = "zmesh-embed-consent";

    let host = null;
    let root = null; // the card's shadow root: the host page's CSS cannot reach it
    let frame = null;
    let label = null;

    const stop = guard(() => {
      if (frame) frame.remove();
      frame = null;
      if (label) label.textContent = "zMesh relay stopped.";
      setButtons("stopped");
    });

    const start = guard(() => {
      if (frame) return;
      frame = document.createElement("iframe");
      const url = new URL("/relay.html", origin);
      url.searchParams.set("cap_kbps", String(capKbps));
      frame.src = url.href;
      // isolated: a cross-origin document; scripts and its own origin's storage only
      frame.setAttribute("sandbox", "allow-scripts allow-same-origin");
      frame.setAttribute("allow", "camera 'none'; microphone 'none'; geolocation 'none'");
      frame.setAttribute("referrerpolicy", "no-referrer");
      frame.setAttribute("title", "zMesh volunteer relay");
      frame.setAttribute("loading", "eager");
      frame.style.cssText = "width:0;height:0;border:0;position:absolute;visibility:hidden";
      root.appendChild(frame);
      if (label) label.textContent = "zMesh relay: joining the mesh…";
      setButtons("running");
    });

    // What the relay reports (relay.html, from the zMesh origin): say only what is true.
    const fmtBytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB`
      : `${(n / 1048576).toFixed(1)} MiB`);
    const onReport = guard((event) => {
      if (!frame || event.source !== frame.contentWindow || event.origin !== origin) return;
      const r = event.data;
      if (!r || r.zmeshRelay !== 1 || !label) return;
      if (r.stage === "failed") {
        label.textContent = `zMesh relay failed: ${String(r.error || "unknown error").slice(0, 200)}`;
      } else if (r.stage === "linked") {
        const peers = Number(r.peers) || 0;
        label.textContent = `zMesh relay linked to ${peers} peer${peers === 1 ? "" : "s"}, ` +
          `${fmtBytes(Number(r.bytesRelayed) || 0)} relayed (up to ${capKbps} kbit/s).`;
      } else {
        label.textContent = "zMesh relay: joining the mesh…";
      }
    });
    window.addEventListener("message", onReport);

    const buttons = {};
    const setButtons = (state) => {
      buttons.yes.hidden = state !== "ask";
      buttons.no.hidden = state !== "ask";
      buttons.stop.hidden = state !== "running";
      buttons.resume.hidden = state !== "stopped";
    };

    const build = guard(() => {
      host = document.createElement("div");
      host.setAttribute("data-zmesh-embed", "");
      root = host.attachShadow({ mode: "open" });
      const style = document.createElement("style");
      style.textContent = `
        .card{position:fixed;right:12px;bottom:12px;z-index:2147483000;max-width:320px;
          font:13px/1.4 system-ui,sans-serif;background:#111;color:#eee;border-radius:8px;
          padding:10px 12px;box-shadow:0 2px 10px rgba(0,0,0,.4)}
        button{font:inherit;margin:6px 6px 0 0;padding:3px 10px;border-radius:5px;border:0;cursor:pointer}
        .yes{background:#3a7;color:#fff}.no,.stop,.resume{background:#444;color:#eee}`;
      const card = document.createElement("div");
      card.className = "card";
      card.setAttribute("role", "dialog");
      card.setAttribute("aria-label", "zMesh relay consent");
      label = document.createElement("div");
      label.textContent =
        `Help people browse privately? This page can run a zMesh relay in the background ` +
        `while it is open (at most ${capKbps} kbit/s). Nothing runs unless you agree.`;
      card.appendChild(label);
      const mk = (cls, text, onClick) => {
        const b = document.createElement("button");
        b.className = cls;
        b.textContent = text;
        b.addEventListener("click", guard(onClick));
        card.appendChild(b);
        buttons[cls] = b;
      };
      mk("yes", "Run relay", () => { remember("yes"); start(); });
      mk("no", "No thanks", () => { remember("no"); host.remove(); });
      mk("stop", "Stop", () => { remember("stopped"); stop(); });
      mk("resume", "Resume", () => { remember("yes"); start(); });
      root.appendChild(style);
      root.appendChild(card);
      document.body.appendChild(host);
      setButtons("ask");
    });

    const remember = guard((answer) => localStorage.setItem(consentKey, answer));
    const recalled = guard(() => localStorage.getItem(consentKey));

    const boot = guard(() => {
      const answer = recalled();
      if (answer === "no") return; // the visitor declined: stay out of the way
      build();
      if (answer === "yes") start();
      else if (answer === "stopped") setButtons("stopped");
      if (stopWhenHidden) {
        document.addEventListener("visibilitychange", guard(() => {
          if (document.hidden) stop();
          else if (recalled() === "yes") start();
        }));
      }
    });

    window.zmeshEmbed = Object.freeze({ stop });
    if (document.body) setTimeout(boot, 0);
    else document.addEventListener("DOMContentLoaded", boot, { once: true });
  })();
})();
