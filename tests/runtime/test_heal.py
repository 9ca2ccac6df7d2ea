"""A download through ``zmesh up`` survives two relays on its session's legs dying or freezing.

Real processes, the logic of ``bench/heal.py`` at a smaller size: ``zmesh up --relays 8``,
24 MB through its SOCKS5 proxy; at about 25% and 60% of the bytes a relay on a leg (not
the exit) gets SIGKILL, or SIGSTOP (silent: nothing is closed).  The bytes must arrive
intact, and the longest gap between reads must show healing rather than waiting for a
timeout (the link timeout is 10 s, a build's up to a minute).

The issue's bounds (1 s after a kill, 2 s after a stop) are a speed figure, measured by
``bench/heal.py`` (200 MB, same run as a baseline without faults), not here: under
``make test`` the other worker's browsers share the two cores, and a kill's gap of 1.10 s
was seen once in about ten runs while the same code's bench run gave 0.19 s.
"""

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow

SIZE = 24_000_000
LOOSE = {"kill": 3.0, "stop": 5.0}  # seconds: healing, not a timeout (see the module doc)
RELAYS = 8  # with 6, a lost leg often finds no replacement and the next fault hits the
# session's only leg: gaps of 0.76 s (kill) and 1.22 s (stop) were seen, too near the bounds


def _heal() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "heal.py"
    spec = importlib.util.spec_from_file_location("bench_heal", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


heal = _heal()


@pytest.mark.parametrize("signal_name", ["kill", "stop"])
def test_download_survives_two_relays_faulted_on_its_legs(signal_name: str) -> None:
    body = heal.payload(SIZE, seed=1)
    trial = asyncio.run(heal.trial(body, signal_name, RELAYS, baseline=False, seed=1))
    transfer = trial.faulted
    timeline = "\n".join(transfer.timeline)
    assert transfer.error is None, f"{transfer.error}\n{timeline}"
    assert [f.at is not None for f in transfer.faults] == [True, True], [
        f.error for f in transfer.faults
    ]
    assert len({f.victim.node_id for f in transfer.faults}) == 2
    assert transfer.intact, timeline
    assert transfer.longest_gap < LOOSE[signal_name], timeline
    print(
        f"{signal_name}: {SIZE / 1e6:.0f} MB in {transfer.seconds:.1f} s, longest gap "
        f"{transfer.longest_gap:.3f} s, gaps after the faults "
        f"{', '.join(f'{f.gap:.3f} s' for f in transfer.faults)}"
    )
