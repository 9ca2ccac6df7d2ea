"""Dialer: which relays to link to, and which side dials."""

from peer import quick_identity

from zmesh.dialer import DIAL_TIMEOUT, FAILURE_LIFETIME, MAX_FAILURES, Dialer, DialWanted
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


def test_a_node_whose_dial_or_link_failed_is_not_dialled_for_a_while() -> None:
    d = max((_desc(i) for i in range(3)), key=lambda d: d.node_id)
    dialer = Dialer(b"\x00" * 32, max_links=8)
    assert dialer.want(d, 0.0)
    dialer.failed(d.node_id, 1.0)  # the dial failed (or the link to it broke)
    assert not dialer.want(d, 2.0)  # a CREATE for it is refused at once
    dialer.consider(d, linked=False, links=0, now=2.0)
    assert _wanted(dialer) == [d.node_id]  # only the first
    assert dialer.want(d, 1.0 + FAILURE_LIFETIME)  # tried again after the lifetime
    dialer.failed(d.node_id, 70.0)
    dialer.done(d.node_id)  # it linked to us: alive after all
    assert dialer.want(d, 71.0)


def test_the_failure_table_is_bounded_oldest_forgotten_first() -> None:
    dialer = Dialer(b"\x00" * 32, max_links=8)
    first = _desc(1)
    dialer.failed(first.node_id, 0.0)
    for i in range(MAX_FAILURES):  # an attacker's CREATEs naming many dead ids
        dialer.failed(i.to_bytes(32, "big"), 1.0)
    assert len(dialer._failed) == MAX_FAILURES
    assert dialer.want(first, 2.0)  # evicted: dialled again


def test_a_node_the_driver_dials_itself_is_not_dialled_again() -> None:
    d = max((_desc(i) for i in range(3)), key=lambda d: d.node_id)
    dialer = Dialer(b"\x00" * 32, max_links=8)
    dialer.dialing(d.node_id, 0.0)  # a bootstrap dials it
    dialer.consider(d, linked=False, links=0, now=0.0)  # then learns its descriptor
    assert dialer.want(d, 0.0)  # a circuit that needs it waits for that dial
    assert _wanted(dialer) == []
    dialer.done(d.node_id)  # its link came up (and later went)
    dialer.consider(d, linked=False, links=0, now=1.0)
    assert _wanted(dialer) == [d.node_id]
