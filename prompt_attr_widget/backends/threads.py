"""How many threads the next llama.cpp call gets: the cores other processes leave idle.

llama.cpp's threads spin while they wait for each other, so a thread that shares its
core with another busy process stalls all of them. Measured on a 2-core machine
(benchmarks/bench.py, section 8): idle, two threads decode 1.7x faster than one; next
to one other busy process, two are no faster than one (and were seen 10-300x slower
under heavier load). Neither fixed count is right, so before each call the policy
counts the CPU time other processes used since the last call (the machine's busy time
in /proc/stat minus this process's own) and takes the cores left over. llama.cpp's numbers do not depend on the thread count (each output is
computed by one thread; tested), so the policy changes speed only.
"""

from __future__ import annotations

import os
import time

MIN_WINDOW_S = 0.25  # a shorter window since the last look says too little: keep the decision
SLACK = 0.2  # others using at most this share of a core still leave it free


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU time all processes spent busy since boot, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat", "rb") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != b"cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class ThreadPolicy:
    """`policy()` -> the thread count for the next call; fixed when the user chose one.

    The first window starts when the policy is made (for the shared one: when the backend
    module is imported, before any model loads); a first call sooner than MIN_WINDOW_S
    after that waits out the window once, rather than trust the load average, which
    lags by a minute and still counts a process that just ended.
    """

    def __init__(self, fixed: int | None = None, cores: int | None = None):
        self.fixed, self.cores = fixed, cores or machine_cores()
        self.last: int | None = None
        self._mark = self._now()

    @staticmethod
    def _now() -> tuple[float, float | None, float]:
        """(wall clock, machine busy seconds or None, this process's CPU seconds)."""
        return time.monotonic(), _busy_seconds(), time.process_time()

    def __call__(self) -> int:
        if self.fixed:
            return self.fixed
        now = self._now()
        if now[1] is None or self._mark[1] is None:  # no /proc/stat: the load average, else one core left free
            self.last = self._from_others(_load_average(), self.cores - 1)
            return self.last
        if now[0] - self._mark[0] < MIN_WINDOW_S:
            if self.last is not None:
                return self.last
            time.sleep(MIN_WINDOW_S - (now[0] - self._mark[0]))
            now = self._now()
        wall, busy, own = (a - b for a, b in zip(now, self._mark, strict=True))
        self.last = self._from_others(max(0.0, busy - own) / wall, self.last)
        self._mark = now
        return self.last

    def _from_others(self, others: float | None, fallback: int | None) -> int:
        if others is None:
            return max(1, fallback or 1)
        return max(1, min(self.cores, int(self.cores - others + SLACK)))


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
