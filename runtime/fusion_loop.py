"""The fusion loop: combine each modality's latest result when a fresh one arrives.

Event-driven: a worker that publishes a result calls ``notify(modality)`` and the
loop decides at once, so a decision follows capture by little more than the engine
time. ``rate`` caps how often each modality's results may trigger a decision: a
result captured sooner than 1/rate after the last one its modality triggered is
not decided on its own (the next decision, from any modality, uses it; up to
``RATE_SLACK`` of a period early still counts). A camera's worker already runs at most
``rate`` times per second on frames as they arrive (``Worker``'s ``limit``), so its
every result triggers a decision at once, and a slower microphone every one of its
results. With no new result for 1/rate s the loop decides anyway (a
heartbeat), so a sensor that goes quiet still produces "no decision" records.

Entropy weights come from ``edge_mla.fusion`` (the same function evaluation uses),
with a batch of one and an ``available`` mask: a result older than ``staleness``
seconds is left out, so a camera that went dark stops voting within ``staleness``
instead of repeating its last answer. With no fresh modality the output is an
explicit "no decision", never a stale label.

With engines that have a reliability output (and the manifest's reliability block),
each fresh result's weight is scaled by its reliability as ``weighting`` says
(``edge_mla.fusion``: min(1, r / reference) ** power, reference 1 unless the rule
has one, nothing below the floor); when no fresh modality
reaches the floor the output is "no decision" with the reason "all sensors
degraded", never a confident guess. A result below ``reliability_threshold`` is
judged unreliable, which drives the ``degraded`` sensor state
(edge_mla.runtime.degraded).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, Optional

import numpy as np

from edge_mla.fusion import fuse, softmax
from edge_mla.runtime.clock import FlowLimiter, now
from edge_mla.runtime.degraded import DEGRADED, DegradedTracker
from edge_mla.runtime.graph import SENSOR_OF
from edge_mla.runtime.workers import Result

log = logging.getLogger(__name__)


def decide(
    results: Mapping[str, Optional[Result]],
    classes: list,
    staleness: float,
    t: float,
    sensors: Optional[Mapping[str, dict]] = None,
    rule: str = "entropy",
    reliability_threshold: Optional[float] = None,
    weighting: Optional[Mapping[str, float]] = None,
) -> dict:
    """One decision from the latest results (pure: easy to test and to replay).

    Returns the output record without timestamps of the output stage: label,
    confidence, per-modality logits/weight/age/fresh/used (and reliability),
    modalities used, sensors. ``reliability_threshold`` None: reliability is
    ignored (older engine folders). ``weighting``: ``Reliability.weighting``; None
    is a hard gate at ``reliability_threshold`` (folders exported before it)."""
    weighting = dict(weighting) if weighting is not None else {"threshold": reliability_threshold, "power": 0.0}
    mods = {}
    logits, avail, rel = {}, {}, {}
    for m, r in results.items():
        if r is None:
            mods[m] = {"used": False, "age": None, "weight": 0.0}
            continue
        age = t - r.t_capture
        fresh = age <= staleness
        p = softmax(r.logits[0])
        k = int(np.argmax(p))
        mods[m] = {"used": fresh, "fresh": fresh, "age": round(age, 4), "weight": 0.0, "label": classes[k], "confidence": round(float(p[k]), 4), "logits": [round(float(v), 4) for v in r.logits[0]]}
        logits[m] = r.logits
        avail[m] = np.array([fresh])
        if reliability_threshold is not None and getattr(r, "reliability", None) is not None:
            rel[m] = np.array([r.reliability])
            mods[m]["reliability"] = round(float(r.reliability), 4)
            mods[m]["used"] = fresh and r.reliability >= weighting["threshold"]
    fresh_mods = [m for m in logits if avail[m][0]]
    used = [m for m in fresh_mods if mods[m]["used"]]
    out = {"decision": bool(used), "label": None, "confidence": None, "used": used, "modalities": mods, "sensors": {k: dict(v) for k, v in (sensors or {}).items()}}
    if not used:
        out["reason"] = "all sensors degraded" if fresh_mods else ("no fresh modality" if logits else "no result yet")
        return out
    fused, w = fuse(logits, rule=rule, available=avail, reliability=rel or None, **(weighting if rel else {}))
    for m in logits:
        mods[m]["weight"] = round(float(w[m][0]), 4)
    p = softmax(fused[0])
    k = int(np.argmax(p))
    out.update(label=classes[k], class_index=k, confidence=round(float(p[k]), 4))
    return out


def mark_degraded(rec: dict, tracker: DegradedTracker, t: float, threshold: Optional[float]) -> None:
    """Feed ``tracker`` this decision's per-modality reliability and report a live
    ("ok") sensor that it holds degraded as ``"degraded"`` in ``rec["sensors"]``."""
    if threshold is None:
        return
    for m, d in rec["modalities"].items():
        sensor = SENSOR_OF.get(m, m)
        st = rec["sensors"].get(sensor)
        if st is not None and st.get("state") != "ok":
            tracker.interrupt(t, sensor)  # not live: neither degraded nor ok is known
            continue
        r = d.get("reliability")
        degraded = tracker.update(t, sensor, None if not d.get("fresh") or r is None else r < threshold)
        if degraded and st is not None:
            st["state"] = DEGRADED


class FusionLoop:
    """Thread: on each fresh result (at most ``rate`` per second), or after 1/rate s
    without one, ``decide`` and hand the record to ``emit``."""

    def __init__(
        self,
        latest: Callable[[], dict],
        sensors: Callable[[], dict],
        classes: list,
        rate: float,
        staleness: float,
        emit: Callable[[dict, dict], None],
        stop: threading.Event,
        rule: str = "entropy",
        reliability_threshold: Optional[float] = None,
        degraded_hold: float = 1.0,
        weighting: Optional[Mapping[str, float]] = None,
    ) -> None:
        self._latest, self._sensors, self.classes = latest, sensors, classes
        self.rate, self.staleness, self.rule = rate, staleness, rule
        self.reliability_threshold = reliability_threshold
        self.weighting = weighting
        self.degraded = DegradedTracker(degraded_hold)
        self._emit = emit
        self._stop = stop
        self.decisions = 0
        self.no_decisions = 0
        self.heartbeats = 0  # decisions made because no new result arrived for 1/rate s
        self.overruns = 0  # decisions that took longer than 1/rate
        self._fresh = threading.Event()
        self._pending: set = set()  # modalities with a result not yet decided on
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="fusion", daemon=True)

    def use(self, rule: str, reliability) -> None:
        """Fuse by ``rule`` with ``reliability`` (an edge_mla.reliability.Reliability,
        or None for a folder without one) from the next decision on: at start and
        after an engine swap."""
        self.rule = rule
        self.reliability_threshold = reliability.threshold if reliability is not None else None
        self.weighting = reliability.weighting if reliability is not None else None

    def start(self) -> None:
        self._thread.start()

    def notify(self, modality: str = "") -> None:
        """A worker published a new result (called from the worker's thread)."""
        with self._pending_lock:
            self._pending.add(modality)
        self._fresh.set()

    def _run(self) -> None:
        period = 1.0 / self.rate
        caps: dict = {}  # modality -> FlowLimiter over the times its results triggered a decision
        while not self._stop.is_set():
            fresh = self._fresh.wait(period)
            if self._stop.is_set():
                break
            t = now()
            if fresh:
                with self._pending_lock:
                    pending, self._pending = self._pending, set()
                    self._fresh.clear()
                latest = self._latest()
                # the cap counts capture times, as the workers' limit does: a result
                # the worker let through is never held here by engine or batch jitter
                due = [m for m in pending if latest.get(m) is not None and caps.setdefault(m, FlowLimiter(self.rate)).admit(latest[m].t_capture)]
                if not due:
                    continue  # rate cap: these results join the next decision
            else:
                self.heartbeats += 1
                latest = None
            self.tick(latest)
            if now() - t > period:
                self.overruns += 1  # deciding took longer than the rate allows

    def tick(self, results: Optional[dict] = None) -> dict:
        """Decide on ``results`` (default: the latest) and emit the record."""
        t = now()
        results = self._latest() if results is None else results
        rec = decide(results, self.classes, self.staleness, t, self._sensors(), self.rule, self.reliability_threshold, self.weighting)
        mark_degraded(rec, self.degraded, t, self.reliability_threshold)
        t_fused = now()
        if rec["decision"]:
            self.decisions += 1
        else:
            self.no_decisions += 1
        self._emit(rec, {"t_fuse": t, "t_fused": t_fused, "results": results})
        return rec

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
