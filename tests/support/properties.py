"""Running hypothesis properties against the app in-process.

The app, the Temporal worker and the database connections live on the test's event loop.
Hypothesis drives its examples from a worker thread; each example's check runs on that loop,
so the worker keeps taking tasks while an example waits for a flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

T = TypeVar("T")
GUARD_SECONDS = 60  # one example never takes this long unless something hangs


async def check_examples(
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Awaitable[Any]],
    max_examples: int,
    first: Sequence[T] = (),
) -> None:
    """Check the property `check` on the examples `first` (always, so every branch of the
    property is reached whatever the draw), then on `max_examples` examples of `strategy`
    (shrunk on failure, as any hypothesis test)."""
    loop = asyncio.get_running_loop()

    def run(value: T) -> None:
        future = asyncio.run_coroutine_threadsafe(check(value), loop)  # type: ignore[arg-type]
        try:
            future.result(timeout=GUARD_SECONDS)
        except TimeoutError:
            future.cancel()
            raise

    property_holds = hypothesis_settings(max_examples=max_examples)(given(strategy)(run))
    for value in reversed(first):
        property_holds = example(value)(property_holds)
    await asyncio.to_thread(property_holds)
