"""A sans-I/O exit policy: the destinations an exit opens streams to.

The rule language is a subset of Tor's ``ExitPolicy`` (tor(1), "ExitPolicy")::

    # comments run to the end of the line; rules are separated by newlines or commas
    reject private:*
    reject 192.0.2.0/24:25
    accept [2001:db8::]/32:80-443
    accept *:*

Each rule is ``accept|reject ADDR[/MASK][:PORT[-PORT]]``.  ``ADDR`` is ``*`` (every IPv4
and IPv6 address), ``private`` (:data:`PRIVATE_NETWORKS`), an IPv4 address, or an IPv6
address in brackets.  ``MASK`` is a prefix length; host bits are ignored, as in Tor.  The
port is ``*``, one port or an inclusive range; leaving it out means ``*``.  Keywords are
case-insensitive.  The first rule that matches decides; an address no rule matches is
rejected.

Addresses that embed an IPv4 address a host would reach directly are judged as that IPv4
address, so that no IPv6 spelling bypasses an IPv4 rule: IPv4-mapped addresses
(``::ffff:127.0.0.1``, RFC 4291 §2.5.5.2) and the NAT64 well-known prefix
(``64:ff9b::/96``, RFC 6052).  A rule naming a network inside either prefix would never
match and is a parse error.

The exit resolves names itself and then calls :func:`check_target` with every address
it got: a name is refused if *any* of them is refused, which defeats DNS rebinding to
private addresses.  It must then connect to the address returned, not resolve again.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from .errors import ZMeshError

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

MIN_PORT = 1
MAX_PORT = 65535

PRIVATE_NETWORKS: tuple[IPNetwork, ...] = (
    IPv4Network("0.0.0.0/8"),  # "this network", including the unspecified 0.0.0.0
    IPv4Network("10.0.0.0/8"),  # RFC 1918
    IPv4Network("100.64.0.0/10"),  # shared address space, carrier-grade NAT (RFC 6598)
    IPv4Network("127.0.0.0/8"),  # loopback
    IPv4Network("169.254.0.0/16"),  # link-local (RFC 3927)
    IPv4Network("172.16.0.0/12"),  # RFC 1918
    IPv4Network("192.168.0.0/16"),  # RFC 1918
    IPv4Network("224.0.0.0/4"),  # multicast
    IPv6Network("::/8"),  # reserved: the unspecified ::, loopback ::1, IPv4-compatible
    IPv6Network("fc00::/7"),  # unique local (RFC 4193)
    IPv6Network("fe80::/10"),  # link-local
    IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879) but still routed locally
    IPv6Network("ff00::/8"),  # multicast
)
"""What ``private`` means: Tor's private networks plus CGNAT and IPv4 multicast.

Like Tor's, the list leaves out the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24, 2001:db8::/32): they are not routed, so reaching them harms no one."""

_EVERYWHERE: tuple[IPNetwork, ...] = (IPv4Network("0.0.0.0/0"), IPv6Network("::/0"))
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_DIGITS = re.compile(r"[0-9]{1,5}")
_SYNTAX = "accept|reject ADDR[/MASK][:PORT[-PORT]]"


class PolicyError(ZMeshError):
    """The exit policy refuses a destination.

    Not a protocol error: the exit answers the stream with a refusal (SOCKS5's
    NOT_ALLOWED at the client) and keeps the circuit.
    """


@dataclass(frozen=True, slots=True)
class PolicyRule:
    accept: bool
    address: str
    """``*``, ``private``, or the network as written back by ``str()``."""
    networks: tuple[IPNetwork, ...]
    min_port: int = MIN_PORT
    max_port: int = MAX_PORT

    def matches(self, ip: IPAddress, port: int) -> bool:
        """Whether the rule covers ``ip`` (already unmapped) and ``port``."""
        if not self.min_port <= port <= self.max_port:
            return False
        return any(net.version == ip.version and ip in net for net in self.networks)

    def __str__(self) -> str:
        if (self.min_port, self.max_port) == (MIN_PORT, MAX_PORT):
            ports = "*"
        elif self.min_port == self.max_port:
            ports = str(self.min_port)
        else:
            ports = f"{self.min_port}-{self.max_port}"
        return f"{'accept' if self.accept else 'reject'} {self.address}:{ports}"


