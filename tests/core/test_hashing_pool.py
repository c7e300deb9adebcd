"""argon2 runs in low-priority threads, so a saturated sign-in load leaves the CPU to the
event loop first (cheap pages and page steps stay fast)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from core.passwords import HASHING_NICENESS, hashing_pool


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_hashing_threads_run_at_a_lower_priority_than_the_rest() -> None:
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    pool = hashing_pool()
    try:
        seen = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert seen.result(timeout=10) == min(19, base + HASHING_NICENESS)
    finally:
        pool.shutdown()
    # The calling thread (the event loop's) keeps its own priority.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    assert pool._max_workers == (os.cpu_count() or 1)
