"""The command line's argument types (argparse ``type=`` callables) and its progress bar."""

import argparse
import re
from typing import TextIO

from ..runtime.processes import MAX_RELAYS, MIN_RELAYS

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
MAX_DEMO_SIZE = 1 << 30


def parse_size(text: str) -> int:
    """Parse ``5MB``, ``512KiB``, ``1.5M`` or ``1000`` into bytes (argparse type)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 5MB, 512KiB or 1000)")
    unit = (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    scale = 1 if unit in ("", "b") else base ** ("kmg".index(unit[0]) + 1)
    value = int(float(m.group(1)) * scale)
    if not 1 <= value <= MAX_DEMO_SIZE:
        raise argparse.ArgumentTypeError(f"size must be between 1 B and 1 GiB, not {text!r}")
    return value


def parse_duration(text: str) -> float:
    """Parse ``90s``, ``10m``, ``1h``, ``2d`` or ``600`` (seconds) into seconds (argparse
    type); the simulator takes 60 s to 7 days."""
    m = _DURATION_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90s, 10m or 1h)")
    value = float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    if not 60 <= value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"duration must be between 60s and 7d, not {text!r}")
    return value


def number[T: (int, float)](text: str, kind: type[T]) -> T:
    """``text`` as an int or a float (argparse type step); ArgumentTypeError if it is not."""
    try:
        return kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None


def churn_rate(text: str) -> float:
    value = number(text, float)
    if not 0.0 <= value <= 10.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10 per hour, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def days(text: str) -> float:
    value = number(text, float)
    if not 0.0 < value <= 3650:
        raise argparse.ArgumentTypeError(f"must be in (0, 3650] days, not {value}")
    return value


def positive_int(text: str) -> int:
    value = number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def relay_count(text: str) -> int:
    value = number(text, int)
    if not MIN_RELAYS <= value <= MAX_RELAYS:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_RELAYS} and {MAX_RELAYS}, not {value} (a 3-hop circuit "
            f"needs {MIN_RELAYS}; each relay is a process on this machine)"
        )
    return value


def probability(text: str) -> float:
    value = number(text, float)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {value}")
    return value


def milliseconds(text: str) -> float:
    value = number(text, float)
    if not 0.0 <= value <= 10_000:
        raise argparse.ArgumentTypeError("latency must be between 0 and 10000 ms")
    return value / 1000


class Progress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._last = -1
        self._phase = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self._enabled or total <= 0:
            return
        pct = min(100, done * 100 // total)
        if pct == self._last and phase == self._phase:
            return
        self._last, self._phase = pct, phase
        filled = pct * 30 // 100
        bar = "#" * filled + "-" * (30 - filled)
        amount = fmt_bytes(done) if phase == "transfer" else f"{done}/{total}"
        self._stream.write(f"\r  {phase:<9}[{bar}] {pct:3d}%  {amount}")
        if pct == 100:
            self._stream.write("\n")
            self._last = -1
        self._stream.flush()


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover
