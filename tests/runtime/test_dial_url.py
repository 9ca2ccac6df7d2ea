"""Which signaling URL a native node posts a DHT dial's offer to (:func:`signaling_url`).

A descriptor is anyone's to sign, so its addresses must not aim our requests at this
machine or its network unless the mesh is there too (loopback, a LAN)."""

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from zmesh.runtime.aio import signaling_url


@dataclass(frozen=True)
class _Desc:  # what signaling_url reads of a descriptor
    addresses: tuple[str, ...]


def _desc(*addresses: str) -> _Desc:
    return _Desc(addresses)


def test_a_mesh_on_loopback_posts_to_loopback() -> None:
    desc = _desc("http://127.0.0.1:4000")
    assert signaling_url(desc, loopback=True) == "http://127.0.0.1:4000"
    assert signaling_url(_desc("http://[::1]:9/zmesh"), loopback=True) == "http://[::1]:9"


def test_a_public_node_posts_only_to_global_addresses_and_names() -> None:
    assert signaling_url(_desc("http://8.8.8.8:80"), loopback=False) == "http://8.8.8.8:80"
    assert signaling_url(_desc("https://relay.example.org"), False) == "https://relay.example.org"
    for address in (
        "http://127.0.0.1:4000",
        "http://[::1]:4000",
        "http://0.0.0.0:1",
        "http://169.254.169.254/latest",  # cloud metadata
        "http://224.0.0.1:1",
        "http://[::ffff:127.0.0.1]:1",  # IPv4-mapped loopback
        "http://10.0.0.5:8000",  # private, and we are not on a LAN
    ):
        assert signaling_url(_desc(address), loopback=False) is None, address


def test_a_node_on_a_lan_posts_to_private_addresses() -> None:
    own = ("http://192.168.1.2:9000",)
    desc = _desc("http://192.168.1.7:9000")
    assert signaling_url(desc, False, own) == "http://192.168.1.7:9000"
    assert signaling_url(_desc("http://127.0.0.1:1"), False, own) is None


def test_the_first_usable_address_wins_and_others_are_skipped() -> None:
    desc = _desc("ws://8.8.4.4:1", "http://user:pw@8.8.8.8:1", "http://1.1.1.1:80", "x")
    assert signaling_url(desc, loopback=False) == "http://1.1.1.1:80"
    assert signaling_url(_desc(), loopback=True) is None
    assert signaling_url(_desc("http://h:99999"), loopback=True) is None  # bad port


@given(st.lists(st.text(max_size=60), max_size=3), st.booleans())
def test_any_address_gives_none_or_an_http_base_url(addresses: list[str], loopback: bool) -> None:
    desc = _desc(*addresses)
    url = signaling_url(desc, loopback)
    assert url is None or url.startswith(("http://", "https://"))
    if url is not None and not loopback:
        assert "127.0.0.1" not in url and "[::1]" not in url
