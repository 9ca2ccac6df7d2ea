"""One link's health: RTT, loss and a phi-accrual failure detector, fed by PING and PONG.

Sans-I/O: the link (:class:`~zmesh.link.connection.LinkConnection`) sends PING frames and
hands PONGs in; every method takes ``now`` from its caller.

Heartbeats.  Each side sends a PING every ``keepalive`` seconds, busy or not
(:attr:`LinkHealth.next_ping`), and answers the peer's PINGs with PONGs (within a budget
the link keeps, :data:`zmesh.link.connection.PONGS_PER_INTERVAL`).

Estimates, from our PINGs' PONGs:

* **RTT**: SRTT and RTTVAR per RFC 6298 section 2 (the first sample sets SRTT = R and
  RTTVAR = R/2; then RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R| and SRTT = 7/8 SRTT + 1/8 R).
  Every PONG gives a sample, a late one too (PINGs are never resent, so Karn's rule has
  nothing to exclude).
* **Loss**: the fraction of the last :data:`LOSS_WINDOW` PINGs decided that were lost: not
  answered within the deadline ``max(3 SRTT, 2 keepalive)``.  PINGs waiting are kept in a
  table of at most :data:`MAX_OUTSTANDING` (the oldest forgotten, counted lost); one past
  its deadline is counted lost when the next PING goes out, and a PONG that comes later
  still gives an RTT sample.  A PONG for a seq never sent or already answered is dropped
  quietly and counted (:attr:`LinkHealth.stale_pongs`).
* **Phi**: a :class:`~zmesh.health.phi.PhiDetector` with a heartbeat at link up and one
  per PONG (the first PING goes out a keepalive after link up, not at once: its PONG one
  RTT after the first heartbeat would teach the detector an interval of one RTT),
  configured as Akka's: ``first_interval = keepalive``, ``acceptable_pause =
  keepalive``, ``min_std = keepalive / 5`` and threshold :data:`PHI_THRESHOLD` (8).  On a
  steady link (PONGs every ``keepalive``, the deviation at its floor) phi reaches 8 about
  ``3.05 keepalive`` after the last PONG; with 1 s keepalives, a peer that stops is found
  2 to 3 s after it stopped (as the fixed 3 s silence rule before, docs/decisions.md, D42).

The failure rule (:meth:`LinkHealth.dead_at`).  A link is dead when

* phi is over its threshold **and** nothing at all was received for ``keepalive``: a busy
  link whose PONGs wait behind data in the transport is not dropped while data arrives; or
* nothing at all was received for ``silence_cap`` (the link's hard timeout, 10 s by
  default), whatever phi says.

The time is compared, not phi (:meth:`~zmesh.health.phi.PhiDetector.reaches`), so a timer
armed for :meth:`dead_at` always finds the link dead.
"""

from collections import OrderedDict, deque

from .checks import finite
from .phi import PhiDetector

PHI_THRESHOLD = 8.0  # the link is dead past it (and silent for a keepalive)
SUSPECT_PHI = 3.0  # path choice avoids a linked peer past it
MAX_OUTSTANDING = 16  # PINGs waiting for their PONG; the oldest forgotten (lost)
LOSS_WINDOW = 32  # PINGs decided (answered in time, or lost) that the loss figure covers
SEQ_MODULUS = 1 << 32


