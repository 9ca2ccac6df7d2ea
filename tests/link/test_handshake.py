"""The link handshake: mutual authentication bound to the transport."""

import pytest

from zmesh.errors import CloseCode, LocalProtocolError, RemoteProtocolError
from zmesh.identity import Identity
from zmesh.link.frames import Hello1, Hello2, Hello3
from zmesh.link.handshake import LinkHandshake
from zmesh.rng import DeterministicRng


def identities(n: int) -> list[Identity]:
    rng = DeterministicRng(42, b"ids")
    return [Identity.generate(rng) for _ in range(n)]


def pair(
    initiator: Identity, responder: Identity, expected: Identity, binding_r: bytes = b"b"
) -> tuple[LinkHandshake, LinkHandshake]:
    i = LinkHandshake(
        initiator,
        initiator=True,
        binding=b"b",
        rng=DeterministicRng(1),
        expected_peer_kem_pk=expected.kem.public,
        expected_peer_id=expected.node_id,
    )
    r = LinkHandshake(responder, initiator=False, binding=binding_r, rng=DeterministicRng(2))
    return i, r


def test_both_sides_learn_each_others_identity() -> None:
    a, b = identities(2)
    i, r = pair(a, b, b)
    hello2 = r.receive(i.start())
    assert isinstance(hello2, Hello2)
    hello3 = i.receive(hello2)
    assert isinstance(hello3, Hello3)
    assert r.receive(hello3) is None
    assert i.done and r.done
    assert i.peer_id == b.node_id and r.peer_id == a.node_id


def test_impostor_responder_is_detected_by_the_initiator() -> None:
    a, b, c = identities(3)
    i, r = pair(a, c, expected=b)  # a dials b's key, c answers
    hello2 = r.receive(i.start())
    assert hello2 is not None
    with pytest.raises(RemoteProtocolError) as err:
        i.receive(hello2)
    assert err.value.code == CloseCode.AUTH


def test_other_channel_binding_fails() -> None:
    a, b = identities(2)
    i, r = pair(a, b, b, binding_r=b"another connection")
    hello2 = r.receive(i.start())
    assert hello2 is not None
    with pytest.raises(RemoteProtocolError):
        i.receive(hello2)


def test_forged_hello3_is_rejected() -> None:
    a, b = identities(2)
    i, r = pair(a, b, b)
    r.receive(i.start())
    with pytest.raises(RemoteProtocolError):
        r.receive(Hello3(bytes(32)))


def test_claimed_identity_without_its_key_fails() -> None:
    """An attacker sends a's public keys (claiming a's id) but cannot decapsulate."""
    a, b, mallory = identities(3)
    i, r = pair(mallory, b, b)
    hello1 = i.start()
    forged = Hello1(a.kem.public + a.signing.public, hello1.ciphertext)
    hello2 = r.receive(forged)
    assert r.peer_id == a.node_id
    assert hello2 is not None
    # mallory cannot compute k, since ct_I is encapsulated to a's key
    with pytest.raises(RemoteProtocolError):
        i.receive(hello2)
    with pytest.raises(RemoteProtocolError):
        r.receive(Hello3(bytes(32)))


@pytest.mark.parametrize("frame", [Hello2(bytes(1120), bytes(32)), Hello3(bytes(32))])
def test_out_of_order_frames_are_rejected(frame: Hello2 | Hello3) -> None:
    a, b = identities(2)
    _, r = pair(a, b, b)
    with pytest.raises(RemoteProtocolError) as err:
        r.receive(frame)
    assert err.value.code == CloseCode.HANDSHAKE


def test_local_misuse() -> None:
    a, b = identities(2)
    with pytest.raises(LocalProtocolError):
        LinkHandshake(a, initiator=True, binding=b"", rng=DeterministicRng(1))
    _, r = pair(a, b, b)
    with pytest.raises(LocalProtocolError):
        r.start()
