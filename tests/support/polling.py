"""Wait for what a test expects with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = ..., what: str = ...
) -> T: ...
@overload
async def eventually(probe: Callable[[], T], *, timeout: float = ..., what: str = ...) -> T: ...
async def eventually(
    probe: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        result = probe()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