class LinkHealth:
    """The heartbeat state of one link that is up."""

    __slots__ = (
        "_detector",
        "_outcomes",
        "_outstanding",
        "_phi_dead",
        "_seq",
        "_srtt",
        "keepalive",
        "next_ping",
        "rttvar",
        "silence_cap",
        "stale_pongs",
    )

    def __init__(self, keepalive: float, silence_cap: float, now: float) -> None:
        """Start at ``now`` (the link came up: the first heartbeat).  Raises ValueError for
        a keepalive or cap that is not finite and positive, or a ``now`` not finite."""
        if not finite("keepalive", keepalive) > 0.0:
            raise ValueError("keepalive must be positive")
        if not finite("silence_cap", silence_cap) > 0.0:
            raise ValueError("silence_cap must be positive")
        self.keepalive = keepalive
        self.silence_cap = silence_cap
        self._detector = PhiDetector(
            first_interval=keepalive,
            acceptable_pause=keepalive,
            min_std=keepalive / 5,
            threshold=PHI_THRESHOLD,
        )
        self._detector.heartbeat(now)
        self._phi_dead = self._detector.reaches()  # moves only with a heartbeat
        self.next_ping = now + keepalive  # so the first PONG comes a keepalive after up
        self._srtt: float | None = None
        self.rttvar = 0.0
        self._seq = 0
        # seq -> (sent, counted lost), in the order sent
        self._outstanding: OrderedDict[int, tuple[float, bool]] = OrderedDict()
        self._outcomes: deque[bool] = deque(maxlen=LOSS_WINDOW)  # True: lost
        self.stale_pongs = 0  # PONGs for a seq never sent or already answered

    # -- our PINGs ----------------------------------------------------------------------
    def ping(self, now: float) -> int:
        """A PING goes out at ``now``: returns its seq and schedules the next one."""
        self._expire(now)
        seq = self._seq
        self._seq = (seq + 1) % SEQ_MODULUS
        self._outstanding[seq] = (now, False)
        if len(self._outstanding) > MAX_OUTSTANDING:
            _, (_, lost) = self._outstanding.popitem(last=False)
            if not lost:
                self._outcomes.append(True)
        self.next_ping = now + self.keepalive
        return seq

    def pong(self, seq: int, now: float) -> bool:
        """The peer answered PING ``seq``: an RTT sample and a heartbeat.  False (dropped,
        counted in :attr:`stale_pongs`) for a seq never sent, answered or forgotten."""
        entry = self._outstanding.pop(seq, None)
        if entry is None:
            self.stale_pongs += 1
            return False
        sent, lost = entry
        rtt = max(0.0, now - sent)
        if not lost:
            self._outcomes.append(rtt > self.deadline)
        srtt = self._srtt
        if srtt is None:  # RFC 6298 (2.2)
            self._srtt, self.rttvar = rtt, rtt / 2
        else:  # (2.3)
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(srtt - rtt)
            self._srtt = 0.875 * srtt + 0.125 * rtt
        self._detector.heartbeat(now)
        self._phi_dead = self._detector.reaches()
        return True

    def _expire(self, now: float) -> None:
        """Count as lost the PINGs past their deadline (kept for a late RTT sample)."""
        cutoff = now - self.deadline
        for seq, (sent, lost) in self._outstanding.items():
            if sent >= cutoff:
                break  # in the order sent
            if not lost:
                self._outstanding[seq] = (sent, True)
                self._outcomes.append(True)

    @property
    def deadline(self) -> float:
        """How long a PING may wait for its PONG before it counts as lost."""
        floor = 2 * self.keepalive
        return floor if self._srtt is None else max(3 * self._srtt, floor)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    # -- the figures --------------------------------------------------------------------
    @property
    def rtt(self) -> float | None:
        """The smoothed round-trip time in seconds (None before the first PONG)."""
        return self._srtt

    @property
    def loss(self) -> float:
        """The fraction (0..1) of the last PINGs decided that were lost."""
        outcomes = self._outcomes
        return sum(outcomes) / len(outcomes) if outcomes else 0.0

    def phi(self, now: float) -> float:
        """The detector's suspicion level at ``now``.  ValueError if ``now`` is not finite."""
        return self._detector.phi(now)

    def dead_at(self, last_rx: float) -> float:
        """When the link is dead by the failure rule (module doc), given that the last
        bytes were received at ``last_rx``; later input moves it."""
        phi_rule = max(self._phi_dead, last_rx + self.keepalive)
        return min(phi_rule, last_rx + self.silence_cap)
