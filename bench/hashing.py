"""The pure argon2id ceiling: verifications per second per core with nothing else running."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from core.passwords import Hasher

PASSWORD = "Velvet-Orbit-Lantern-Pixel-42"  # noqa: S105 (a benchmark input)


def verifications_per_second_per_core(
    time_cost: int, memory_kib: int, parallelism: int, seconds: float = 5.0
) -> float:
    """argon2-cffi releases the GIL, so one thread per core saturates the machine."""
    hasher = Hasher(time_cost, memory_kib, parallelism)
    stored = hasher.hash(PASSWORD)
    cores = os.cpu_count() or 1
    deadline = time.perf_counter() + seconds

    def worker() -> int:
        done = 0
        while time.perf_counter() < deadline:
            assert hasher.verify(stored, PASSWORD)
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        total = sum(pool.map(lambda _: worker(), range(cores)))
    return total / (time.perf_counter() - started) / cores