@dataclass(frozen=True, slots=True)
class ExitPolicy:
    """An ordered list of rules; the first match wins, and no match means reject."""

    rules: tuple[PolicyRule, ...] = ()

    @classmethod
    def default(cls) -> "ExitPolicy":
        """``reject private:*``, then ``accept *:*``: the public Internet only."""
        return parse_policy("reject private:*\naccept *:*")

    @classmethod
    def allow_private(cls) -> "ExitPolicy":
        """``accept *:*``, private networks included: for a user's own local mesh."""
        return parse_policy("accept *:*")

    def allows(self, ip: IPAddress, port: int) -> bool:
        """Whether the policy accepts a connection to ``ip`` on ``port``.

        An IPv6 address with an embedded IPv4 address (see the module docstring) is
        judged as that IPv4 address.  A port outside 1..65535 is never allowed.
        """
        if not MIN_PORT <= port <= MAX_PORT:
            return False
        target = effective_address(ip)
        for rule in self.rules:
            if rule.matches(target, port):
                return rule.accept
        return False

    def summary(self) -> str:
        """One line for logs and descriptors, ending with the implicit ``reject *:*``."""
        parts = [str(rule) for rule in self.rules]
        last = self.rules[-1] if self.rules else None
        if last is None or str(last).split(" ", 1)[1] != "*:*":
            parts.append("reject *:*")
        return ", ".join(parts)

    def __str__(self) -> str:
        """The rules one per line, in a form :func:`parse_policy` reads back."""
        return "\n".join(str(rule) for rule in self.rules)


def effective_address(ip: IPAddress) -> IPAddress:
    """The address a policy judges: embedded IPv4 addresses unwrapped, zone index dropped."""
    if isinstance(ip, IPv6Address):
        if ip.scope_id is not None:
            ip = IPv6Address(ip.packed)
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
        if ip in _NAT64:
            return IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip


def parse_policy(text: str) -> ExitPolicy:
    """Parse the rule language of the module docstring.

    Raises ValueError naming the line (counted from 1) of the first bad rule.
    """
    rules: list[PolicyRule] = []
    for number, line in enumerate(text.split("\n"), 1):
        for item in line.split("#", 1)[0].split(","):
            if not item.strip():
                continue
            try:
                rules.append(_parse_rule(item))
            except ValueError as exc:
                raise ValueError(f"exit policy line {number}: {exc}") from None
    return ExitPolicy(tuple(rules))


def check_target(policy: ExitPolicy, host: str, port: int, resolved: Sequence[str]) -> IPAddress:
    """The address the exit may connect to for ``host:port``, or raise PolicyError.

    ``host`` is what the client asked for: an IP address (IPv6 with or without brackets)
    or a name.  ``resolved`` holds every address the exit's resolver returned for a name
    (getaddrinfo's strings; zone indices allowed); it may be empty for an IP address.
    Every one of them must be allowed, so that a name that resolves to a private address,
    by accident or by DNS rebinding, is refused even when it also has public addresses.
    The exit must connect to the address returned and not resolve ``host`` again.
    """
    if not MIN_PORT <= port <= MAX_PORT:
        raise PolicyError(f"port {port} is not a valid destination port")
    literal = _parse_address(host.removeprefix("[").removesuffix("]"))
    candidates = [] if literal is None else [literal]
    for text in resolved:
        address = _parse_address(text)
        if address is None:
            raise PolicyError(f"the resolver returned {text[:64]!r} for {host[:256]!r}")
        candidates.append(address)
    if not candidates:
        raise PolicyError(f"{host[:256]!r} did not resolve")
    for address in candidates:
        if not policy.allows(address, port):
            shown = host[:256] if literal is not None else f"{host[:256]} ({address})"
            raise PolicyError(f"the exit policy rejects {shown} port {port}")
    return candidates[0]


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _parse_rule(item: str) -> PolicyRule:
    words = item.split()
    if len(words) != 2:
        raise ValueError(f"expected {_SYNTAX!r}, got {item.strip()!r}")
    action = words[0].lower()
    if action not in ("accept", "reject"):
        raise ValueError(f"unknown action {words[0]!r}: expected accept or reject")
    address, networks, min_port, max_port = _parse_target(words[1])
    return PolicyRule(action == "accept", address, networks, min_port, max_port)


