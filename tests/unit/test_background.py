"""shared.background: a periodic step that fails is tried again; a task that dies stops the
service."""

from __future__ import annotations

import asyncio

import pytest

from shared.background import Background, attempt, each_limited, periodically
from shared.errors import TransientError


async def test_a_failing_step_is_tried_again_next_period() -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError("connection refused")
        if len(calls) == 2:
            raise RuntimeError("a bug")
        done.set()

    task = asyncio.create_task(periodically("step", 0.01, step, at_start=True))
    await asyncio.wait_for(done.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) >= 3


async def test_attempt_says_whether_the_step_succeeded() -> None:
    async def fails() -> None:
        raise TransientError("the API did not answer")

    async def works() -> None:
        return None

    assert await attempt("fails", fails) is False
    assert await attempt("works", works) is True


async def test_a_task_that_dies_reports_its_error_once() -> None:
    seen: list[BaseException] = []
    background = Background(on_failure=seen.append)

    async def dies() -> None:
        raise ValueError("the watch broke")

    async def runs() -> None:
        await asyncio.sleep(3600)

    background.start(dies(), "dies")
    survivor = background.start(runs(), "runs")
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert [type(e) for e in seen] == [ValueError]
    assert isinstance(background.failure, ValueError)
    assert not survivor.done()
    await background.close()
    assert survivor.cancelled()


async def test_cancelled_tasks_are_not_failures() -> None:
    seen: list[BaseException] = []
    background = Background(on_failure=seen.append)

    async def runs() -> None:
        await asyncio.sleep(3600)

    background.start(runs(), "runs")
    await asyncio.sleep(0)
    await background.close()
    assert seen == []
    assert background.failure is None


async def test_each_limited_keeps_the_order_and_the_limit() -> None:
    running = 0
    peak = 0

    async def work(n: int) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return n % 2 == 0

    assert await each_limited(3, range(10), work) == [n % 2 == 0 for n in range(10)]
    assert peak == 3
