"""Time for the runtime: one monotonic clock and a drift-free pacer.

Every item (frame, audio block, result, decision) is stamped with ``now()`` so that
ages and latencies are differences on one clock, immune to wall-clock jumps (NTP on
a device that boots without network). The pacer sleeps to absolute deadlines so a
loop at ``rate`` Hz neither drifts nor busy-waits.
"""

from __future__ import annotations

import threading
import time
from typing import Optional


def now() -> float:
    """Seconds on the monotonic clock shared by every stage of the runtime."""
    return time.monotonic()


class Pacer:
    """Ticks at ``rate`` Hz against absolute deadlines.

    ``wait()`` returns False when ``stop`` is set (so loops end promptly on shutdown).
    If a tick overran by more than one period, the schedule restarts from now rather
    than firing a burst of catch-up ticks: the runtime never falls behind real time.
    """

    def __init__(self, rate: float, stop: Optional[threading.Event] = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.period = 1.0 / rate
        self.stop = stop or threading.Event()
        self._next = now() + self.period
        self.overruns = 0

    def wait(self) -> bool:
        t = now()
        if t > self._next + self.period:
            self.overruns += 1
            self._next = t
        delay = self._next - t
        self._next += self.period
        if delay > 0:
            return not self.stop.wait(delay)
        return not self.stop.is_set()
