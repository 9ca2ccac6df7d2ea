"""The simulator driver: many real nodes on a virtual clock, deterministic from a seed."""

from .network import LinkModel, MemoryTransport, SimNode, Simulator

__all__ = ["LinkModel", "MemoryTransport", "SimNode", "Simulator"]
