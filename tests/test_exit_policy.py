"""The exit policy (zmesh/exit_policy.py): Tor-style rules, private networks, DNS rebinding."""

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.errors import ZMeshError
from zmesh.exit_policy import (
    PRIVATE_NETWORKS,
    ExitPolicy,
    PolicyError,
    check_target,
    effective_address,
    parse_policy,
)

DEFAULT = ExitPolicy.default()
OPEN = ExitPolicy.allow_private()

PRIVATE = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.20.1.1",
    "172.31.255.255",
    "192.168.0.1",
    "192.168.255.255",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",
    "100.127.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "::",
    "::1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped: judged as IPv4
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::1",  # local-use NAT64 (RFC 8215): inside ::/8
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.15.255.255",
    "172.32.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "192.167.255.255",
    "223.255.255.255",
    "203.0.113.5",  # documentation ranges: not private, as in Tor
    "192.0.2.1",
    "198.51.100.7",
    "2001:db8::1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:800::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize("address", PRIVATE)
def test_default_rejects_private(address: str) -> None:
    ip = ip_address(address)
    for port in (1, 22, 80, 443, 65535):
        assert not DEFAULT.allows(ip, port)
        assert OPEN.allows(ip, port)


@pytest.mark.parametrize("address", PUBLIC)
def test_default_accepts_public(address: str) -> None:
    ip = ip_address(address)
    for port in (1, 22, 80, 443, 65535):
        assert DEFAULT.allows(ip, port)
        assert OPEN.allows(ip, port)


@pytest.mark.parametrize("port", [-1, 0, 65536, 1 << 40])
def test_invalid_ports_are_never_allowed(port: int) -> None:
    assert not OPEN.allows(IPv4Address("8.8.8.8"), port)
    assert not DEFAULT.allows(IPv6Address("2001:db8::1"), port)


def test_summaries() -> None:
    assert DEFAULT.summary() == "reject private:*, accept *:*"
    assert OPEN.summary() == "accept *:*"
    assert ExitPolicy().summary() == "reject *:*"
    assert parse_policy("accept *:443").summary() == "accept *:443, reject *:*"
    assert parse_policy("reject *:*").summary() == "reject *:*"
    assert str(DEFAULT) == "reject private:*\naccept *:*"


def test_empty_policy_rejects_everything() -> None:
    empty = parse_policy("# nothing\n\n   \n")
    assert empty == ExitPolicy()
    assert not empty.allows(IPv4Address("8.8.8.8"), 80)


def test_port_ranges() -> None:
    policy = parse_policy("accept *:80-443\naccept *:8080\naccept 1.2.3.4")
    ip = IPv4Address("8.8.8.8")
    assert [policy.allows(ip, p) for p in (79, 80, 200, 443, 444, 8079, 8080, 8081)] == [
        False,
        True,
        True,
        True,
        False,
        False,
        True,
        False,
    ]
    assert all(policy.allows(IPv4Address("1.2.3.4"), p) for p in (1, 9999, 65535))


def test_first_match_wins() -> None:
    ip = IPv4Address("1.2.3.4")
    assert not parse_policy("reject 1.2.3.4\naccept *:*").allows(ip, 80)
    assert parse_policy("accept *:*\nreject 1.2.3.4").allows(ip, 80)
    # a narrower port rule first, then a broader one
    policy = parse_policy("reject 1.2.3.0/24:25, accept 1.2.3.0/24, reject *:*")
    assert not policy.allows(ip, 25)
    assert policy.allows(ip, 26)
    assert not policy.allows(IPv4Address("1.2.4.4"), 26)
    # private can be overridden for one host by putting it first
    policy = parse_policy("accept 192.168.1.10:8000\nreject private:*\naccept *:*")
    assert policy.allows(IPv4Address("192.168.1.10"), 8000)
    assert not policy.allows(IPv4Address("192.168.1.10"), 8001)
    assert not policy.allows(IPv4Address("192.168.1.11"), 8000)


def test_masks_and_families() -> None:
    policy = parse_policy("accept 10.1.2.3/8:*")  # host bits ignored, as in Tor
    assert str(policy) == "accept 10.0.0.0/8:*"
    assert policy.allows(IPv4Address("10.255.255.255"), 1)
    assert not policy.allows(IPv4Address("11.0.0.0"), 1)
    assert not policy.allows(IPv6Address("::ffff:11.0.0.0"), 1)
    assert policy.allows(IPv6Address("::ffff:10.0.0.0"), 1)
    v6 = parse_policy("accept [2001:db8::]/32:443")
    assert v6.allows(IPv6Address("2001:db8:ffff::1"), 443)
    assert not v6.allows(IPv6Address("2001:db9::1"), 443)
    assert not v6.allows(IPv4Address("32.1.13.184"), 443)  # same leading bits, other family
    everything = parse_policy("accept *")
    assert everything.allows(IPv4Address("8.8.8.8"), 1)
    assert everything.allows(IPv6Address("2001:db8::1"), 65535)
    assert parse_policy("accept 0.0.0.0/0").allows(IPv4Address("1.1.1.1"), 1)
    assert not parse_policy("accept 0.0.0.0/0").allows(IPv6Address("2001:db8::1"), 1)
    assert parse_policy("accept [::]/0").allows(IPv6Address("2001:db8::1"), 1)


