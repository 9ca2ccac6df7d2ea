"""Offer/answer negotiation state, sans I/O: what each signed offer and answer may do.

Theory of operation.  A driver owns one :class:`Negotiation` next to its node and runs
the WebRTC calls and HTTP itself; everything that decides goes through here, with ``now``
(Unix seconds) passed in:

* **Dialling.**  :meth:`Negotiation.make_offer` signs an offer with a fresh nonce and
  records it (nonce -> target descriptor, deadline).  The answer must come from that
  target, echo that nonce, and verify against the descriptor we dialled
  (:meth:`~Negotiation.open_answer`); a second answer for the same offer is refused.  The
  driver ends the record with :meth:`~Negotiation.offer_done` once the link is up or the
  dial failed; otherwise its deadline expires it with an :class:`OfferExpired` event.
* **Answering.**  :meth:`~Negotiation.open_offer` decodes an offer and runs the cheap
  checks before the signature check (de-duplicate before verifying): the replay window,
  then the pending-answer caps.  A verified offer takes a pending-answer slot (its source,
  a deadline) and its nonce enters the replay window.  The driver answers it
  (:meth:`~Negotiation.make_answer`) and frees the slot with
  :meth:`~Negotiation.answer_done` when the link opens or fails; otherwise the deadline
  frees it with an :class:`AnswerAbandoned` event, and the driver drops the connection.
* **Timers and events**, aioquic's shape: :meth:`~Negotiation.get_timer`,
  :meth:`~Negotiation.handle_timer`, :meth:`~Negotiation.next_event`.

Pending answers cost the answerer CPU (~1.6 ms to create the answer) and a socket for up
to :attr:`Limits.answer_timeout`.  They are capped per source (``answers_per_source``;
beyond it the offer is refused with :class:`SignalingBusyError`) and in total
(``answers_total``).  A full table sheds its least useful entry rather than failing
closed for everyone: a newcomer whose source holds at least two fewer pending answers
than the busiest source takes that source's oldest slot (:class:`AnswerAbandoned`,
``shed=True``); otherwise it is refused.  Every shed entry lowers the sum of squares of
the per-source counts, so a full table sheds at most ``answers_total *
answers_per_source / 2`` times before slots free by time: the CPU spent answering stays
bounded.  The limit of the defence: ``answers_total`` distinct identities holding one
slot each refuse newcomers until their deadlines pass.

The replay window (:class:`ReplayWindow`) keeps every answered offer's nonce for as long
as its timestamp passes the freshness check (:data:`~zmesh.signaling.messages.MAX_SKEW_MS`
either side of ``now``), evicting by time.  When its count cap is reached it does not
silently forget a nonce that could still be replayed: it forgets the one with the oldest
timestamp and shrinks the acceptance window so that timestamp and everything older is
refused from then on.  A replay is therefore refused however many nonces came between.
Only offers that take a slot enter the window, so its growth is bounded by the answer
rate, which the caps above bound in turn.
"""

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError, ZMeshError
from ..identity import Descriptor, Identity
from ..rng import Rng
from .messages import (
    FINGERPRINT_SIZE,
    MAX_SKEW_MS,
    Kind,
    SignalingMessage,
    check_fresh,
    decode_message,
    verify_message,
)

NONCE_SIZE: Final = 16
REPLAY_CAPACITY: Final = 65536


class SignalingBusyError(ZMeshError):
    """An offer refused for load (its source's or our pending-answer cap): try later.

    Not a protocol error: the offer may be fine.  HTTP answers 503; a SIGNAL frame is
    dropped."""


@dataclass(frozen=True)
class Limits:
    """Every bound of the negotiation state (class attributes are the defaults)."""

    answers_per_source: int = 4
    answers_total: int = 64
    answer_timeout: float = 15.0  # a pending answer's link must open within this
    offers: int = 256  # our own outstanding offers
    offer_timeout: float = 30.0  # an offer must be answered and its link open within this
    replay_capacity: int = REPLAY_CAPACITY


# -- events -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OfferExpired:
    """Our offer to ``target`` was not answered and linked in time: abandon the dial."""

    target: bytes
    nonce: bytes


