"""Sensor watchdogs: one thread per sensor calling its ``supervise(now)``.

Why separate threads: the failure a watchdog exists for is the silent one (an
unplugged mic stops calling back without an error; a camera read can block), so
the check must not live in the thread that is stuck. Reopening a mic can take a
second (PortAudio re-initialisation); a per-sensor thread keeps that from delaying
the other sensor's supervision.
"""

from __future__ import annotations

import logging
import threading

from edge_mla.runtime.clock import now

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, source, stop: threading.Event, period: float = 0.1) -> None:
        self.source = source
        self._stop = stop
        self.period = period
        self._thread = threading.Thread(target=self._run, name=f"{source.name}-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.source.supervise(now())
            except Exception:
                log.exception("%s watchdog: supervision failed", self.source.name)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