def test_no_ipv6_spelling_bypasses_an_ipv4_rule() -> None:
    policy = parse_policy("reject 127.0.0.1\nreject 198.51.100.0/24:25\naccept *:*")
    for spelling in ("127.0.0.1", "::ffff:127.0.0.1", "::ffff:7f00:1", "64:ff9b::127.0.0.1"):
        assert not policy.allows(ip_address(spelling), 80), spelling
    assert not policy.allows(ip_address("::ffff:198.51.100.9"), 25)
    assert policy.allows(ip_address("::ffff:198.51.100.9"), 26)
    assert effective_address(IPv6Address("::ffff:1.2.3.4")) == IPv4Address("1.2.3.4")
    assert effective_address(IPv6Address("64:ff9b::1.2.3.4")) == IPv4Address("1.2.3.4")
    assert effective_address(IPv6Address("fe80::1%eth0")) == IPv6Address("fe80::1")


def test_keyword_and_syntax_variants() -> None:
    policy = parse_policy(
        "  ACCEPT   [2001:DB8::1]:443 # trailing comment\r\n"
        "Reject Private:*, accept *:80,\n"
        "\treject 192.0.2.1/32:22-22\n"
        "accept [::1]/128\n"
    )
    assert str(policy) == (
        "accept [2001:db8::1]:443\n"
        "reject private:*\n"
        "accept *:80\n"
        "reject 192.0.2.1:22\n"
        "accept [::1]:*"
    )
    assert parse_policy(str(policy)) == policy


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("accept", 1, "expected"),
        ("accept *:* extra", 1, "expected"),
        ("permit *:*", 1, "unknown action"),
        ("accept *:*\nallow *:*", 2, "unknown action"),
        ("accept ::1", 1, "brackets"),
        ("accept 2001:db8::1:80", 1, "brackets"),
        ("accept [::1", 1, "missing"),
        ("accept [::1]80", 1, "unexpected"),
        ("accept [1.2.3.4]", 1, "invalid IPv6"),
        ("accept [*]", 1, "invalid IPv6"),
        ("accept [fe80::1%eth0]", 1, "zone"),
        ("accept 1.2.3", 1, "invalid address"),
        ("accept 1.2.3.256", 1, "invalid address"),
        ("accept 01.2.3.4", 1, "invalid address"),
        ("accept example.com:80", 1, "invalid address"),
        ("accept :80", 1, "invalid address"),
        ("accept 1.2.3.4/33", 1, "mask"),
        ("accept [::1]/129", 1, "mask"),
        ("accept 1.2.3.4/", 1, "mask"),
        ("accept 1.2.3.4/-1", 1, "mask"),
        ("accept 1.2.3.4/255.0.0.0", 1, "mask"),
        ("accept */0", 1, "no mask"),
        ("accept private/8:*", 1, "no mask"),
        ("accept *:", 1, "invalid port"),
        ("accept *:http", 1, "invalid port"),
        ("accept *:+80", 1, "invalid port"),
        ("accept *:١٢", 1, "invalid port"),  # non-ASCII digits
        ("accept *:80-", 1, "invalid port"),
        ("accept *:0", 1, "range"),
        ("accept *:65536", 1, "range"),
        ("accept *:443-80", 1, "range"),
        ("accept *:1:2", 1, "brackets"),
        ("accept [::ffff:127.0.0.1]", 1, "IPv4 form"),
        ("accept [::ffff:0:0]/96", 1, "IPv4 form"),
        ("accept [64:ff9b::]/100", 1, "IPv4 form"),
        ("# ok\n\nreject *:25, bogus", 3, "expected"),
    ],
)
def test_parse_errors(text: str, line: int, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_policy(text)
    assert f"line {line}:" in str(info.value)


def test_wider_ipv6_networks_that_contain_mapped_space_are_fine() -> None:
    policy = parse_policy("reject [::]/8\naccept *:*")
    assert not policy.allows(IPv6Address("::1"), 80)
    assert policy.allows(IPv6Address("::ffff:8.8.8.8"), 80)  # judged as 8.8.8.8


# -- check_target: what the exit calls after resolving ---------------------------------


def test_literal_addresses_are_checked_directly() -> None:
    assert check_target(DEFAULT, "8.8.8.8", 53, []) == IPv4Address("8.8.8.8")
    assert check_target(DEFAULT, "2001:db8::1", 443, []) == IPv6Address("2001:db8::1")
    assert check_target(DEFAULT, "[2001:db8::1]", 443, []) == IPv6Address("2001:db8::1")
    for host in ("127.0.0.1", "::1", "[::1]", "::ffff:127.0.0.1", "169.254.169.254", "10.0.0.1"):
        with pytest.raises(PolicyError, match="rejects"):
            check_target(DEFAULT, host, 80, [])
    assert check_target(OPEN, "127.0.0.1", 80, []) == IPv4Address("127.0.0.1")


def test_a_literal_also_checks_anything_resolved() -> None:
    with pytest.raises(PolicyError):
        check_target(DEFAULT, "8.8.8.8", 80, ["127.0.0.1"])
    assert check_target(DEFAULT, "8.8.8.8", 80, ["8.8.8.8"]) == IPv4Address("8.8.8.8")


def test_names_are_checked_by_every_resolved_address() -> None:
    resolved = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    assert check_target(DEFAULT, "example.com", 443, resolved) == IPv4Address("93.184.216.34")
    assert check_target(DEFAULT, "example.com", 443, resolved[::-1]) == IPv6Address(resolved[1])


@pytest.mark.parametrize(
    "resolved",
    [
        ["127.0.0.1"],
        ["8.8.8.8", "127.0.0.1"],  # rebinding: one bad address taints the name
        ["10.0.0.5", "8.8.8.8"],
        ["2001:db8::1", "::1"],
        ["::ffff:192.168.0.1"],
        ["fe80::1%eth0"],
        ["169.254.169.254"],
    ],
)
def test_dns_rebinding_to_private_addresses_is_refused(resolved: list[str]) -> None:
    with pytest.raises(PolicyError, match="rejects"):
        check_target(DEFAULT, "attacker.example", 80, resolved)
    assert check_target(OPEN, "attacker.example", 80, resolved) == ip_address(resolved[0])


def test_numeric_hostnames_are_judged_by_what_they_resolve_to() -> None:
    # getaddrinfo turns these into 127.0.0.1; they are not literals to ip_address()
    for host in ("2130706433", "0x7f000001", "127.1", "localhost"):
        with pytest.raises(PolicyError):
            check_target(DEFAULT, host, 80, ["127.0.0.1"])


def test_check_target_refusals() -> None:
    with pytest.raises(PolicyError, match="did not resolve"):
        check_target(DEFAULT, "nowhere.example", 80, [])
    with pytest.raises(PolicyError, match="resolver returned"):
        check_target(DEFAULT, "example.com", 80, ["not an address"])
    for port in (0, -1, 65536):
        with pytest.raises(PolicyError, match="port"):
            check_target(OPEN, "8.8.8.8", port, [])
    with pytest.raises(PolicyError):
        check_target(parse_policy("accept *:443"), "8.8.8.8", 80, [])
    assert issubclass(PolicyError, ZMeshError)


def test_check_target_keeps_the_zone_index() -> None:
    address = check_target(OPEN, "printer.local", 631, ["fe80::1%eth0"])
    assert str(address) == "fe80::1%eth0"


# -- fuzzing ---------------------------------------------------------------------------

rule_text = st.text(alphabet="acceptrj *private0123456789abcdef.:/[]-%,#\n\t fF", max_size=60)


@settings(max_examples=1000, deadline=None)
@given(text=st.text(max_size=200) | rule_text)
@example(text="accept [::1]/")
@example(text="accept [:]")
def test_fuzz_parse_raises_only_value_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except ValueError as exc:
        assert "line " in str(exc)
        return
    assert parse_policy(str(policy)) == policy


@st.composite
def policies(draw: st.DrawFn) -> ExitPolicy:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["accept", "reject"]))
        kind = draw(st.sampled_from(["*", "private", "v4", "v6"]))
        if kind == "v4":
            addr = f"{draw(st.ip_addresses(v=4))}/{draw(st.integers(0, 32))}"
        elif kind == "v6":
            ip = draw(st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None))
            addr = f"[{ip}]/{draw(st.integers(0, 128))}"
        else:
            addr = kind
        low = draw(st.integers(1, 65535))
        high = draw(st.integers(low, 65535))
        lines.append(f"{action} {addr}:{low}-{high}")
    try:
        return parse_policy("\n".join(lines))
    except ValueError:  # a generated network inside the NAT64 prefix
        return ExitPolicy()


