"""Where decisions go: JSON lines (stdout or a file), a readable console line, and
the summary printed on exit.

Every JSON line is flushed as it is written, so a consumer tailing the file (or a
killed runtime) never loses a finished decision. One line (abridged)::

    {"time": 1795765718.803,          # wall clock (epoch seconds) of the decision
     "t": 12.327,                     # seconds since the runtime started (monotonic)
     "decision": true, "label": "3", "class_index": 3, "confidence": 0.97,
     "used": ["image", "audio"],      # modalities fused into this decision
     "modalities": {"image": {"used": true, "age": 0.02, "weight": 0.71, "label": "3",
                              "confidence": 0.99, "logits": [...]},
                    "audio": {"used": false, "age": 1.8, "weight": 0.0, ...}},   # stale
     "sensors": {"camera": {"state": "ok", "since": 8.1, "reconnects": 1, "failures": 3, "overflows": 0},
                 "mic": {"state": "lost", ...}},
     "engines": "dbd2115376425968"}  # checksum of the running engine folder (changes on a hot swap)

With no fresh modality: ``"decision": false, "label": null, "reason": "no fresh modality"``.
Sensor states: starting, ok, lost (reconnecting), frozen (identical frames), blank (blank
frames), ended, stopped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Optional


class JsonLinesOutput:
    """One JSON object per decision; ``path`` None writes to stdout."""

    def __init__(self, path: Optional[Path] = None, stream: Optional[IO] = None) -> None:
        self.path = path
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "w", buffering=1)
        else:
            self._f = stream or sys.stdout
        self.lines = 0

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._f.flush()
        self.lines += 1

    def close(self) -> None:
        try:
            self._f.flush()
        except ValueError:
            pass
        if self.path is not None:
            self._f.close()


def console_line(rec: dict) -> str:
    """e.g. ``08:01:02.345  3 (0.91)  image w=0.72 age=0.05  audio w=0.28 age=0.20  | camera ok  mic lost``"""
    ts = time.strftime("%H:%M:%S", time.localtime(rec.get("time", time.time()))) + f".{int((rec.get('time', 0) % 1) * 1000):03d}"
    head = f"{rec['label']} ({rec['confidence']:.2f})" if rec["decision"] else f"no decision ({rec.get('reason', '')})"
    parts = []
    for m, d in rec["modalities"].items():
        if d.get("age") is None:
            parts.append(f"{m} -")
        else:
            parts.append(f"{m}{'' if d['used'] else '(stale)'} {d.get('label', '-')} w={d['weight']:.2f} age={d['age']:.2f}")
    sensors = "  ".join(f"{k} {v['state']}" for k, v in rec.get("sensors", {}).items())
    return f"{ts}  {head:<22}  {'  '.join(parts)}  | {sensors}"


class ConsoleOutput:
    def __init__(self, stream: Optional[IO] = None) -> None:
        self._f = stream or sys.stderr

    def write(self, record: dict) -> None:
        print(console_line(record), file=self._f, flush=True)

    def close(self) -> None:
        pass


def format_summary(report) -> str:
    """The few lines printed on exit: counts, drops, sensors, latency, resources."""
    r = report
    lines = [
        f"ran {r.seconds:.1f}s: {r.decisions} decisions, {r.no_decisions} no-decision, {r.lines} lines written",
    ]
    for m, w in r.workers.items():
        lines.append(f"  {m}: {w['results']} engine runs ({w['rate']:.1f}/s), {w['dropped']} inputs dropped, {w['errors']} errors")
    for s, st in r.sensors.items():
        lines.append(f"  {s}: {st['state']}, {st['reconnects']} reconnects, {st['failures']} failures, {st['overflows']} overflows")
    lat = r.latency
    for m, d in lat.items():
        if d.get("n"):
            lines.append(
                f"  latency {m}: capture->output p50 {d['e2e_p50_ms']:.1f} ms p99 {d['e2e_p99_ms']:.1f} ms; engine p50 {d['engine_p50_ms']:.2f} ms; overhead p50 {d['overhead_p50_ms']:.1f} ms p99 {d['overhead_p99_ms']:.1f} ms (n={d['n']})"
            )
    lines.append(f"  cpu {r.cpu_percent:.0f}% of one core, peak RSS {r.peak_rss_mb:.0f} MB")
    f = getattr(r, "factory", None) or {}
    if f.get("mqtt"):
        q = f["mqtt"]
        lines.append(f"  mqtt: {q['published']} acknowledged, {q['spool_depth']} left in the spool, {q['spool_dropped']} dropped from a full spool")
    if f.get("clips"):
        c = f["clips"]
        lines.append(f"  clips: {c['written']} written, {c['dropped']} dropped, {c['deleted']} deleted by the disk budget")
    if f.get("swaps", {}).get("ok") or f.get("swaps", {}).get("refused"):
        lines.append(f"  engine swaps: {f['swaps']['ok']} done, {f['swaps']['refused']} refused; running {f['engines']}")
    return "\n".join(lines)
