"""What every source shares: the newest-item slot, the sensor status, back-off.

LatestSlot is the bounded queue of the design (size 1, drop oldest): a producer
never blocks and never grows memory; an item replaced before any consumer took it
counts as a drop, so "the runtime never falls behind" is observable.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from edge_mla.runtime.clock import now

log = logging.getLogger(__name__)

# Sensor states, as they appear in every output line.
OFF = "off"  # not configured (--camera none / --mic none)
STARTING = "starting"  # opening, no data yet
OK = "ok"  # data arriving
LOST = "lost"  # read failures / no data within the timeout; reconnecting with back-off
ENDED = "ended"  # a file reached its end without --loop
STOPPED = "stopped"  # runtime shut down


@dataclass
class Item:
    """One piece of sensor data: a frame, or an audio window (newest sample last)."""

    data: Any
    t_capture: float  # runtime clock at capture (frame grabbed / newest sample arrived)
    seq: int


class LatestSlot:
    """Holds the newest item; consumers wait for one newer than what they saw."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[Item] = None
        self._taken = True
        self.puts = 0
        self.drops = 0

    def put(self, item: Item) -> None:
        with self._cond:
            if not self._taken:
                self.drops += 1
            self._item, self._taken = item, False
            self.puts += 1
            self._cond.notify_all()

    def get_newer(self, seq: int, timeout: float) -> Optional[Item]:
        """The newest item with ``item.seq > seq``, waiting up to ``timeout`` s."""
        with self._cond:
            if self._item is None or self._item.seq <= seq:
                self._cond.wait(timeout)
            if self._item is None or self._item.seq <= seq:
                return None
            self._taken = True
            return self._item

    def wait_newer(self, seq: int, timeout: float) -> Optional[Item]:
        """Like ``get_newer`` but leaves the item for the engine's worker, so an
        observer (the clip recorder) does not hide the worker's drops."""
        with self._cond:
            if self._item is None or self._item.seq <= seq:
                self._cond.wait(timeout)
            if self._item is None or self._item.seq <= seq:
                return None
            return self._item

    def peek(self) -> Optional[Item]:
        with self._cond:
            return self._item

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass
class SensorStatus:
    """A sensor's state and counters; state changes are logged once each."""

    name: str
    state: str = STARTING
    since: float = field(default_factory=now)
    detail: str = ""
    reconnects: int = 0
    failures: int = 0
    overflows: int = 0
    last_data: Optional[float] = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: str, detail: str = "") -> None:
        with self._lock:
            if state == self.state:
                return
            old, self.state, self.since, self.detail = self.state, state, now(), detail
        level = logging.WARNING if state == LOST else logging.INFO
        log.log(level, "%s: %s -> %s%s", self.name, old, state, f" ({detail})" if detail else "")

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self.state, "since": round(now() - self.since, 3), "reconnects": self.reconnects, "failures": self.failures, "overflows": self.overflows}


class Backoff:
    """Exponential reconnect delays: initial, 2x, 4x ... capped; reset on success."""

    def __init__(self, initial: float = 0.5, maximum: float = 5.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.delay = initial
        self.next_try = 0.0

    def due(self, t: float) -> bool:
        return t >= self.next_try

    def failed(self, t: float) -> float:
        wait = self.delay
        self.next_try = t + wait
        self.delay = min(self.delay * 2, self.maximum)
        return wait

    def reset(self) -> None:
        self.delay = self.initial
        self.next_try = 0.0


def in_outage(outages: list, t: float) -> bool:
    """True when media time ``t`` falls in one of the scripted outage spans."""
    return any(o.start <= t < o.end for o in outages)