def _parse_target(spec: str) -> tuple[str, tuple[IPNetwork, ...], int, int]:
    """``ADDR[/MASK][:PORT[-PORT]]``, IPv6 addresses in brackets."""
    bracketed = spec.startswith("[")
    if bracketed:
        close = spec.find("]")
        if close < 0:
            raise ValueError(f"missing ']' in {spec!r}")
        addr_text, rest = spec[1:close], spec[close + 1 :]
        if rest and rest[0] not in "/:":
            raise ValueError(f"unexpected {rest!r} after ']' in {spec!r}")
    else:
        if spec.count(":") > 1:
            raise ValueError(f"write IPv6 addresses in brackets, as in '[::1]:80', not {spec!r}")
        addr_text, rest = spec, ""
        for i, char in enumerate(spec):
            if char in "/:":
                addr_text, rest = spec[:i], spec[i:]
                break
    mask_text: str | None = None
    port_text: str | None = None
    if rest.startswith("/"):
        mask_text, colon, ports = rest[1:].partition(":")
        port_text = ports if colon else None
    elif rest.startswith(":"):
        port_text = rest[1:]
    address, networks = _parse_networks(addr_text, mask_text, bracketed)
    min_port, max_port = _parse_ports(port_text)
    return address, networks, min_port, max_port


def _parse_networks(
    text: str, mask_text: str | None, bracketed: bool
) -> tuple[str, tuple[IPNetwork, ...]]:
    keyword = text.lower()
    if not bracketed and keyword in ("*", "private"):
        if mask_text is not None:
            raise ValueError(f"{text!r} takes no mask")
        return keyword, _EVERYWHERE if keyword == "*" else PRIVATE_NETWORKS
    if "%" in text:
        raise ValueError(f"zone indices are not allowed: {text!r}")
    try:
        address: IPAddress = IPv6Address(text) if bracketed else IPv4Address(text)
    except ValueError:
        kind = "IPv6 address" if bracketed else "address: expected *, private, IPv4 or [IPv6]"
        raise ValueError(f"invalid {kind} {text!r}") from None
    prefix: int = address.max_prefixlen
    if mask_text is not None:
        if not _DIGITS.fullmatch(mask_text) or int(mask_text) > address.max_prefixlen:
            raise ValueError(f"invalid mask {mask_text!r} for {text!r}")
        prefix = int(mask_text)
    network: IPNetwork
    if isinstance(address, IPv4Address):
        network = IPv4Network((address, prefix), strict=False)
        shown = str(network.network_address) if prefix == 32 else str(network)
    else:
        network = IPv6Network((address, prefix), strict=False)
        if network.subnet_of(_IPV4_MAPPED) or network.subnet_of(_NAT64):
            raise ValueError(
                f"[{text}] embeds an IPv4 address and is judged as one: write the IPv4 form"
            )
        shown = f"[{network.network_address}]" + ("" if prefix == 128 else f"/{prefix}")
    return shown, (network,)


def _parse_ports(text: str | None) -> tuple[int, int]:
    if text is None or text == "*":
        return MIN_PORT, MAX_PORT
    low_text, dash, high_text = text.partition("-")
    if not dash:
        high_text = low_text
    if not (_DIGITS.fullmatch(low_text) and _DIGITS.fullmatch(high_text)):
        raise ValueError(f"invalid port {text!r}: expected *, PORT or PORT-PORT")
    low, high = int(low_text), int(high_text)
    if not (MIN_PORT <= low <= high <= MAX_PORT):
        raise ValueError(f"invalid port range {text!r}: ports run from 1 to 65535, low to high")
    return low, high
