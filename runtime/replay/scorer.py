"""score: compare the runtime's JSON lines with a session's ground truth.

A decision at runtime time ``t`` (its "t" field, seconds since the runtime
started; the replay sources start their media clock at the same moment, within a
few ms, and ``offset`` corrects any known difference) is scored against the label
shown/spoken at media time ``t``. The first ``settle`` seconds after each label
change are not scored: a 1 s audio window needs that long to hold the new word,
and it is the same for every method compared.

Returns a dict:
  overall            n, accuracy (fused; "no decision" counts as wrong), no_decision rate,
                     and the same accuracy for each modality alone (its own top-1 in
                     the line; missing or stale counts as wrong)
  spans              per span kind ("clean" or a fault kind): the same figures
  recovery           per "gone" fault: seconds from the sensor's return (span end) to
                     the first decision that uses that modality again, and to the
                     sensor state being "ok" again
  degraded           per live fault in ``degrading`` (default: the noisy mic and the
                     smeared camera; ``script.degrading_faults`` adds the fast paths'
                     faults when they are off): seconds to "degraded", back to "ok",
                     and the share of the span reported degraded
"""

from __future__ import annotations

import json
from pathlib import Path
import numpy as np

from edge_mla.runtime.graph import SENSOR_OF
from edge_mla.runtime.replay.script import DEGRADING_FAULTS, MODALITY_OF_FAULT


def _load_lines(jsonl) -> list:
    if isinstance(jsonl, (list, tuple)):
        return list(jsonl)
    return [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]


def _figures(rows: list, modalities: list) -> dict:
    n = len(rows)
    if not n:
        return {"n": 0}
    fused = np.mean([r["label"] == r["_truth"] for r in rows])
    out = {"n": n, "accuracy": round(float(fused), 4), "no_decision": round(float(np.mean([not r["decision"] for r in rows])), 4)}
    for m in modalities:
        # a modality alone: its own top-1 whenever it had a fresh result (gated out by reliability or not)
        out[f"{m}_only"] = round(float(np.mean([(r["modalities"].get(m, {}).get("fresh", r["modalities"].get(m, {}).get("used")) and r["modalities"][m].get("label") == r["_truth"]) for r in rows])), 4)
    return out


def score(jsonl, truth, settle: float = 1.0, offset: float = 0.0, degrading: tuple = DEGRADING_FAULTS) -> dict:
    """``jsonl``: path of the runtime's JSON lines (or the parsed list); ``truth``:
    truth.json path or dict. See the module docstring for the result."""
    if not isinstance(truth, dict):
        truth = json.loads(Path(truth).read_text())
    lines = _load_lines(jsonl)
    segs = truth["segments"]
    starts = np.array([s["start"] for s in segs])
    faults = truth["faults"]
    modalities = sorted({m for r in lines for m in r.get("modalities", {})})
    scored, spans = [], {}
    for r in lines:
        t = float(r["t"]) + offset
        i = int(np.searchsorted(starts, t, side="right")) - 1
        if i < 0 or t >= segs[-1]["end"]:
            continue
        if t - segs[i]["start"] < settle:
            continue
        kinds = [f["kind"] for f in faults if f["start"] <= t < f["end"]]
        # skip the settle time after a fault ends too (the sensor is coming back)
        if not kinds and any(0 <= t - f["end"] < settle for f in faults):
            continue
        r = dict(r, _truth=segs[i]["label"])
        scored.append(r)
        for k in kinds or ["clean"]:
            spans.setdefault(k, []).append(r)
    result = {"overall": _figures(scored, modalities), "spans": {k: _figures(v, modalities) for k, v in sorted(spans.items())}, "recovery": []}
    times = np.array([float(r["t"]) + offset for r in lines])
    for f in faults:
        if not f["kind"].endswith("_gone"):
            continue
        m = MODALITY_OF_FAULT[f["kind"]]
        sensor = SENSOR_OF[m]
        after = [r for r, t in zip(lines, times) if t >= f["end"]]
        used_at = next((float(r["t"]) + offset for r in after if m in r.get("used", [])), None)
        ok_at = next((float(r["t"]) + offset for r in after if r.get("sensors", {}).get(sensor, {}).get("state") == "ok"), None)
        lost_seen = any(r.get("sensors", {}).get(sensor, {}).get("state") not in ("ok", None) for r, t in zip(lines, times) if f["start"] <= t < f["end"])
        result["recovery"].append(
            {
                "fault": f["kind"],
                "start": f["start"],
                "end": f["end"],
                "marked_lost": bool(lost_seen),
                "used_again_after_s": None if used_at is None else round(used_at - f["end"], 3),
                "sensor_ok_after_s": None if ok_at is None else round(ok_at - f["end"], 3),
            }
        )
    result["degraded"] = [_degraded_timing(f, lines, times) for f in faults if f["kind"] in degrading]
    return result


def _degraded_timing(f: dict, lines: list, times: np.ndarray) -> dict:
    """For a live-but-broken sensor span: seconds from its start to the first line
    reporting the sensor "degraded", and from its end to "ok" again."""
    sensor = SENSOR_OF[MODALITY_OF_FAULT[f["kind"]]]

    def state(r):
        return r.get("sensors", {}).get(sensor, {}).get("state")

    deg_at = next((t for r, t in zip(lines, times) if f["start"] <= t < f["end"] + 5 and state(r) == "degraded"), None)
    ok_at = next((t for r, t in zip(lines, times) if t >= f["end"] and state(r) == "ok"), None)
    return {
        "fault": f["kind"], "start": f["start"], "end": f["end"],
        "degraded_after_s": None if deg_at is None else round(float(deg_at - f["start"]), 3),
        "ok_after_s": None if ok_at is None else round(float(ok_at - f["end"]), 3),
        "degraded_fraction": round(float(np.mean([state(r) == "degraded" for r, t in zip(lines, times) if f["start"] <= t < f["end"]] or [0.0])), 4),
    }
