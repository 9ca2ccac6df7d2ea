"""Fixed-size, position-oblivious data cells.

Every cell on a circuit is :attr:`Geometry.cell_size` bytes at every hop.  Each hop applies
one LIONESS layer (a strong pseudorandom permutation over the whole cell), tweaked by a
per-circuit, per-direction counter:

* forward, the client wraps one layer per hop and each hop removes its own;
* backward, the final hop wraps the first layer and each hop adds one more.

End-to-end authentication sits inside: the plaintext starts with :data:`AUTH_SIZE` zero
bytes, as in Sphinx payloads.  A flipped bit anywhere garbles the whole block, so the
endpoint sees random bytes (no tagging attack: nothing of the flip survives) and tears the
circuit down.
"""

from collections.abc import Sequence

from ..crypto import lioness
from ..errors import CloseCode, RemoteProtocolError
from .geometry import AUTH_SIZE, Geometry
from .sphinx import HopKeys

FORWARD = 1
BACKWARD = 2
_AUTH = bytes(AUTH_SIZE)


def _check(geometry: Geometry, cell: bytes) -> None:
    if len(cell) != geometry.cell_size:
        raise RemoteProtocolError("cell has the wrong length")


def _plaintext(geometry: Geometry, payload: bytes) -> bytes:
    if len(payload) != geometry.cell_payload_size:
        raise ValueError("cell payloads must be exactly cell_payload_size bytes")
    return _AUTH + payload


def _authenticate(plain: bytes) -> bytes:
    if plain[:AUTH_SIZE] != _AUTH:
        raise RemoteProtocolError("cell failed end-to-end authentication", CloseCode.AUTH)
    return plain[AUTH_SIZE:]


def client_seal(geometry: Geometry, hops: Sequence[HopKeys], counter: int, payload: bytes) -> bytes:
    """Wrap ``payload`` for the circuit's final hop: innermost layer for the last hop."""
    tweak = lioness.make_tweak(counter, FORWARD)
    block = _plaintext(geometry, payload)
    for keys in reversed(hops):
        block = lioness.encrypt(keys.forward, tweak, block)
    return block


def relay_forward(geometry: Geometry, keys: HopKeys, counter: int, cell: bytes) -> bytes:
    """Remove this hop's forward layer (a middle hop, or the final hop before opening)."""
    _check(geometry, cell)
    return lioness.decrypt(keys.forward, lioness.make_tweak(counter, FORWARD), cell)


def relay_backward(geometry: Geometry, keys: HopKeys, counter: int, cell: bytes) -> bytes:
    """Add this hop's backward layer."""
    _check(geometry, cell)
    return lioness.encrypt(keys.backward, lioness.make_tweak(counter, BACKWARD), cell)


def endpoint_open(geometry: Geometry, keys: HopKeys, counter: int, cell: bytes) -> bytes:
    """At the final hop: remove the last forward layer and authenticate the payload."""
    return _authenticate(relay_forward(geometry, keys, counter, cell))


def endpoint_seal(geometry: Geometry, keys: HopKeys, counter: int, payload: bytes) -> bytes:
    """At the final hop: wrap a payload for the trip back to the client."""
    tweak = lioness.make_tweak(counter, BACKWARD)
    return lioness.encrypt(keys.backward, tweak, _plaintext(geometry, payload))


def client_open(geometry: Geometry, hops: Sequence[HopKeys], counter: int, cell: bytes) -> bytes:
    """Peel every backward layer, first hop first, and authenticate the payload."""
    _check(geometry, cell)
    tweak = lioness.make_tweak(counter, BACKWARD)
    block = cell
    for keys in hops:
        block = lioness.decrypt(keys.backward, tweak, block)
    return _authenticate(block)
