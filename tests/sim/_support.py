"""What the simulator's tests share: waiting for a state, never for a duration."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

CEILING = 60.0  # seconds: only a hang gets near it


async def until(predicate: Callable[[], Any], what: str, ceiling: float = CEILING) -> Any:
    """Wait (on the running loop, so the simulator and the controller go on) until ``predicate()`` is
    truthy, and return its value; AssertionError naming ``what`` if it never is."""
    try:
        async with asyncio.timeout(ceiling):
            while not (value := predicate()):
                await asyncio.sleep(0.01)
            return value
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None