@dataclass(frozen=True, slots=True)
class AnswerAbandoned:
    """The pending answer to ``sender``'s offer ``nonce`` lost its slot: drop its
    connection.  ``shed`` when a newcomer took the slot, else its deadline passed."""

    sender: bytes
    nonce: bytes
    shed: bool


type NegotiationEvent = OfferExpired | AnswerAbandoned


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Offer:
    """An offer we made: send ``data`` to the target."""

    nonce: bytes
    data: bytes
    deadline: float


@dataclass(frozen=True, slots=True)
class IncomingOffer:
    """A verified offer holding a pending-answer slot.  ``session`` is the compact SDP
    and ``fingerprint`` the DTLS fingerprint the sender signed; the driver must check
    that the SDP it applies carries exactly that fingerprint."""

    sender: Descriptor
    nonce: bytes
    fingerprint: bytes
    session: bytes
    deadline: float


@dataclass(frozen=True, slots=True)
class Answer:
    """A verified answer to our offer ``nonce`` from ``target``."""

    target: Descriptor
    nonce: bytes
    fingerprint: bytes
    session: bytes


# -- the replay window --------------------------------------------------------------------
class ReplayWindow:
    """Nonces of accepted offers, kept while their timestamps are fresh, bounded in count.

    ``floor_ms`` is the newest timestamp of any nonce forgotten so far: a message at or
    below it is refused, so forgetting never re-opens a replay.  Eviction by time raises
    it to at most ``now - MAX_SKEW_MS`` (which the freshness check refuses anyway, and
    which protects against the wall clock stepping back); eviction by count raises it
    above that, shrinking the window.
    """

    def __init__(self, capacity: int = REPLAY_CAPACITY) -> None:
        if capacity < 1:
            raise LocalProtocolError("the replay window needs room for one nonce")
        self._capacity = capacity
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes]] = []  # heap of (timestamp_ms, key)
        self.floor_ms = -1

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, msg: SignalingMessage) -> None:
        """Raise RemoteProtocolError (REPLAY) if ``msg`` was seen or is below the floor."""
        if msg.timestamp_ms <= self.floor_ms:
            raise RemoteProtocolError(
                "signaling message older than the replay window", CloseCode.REPLAY
            )
        if msg.sender + msg.nonce in self._seen:
            raise RemoteProtocolError("replayed signaling message", CloseCode.REPLAY)

    def add(self, msg: SignalingMessage, now_ms: int) -> None:
        """Remember ``msg`` (already checked), forgetting expired nonces, then the oldest
        if the window is full."""
        self.expire(now_ms)
        key = msg.sender + msg.nonce
        self._seen.add(key)
        heapq.heappush(self._by_time, (msg.timestamp_ms, key))
        while len(self._seen) > self._capacity:
            self._forget()

    def expire(self, now_ms: int) -> None:
        """Forget nonces whose timestamps the freshness check refuses at ``now_ms``."""
        while self._by_time and self._by_time[0][0] < now_ms - MAX_SKEW_MS:
            self._forget()

    def _forget(self) -> None:
        ts, key = heapq.heappop(self._by_time)
        self._seen.discard(key)
        self.floor_ms = max(self.floor_ms, ts)


# -- the negotiation state ----------------------------------------------------------------
@dataclass(slots=True)
class _OutgoingOffer:
    target: Descriptor
    deadline: float
    answered: bool = False


@dataclass(slots=True)
class _PendingAnswer:
    sender: bytes
    nonce: bytes
    deadline: float


@dataclass(slots=True)
class _Table:
    """Pending answers, oldest first, with a count per source."""

    entries: dict[bytes, _PendingAnswer] = field(default_factory=dict)  # sender + nonce
    per_source: dict[bytes, int] = field(default_factory=dict)

    def add(self, entry: _PendingAnswer) -> None:
        self.entries[entry.sender + entry.nonce] = entry
        self.per_source[entry.sender] = self.per_source.get(entry.sender, 0) + 1

    def pop(self, key: bytes) -> _PendingAnswer | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            left = self.per_source[entry.sender] - 1
            if left:
                self.per_source[entry.sender] = left
            else:
                del self.per_source[entry.sender]
        return entry


