"""The harness's ``heal`` scenario: the first page's ``zmesh.fetch`` gets a larger file
(:data:`HEAL_FILE_SIZE`) while a native middle relay of one of its session's legs is killed
(SIGKILL); the fetch still completes intact (HTTP 200, SHA-256 checked).  See
:mod:`zmesh.runtime.harness`."""

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from ..errors import ZMeshError
from ..identity import short_id

if TYPE_CHECKING:
    from .harness import Harness

HEAL_FILE_SIZE = 48_000_000  # about 12 s at 4 MB/s: time for two legs before the kill
HEAL_RELAYS = 5  # the exit and 4 others: two legs with disjoint guards and middles
HEAL_KILL_AFTER = 0.125  # the share of the file received before the kill
HEAL_POLL = 0.1
HEAL_RELEG_WAIT = 15.0  # how long the report waits for the session to have two legs again

# Start the heal scenario's fetch in the page without awaiting it; the harness awaits
# window.__zmeshHeal later.  window.__zmeshHealDone says whether it has ended.
_START_HEAL_FETCH = """(url) => {
    window.__zmeshHealDone = false;
    window.__zmeshHeal = (async () => {
        try {
            const response = await window.zmesh.fetch(url);
            const body = await response.arrayBuffer();
            const hash = await crypto.subtle.digest("SHA-256", body);
            const hex = Array.from(new Uint8Array(hash),
                                   (b) => b.toString(16).padStart(2, "0"));
            return [response.status, body.byteLength, hex.join(""), ""];
        } catch (err) {
            return [0, 0, "", String(err)];
        } finally {
            window.__zmeshHealDone = true;
        }
    })();
    return true;
}"""
_HEAL_STATUS = """async () => ({
    status: await window.zmesh.status(),
    done: window.__zmeshHealDone === true,
})"""


class _LegTimeline:
    """A session's legs (circuit ids) and the page's peer count each time they change, in
    seconds after ``start`` (at most :data:`MAX_TIMELINE` changes)."""

    MAX_TIMELINE = 32

    def __init__(self, session_id: int, start: float) -> None:
        self.session_id = session_id
        self.start = start
        self.changes: list[tuple[float, list[int], int]] = []

    def record(self, status: dict[str, Any]) -> None:
        session = next((s for s in status["sessions"] if s["id"] == self.session_id), None)
        legs = [] if session is None else sorted(leg["circuit"] for leg in session["legs"])
        last = self.changes[-1] if self.changes else None
        if len(self.changes) < self.MAX_TIMELINE and (
            last is None or (last[1], last[2]) != (legs, status["peers"])
        ):
            self.changes.append((time.monotonic() - self.start, legs, status["peers"]))

    def text(self) -> str:
        steps = ", ".join(f"+{t:.2f} s {legs} ({peers} peers)" for t, legs, peers in self.changes)
        return f"legs of session {self.session_id} after the kill: {steps}"


def _legs_text(legs: list[dict[str, Any]]) -> str:
    """A status's legs as ``circuit N: guard -> middle -> exit (RTT)`` (short ids)."""
    return "; ".join(
        f"circuit {leg['circuit']}: "
        + " -> ".join(short_id(bytes.fromhex(hop)) for hop in leg["path"])
        + ("" if leg.get("rttMs") is None else f" (RTT {leg['rttMs']:.0f} ms)")
        for leg in legs
    )


async def heal(h: "Harness", details: list[str]) -> bool:
    """Kill a native middle relay of the fetch's session mid-transfer; the fetch must
    still complete intact."""
    if len(h.procs.relays) < HEAL_RELAYS:
        raise ZMeshError(f"the heal scenario needs at least {HEAL_RELAYS} relays (--relays)")
    page = h.pages[0]
    h.step = "waiting for browser 0 to be ready"
    await h.wait_ready(page)
    # ready means a 3-hop path exists (three relays may be all it knows); two legs with a
    # middle on one leg only need HEAL_RELAYS, which its peer sample finds within seconds
    h.step = f"waiting for browser 0 to know {HEAL_RELAYS} relays"
    deadline = time.monotonic() + h.opts.timeout
    while (status := await h.status(page))["relaysKnown"] < HEAL_RELAYS:
        if time.monotonic() > deadline:
            raise ZMeshError(f"the page knows {status['relaysKnown']} relays")
        await asyncio.sleep(HEAL_POLL)
    browser_id = status["nodeId"]
    from .harness import FileServer  # noqa: PLC0415 (the harness imports this module)

    files = FileServer(HEAL_FILE_SIZE)
    await files.start()
    try:
        h.step = "starting a zmesh.fetch in the page"
        start = time.monotonic()
        await page.evaluate(_START_HEAL_FETCH, files.url)
        h.step = "waiting for the fetch's session to have two legs and data"
        killed, session_id = await _kill_a_middle(h, page, browser_id, start, details)
        killed_at = time.monotonic()
        timeline = _LegTimeline(session_id, killed_at)
        h.step = "waiting for the fetch to complete after the kill"
        deadline = killed_at + h.opts.timeout
        while not (polled := await page.evaluate(_HEAL_STATUS))["done"]:
            timeline.record(polled["status"])
            if time.monotonic() > deadline:
                raise ZMeshError(f"the fetch did not end {h.opts.timeout:g} s after the kill")
            await asyncio.sleep(HEAL_POLL)
        status, size, sha, error = await page.evaluate("() => window.__zmeshHeal")
        took = time.monotonic() - start
        if error:
            details.append(f"zmesh.fetch failed after {took:.2f} s: {error}")
            details.append(timeline.text())
            return False
        match = sha == files.sha256
        details.append(
            f"zmesh.fetch got HTTP {status}, {size} bytes in {took:.2f} s, SHA-256 "
            f"{'matches' if match else 'MISMATCH'}"
        )
        after = await _session_status(h, page, session_id)
        if after is None:
            details.append(f"session {session_id} is no longer in the status")
        else:
            details.append(
                f"session {session_id} after the fetch: {after['failovers']} failover(s) "
                f"(legs lost with this end's data unconfirmed), longest stall "
                f"{after['longestStallMs']:.0f} ms, legs {_legs_text(after['legs'])}"
            )
        if killed:
            h.step = "waiting for the session to have two legs again"
            details.append(await _releg(h, page, session_id, killed, timeline))
            details.append(timeline.text())
        return bool(killed) and match and status == 200
    finally:
        await files.close()


