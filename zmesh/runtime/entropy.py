"""The OS-backed :class:`~zmesh.rng.Rng` that real (non-simulated) nodes inject."""

import builtins
import os


class SystemRng:
    """Random bytes from the operating system's CSPRNG."""

    reproducible = False

    def bytes(self, n: int) -> builtins.bytes:
        return os.urandom(n)