class Negotiation:
    """One node's signaling state: our offers, pending answers, the replay window."""

    def __init__(self, identity: Identity, rng: Rng, limits: Limits | None = None) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.rng = rng
        self.limits = limits or Limits()
        self.replay = ReplayWindow(self.limits.replay_capacity)
        self._offers: dict[bytes, _OutgoingOffer] = {}  # nonce -> offer, oldest first
        self._answers = _Table()
        self._events: list[NegotiationEvent] = []

    # -- dialling ---------------------------------------------------------------------
    def make_offer(
        self,
        target: Descriptor,
        fingerprint: bytes,
        session: bytes,
        now: float,
        *,
        descriptor: bytes = b"",
    ) -> Offer:
        """Sign an offer to ``target`` carrying our compact SDP and DTLS fingerprint, and
        ``descriptor`` (our own, for a target that does not know us yet).  Raises
        LocalProtocolError if too many offers are outstanding."""
        if len(self._offers) >= self.limits.offers:
            raise LocalProtocolError("too many outstanding signaling offers")
        nonce = self.rng.bytes(NONCE_SIZE)
        deadline = now + self.limits.offer_timeout
        data = self._sign(
            Kind.OFFER,
            target=target.node_id,
            nonce=nonce,
            fingerprint=fingerprint,
            session=session,
            now=now,
            descriptor=descriptor,
        )
        self._offers[nonce] = _OutgoingOffer(target, deadline)
        return Offer(nonce, data, deadline)

    def open_answer(self, data: bytes, now: float, *, origin: bytes | None = None) -> Answer:
        """Decode and verify an answer to one of our outstanding offers (``origin``: the
        node a SIGNAL frame claims it came from).  Raises RemoteProtocolError if it is
        malformed, answers no offer of ours, comes from another node than the one we
        offered to, answers an offer already answered, or does not verify."""
        msg = decode_message(data)
        if msg.kind is not Kind.ANSWER:
            raise RemoteProtocolError("expected an ANSWER", CloseCode.PROTOCOL)
        offer = self._offers.get(msg.nonce)
        if offer is None or offer.target.node_id != msg.sender:
            raise RemoteProtocolError("answer to no offer of ours", CloseCode.AUTH)
        if origin is not None and origin != msg.sender:
            raise RemoteProtocolError("answer relayed for another node", CloseCode.AUTH)
        if offer.answered:
            raise RemoteProtocolError("offer already answered", CloseCode.REPLAY)
        self._verify(msg, offer.target, now)
        offer.answered = True
        return Answer(offer.target, msg.nonce, msg.fingerprint, msg.session)

    def offer_done(self, nonce: bytes) -> None:
        """Forget our offer ``nonce``: its link is up, or the dial failed."""
        self._offers.pop(nonce, None)

    # -- answering --------------------------------------------------------------------
    def open_offer(
        self,
        data: bytes,
        now: float,
        *,
        directory: Mapping[bytes, Descriptor],
        origin: bytes | None = None,
    ) -> IncomingOffer:
        """Decode, check and verify an offer; on success it holds a pending-answer slot
        until :meth:`answer_done` or its deadline.  ``directory`` supplies the sender's
        descriptor if we know it; otherwise the offer must carry one.  ``origin`` is the
        node a SIGNAL frame claims it came from.  Raises RemoteProtocolError (malformed,
        forged, stale or replayed) or SignalingBusyError (a cap is reached)."""
        msg = decode_message(data)
        if msg.kind is not Kind.OFFER:
            raise RemoteProtocolError("expected an OFFER", CloseCode.PROTOCOL)
        if origin is not None and origin != msg.sender:
            raise RemoteProtocolError("offer relayed for another node", CloseCode.AUTH)
        now_ms = int(now * 1000)
        check_fresh(msg, now_ms)
        self.replay.expire(now_ms)
        self.replay.check(msg)
        if self._shed_victim(msg.sender) is None and not self._has_room(msg.sender):
            raise SignalingBusyError("too many pending answers; try again later")
        sender = self._verify(msg, directory.get(msg.sender), now)
        victim = self._shed_victim(msg.sender)
        if victim is not None:
            self._answers.pop(victim.sender + victim.nonce)
            self._events.append(AnswerAbandoned(victim.sender, victim.nonce, shed=True))
        self.replay.add(msg, now_ms)
        deadline = now + self.limits.answer_timeout
        self._answers.add(_PendingAnswer(msg.sender, msg.nonce, deadline))
        return IncomingOffer(sender, msg.nonce, msg.fingerprint, msg.session, deadline)

    def make_answer(
        self, offer: IncomingOffer, fingerprint: bytes, session: bytes, now: float
    ) -> bytes:
        """Sign our answer to ``offer``.  Raises LocalProtocolError if its slot is gone
        (its deadline passed or it was shed)."""
        sender = offer.sender.node_id
        if sender + offer.nonce not in self._answers.entries:
            raise LocalProtocolError("the offer's pending-answer slot is gone")
        return self._sign(
            Kind.ANSWER,
            target=sender,
            nonce=offer.nonce,
            fingerprint=fingerprint,
            session=session,
            now=now,
            descriptor=b"",
        )

    def answer_done(self, sender: bytes, nonce: bytes) -> None:
        """Free the pending-answer slot of ``sender``'s offer ``nonce``: its link opened
        or failed."""
        self._answers.pop(sender + nonce)

    def pending_answers(self, sender: bytes | None = None) -> int:
        """Pending answers in total, or to ``sender``'s offers."""
        if sender is None:
            return len(self._answers.entries)
        return self._answers.per_source.get(sender, 0)

    def _has_room(self, sender: bytes) -> bool:
        held = self._answers.per_source.get(sender, 0)
        total = len(self._answers.entries)
        return held < self.limits.answers_per_source and total < self.limits.answers_total

    def _shed_victim(self, sender: bytes) -> _PendingAnswer | None:
        """The entry a newcomer from ``sender`` may displace from a full table: the
        oldest of the busiest source, if that source holds at least two more slots."""
        table = self._answers
        held = table.per_source.get(sender, 0)
        if held >= self.limits.answers_per_source:
            return None
        if len(table.entries) < self.limits.answers_total:
            return None
        busiest, most = max(table.per_source.items(), key=lambda item: item[1])
        if most < held + 2:
            return None
        return next(e for e in table.entries.values() if e.sender == busiest)

    # -- timers and events ------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest deadline of an offer or a pending answer; None if there is none."""
        deadlines = [o.deadline for o in self._offers.values()]
        deadlines += [a.deadline for a in self._answers.entries.values()]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Expire every offer and pending answer whose deadline has passed, with events;
        forget replay nonces that are no longer fresh."""
        for nonce, offer in list(self._offers.items()):
            if offer.deadline <= now:
                del self._offers[nonce]
                self._events.append(OfferExpired(offer.target.node_id, nonce))
        for key, entry in list(self._answers.entries.items()):
            if entry.deadline <= now:
                self._answers.pop(key)
                self._events.append(AnswerAbandoned(entry.sender, entry.nonce, shed=False))
        self.replay.expire(int(now * 1000))

    def next_event(self) -> NegotiationEvent | None:
        """The next event, oldest first; None when there is none."""
        return self._events.pop(0) if self._events else None

    # -- messages ---------------------------------------------------------------------
    def _sign(
        self,
        kind: Kind,
        *,
        target: bytes,
        nonce: bytes,
        fingerprint: bytes,
        session: bytes,
        now: float,
        descriptor: bytes,
    ) -> bytes:
        if len(fingerprint) != FINGERPRINT_SIZE:
            raise LocalProtocolError(f"a DTLS fingerprint is {FINGERPRINT_SIZE} bytes")
        msg = SignalingMessage(
            kind=kind,
            sender=self.node_id,
            target=target,
            timestamp_ms=int(now * 1000),
            nonce=nonce,
            fingerprint=fingerprint,
            session=session,
            descriptor=descriptor,
        )
        return msg.sign(self.identity).encode()

    def _verify(self, msg: SignalingMessage, known: Descriptor | None, now: float) -> Descriptor:
        return verify_message(
            msg, now_ms=int(now * 1000), expected_target=self.node_id, known=known, now=now
        )
