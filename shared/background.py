"""A service's long-running work beside its event handlers: watches, sweeps, resyncs.

Two rules keep a service from turning into a process that takes events but no longer watches:

- a periodic step that fails (the database or an API is away for a moment) is logged and tried
  again next period (``periodically``), never allowed to end its loop;
- a background task that still ends on an error stops the whole service (``Background``), which
  exits non-zero so its supervisor (Kubernetes, compose, ``kaiten up``) starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import structlog

from shared.errors import KaitenError

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def periodically(
    name: str, every_s: float, step: Callable[[], Awaitable[None]], *, at_start: bool = False
) -> None:
    """Run ``step`` every ``every_s`` seconds until cancelled; a failure is logged and the next
    period tries again."""
    if not at_start:
        await asyncio.sleep(every_s)
    while True:
        await attempt(name, step)
        await asyncio.sleep(every_s)


async def attempt(name: str, step: Callable[[], Awaitable[None]]) -> bool:
    """Run ``step`` once; log a failure instead of raising it. True when it succeeded."""
    try:
        await step()
    except (KaitenError, OSError) as e:  # expected while a dependency is away
        log.warning("background.failed", task=name, error=f"{type(e).__name__}: {e}")
    except Exception:  # a database error or a bug: logged with its traceback, tried again
        log.exception("background.error", task=name)
    else:
        return True
    return False


async def each_limited(
    limit: int, items: Iterable[T], work: Callable[[T], Awaitable[bool]]
) -> list[bool]:
    """``work(item)`` for every item, at most ``limit`` at once; the results in item order."""
    slots = asyncio.Semaphore(limit)

    async def one(item: T) -> bool:
        async with slots:
            return await work(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


class Background:
    """The background tasks of one service process. ``start`` runs a task; one that ends with an
    error calls ``on_failure`` (the runner stops the service, which then exits non-zero)."""

    def __init__(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_failure = on_failure
        self.failure: BaseException | None = None

    def start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        log.error(
            "service.task_failed",
            task=task.get_name(),
            error=f"{type(error).__name__}: {error}",
            exc_info=error,
        )
        if self.failure is None:
            self.failure = error
        if self._on_failure is not None:
            self._on_failure(error)

    async def close(self) -> None:
        """Cancel every task still running and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
