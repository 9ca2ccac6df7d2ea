"""The browser end of the media transport at the transport level (D58): headless
Chromium's ``RTCRtpScriptTransform`` on a canvas track, VP8, against the native media end
(aiortc) through compact SDP version 3 both ways, a ``MediaLink`` at each end (the
browser's driven by the encoder's frames, ``next_frame``).  Guards what the browser end
relies on: that Chromium lets a sender transform replace a frame's bytes with ours of any
size, that the receiver transform gets them whole, and that it accepts the rewritten
local offer (``sdp.local_media_offer``).  No node and no circuit: see D58."""

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import media_browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"),
]

SIZE = 400_000


def test_messages_cross_both_ways_inside_chromium_encoded_frames() -> None:
    results = asyncio.run(media_browser.run(SIZE))
    assert results["errors"] == []
    for way in ("browser_to_native", "native_to_browser"):
        assert results[way]["bytes"] >= SIZE, results[way]
    assert results["keys_out"] == 1  # our first frame only, whatever the encoder made
    assert results["frames_out"] >= 30 and results["frames_in"] >= 30
    sent = results["page_stats"]["outbound-rtp"]
    assert sent["framesEncoded"] >= results["frames_out"] - 1  # each encoded frame was ours
    assert results["page_stats"]["inbound-rtp"]["framesDecoded"] == 0  # no decoder ran
    print(
        f"browser -> native {results['browser_to_native']['mbit_s']} Mbit/s, "
        f"native -> browser {results['native_to_browser']['mbit_s']} Mbit/s"
    )
