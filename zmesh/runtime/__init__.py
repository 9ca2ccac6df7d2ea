"""Drivers that do real I/O around the sans-I/O core (asyncio on CPython)."""

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from ..errors import UsageError, ZMeshError


def run_command(name: str, main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; turn the errors a user can act on into one clear line."""
    try:
        return asyncio.run(main)
    except UsageError as exc:  # a path or file the user gave: argparse's status
        print(f"zmesh {name}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, ZMeshError, TimeoutError) as exc:
        print(f"zmesh {name}: error: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 1
