"""Loopback capture for the benchmarks: UDP datagrams on ``lo`` and the processes behind them.

A raw packet socket (AF_PACKET, as root; no tcpdump needed) bound to ``lo`` records every
UDP datagram: its time, payload length, ports and the first bytes of its payload (enough
for a DTLS record header, an RTP header or a STUN header).  On ``lo`` each packet shows
twice (outgoing and incoming); the incoming copy is kept.  ``udp_ports`` finds the UDP
ports a process tree holds (from ``/proc``), so a capture can keep only the traffic of the
processes under test.  Used by ``bench/shaping.py`` and ``bench/classify.py``.
"""

import contextlib
import os
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4  # on lo each packet shows twice: keep the incoming copy
HEAD = 16  # payload bytes kept per datagram: DTLS 13, RTP 12, STUN 20 (its first 16 do)


@dataclass
class Capture:
    """UDP datagrams on ``lo``.

    ``packets`` holds (time, payload length, source port, destination port, the first
    ``HEAD`` payload bytes); ``ports`` is the set of UDP ports whose traffic
    :meth:`window` and :meth:`flows` keep (the caller fills it, e.g. from ``udp_ports``).
    With ``only_ports`` the others are not even recorded (a datagram of a port not yet
    known is lost).  At most ``limit`` datagrams are kept; ``overflow`` tells if more came.
    """

    packets: list[tuple[float, int, int, int, bytes]] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)
    only_ports: bool = False
    limit: int = 8_000_000  # about 1.5 GB of tuples
    overflow: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)  # root: no drops
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        self.ready.set()
        with sock:
            while not self.stop.is_set():
                try:
                    frame, addr = sock.recvfrom(14 + 40 + 8 + HEAD)  # the headers are enough
                except TimeoutError:
                    continue
                if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 8:
                    continue
                if frame[12:14] == b"\x08\x00" and frame[14 + 9] == 17:  # IPv4, UDP
                    udp = 14 + (frame[14] & 0x0F) * 4
                elif frame[12:14] == b"\x86\xdd" and len(frame) >= 62 and frame[20] == 17:  # IPv6
                    udp = 14 + 40
                else:
                    continue
                if len(frame) < udp + 8:
                    continue
                sport, dport, length = struct.unpack_from("!HHH", frame, udp)
                if self.only_ports and sport not in self.ports and dport not in self.ports:
                    continue
                if len(self.packets) >= self.limit:
                    self.overflow = True
                    continue
                head = bytes(frame[udp + 8 : udp + 8 + HEAD])
                self.packets.append((time.monotonic(), length - 8, sport, dport, head))

    def start(self) -> threading.Thread:
        """Run the capture in a daemon thread; returns once the socket is bound."""
        thread = threading.Thread(target=self.run, name="capture", daemon=True)
        thread.start()
        if not self.ready.wait(10.0):
            raise OSError("the packet socket on lo did not open")
        return thread

    def window(self, start: float, end: float) -> list[int]:
        """Payload sizes of the watched ports' datagrams between two times."""
        return [
            p[1]
            for p in self.packets
            if start <= p[0] < end and (p[2] in self.ports or p[3] in self.ports)
        ]

    def flows(
        self, start: float, end: float
    ) -> dict[tuple[int, int], list[tuple[float, int, int, bytes]]]:
        """The watched ports' datagrams between two times, by flow (the two ports,
        smaller first): (time, payload length, source port, head) each."""
        out: dict[tuple[int, int], list[tuple[float, int, int, bytes]]] = {}
        for t, n, s, d, head in self.packets:
            if start <= t < end and (s in self.ports or d in self.ports):
                out.setdefault((min(s, d), max(s, d)), []).append((t, n, s, head))
        return out


def watch_ports(capture: Capture, root: int, period: float = 1.0) -> threading.Thread:
    """Keep adding the UDP ports of the process tree under ``root`` to ``capture.ports``
    (every ``period`` seconds, until the capture stops)."""

    def refresh() -> None:
        while not capture.stop.is_set():
            capture.ports |= udp_ports(root)
            capture.stop.wait(period)

    thread = threading.Thread(target=refresh, name="ports", daemon=True)
    thread.start()
    return thread


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (``zmesh up`` starts each child in its own
    session, so the tree, not a process group)."""
    parent: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            parent[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sorted(tree)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (all threads) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def udp_ports(root: int) -> set[int]:
    """The local UDP ports of the sockets the process tree under ``root`` holds."""
    inodes: set[str] = set()
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def ks(a: list[int], b: list[int]) -> float | None:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two
    samples' size distributions (0: the same, 1: disjoint)."""
    if not a or not b:
        return None
    ca, cb = Counter(a), Counter(b)
    gap = fa = fb = 0.0
    for size in sorted(ca.keys() | cb.keys()):
        fa += ca[size] / len(a)
        fb += cb[size] / len(b)
        gap = max(gap, abs(fa - fb))
    return gap
