"""The ``degraded`` sensor state: data keeps arriving but the engine keeps judging
it unreliable (a noisy or overdriven mic, a smeared or covered lens).

A factory wants to know that a microphone is broken, not just get a worse answer,
so a sensor whose fresh results stay below the reliability threshold for ``hold``
seconds is reported ``degraded`` (JSON lines, a log line, the run report), and
``ok`` again once its results stay reliable for ``hold`` seconds. The hysteresis
keeps one odd window from flapping the state. Pure: fed timestamps, no threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger(__name__)

DEGRADED = "degraded"


@dataclass
class _SensorTrack:
    degraded: bool = False
    since: Optional[float] = None  # when the contrary evidence started
    spans: list = field(default_factory=list)  # [start, end or None]


class DegradedTracker:
    def __init__(self, hold: float = 1.0) -> None:
        self.hold = float(hold)
        self._tracks: dict = {}

    def update(self, t: float, sensor: str, unreliable: Optional[bool]) -> bool:
        """Feed one observation at time ``t``: True (judged unreliable), False
        (reliable) or None (no fresh result: the state holds). Returns whether the
        sensor is degraded now."""
        tr = self._tracks.setdefault(sensor, _SensorTrack())
        if unreliable is None:
            return tr.degraded
        if unreliable == tr.degraded:
            tr.since = None
            return tr.degraded
        if tr.since is None:
            tr.since = t
        if t - tr.since >= self.hold:
            tr.degraded = unreliable
            tr.since = None
            if unreliable:
                tr.spans.append([t, None])
                log.warning("%s degraded: its engine judged the input unreliable for %.1f s", sensor, self.hold)
            else:
                tr.spans[-1][1] = t
                log.info("%s ok again: reliable input for %.1f s", sensor, self.hold)
        return tr.degraded

    def interrupt(self, t: float, sensor: str) -> None:
        """The sensor stopped delivering (lost, blank, frozen, ended): a degraded span
        ends here. It was held through the outage, so the report counted lost time as
        degraded and the first record after the sensor came back read "degraded"."""
        tr = self._tracks.get(sensor)
        if tr is None:
            return
        tr.since = None
        if tr.degraded:
            tr.degraded = False
            tr.spans[-1][1] = t

    def is_degraded(self, sensor: str) -> bool:
        tr = self._tracks.get(sensor)
        return bool(tr and tr.degraded)

    def report(self, t0: float, t_end: float) -> dict:
        """{sensor: {"state", "spans": [[start, end], ...] (s from t0), "seconds"}}."""
        out = {}
        for s, tr in self._tracks.items():
            spans = [[round(a - t0, 3), round((b if b is not None else t_end) - t0, 3)] for a, b in tr.spans]
            out[s] = {"state": DEGRADED if tr.degraded else "ok", "spans": spans, "seconds": round(sum(b - a for a, b in spans), 3)}
        return out
