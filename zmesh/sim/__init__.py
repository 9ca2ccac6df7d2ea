"""The simulator driver: many real nodes on a virtual clock, deterministic from a seed,
with a fault model (:mod:`zmesh.sim.faults`)."""

from .faults import (
    Blackhole,
    Crash,
    Fault,
    Heal,
    Join,
    Leave,
    LinkChange,
    Partition,
    TamperLink,
    churn,
)
from .network import DEFAULT_EVENT_LOG, LinkModel, MemoryTransport, SimNode, Simulator
from .transport import Tamper

__all__ = [
    "DEFAULT_EVENT_LOG",
    "Blackhole",
    "Crash",
    "Fault",
    "Heal",
    "Join",
    "Leave",
    "LinkChange",
    "LinkModel",
    "MemoryTransport",
    "Partition",
    "SimNode",
    "Simulator",
    "Tamper",
    "TamperLink",
    "churn",
]
