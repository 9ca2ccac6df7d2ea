"""Background tasks a driver starts and must neither lose nor leak."""

import asyncio
import logging
from collections.abc import Awaitable

__all__ = ["TaskSet"]


class TaskSet:
    """Tasks held until done (asyncio keeps only weak references to running tasks), each
    failure logged on ``log`` (none is lost silently), all cancelled at once on close."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tasks: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run ``coro`` as a task on the running loop."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def cancel(self) -> None:
        """Cancel every task still running."""
        for task in list(self._tasks):
            task.cancel()

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.warning("task event=failed error=%r", str(task.exception()))