async def _session_status(h: "Harness", page: Any, session_id: int) -> dict[str, Any] | None:
    sessions = (await h.status(page))["sessions"]
    return next((s for s in sessions if s["id"] == session_id), None)


async def _releg(
    h: "Harness", page: Any, session_id: int, killed: str, timeline: _LegTimeline
) -> str:
    """How long after the kill the session had two legs again, none through the killed
    relay (waits at most :data:`HEAL_RELEG_WAIT` seconds)."""
    deadline = time.monotonic() + HEAL_RELEG_WAIT
    while True:
        status = await h.status(page)
        timeline.record(status)
        session = next((s for s in status["sessions"] if s["id"] == session_id), None)
        if session is None:
            return f"session {session_id} closed before it had two legs again"
        legs = session["legs"]
        if len(legs) >= 2 and not any(killed in leg["path"] for leg in legs):
            return (
                f"session {session_id} had two legs again "
                f"{time.monotonic() - timeline.start:.2f} s after the kill: "
                f"{_legs_text(legs)}"
            )
        if time.monotonic() > deadline:
            return (
                f"session {session_id} had {len(legs)} leg(s) {HEAL_RELEG_WAIT:g} s after "
                f"the kill: {_legs_text(legs)}"
            )
        await asyncio.sleep(HEAL_POLL)


async def _kill_a_middle(
    h: "Harness", page: Any, browser_id: str, start: float, details: list[str]
) -> tuple[str, int]:
    """Wait until the page's fetch rides a session with two legs and has received
    :data:`HEAL_KILL_AFTER` of the file, then SIGKILL a native relay that is the middle
    of one leg and on no other leg.  Returns the killed relay's node id (hex; empty if
    none was killed) and the session's id."""
    relays = {r.node_id: r for r in h.procs.relays if r.node_id is not None}
    exits = {r.node_id for r in h.procs.relays if r.exit}
    deadline = time.monotonic() + h.opts.timeout
    seen: list[Any] = []  # the fetching sessions last polled
    while True:
        polled = await page.evaluate(_HEAL_STATUS)
        sessions = [s for s in polled["status"]["sessions"] if s["streams"] > 0]
        if polled["done"]:
            legs = "; ".join(f"session {s['id']}: {_legs_text(s['legs'])}" for s in seen)
            details.append(f"the fetch ended before a relay could be killed (last: {legs})")
            return "", seen[0]["id"] if seen else 0
        seen = sessions or seen
        for session in sessions:
            legs = session["legs"]
            if len(legs) < 2 or session["bytesReceived"] < HEAL_KILL_AFTER * HEAL_FILE_SIZE:
                continue
            hops = [hop for leg in legs for hop in leg["path"]]
            for leg in legs:
                middle: str = leg["path"][1] if len(leg["path"]) == 3 else ""
                relay = relays.get(middle)
                if (
                    relay is None
                    or not relay.alive
                    or middle in exits
                    or middle == browser_id
                    or hops.count(middle) != 1
                ):
                    continue
                os.killpg(relay.process.pid, signal.SIGKILL)
                await relay.process.wait()
                details.append(
                    f"killed relay {relay.index} ({short_id(bytes.fromhex(middle))}, the "
                    f"middle of circuit {leg['circuit']} of session {session['id']}) with "
                    f"SIGKILL {time.monotonic() - start:.2f} s after the fetch started, "
                    f"{session['bytesReceived']} of {HEAL_FILE_SIZE} bytes received; "
                    f"legs {_legs_text(legs)}"
                )
                return middle, int(session["id"])
        if time.monotonic() > deadline:
            raise ZMeshError(f"no session with two legs and a native middle ({sessions})")
        await asyncio.sleep(HEAL_POLL)
