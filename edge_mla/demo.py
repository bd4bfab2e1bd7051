"""The end-to-end demo on built-in data: the whole path a team takes, in one command.

data (demo set) -> train (MLA, tiny) -> export (--int8 auto) -> record a replay with
scripted sensor faults -> run the streaming runtime on it in real time -> score ->
report + timeline picture. Every step is the library call the CLI makes, so the
demo exercises the real code, not a shortcut.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.validate import not_empty_path, not_over_inputs, numbers, writable_location

log = logging.getLogger(__name__)


# Every numeric option and its valid range (edge_mla.validate.number's keywords).
NUMERIC = {
    "epochs": dict(lo=1, hi=10_000, integer=True),
    "limit": dict(lo=1, integer=True, optional=True),
    "batch_size": dict(lo=1, hi=65536, integer=True),
    "segments": dict(lo=2, hi=100_000, integer=True),
    "segment_seconds": dict(lo=0, lo_open=True, hi=3600),
    "calib_size": dict(lo=1, integer=True),
    "seed": dict(lo=0, hi=2**32 - 1, integer=True),
    "latency_repeats": dict(lo=1, integer=True),
}


@dataclass
class DemoConfig:
    out: Path = Path("demo-out")
    epochs: int = 8
    limit: int | None = None  # training pairs (None: all of the demo set)
    batch_size: int = 64
    segments: int = 30  # replay: labelled segments ...
    segment_seconds: float = 3.0  # ... of this length (30 x 3 s = 90 s in real time)
    int8: str = "auto"
    calib_size: int = 300
    seed: int = 0
    force: bool = False
    progress: bool = True
    latency_repeats: int = 200

    def __post_init__(self) -> None:
        not_empty_path(self.out, "out")
        self.out = Path(self.out)
        numbers(self, NUMERIC)
        if self.out.exists() and not self.out.is_dir():
            raise EdgeMlaError(f"--out {self.out}: exists and is not a folder")
        if self.out.is_dir() and any(self.out.iterdir()) and not self.force:
            raise EdgeMlaError(f"{self.out}: demo folder exists and is not empty (use --force to redo the demo)")
        writable_location(self.out / "report.json", "--out")
        from edge_mla.data.demo import cache_dir

        not_over_inputs(self.out, {"the demo data cache": cache_dir()})


def run_demo(cfg: DemoConfig, say=print) -> dict:
    """Run every step; ``say`` receives one line per step for the user. Returns the
    report dict that is also written to OUT/report.json."""
    out = cfg.out
    # The steps write into OUT itself (the manifest and the report name these paths),
    # so instead of a staging folder the old demo (--force) is moved aside and removed
    # only at the end; a failure or Ctrl-C removes the half-made one and puts it back.
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        out.mkdir(parents=True, exist_ok=True)
        result = _run_steps(cfg, out, say)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_symlink() or not old.is_dir():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    return result


def _run_steps(cfg: DemoConfig, out: Path, say) -> dict:
    from edge_mla.data.demo import build_demo, demo_path
    from edge_mla.export.pipeline import ExportConfig, export_run
    from edge_mla.runtime.app import run_for
    from edge_mla.runtime.replay.recorder import record_session, session_config
    from edge_mla.runtime.replay.scorer import score
    from edge_mla.runtime.replay.script import default_script
    from edge_mla.train import TrainConfig, train

    timings: dict = {}

    def step(name: str):
        timings[name] = time.perf_counter()
        say(f"[{len(timings)}/6] {name}")

    def done(name: str):
        timings[name] = round(time.perf_counter() - timings[name], 1)

    step("demo dataset (scikit-learn digits + eSpeak NG synthetic speech)")
    if not demo_path().is_file():
        build_demo(demo_path(), progress=cfg.progress)
    say(f"      {demo_path()}")
    done("demo dataset (scikit-learn digits + eSpeak NG synthetic speech)")

    step("train MLA (tiny preset)")
    run_dir = train(TrainConfig(method="mla", preset="tiny", dataset="demo", epochs=cfg.epochs, limit=cfg.limit, batch_size=cfg.batch_size, seed=cfg.seed, out=str(out / "run"), force=True, progress=cfg.progress))
    from edge_mla.evaluate import evaluate_run

    test = evaluate_run(str(run_dir), None, "test")
    (run_dir / "test.json").write_text(json.dumps(test, indent=2) + "\n")
    say(f"      test accuracy: image {test['image']:.1%}, audio {test['audio']:.1%}, fused {test['fused']:.1%}")
    done("train MLA (tiny preset)")

    step("export engines (ONNX FP32 + INT8, keep the better per engine)")
    exp = export_run(ExportConfig(run_dir=run_dir, out=out / "engines", int8=cfg.int8, calib_size=cfg.calib_size, force=True, progress=cfg.progress, latency_repeats=cfg.latency_repeats))
    say("      " + exp.table.replace("\n", "\n      "))
    done("export engines (ONNX FP32 + INT8, keep the better per engine)")

    step("record a replay session with sensor faults")
    script = default_script(cfg.segments, cfg.segment_seconds)
    script.seed = cfg.seed
    session = record_session(script, out / "replay", dataset="demo")
    say(f"      {session.video.name} + {session.audio.name}, {script.duration:.0f} s, faults: " + ", ".join(f"{f.kind} {f.start:.0f}-{f.end:.0f}s" for f in script.faults))
    done("record a replay session with sensor faults")

    step(f"run the streaming runtime on the replay in real time ({script.duration:.0f} s)")
    jsonl = out / "runtime.jsonl"
    report = run_for(session_config(session, engines=out / "engines", out=jsonl, json_stdout=False), duration=script.duration)
    done(f"run the streaming runtime on the replay in real time ({script.duration:.0f} s)")

    step("score and draw the timeline")
    scores = score(jsonl, session.truth_path)
    lines = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
    weights = _weights_per_span(lines, session.truth)
    plot_timeline(lines, session.truth, out / "timeline.png")
    done("score and draw the timeline")

    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "test_accuracy": {k: test[k] for k in ("image", "audio", "fused", "fused_mean", "image_black", "audio_silence", "audio_noise")},
        "engines": exp.chosen,
        "export_gate": exp.gate,
        "replay": scores,
        "weights_per_span": weights,
        "latency": report.latency,
        "cpu_percent": report.cpu_percent,
        "peak_rss_mb": report.peak_rss_mb,
        "workers": report.workers,
        "seconds_per_step": {k: v for k, v in timings.items()},
        "artefacts": {"run": str(run_dir), "engines": str(out / "engines"), "replay": str(session.root), "runtime_jsonl": str(jsonl), "timeline": str(out / "timeline.png")},
    }
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "report.md").write_text(format_report(result) + "\n")
    return result


def _span_kind(t: float, faults: list) -> str:
    kinds = [f["kind"] for f in faults if f["start"] <= t < f["end"]]
    return "+".join(sorted(kinds)) if kinds else "clean"


def _weights_per_span(lines: list, truth: dict) -> dict:
    acc: dict = {}
    for r in lines:
        kind = _span_kind(float(r["t"]), truth["faults"])
        for m, v in r.get("modalities", {}).items():
            for key in ("overall", kind):
                acc.setdefault(key, {}).setdefault(m, []).append(float(v.get("weight") or 0.0))
    return {k: {m: round(float(np.mean(v)), 3) for m, v in d.items()} for k, d in acc.items()}


def format_report(r: dict) -> str:
    rep = r["replay"]
    lines = ["# edge-mla demo report", ""]
    ta = r["test_accuracy"]
    lines.append(f"Test split (offline, PyTorch): image {ta['image']:.1%}, audio {ta['audio']:.1%}, fused (entropy) {ta['fused']:.1%}, fused (mean) {ta['fused_mean']:.1%}.")
    lines.append("Engines shipped: " + ", ".join(f"{m} {p}" for m, p in r["engines"].items()) + ".")
    lines.append("")
    lines.append("Replay through the streaming runtime (accuracy of fused decisions; 'no decision' counts as wrong):")
    lines.append("")
    lines.append("| span | decisions | fused accuracy | image alone | audio alone | mean weight image | mean weight audio |")
    lines.append("|---|---|---|---|---|---|---|")
    spans = {"overall": rep.get("overall", {}), **rep.get("spans", {})}
    for name, s in spans.items():
        w = r["weights_per_span"].get(name, {})
        lines.append(f"| {name} | {s.get('n', 0)} | {s.get('accuracy', float('nan')):.1%} | {s.get('image_only', float('nan')):.1%} | {s.get('audio_only', float('nan')):.1%} | {w.get('image', float('nan')):.2f} | {w.get('audio', float('nan')):.2f} |")
    rec = rep.get("recovery", [])
    if rec:
        lines.append("")
        lines.append("Recovery after a sensor returns: " + "; ".join(
            f"{r['fault']} ({r['start']:.0f}-{r['end']:.0f} s): marked lost {'yes' if r['marked_lost'] else 'no'}, "
            f"sensor ok again after {r['sensor_ok_after_s']} s, used in fusion again after {r['used_again_after_s']} s" for r in rec))
    lines.append("")
    lines.append("Latency per modality (capture -> fused output, ms): " + "; ".join(
        f"{m}: e2e p50 {v['e2e_p50_ms']:.1f} / p99 {v['e2e_p99_ms']:.1f}, engine p50 {v['engine_p50_ms']:.2f}, overhead p50 {v['overhead_p50_ms']:.1f}" for m, v in r["latency"].items()))
    lines.append(f"CPU during the replay {r['cpu_percent']:.0f}% of one core; peak RSS {r['peak_rss_mb']:.0f} MB of the demo process, torch and training included (the runtime alone: BENCHMARKS.md).")
    lines.append("")
    lines.append("Seconds per step: " + ", ".join(f"{k.split(' (')[0]} {v}" for k, v in r["seconds_per_step"].items()))
    lines.append("")
    lines.append("Artefacts: " + ", ".join(f"{k} {v}" for k, v in r["artefacts"].items()))
    return "\n".join(lines)


def plot_timeline(lines: list, truth: dict, path: Path) -> None:
    """Ground truth vs prediction, the two modality weights, and sensor states."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [s["label"] for s in truth["segments"]]
    index = {c: i for i, c in enumerate(sorted(set(classes), key=lambda c: (len(c), c)))}
    t = np.array([float(r["t"]) for r in lines])
    fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]})
    ax = axes[0]
    for s in truth["segments"]:
        ax.hlines(int(s["class_index"]), s["start"], s["end"], colors="k", linewidth=3, label="truth" if s is truth["segments"][0] else None)
    pred_t = [float(r["t"]) for r in lines if r.get("decision")]
    pred = [int(r["label"]) if str(r["label"]).isdigit() else index.get(r["label"], -1) for r in lines if r.get("decision")]
    ax.scatter(pred_t, pred, s=6, c="tab:red", label="fused prediction", zorder=3)
    nd = [float(r["t"]) for r in lines if not r.get("decision")]
    ax.scatter(nd, [-1] * len(nd), s=6, c="grey", marker="x", label="no decision")
    ax.set_ylabel("class")
    ax.set_yticks(range(-1, 10))
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    for f in truth["faults"]:
        for a in axes:
            a.axvspan(f["start"], f["end"], color="orange", alpha=0.12)
        axes[0].text((f["start"] + f["end"]) / 2, 9.4, f["kind"], ha="center", fontsize=7)
    ax = axes[1]
    for m, colour in (("image", "tab:blue"), ("audio", "tab:green")):
        ax.plot(t, [float(r["modalities"].get(m, {}).get("weight") or 0.0) for r in lines], colour, label=f"{m} weight", linewidth=1)
    ax.set_ylabel("fusion weight")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="upper right", fontsize=7)
    ax = axes[2]
    for row, sensor in enumerate(("camera", "mic")):
        ok = [1.0 if (r.get("sensors", {}).get(sensor, {}).get("state") == "ok") else 0.0 for r in lines]
        ax.fill_between(t, row, row + 0.8 * np.array(ok), step="post", color=["tab:blue", "tab:green"][row], alpha=0.7)
    ax.set_yticks([0.4, 1.4])
    ax.set_yticklabels(["camera ok", "mic ok"])
    ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
