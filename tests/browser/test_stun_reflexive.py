"""The reflexive path between two Chromiums with default privacy (D50), without the mesh:
each tab's offer or answer goes through the compact SDP (``CompactSdp``) with its mDNS
host names removed, so the only way the two can meet is the server-reflexive candidate
that our STUN responder (``zmesh/runtime/stun.py``) gave them.  Without the responder
the same exchange carries no usable candidate and never connects.

No flag weakens Chromium's privacy here: no media permission, no
``--allow-loopback-in-peer-connection``, mDNS hiding on (each tab's host candidates are
``<uuid>.local`` names).  Each tab runs in a Chromium of its own, as two people's would.
"""

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from zmesh.runtime.stun import start_stun, stun_uri
from zmesh.signaling.sdp import CompactSdp

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"),
]

_MAKE = """async ([role, remote, servers]) => {
  const pc = window.pc = new RTCPeerConnection({iceServers: servers.map((urls) => ({urls}))});
  const dc = pc.createDataChannel("zmesh", {negotiated: true, id: 0});
  window.opened = new Promise((resolve) => {
    dc.onopen = () => resolve(true);
    setTimeout(() => resolve(false), 8000);
  });
  const gathered = () => new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 10000);
  });
  if (role === "offer") {
    await pc.setLocalDescription(await pc.createOffer());
  } else {
    await pc.setRemoteDescription({type: "offer", sdp: remote});
    await pc.setLocalDescription(await pc.createAnswer());
  }
  await gathered();
  return pc.localDescription.sdp;
}"""

_PATH = """async () => {
  const report = await pc.getStats();
  for (const s of report.values()) {
    if (s.type !== "transport" || !s.selectedCandidatePairId) continue;
    const pair = report.get(s.selectedCandidatePairId);
    return [report.get(pair.localCandidateId).candidateType,
            report.get(pair.remoteCandidateId).candidateType];
  }
  return null;
}"""


def _reflexive_only(sdp: str, role: str) -> tuple[str, CompactSdp]:
    """The SDP as the mesh carries it (compact form, encoded and decoded), without the
    mDNS host names."""
    compact = CompactSdp.decode(CompactSdp.from_sdp(sdp).encode())
    hosts = tuple(c for c in compact.candidates if not c[0].endswith(".local"))
    stripped = dataclasses.replace(compact, candidates=hosts)
    return stripped.to_sdp(role), compact


async def _pair(with_stun: bool) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    server, port = await start_stun("127.0.0.1", 0)
    servers = [stun_uri("127.0.0.1", port)] if with_stun else []
    try:
        async with async_playwright() as playwright:
            pages = []
            for _ in range(2):
                browser = await playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--no-sandbox", "--disable-gpu"],
                    headless=True,
                )
                page = await (await browser.new_context()).new_page()
                await page.goto("about:blank")
                pages.append(page)
            offer = await pages[0].evaluate(_MAKE, ["offer", None, servers])
            offer_sdp, offer_compact = _reflexive_only(offer, "offer")
            answer = await pages[1].evaluate(_MAKE, ["answer", offer_sdp, servers])
            answer_sdp, answer_compact = _reflexive_only(answer, "answer")
            await pages[0].evaluate(
                "(sdp) => pc.setRemoteDescription({type: 'answer', sdp})", answer_sdp
            )
            opened = [await page.evaluate("() => window.opened") for page in pages]
            path = await pages[0].evaluate(_PATH) if all(opened) else None
            return {
                "opened": opened,
                "path": path,
                "offer": offer_compact,
                "answer": answer_compact,
                "answered": server.responder.counters.answered,
                "counters": server.responder.counters,
            }
    finally:
        server.close()


def test_default_privacy_tabs_link_through_reflexive_candidates() -> None:
    result = asyncio.run(_pair(with_stun=True))
    for compact in (result["offer"], result["answer"]):
        # default privacy: every host candidate is an mDNS name
        assert compact.candidates and all(c[0].endswith(".local") for c in compact.candidates)
    # The offer carries the srflx candidate our responder gave it.  The answer usually does
    # too; in about one run in four here Chromium ends the answerer's gathering without it
    # (its checks to the offer's srflx start at once), and the offerer then learns the
    # answerer's address as peer-reflexive from those checks.
    assert result["offer"].reflexive, (result["offer"], result["counters"])
    assert result["answered"] >= 1
    assert result["opened"] == [True, True]
    path = result["path"]
    assert path is not None and path[1] in ("srflx", "prflx"), path  # never an mDNS host


def test_without_the_responder_the_same_tabs_cannot_link() -> None:
    result = asyncio.run(_pair(with_stun=False))
    assert not result["offer"].reflexive and not result["answer"].reflexive
    assert result["opened"] == [False, False]
