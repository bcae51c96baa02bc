"""The tasks a driver runs besides its callbacks: outbound connects and inbound TLS handshakes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

# The driver's logger: these lines keep the name operators (and their log filters) know.
logger = logging.getLogger("presence_sip.transport.driver")


class Tasks:
    """One driver's tasks: held until done (the loop keeps only a weak reference to a task), a
    failure logged as the bug it is, every one cancelled at stop."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Tasks not done yet."""
        return len(self._tasks)

    def start(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of ``loop``."""
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def cancel(self) -> None:
        """Cancel every task and wait until each has ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("transport task failed (a bug)", exc_info=error)
