"""Sensor fault loops and a soak run of the streaming runtime (issue 11; a benchmark,
not a CI test).

  fault: a real capture device (a private PulseAudio daemon with a null sink, fed
         by paplay) and an HTTP MJPEG camera server; CYCLES times the camera server
         is stopped (unplugged) until the runtime reports it lost, held down, and
         restarted; then the same for the PulseAudio daemon (killed, restarted).
         Recovery time = replug -> the first decision that uses that modality again.
  soak:  a video file + WAV looped through the runtime for MINUTES; RSS, thread
         count and open file descriptors sampled every --sample seconds.

Both report decisions lost: every decision the fusion loop made (event-driven: on
fresh results, capped per modality at --rate, plus heartbeats; "no decision"
records included) must be a line in the output file; lines missing from the file
are counted as lost.

Engines: linear ONNX graphs with random weights (runtime/testing/tiny_engines.py):
this measures the runtime's plumbing (recovery, memory, fds), not accuracy.

    nice -n 10 .venv/bin/python benchmarks/fault_loop_bench.py fault --cycles 20 --out bench-out/fault
    nice -n 10 .venv/bin/python benchmarks/fault_loop_bench.py soak --minutes 25 --out bench-out/soak

Writes OUT/result.json and prints the figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.runtime_bench import cpu_model  # noqa: E402

log = logging.getLogger("fault_loop_bench")


class Recorder:
    """An output keeping (arrival time, used modalities, sensor states) per record."""

    def __init__(self) -> None:
        self.rows: list = []
        self._lock = threading.Lock()

    def write(self, rec: dict) -> None:
        row = (time.monotonic(), tuple(rec["used"]), {k: v["state"] for k, v in rec["sensors"].items()})
        with self._lock:
            self.rows.append(row)

    def close(self) -> None:
        pass

    def last(self):
        with self._lock:
            return self.rows[-1] if self.rows else None


def wait_until(pred, timeout: float, period: float = 0.02) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(period)
    return None


def percentile(xs: list, q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def lost_decisions(report, lines_in_file: int, rate: float) -> dict:
    """Decisions the fusion loop made vs lines the file really holds."""
    made = report.decisions + report.no_decisions
    return {
        "seconds": round(report.seconds, 1),
        "decisions_made": made,
        "per_second": round(made / max(report.seconds, 1e-9), 2),
        "lines_in_file": lines_in_file,
        "lines_reported": report.lines,
        "fusion_overruns": report.fusion_overruns,
        "lost": max(made - lines_in_file, 0),
    }


def noise_wav(path: Path, seconds: float, rate: int) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(str(path), x.astype(np.float32), rate, subtype="PCM_16")
    return path


def noise_frame_fn(size=(160, 120)):
    rng = np.random.default_rng(0)
    return lambda t: rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


def workspace(args, mode: str) -> tuple:
    """(output folder, scratch folder, engine folder) of one benchmark mode."""
    from edge_mla.runtime.testing.tiny_engines import build_tiny_engines

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{mode}-bench-"))
    return out, work, build_tiny_engines(work / "engines")


def fault(args) -> dict:
    from edge_mla.runtime import RunConfig, Runtime
    from edge_mla.runtime.outputs import JsonLinesOutput
    from edge_mla.runtime.testing.mjpeg import MjpegServer
    from edge_mla.runtime.testing.pulse import PulseNullSink

    out, work, engines = workspace(args, "fault")
    wav = noise_wav(work / "tone.wav", 30, 48000)
    recovery = {"camera": [], "mic": []}
    detect = {"camera": [], "mic": []}
    failures = []
    with PulseNullSink(work / "pulse") as pa, MjpegServer(noise_frame_fn(), fps=15) as srv:
        import sounddevice as sd

        sd._terminate()  # PortAudio must see this daemon (it enumerates at initialisation)
        sd._initialize()
        keep = threading.Event()
        keep.set()

        def keeper() -> None:  # paplay dies with the daemon; replay whenever it is gone
            p = None
            while keep.is_set():
                if p is None or p.poll() is not None:
                    pa._players = [q for q in pa._players if q.poll() is None]
                    p = pa.play(wav)
                time.sleep(0.2)

        kt = threading.Thread(target=keeper, daemon=True)
        kt.start()
        rec = Recorder()
        jsonl = out / "decisions.jsonl"
        cfg = RunConfig(engines=engines, camera=srv.url, mic="default", rate=args.rate, staleness=1.0, mic_timeout=1.0, camera_timeout=1.0, json_stdout=False)
        rt = Runtime(cfg, outputs=[rec, JsonLinesOutput(jsonl, mode="overwrite")])
        rt.start()
        t_start = time.monotonic()

        def state(sensor):
            r = rec.last()
            return None if r is None else r[2][sensor]

        def uses(mod):
            r = rec.last()
            return r is not None and mod in r[1]

        try:
            if wait_until(lambda: uses("image") and uses("audio"), 30) is None:
                raise SystemExit("the runtime never used both modalities; is PulseAudio working?")
            unplug = {"camera": srv.stop, "mic": pa.kill}
            replug = {"camera": srv.start, "mic": pa.start}
            modality = {"camera": "image", "mic": "audio"}
            for cycle in range(args.cycles):
                for sensor in ("camera", "mic"):
                    unplug[sensor]()
                    d = wait_until(lambda: state(sensor) != "ok", 15)
                    if d is None:
                        failures.append(f"cycle {cycle}: {sensor} never reported lost")
                    else:
                        detect[sensor].append(d)
                    time.sleep(args.hold)
                    replug[sensor]()
                    r = wait_until(lambda: uses(modality[sensor]) and state(sensor) == "ok", 30)
                    if r is None:
                        failures.append(f"cycle {cycle}: {sensor} did not recover within 30 s")
                    else:
                        recovery[sensor].append(r)
                    time.sleep(args.settle)
                log.info("cycle %d/%d: camera %.2fs mic %.2fs", cycle + 1, args.cycles, recovery["camera"][-1] if recovery["camera"] else -1, recovery["mic"][-1] if recovery["mic"] else -1)
        finally:
            rt.stop()
            report = rt.join()
            keep.clear()
            kt.join(2)
            pa.stop_players()
    wall = time.monotonic() - t_start
    res = {
        "mode": "fault", "cycles": args.cycles, "hold_s": args.hold, "wall_s": round(wall, 1), "cpu": cpu_model(),
        "recovery_s": {s: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v) if v else None} for s, v in recovery.items()},
        "detect_s": {s: {"p50": percentile(v, 50), "p99": percentile(v, 99)} for s, v in detect.items()},
        "decisions": lost_decisions(report, count_lines(jsonl), args.rate),
        "sensors": report.sensors, "failures": failures,
        "worker_errors": {m: w["errors"] for m, w in report.workers.items()},
    }
    return res


class ProcSampler(threading.Thread):
    """RSS, threads and open fds of this process every ``period`` s."""

    def __init__(self, period: float, extra=lambda: 0) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.extra = extra  # a fifth column: the runtime's stage records held
        import psutil

        self.proc = psutil.Process()
        self.period = period
        self.samples: list = []
        self.stop_evt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        self.samples.append((time.monotonic() - self.t0, self.proc.memory_info().rss / 2**20, self.proc.num_threads(), self.proc.num_fds(), self.extra()))

    def run(self) -> None:
        self.sample()
        while not self.stop_evt.wait(self.period):
            self.sample()


def slope_mb_per_hour(samples: list, skip_s: float) -> float | None:
    pts = [(s[0], s[1]) for s in samples if s[0] >= skip_s]
    if len(pts) < 3:
        return None
    t, r = np.asarray(pts).T
    return float(np.polyfit(t / 3600.0, r, 1)[0])


def soak(args) -> dict:
    import cv2

    from edge_mla.runtime import RunConfig, Runtime
    from edge_mla.runtime.outputs import JsonLinesOutput

    out, work, engines = workspace(args, "soak")
    wav = noise_wav(work / "clip.wav", 20, 16000)
    video = work / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15, (160, 120))
    fn = noise_frame_fn()
    for i in range(15 * 20):
        vw.write(fn(i))
    vw.release()
    jsonl = out / "decisions.jsonl"
    cfg = RunConfig(engines=engines, camera=str(video), mic=str(wav), loop=True, rate=args.rate, json_stdout=False)
    rt = Runtime(cfg, outputs=[JsonLinesOutput(jsonl, mode="overwrite")])
    if args.stage_cap:
        # The runtime keeps its latency records in a bounded deque (50000 by default,
        # ~45 min here); a smaller cap shows what memory does once it is full.
        rt.stages.records = collections.deque(maxlen=args.stage_cap)
    sampler = ProcSampler(args.sample, lambda: len(rt.stages.records))
    sampler.start()
    growth = None
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)
    rt.start()
    try:
        if args.tracemalloc:
            time.sleep(args.tracemalloc)  # warm-up: buffers, sessions and bounded stores fill first
            first = tracemalloc.take_snapshot()
            time.sleep(max(args.minutes * 60 - args.tracemalloc, 1))  # (rt.wait would stop the runtime)
            growth = allocation_growth(first, tracemalloc.take_snapshot())
        rt.wait(args.minutes * 60)
    finally:
        report = rt.join()
        sampler.sample()
        sampler.stop_evt.set()
        sampler.join(2)
    res = {"mode": "soak", "minutes": args.minutes, "sample_s": args.sample, "cpu": cpu_model(), "stage_records_cap": rt.stages.records.maxlen,
           **({"python_allocation_growth": growth} if growth is not None else {}),
           "decisions": lost_decisions(report, count_lines(jsonl), args.rate), "worker_errors": {m: w["errors"] for m, w in report.workers.items()},
           "samples": [[round(t, 1), round(r, 2), n, f, k] for t, r, n, f, k in sampler.samples]}
    return {**res, **soak_summary(res["samples"], res["stage_records_cap"])}


def allocation_growth(first, last, top: int = 15) -> list:
    """The Python allocation sites that grew most between two tracemalloc snapshots
    (what a slowly rising RSS is made of, when it is Python objects)."""
    stats = last.compare_to(first, "traceback")
    out = []
    for st in stats[:top]:
        frames = [f"{f.filename.split('site-packages/')[-1].split('/work/main/')[-1]}:{f.lineno}" for f in st.traceback[-4:]]
        out.append({"kib": round(st.size_diff / 1024, 1), "blocks": st.count_diff, "where": " < ".join(reversed(frames))})
    return out


def soak_summary(samples: list, cap: int) -> dict:
    """Figures from the samples [t, rss MB, threads, fds, stage records]: the first
    is taken before the runtime starts and the last after it shut down (building
    the report allocates), so memory, thread and fd figures use the samples taken
    while it ran."""
    running = samples[1:-1]
    cap_t = next((x[0] for x in running if cap and x[4] >= cap), None)
    return {
        "cap_reached_s": cap_t,
        "rss_mb": {"before_start": samples[0][1], "first_running": running[0][1], "last_running": running[-1][1], "after_shutdown": samples[-1][1]},
        "rss_slope_mb_per_hour": {"running": slope_mb_per_hour(running, 0), "after_60s": slope_mb_per_hour(running, 60),
                                  "after_cap": slope_mb_per_hour(running, cap_t + 60) if cap_t is not None else None},
        "threads_running": {"min": min(x[2] for x in running), "max": max(x[2] for x in running)},
        "fds_running": {"first": running[0][3], "min": min(x[3] for x in running), "max": max(x[3] for x in running), "last": running[-1][3]},
        "fds_after_shutdown": samples[-1][3],
    }


def summary(args) -> dict:
    """Recompute the summary of an existing soak result.json from its samples."""
    res = json.loads(Path(args.out, "result.json").read_text())
    for stale in ("threads", "fds"):  # older result files summarised every sample
        res.pop(stale, None)
    return {**res, **soak_summary(res["samples"], res.get("stage_records_cap"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["fault", "soak", "summary"], help="summary: recompute a soak's figures from OUT/result.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, default=10.0, help="fusion decisions per second")
    ap.add_argument("--cycles", type=int, default=20, help="fault: unplug/replug cycles per sensor")
    ap.add_argument("--hold", type=float, default=3.0, help="fault: seconds a sensor stays unplugged after it is reported lost")
    ap.add_argument("--settle", type=float, default=2.0, help="fault: seconds after a recovery before the next unplug")
    ap.add_argument("--minutes", type=float, default=60.0, help="soak: minutes to run")
    ap.add_argument("--sample", type=float, default=10.0, help="soak: seconds between RSS/thread/fd samples")
    ap.add_argument("--tracemalloc", type=float, default=0, metavar="S", help="soak: trace Python allocations; compare a snapshot taken S seconds in with one at the end (slows the runtime)")
    ap.add_argument("--stage-cap", type=int, default=0, help="soak: cap the runtime's latency records at this many (default: the runtime's own, 5000)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res = {"fault": fault, "soak": soak, "summary": summary}[args.mode](args)
    Path(args.out, "result.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2, default=str))


if __name__ == "__main__":
    main()
