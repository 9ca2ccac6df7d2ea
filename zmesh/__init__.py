"""zMesh: a decentralized overlay network with post-quantum onion circuits.

The package is a sans-I/O core (no clock, no OS randomness, no sockets): drivers in
:mod:`zmesh.runtime` and :mod:`zmesh.sim` feed it bytes, timers and an :class:`~zmesh.rng.Rng`.
"""

__version__ = "0.1.0"
