"""Time for the runtime: one monotonic clock and a drift-free pacer.

Every item (frame, audio block, result, decision) is stamped with ``now()`` so that
ages and latencies are differences on one clock, immune to wall-clock jumps (NTP on
a device that boots without network). The pacer sleeps to absolute deadlines so a
loop at ``rate`` Hz neither drifts nor busy-waits; the flow limiter lets through at
most ``rate`` events per second of a stream that comes faster.
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


# An event up to this fraction of a period early still counts as on time: a 30 fps
# camera under a 10 Hz cap delivers its every third frame 99-101 ms after the last
# one (capture and engine jitter), and refusing the 99 ms one would make it wait a
# whole frame (or a decision wait for the next result).
RATE_SLACK = 0.1


class FlowLimiter:
    """Admits at most about ``rate`` events per second (MediaPipe's FlowLimiter idea:
    drop upstream what downstream would not use, instead of computing it and then
    holding it back). ``rate`` None or 0 admits everything."""

    def __init__(self, rate: Optional[float]) -> None:
        self.period = 1.0 / rate if rate else 0.0
        self._last: Optional[float] = None
        self.refused = 0

    def admit(self, t: float) -> bool:
        """True (and ``t`` becomes the last admitted time) when ``t`` is at least a
        period, less the slack, after the last admitted event."""
        if self._last is not None and t - self._last < self.period * (1.0 - RATE_SLACK):
            self.refused += 1
            return False
        self._last = t
        return True
