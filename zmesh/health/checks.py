"""The input check the health components share."""

import math


def finite(name: str, value: float) -> float:
    """``value`` if it is finite; ValueError naming ``name`` otherwise."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value
