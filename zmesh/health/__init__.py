"""Self-healing (issue 8): failure detection (per link: heartbeats and phi), adaptive circuit
build timeouts, relay avoidance.

Sans-I/O like the rest of the core: every method takes ``now`` (seconds) from its caller.
"""

from .avoid import Avoidance
from .cbt import BuildTimes, Fit
from .link import LinkHealth
from .phi import PhiDetector

__all__ = ["Avoidance", "BuildTimes", "Fit", "LinkHealth", "PhiDetector"]
