"""Benchmark: what a hostile peer's input costs a node, against what it cost before.

Each row drives one attack from issue 7 into a real :class:`~zmesh.node.Node` through a
scripted peer (``tests/peer.py``), timed per input and interleaved round by round:

* ``garbage CREATE, decapsulated``: the baseline.  A CREATE within the peer's budget costs
  a decapsulation and an unwrap, which every garbage CREATE cost before the budget;
* ``garbage CREATE, over budget``: refused with DESTROY(RESOURCE) before any public-key work;
* ``PADDING of that size``: the floor, what any frame of that size costs to carry and
  decode (most of it the scripted peer's own work);
* ``bad descriptor, verified``: the baseline.  A descriptor with a bad signature within the
  peer's budget costs a signature check, which every one cost before;
* ``bad descriptor, over budget``: dropped after decoding, unverified;
* ``known descriptor again``: de-duplicated before verification.

It also reports the memory a peer that never returns credit makes the node hold, against
the old behaviour (the whole directory queued behind the credit, computed).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from _harness import Subject, measure, note, paired_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from peer import RawPeer, quick_identity

from zmesh.identity import Flags, Identity
from zmesh.link import frames as lf
from zmesh.node import Node
from zmesh.rng import DeterministicRng

NOW = 1000.0
_PEER = 0x80000000


def _node(seed: int) -> Node:
    rng = DeterministicRng(seed)
    return Node(Identity.generate(rng), rng, NOW)


def create_subjects() -> list[Subject]:
    node = _node(1)
    epoch = node.descriptor(NOW).onion_epoch
    junk = DeterministicRng(2).bytes(node.geometry.header_size)
    clock = {"within": NOW, "over": NOW}
    within = RawPeer(node, 1, NOW, seed=3)
    over = RawPeer(node, 2, NOW, seed=4)
    ids = {1: 0, 2: 0}

    def feed(peer: RawPeer, key: str, step: float) -> None:
        ids[peer.link_id] += 1
        clock[key] += step
        peer.send(lf.Create(_PEER | ids[peer.link_id], epoch, junk), clock[key])
        peer.read_all(clock[key])

    def decapsulated(n: int) -> None:
        for _ in range(n):
            feed(within, "within", 1.0)  # a second apart: always within budget

    def refused(n: int) -> None:
        for _ in range(n):
            feed(over, "over", 0.0)  # all at one instant: past the burst, refused

    floor_peer = RawPeer(node, 3, NOW, seed=5)
    filler = lf.Padding(len(junk) + 8)

    def floor(n: int) -> None:
        for _ in range(n):
            floor_peer.send(filler, NOW)
            floor_peer.read_all(NOW)

    refused(300)  # spend the burst
    return [
        Subject("garbage CREATE, decapsulated", decapsulated),
        Subject("garbage CREATE, over budget", refused),
        Subject("PADDING of that size (the floor)", floor),
    ]


def descriptor_subjects() -> list[Subject]:
    node = _node(5)
    within = RawPeer(node, 1, NOW, seed=6)
    over = RawPeer(node, 2, NOW, seed=7)
    known = RawPeer(node, 3, NOW, seed=8)
    template = within.descriptor(NOW)
    rng = DeterministicRng(9)
    clock = {"within": NOW}
    again = lf.DescriptorFrame(known.descriptor(NOW).encode())
    known.send(again, NOW)

    def forged() -> lf.DescriptorFrame:
        fake = dataclasses.replace(template, identity_kem_pk=rng.bytes(1216))
        return lf.DescriptorFrame(fake.encode())

    pool = [forged() for _ in range(4000)]
    index = {"i": 0}

    def nxt() -> lf.DescriptorFrame:
        index["i"] = (index["i"] + 1) % len(pool)
        return pool[index["i"]]

    def verified(n: int) -> None:
        for _ in range(n):
            clock["within"] += 1.0
            within.send(nxt(), clock["within"])
            within.read_all(clock["within"])

    def dropped(n: int) -> None:
        for _ in range(n):
            over.send(nxt(), NOW)
            over.read_all(NOW)

    def deduplicated(n: int) -> None:
        for _ in range(n):
            known.send(again, NOW)
            known.read_all(NOW)

    dropped(400)  # spend the verification budget
    return [
        Subject("bad descriptor, verified", verified),
        Subject("bad descriptor, over budget", dropped),
        Subject("known descriptor again", deduplicated),
    ]


def starved_link_memory(entries: int) -> tuple[int, int]:
    """(bytes held for a peer that never returns credit, the old figure: the directory)."""
    node = _node(10)
    old = 0
    for i in range(entries):
        desc = quick_identity(i, b"dir").make_descriptor(
            flags=Flags.RELAY,
            onion_epoch=0,
            onion_pk=bytes(1216),
            published=int(NOW),
            lifetime=3600,
        )
        node.learn_descriptor(desc, NOW)
        old += len(lf.encode_frame(lf.DescriptorFrame(desc.encode())))
    peer = RawPeer(node, 1, NOW)
    most, t = 0, NOW
    while not peer.closed() and t < NOW + 600:
        t += 1.0
        peer.send(lf.Padding(0), t)
        node.handle_timer(t)
        peer.read(t)  # reads, never returns credit
        conn = node._links.get(1)
        held = 0 if conn is None else sum(len(entry[0]) for entry in conn._backlog)
        most = max(most, held)
    return most, old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--quick", action="store_true", help="a few rounds (smoke test)")
    parser.add_argument(
        "--entries", type=int, default=2000, help="directory size for the memory row"
    )
    args = parser.parse_args(argv)
    rounds, batch = (3, 2) if args.quick else (args.rounds, 10)
    entries = 100 if args.quick else args.entries
    rows = []
    for group in (create_subjects(), descriptor_subjects()):
        note(f"timing {group[0].name} and {len(group) - 1} more, {rounds} rounds…")
        measure(group, rounds, batch=batch, warmup=1)
        rows += [(s.name, s.median_us, paired_ratio(s, group[0])) for s in group]
    print(f"\nCPU per hostile input ({rounds} rounds x {batch}, medians)")
    print(f"{'input':34} {'median µs':>10} {'ratio':>8}")
    print("-" * 54)
    for name, us, ratio in rows:
        print(f"{name:34} {us:10.1f} {ratio:7.3f}x")
    note(f"starving a link with a directory of {entries}…")
    held, old = starved_link_memory(entries)
    print(f"\nA peer that never returns credit, directory of {entries}:")
    print(f"  held before: {old / 2**20:.2f} MiB (the directory, queued behind the credit)")
    print(
        f"  held now:    {held / 2**10:.1f} KiB at most, then the link closes; "
        f"ratio {held / old:.4f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
