"""TaskSet: background tasks are kept, their failures logged, and cancelled together."""

import asyncio
import logging

import pytest

from zmesh.runtime.tasks import TaskSet


def test_tasks_are_held_failures_logged_and_all_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        tasks = TaskSet(logging.getLogger("test.tasks"))
        forever = asyncio.Event()

        async def fail() -> None:
            raise RuntimeError("boom")

        tasks.spawn(forever.wait())
        tasks.spawn(fail())
        assert len(tasks) == 2
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(tasks) == 1  # the failed one is gone, and was logged
        tasks.cancel()
        for _ in range(3):  # the cancellation, then its done callback
            await asyncio.sleep(0)
        assert len(tasks) == 0

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "boom" in caplog.text
