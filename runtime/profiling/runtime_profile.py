"""Profile the real streaming runtime: record (or take) a replay session, run the
runtime on it in real time, and report latency per stage, drops, CPU and memory,
next to the bare engine time measured in the same process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class RuntimeProfileConfig:
    engines: Path
    camera: Optional[str] = None  # default: a recorded replay session
    mic: Optional[str] = None
    duration: float = 20.0
    precision: Optional[str] = None
    dataset: str = "demo"
    data_dir: Optional[str] = None
    workdir: Optional[Path] = None  # where the replay is recorded (default: a temp folder)
    fps: int = 30

    def __post_init__(self) -> None:
        from edge_mla.validate import number

        self.duration = number(self.duration, "duration", lo=0, lo_open=True, hi=86400)
        self.fps = number(self.fps, "fps", lo=1, hi=240, integer=True)


def profile_runtime(cfg: RuntimeProfileConfig) -> dict:
    import tempfile

    from edge_mla.runtime.app import run_for
    from edge_mla.runtime.config import RunConfig
    from edge_mla.runtime.stats import STAGES

    overrides = dict(engines=Path(cfg.engines), precision=cfg.precision, json_stdout=False, console=False)
    replay = None
    if cfg.camera is None and cfg.mic is None:
        from edge_mla.runtime.replay.recorder import record_session, session_config
        from edge_mla.runtime.replay.script import Script

        work = Path(cfg.workdir or tempfile.mkdtemp(prefix="edge-mla-profile-"))
        seg = 2.0
        script = Script(segments=max(int(np.ceil(cfg.duration / seg)), 1), segment_seconds=seg, fps=cfg.fps)
        session = record_session(script, work / "replay", dataset=cfg.dataset, data_dir=cfg.data_dir)
        run_cfg = session_config(session, **overrides)
        replay = str(session.root)
    else:
        run_cfg = RunConfig(camera=cfg.camera or "none", mic=cfg.mic or "none", **overrides)
    report = run_for(run_cfg, duration=cfg.duration)
    stages = report.stages
    per_stage: dict = {}
    for m in sorted({s["modality"] for s in stages}):
        rows = np.array([[s[k] for k in STAGES] for s in stages if s["modality"] == m], np.float64)
        gaps = np.diff(rows, axis=1) * 1000.0
        e2e = (rows[:, -1] - rows[:, 0]) * 1000.0
        eng = gaps[:, STAGES.index("engine")]
        per_stage[m] = {
            "n": int(len(rows)),
            **{f"{STAGES[i]}->{STAGES[i + 1]}": _pct(gaps[:, i]) for i in range(len(STAGES) - 1)},
            "end_to_end": _pct(e2e),
            "overhead (e2e - engine)": _pct(e2e - eng),
            "e2e_over_engine_p50": float(np.percentile(e2e, 50) / max(np.percentile(eng, 50), 1e-9)),
            "_raw": {"engine": eng.tolist(), "end_to_end": e2e.tolist()},
        }
    return {
        "replay": replay,
        "duration_s": report.seconds,
        "decisions": report.decisions,
        "no_decisions": report.no_decisions,
        "workers": report.workers,
        "sensors": report.sensors,
        "stages": per_stage,
        "cpu_percent": report.cpu_percent,
        "peak_rss_mb": report.peak_rss_mb,
        "fusion_overruns": report.fusion_overruns,
    }


def _pct(a: np.ndarray) -> dict:
    if a.size == 0:
        return {}
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}
