"""A row of a node's frame-handler table (aioquic's ``__frame_handlers``): the handler of one
frame type, and whether the frame is allowed before the link handshake and after it."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .connection import LinkConnection


@dataclass(frozen=True, slots=True)
class Route:
    handler: Callable[[LinkConnection, Any, float], None]
    before_handshake: bool = False
    after_handshake: bool = True
