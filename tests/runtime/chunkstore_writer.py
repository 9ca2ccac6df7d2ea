"""A writer for tests/runtime/test_chunkstore.py to kill: it writes content to a store
forever, printing each committed write.

    python tests/runtime/chunkstore_writer.py DIR SEED kill|die

With ``die`` it kills itself with SIGKILL inside its first long transaction (pinning
4 MB), after a group chosen by SEED; with ``kill`` it waits for the test to kill it.
"""

import os
import signal
import sys
from pathlib import Path
from typing import Any

from zmesh.chunks import encode_content
from zmesh.rng import DeterministicRng
from zmesh.runtime.chunkstore import ChunkStore


class DyingStore(ChunkStore):
    """Kills its own process inside a transaction, after ``die_after`` group writes."""

    die_after = -1

    def _put(self, *args: Any, **kwargs: Any) -> None:
        super()._put(*args, **kwargs)
        self.die_after -= 1
        if self.die_after == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    CS = 16384
    encs = [
        encode_content(DeterministicRng(bytes([i])).bytes(24 * CS - 11), CS, 4, 6) for i in range(4)
    ]
    big = encode_content(DeterministicRng(b"big").bytes(4_000_000), 65536, 8, 10)
    size = sum(len(p) for p in encs[0].pieces)
    store = DyingStore(Path(sys.argv[1]), cache_quota=2 * size)
    store._db.execute("PRAGMA cache_size = 50")  # spill pages to the WAL before commits
    rng = DeterministicRng(int(sys.argv[2]))
    while True:  # forever: the parent kills us
        for number, enc in enumerate(encs):
            cid = store.add(enc.manifest, pinned=number == 0)
            lay = enc.manifest.layout
            held = set(store.held(cid))
            for g in range(lay.groups):
                todo = [i for i in lay.group_pieces(g) if i not in held]
                step = 1 + rng.bytes(1)[0] % 3
                for start in range(0, len(todo), step):
                    batch = {i: enc.pieces[i] for i in todo[start : start + step]}
                    store.put(cid, g, enc.proof(g), batch)
                    print(number, *batch, flush=True)
            if number:
                store.remove(cid)
            print("big", flush=True)  # one long transaction: 5 MB of pieces
            if sys.argv[3] == "die":  # in the middle of it
                store.die_after = 1 + rng.bytes(1)[0] % (big.manifest.layout.groups - 1)
            store.pin(big)
            store.remove(big.manifest.content_id)


if __name__ == "__main__":
    main()
