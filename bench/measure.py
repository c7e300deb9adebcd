"""Latency samples, percentiles and per-process CPU time."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN when there are no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Latencies:
    """Seconds per named step."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.samples[step].append(time.perf_counter() - start)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            step: {
                "n": len(values),
                "p50_ms": percentile(values, 50) * 1000,
                "p95_ms": percentile(values, 95) * 1000,
                "p99_ms": percentile(values, 99) * 1000,
            }
            for step, values in sorted(self.samples.items())
        }


def classify(process: psutil.Process) -> str | None:
    """Which part of the stack a process of `sso dev` is."""
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return None
    if "server start-dev" in command:
        return "temporal"
    if "cli worker" in command:
        return "worker"
    if "cli api" in command:
        return "web"
    if "core.entra_stand_in" in command:
        return "entra-stand-in"
    return None


@dataclass
class CpuMeter:
    """CPU seconds (user + system) used by each part of the stack between start and stop."""

    root_pid: int
    processes: dict[str, list[psutil.Process]] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for child in psutil.Process(self.root_pid).children(recursive=True):
            kind = classify(child)
            if kind is not None:
                self.processes.setdefault(kind, []).append(child)

    def _now(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for kind, processes in self.processes.items():
            total = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
                except psutil.Error:
                    pass
            totals[kind] = total
        return totals

    def start(self) -> None:
        self._before = self._now()

    def used(self) -> dict[str, float]:
        now = self._now()
        return {kind: now[kind] - self._before.get(kind, 0.0) for kind in now}

    def memory_mib(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for kind, processes in self.processes.items():
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                    total += sum(c.memory_info().rss for c in process.children(recursive=True))
                except psutil.Error:
                    pass
            found[kind] = total / 2**20
        return found
