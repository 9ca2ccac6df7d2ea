"""Dialer: which relays to link to, and which side dials."""

from peer import quick_identity

from zmesh.dialer import DIAL_TIMEOUT, Dialer, DialWanted
from zmesh.identity import Descriptor, Flags


def _desc(i: int, flags: Flags = Flags.RELAY) -> Descriptor:
    return quick_identity(i, b"dial").make_descriptor(
        flags=flags, onion_epoch=0, onion_pk=bytes(1216), published=0, lifetime=3600
    )


def _wanted(dialer: Dialer) -> list[bytes]:
    out = []
    while (e := dialer.next_event()) is not None:
        assert isinstance(e, DialWanted)
        out.append(e.descriptor.node_id)
    return out


def test_the_lower_id_dials_relays_only_below_max_links() -> None:
    descs = sorted((_desc(i) for i in range(6)), key=lambda d: d.node_id)
    me = descs[2].node_id  # two ids below ours, three above
    dialer = Dialer(me, max_links=2)
    for d in descs:
        dialer.consider(d, linked=False, links=0, now=0.0)
    assert _wanted(dialer) == [descs[3].node_id, descs[4].node_id]  # capped at 2
    dialer.consider(_desc(9, Flags.NONE), linked=False, links=0, now=0.0)
    dialer.consider(descs[5], linked=True, links=0, now=0.0)
    assert _wanted(dialer) == []


def test_dials_are_forgotten_on_failure_or_after_the_timeout() -> None:
    d = max((_desc(i) for i in range(3)), key=lambda d: d.node_id)
    dialer = Dialer(b"\x00" * 32, max_links=8)
    dialer.consider(d, linked=False, links=0, now=0.0)
    dialer.consider(d, linked=False, links=0, now=0.0)  # already under way
    assert _wanted(dialer) == [d.node_id]
    assert dialer.get_timer() == DIAL_TIMEOUT
    dialer.handle_timer(DIAL_TIMEOUT)
    assert dialer.get_timer() == float("inf")
    dialer.consider(d, linked=False, links=0, now=50.0)
    dialer.done(d.node_id)
    dialer.consider(d, linked=False, links=0, now=51.0)
    assert _wanted(dialer) == [d.node_id, d.node_id]


def test_max_links_zero_never_dials() -> None:
    dialer = Dialer(b"\x00" * 32, max_links=0)
    dialer.consider(_desc(1), linked=False, links=0, now=0.0)
    assert _wanted(dialer) == []