@settings(max_examples=300, deadline=None)
@given(policy=policies(), ip=st.ip_addresses(), port=st.integers(-5, 70000))
def test_fuzz_allows_never_raises(
    policy: ExitPolicy, ip: IPv4Address | IPv6Address, port: int
) -> None:
    result = policy.allows(ip, port)
    assert isinstance(result, bool)
    assert parse_policy(str(policy)) == policy
    if isinstance(ip, IPv4Address):  # every spelling of an IPv4 address gets the same answer
        mapped = IPv6Address(f"::ffff:{ip}")
        nat64 = IPv6Address(int(IPv6Address("64:ff9b::")) | int(ip))
        assert policy.allows(mapped, port) == result
        assert policy.allows(nat64, port) == result
    for builtin in (DEFAULT, OPEN):
        builtin.allows(ip, port)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzz_private_networks_are_rejected(data: st.DataObject) -> None:
    network = data.draw(st.sampled_from(PRIVATE_NETWORKS))
    offset = data.draw(st.integers(0, network.num_addresses - 1))
    ip = network[offset]
    port = data.draw(st.integers(1, 65535))
    assert not DEFAULT.allows(ip, port)
    assert OPEN.allows(ip, port)
    with pytest.raises(PolicyError):
        check_target(DEFAULT, "rebind.example", port, ["8.8.8.8", str(ip)])
