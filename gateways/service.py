"""The lifecycle the model and pipeline gateway services share.

A service owns a gateway, tasks that follow the scheduler's status streams, and a stop event:
``await start()`` ... ``await stop()``, or ``await run_forever()`` until ``request_stop()``.
"""
from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any


def subscriber_name(configured: str, prefix: str) -> str:
    """The name a gateway subscribes to the scheduler with: configured > ``POD_NAME`` > ``prefix-host``."""
    return configured or os.environ.get("POD_NAME") or f"{prefix}-{socket.gethostname()}"


class GatewayService:
    """Subclasses set ``self.gateway`` and implement ``start``; they may override ``_close_servers``."""

    gateway: Any = None  # the subclass's gateway (it has an async close()), set in __init__

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _follow(self, follow: Callable[..., Coroutine[Any, Any, None]], scheduler: str, subscriber: str, on_event,
                **options) -> None:
        """Run ``follow(scheduler, subscriber, on_event, stop_event, **options)`` until the service stops."""
        self._tasks.append(asyncio.create_task(follow(scheduler, subscriber, on_event, self._stop, **options)))

    async def start(self) -> GatewayService:
        raise NotImplementedError

    async def _close_servers(self) -> None:
        """Servers in front of the gateway, closed after the scheduler tasks and before the gateway."""

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_servers()
        await self.gateway.close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        self._stop.set()
