"""All onion sizes, derived from one :class:`Geometry` (after Katzenpost's sphinx geometry).

The setup header is ``ct || gamma || beta`` with ``|beta| = r*(R + C + M) - C - M`` for
``r`` = ``max_hops``, ``R`` = the routing block, ``C`` = an X-Wing ciphertext and ``M`` =
a MAC.  The header, the CREATED reply and the cell have the same length for every path
length and at every position.
"""

from dataclasses import dataclass
from functools import cached_property

from ..crypto import sha256, xwing
from ..identity import NODE_ID_SIZE

ROUTING_SIZE = 1 + NODE_ID_SIZE + 4  # command, next node id, next hop's key epoch
AUTH_SIZE = 16  # zero bytes that authenticate a cell end to end, as in Sphinx payloads


@dataclass(frozen=True)
class Geometry:
    max_hops: int = 4
    cell_size: int = 8192
    mac_size: int = 32
    kem_ct_size: int = xwing.CIPHERTEXT_SIZE
    routing_size: int = ROUTING_SIZE

    def __post_init__(self) -> None:
        if not 1 <= self.max_hops <= 8:
            raise ValueError("max_hops must be between 1 and 8")
        if self.cell_size < 256 or self.cell_size > 65536:
            raise ValueError("cell_size must be between 256 and 65536")

    @property
    def slot_size(self) -> int:
        """Bytes one hop's slot takes inside beta: routing, next ciphertext, next MAC."""
        return self.routing_size + self.kem_ct_size + self.mac_size

    @property
    def beta_size(self) -> int:
        return self.max_hops * self.slot_size - self.kem_ct_size - self.mac_size

    @property
    def header_size(self) -> int:
        return self.kem_ct_size + self.mac_size + self.beta_size

    @property
    def created_size(self) -> int:
        return self.max_hops * self.mac_size

    @property
    def cell_payload_size(self) -> int:
        return self.cell_size - AUTH_SIZE

    @cached_property
    def digest(self) -> bytes:
        """Names this protocol version: every hop derives keys under this label."""
        text = (
            f"zmesh-onion-v1 r={self.max_hops} L={self.cell_size} M={self.mac_size} "
            f"C={self.kem_ct_size} R={self.routing_size} kem=X-Wing lioness=chacha20+blake2b"
        )
        return sha256(text.encode())


DEFAULT_GEOMETRY = Geometry()
