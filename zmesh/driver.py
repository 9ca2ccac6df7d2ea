"""The step every driver takes after every input it gives the node (aioquic's pattern).

The asyncio driver (:mod:`zmesh.runtime.aio`) and the simulator (:mod:`zmesh.sim.network`)
both call :func:`drain`, then arm their one timer for the deadline it returns, each on
its own clock.
"""

from collections.abc import Callable

from .node import Event, Node


def drain(
    node: Node, now: float, send: Callable[[int, bytes], None], on_event: Callable[[Event], None]
) -> float:
    """Pull the node's output: bytes to ``send``, events to ``on_event``, in order.

    Returns the deadline for the driver's timer."""
    for link_id, data in node.datagrams_to_send(now):
        send(link_id, data)
    while (event := node.next_event()) is not None:
        on_event(event)
    return node.get_timer()
