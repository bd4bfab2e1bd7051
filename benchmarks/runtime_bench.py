"""Runtime benchmark: a replayed session with faults through `edge_mla.runtime`.

Measures, in one run:
  - accuracy per span (clean, camera gone, mic gone, black frames, frozen frames,
    mic silent), fused vs each modality alone, time to recover after a sensor returns;
  - latency: capture timestamp -> fused output written, engine time, and the
    runtime's overhead (the difference), p50/p99 per modality, plus the mean of each
    stage gap;
  - process CPU and peak RSS while decoding 30 fps video + 48 kHz audio.

The runtime runs in a child process (only the runtime's imports, like a device);
recording the session and scoring happen in this process.

    .venv/bin/python benchmarks/runtime_bench.py --engines ENG --out bench-out/runtime
    (without --engines: trains + exports the tiny MLA model on the demo dataset first)

Writes OUT/result.json and OUT/runtime.md (the section for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_engines(out: Path, epochs: int) -> Path:
    exe = ROOT / ".venv" / "bin" / "edge-mla"
    run = out / "train-run"
    eng = out / "engines"
    if not (eng / "manifest.json").is_file():
        subprocess.run([str(exe), "train", "--method", "mla", "--preset", "tiny", "--dataset", "demo", "--epochs", str(epochs), "--no-progress", "--out", str(run), "--force"], check=True)
        subprocess.run([str(exe), "export", str(run), "--out", str(eng), "--int8", "on", "--dataset", "demo", "--no-progress", "--force"], check=True)
    return eng


CHILD = r"""
import json, sys
from edge_mla.runtime import run_for
from edge_mla.runtime.outputs import JsonLinesOutput
from edge_mla.runtime.replay.recorder import load_session, session_config
a = json.loads(sys.argv[1])
s = load_session(a["session"])
cfg = session_config(s, engines=a["engines"], precision=a["precision"], rate=a["rate"], blank_threshold=a["blank_threshold"], silence_threshold=a["silence_threshold"], json_stdout=False)
rep = run_for(cfg, outputs=[JsonLinesOutput(a["jsonl"], mode="overwrite")])
d = rep.to_dict()
json.dump(d, open(a["report"], "w"))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", help="engine folder (default: train + export the tiny demo model into OUT)")
    ap.add_argument("--out", default="bench-out/runtime")
    ap.add_argument("--train-epochs", type=int, default=4, help="epochs of the tiny demo model trained when --engines is not given "
                    "(2 before level and voice augmentation; with it 2 leave the audio encoder at 40%%)")
    ap.add_argument("--session", help="reuse a session folder recorded by an earlier run (default: record OUT/session)")
    ap.add_argument("--segments", type=int, default=30)
    ap.add_argument("--segment-seconds", type=float, default=4.0)
    ap.add_argument("--frame-size", default="640x480")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--precision", choices=["fp32", "int8"], default=None)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--blank-threshold", type=float, default=8.0, help="0 turns the blank-frame check off (to show what entropy fusion alone does)")
    ap.add_argument("--silence-threshold", type=float, default=0.002, help="0 turns the silent-window check off (the learned reliability signal alone)")
    ap.add_argument("--degraded", action="store_true", help="the degraded-sensor session instead: clean spans around a noisy-mic and a smeared-camera span (issue 8)")
    args = ap.parse_args()

    from edge_mla.runtime.replay import default_script, degraded_script, record_session, score
    from edge_mla.runtime.replay.script import degrading_faults

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engines = Path(args.engines) if args.engines else make_engines(out, args.train_epochs)
    w, h = (int(v) for v in args.frame_size.split("x"))
    script = (degraded_script if args.degraded else default_script)(args.segments, args.segment_seconds)
    script.frame_size, script.fps = (w, h), args.fps
    t = time.time()
    if args.session:
        from edge_mla.runtime.replay import load_session

        session = load_session(args.session)
        script.segments = len(session.truth["segments"])
    else:
        session = record_session(script, out / "session")
    record_s = time.time() - t
    jsonl, report_path = out / "run.jsonl", out / "report.json"
    child_args = {"session": str(session.root), "engines": str(engines), "precision": args.precision, "rate": args.rate, "blank_threshold": args.blank_threshold, "silence_threshold": args.silence_threshold, "jsonl": str(jsonl), "report": str(report_path)}
    load_before = os.getloadavg()
    subprocess.run([sys.executable, "-c", CHILD, json.dumps(child_args)], check=True, cwd=str(ROOT))
    load_after = os.getloadavg()
    rep = json.loads(report_path.read_text())
    sc = score(jsonl, session.truth, degrading=degrading_faults(blank_threshold=args.blank_threshold, silence_threshold=args.silence_threshold))
    manifest = json.loads((engines / "manifest.json").read_text())
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)]},
        "command": " ".join([".venv/bin/python", "benchmarks/runtime_bench.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "session": {"seconds": script.duration, "fps": args.fps, "frame_size": [w, h], "audio_rate": script.audio_rate, "faults": session.truth["faults"], "record_seconds": round(record_s, 1)},
        "engines": {m: {"file": ((e.get("variants", {}).get(args.precision) or e) if args.precision else e)["file"]} for m, e in manifest["engines"].items()},
        "precision_flag": args.precision,
        "blank_threshold": args.blank_threshold,
        "silence_threshold": args.silence_threshold,
        "fusion": {k: v for k, v in manifest.get("fusion", {}).items() if k != "reliability"} | {"signal": manifest.get("fusion", {}).get("reliability", {}).get("signal")},
        "score": sc,
        "runtime": {k: rep.get(k) for k in ("seconds", "decisions", "no_decisions", "lines", "workers", "sensors", "latency", "cpu_percent", "peak_rss_mb", "fusion_overruns", "degraded")},
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    md = render(result)
    (out / "runtime.md").write_text(md)
    print(md)
    return 0


def render(r: dict) -> str:
    sc, rt = r["score"], r["runtime"]
    L = []
    L.append("## Runtime: replayed session with sensor faults\n")
    la = r["machine"].get("loadavg_1min_before_after")
    L.append(f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, shared with other jobs while measured" + (f" (1-min load average {la[0]} before, {la[1]} after the run)" if la else "") + f". Date: {r['date']}.")
    L.append(f"Command: `{r['command']}`\n")
    s = r["session"]
    L.append(
        f"Session: {s['seconds']:.0f} s recorded by `edge_mla.runtime.replay.record_session` from the demo test split "
        f"(unseen voices; synthetic speech), {s['frame_size'][0]}x{s['frame_size'][1]} MJPG at {s['fps']} fps + {s['audio_rate']} Hz WAV, "
        f"played in real time through the runtime's file sources (gone spans are outages: the sources fail to open/read and the real reconnect path runs). "
        f"Engines: " + ", ".join(f"{m} {e['file']}" for m, e in r["engines"].items()) + ". One run; every figure below comes from it.\n"
    )
    L.append("Faults: " + ", ".join(f"{f['kind']} {f['start']:.0f}-{f['end']:.0f} s" for f in s["faults"]) + ".\n")
    L.append("### Accuracy per span (decisions at 10 Hz; the first 1 s after each label change is not scored)\n")
    L.append("| span | decisions | fused | image alone | audio alone | no decision |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    names = {"clean": "both sensors", "camera_gone": "camera lost", "mic_gone": "mic lost", "camera_black": "black frames", "camera_frozen": "frozen frames", "mic_silent": "mic silent", "mic_noise": "mic noisy (alive)", "camera_smear": "camera smeared (alive)"}
    spans = dict(sc["spans"])
    rows = [("overall", sc["overall"])] + [(names.get(k, k), spans[k]) for k in ("clean", "camera_gone", "mic_gone", "camera_black", "camera_frozen", "mic_silent", "mic_noise", "camera_smear") if k in spans]
    for name, f in rows:
        if not f.get("n"):
            continue
        L.append(f"| {name} | {f['n']} | {f['accuracy']:.3f} | {f.get('image_only', 0):.3f} | {f.get('audio_only', 0):.3f} | {f['no_decision']:.3f} |")
    o = sc["overall"]
    best = max(o.get("image_only", 0), o.get("audio_only", 0))
    L.append(f"\nFused vs best single modality over the whole session: {o['accuracy']:.3f} vs {best:.3f} (x{o['accuracy'] / max(best, 1e-9):.2f}). "
             "\"Alone\" counts a modality's own top-1 in the same output lines, and counts it wrong when it was missing or stale, as a single-sensor runtime would be.\n")
    if sc.get("degraded"):
        L.append(f"Fusion: rule {r.get('fusion', {}).get('rule')}, reliability signal {r.get('fusion', {}).get('signal')}; blank threshold {r['blank_threshold']}, silence threshold {r.get('silence_threshold')}.\n")
        L.append("### Degraded sensors (alive but broken; with a fast path off, its fault too)\n")
        L.append("| fault | span | reported degraded after | ok again after | fraction of the span reported degraded |")
        L.append("| --- | --- | ---: | ---: | ---: |")
        for x in sc["degraded"]:
            L.append(f"| {x['fault']} | {x['start']:.0f}-{x['end']:.0f} s | {x['degraded_after_s']} s | {x['ok_after_s']} s | {x['degraded_fraction']:.2f} |")
        L.append("")
    L.append("### Time to recover after a sensor returns\n")
    L.append("| fault | span | marked lost | sensor ok again after | used in fusion again after |")
    L.append("| --- | --- | --- | ---: | ---: |")
    for x in sc["recovery"]:
        L.append(f"| {x['fault']} | {x['start']:.0f}-{x['end']:.0f} s | {'yes' if x['marked_lost'] else 'no'} | {x['sensor_ok_after_s']} s | {x['used_again_after_s']} s |")
    L.append("\n(Back-off doubles from 0.5 s up to 2 s while the sensor is away, so recovery is bounded by the back-off step at the moment it returns.)\n")
    L.append("### Latency: capture timestamp -> fused output written\n")
    L.append("| modality | results used | end-to-end p50 / p99 (ms) | engine p50 / p99 (ms) | overhead p50 / p99 (ms) | mean: wait for worker / preprocess / engine / wait for fusion tick / fuse+write (ms) |")
    L.append("| --- | ---: | ---: | ---: | ---: | --- |")
    for m, d in rt["latency"].items():
        g = d["mean_ms"]
        gaps = " / ".join(f"{g[k]:.2f}" for k in ("capture->preprocess", "preprocess->engine", "engine->done", "done->fused", "fused->output"))
        L.append(f"| {m} | {d['n']} | {d['e2e_p50_ms']:.1f} / {d['e2e_p99_ms']:.1f} | {d['engine_p50_ms']:.2f} / {d['engine_p99_ms']:.2f} | {d['overhead_p50_ms']:.1f} / {d['overhead_p99_ms']:.1f} | {gaps} |")
    L.append("\nOverhead = end-to-end minus engine time; it is dominated by waiting for the next fusion tick (10 Hz: up to 100 ms, on average half), "
             "and for audio by the hop (the window is taken when the hop timer fires, up to one audio block after the newest sample). "
             "Only results that a decision used are counted, each once (at its first use).\n")
    L.append("### Resources (the runtime process alone)\n")
    wk = rt["workers"]
    L.append(f"- CPU: {rt['cpu_percent']:.0f}% of one core on average ({rt['cpu_percent'] / 2:.0f}% of the 2-core machine) for {s['fps']} fps {s['frame_size'][0]}x{s['frame_size'][1]} MJPG decode + image engine on every new frame + audio engine every 0.25 s on a 1 s window; peak RSS {rt['peak_rss_mb']:.0f} MB.")
    L.append(f"- Work done: {wk['image'].get('frames', 0)} frames delivered, {wk['image']['results']} image engine runs, {wk['image'].get('limited', 0)} frames passed over by the --rate cap, {wk['image']['dropped']} frames dropped (replaced before the worker took them), "
             f"{wk['audio']['results']} audio engine runs, {wk['audio']['dropped']} audio hops missed; {rt['decisions']} decisions + {rt['no_decisions']} no-decision in {rt['seconds']:.1f} s; fusion ticks overrun: {rt['fusion_overruns']}.")
    L.append("- Sensors: " + "; ".join(f"{k} {v['reconnects']} reconnects, {v['failures']} failed reads/opens, {v['overflows']} overflows" for k, v in rt["sensors"].items()) + ".\n")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
