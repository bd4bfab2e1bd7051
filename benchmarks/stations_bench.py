"""Stations benchmark: N stations in one process (shared, batched engines) versus
N separate `edge-mla run`-style processes, and batched versus one call per station.

Every station replays the same recorded session (video at --fps, 48 kHz audio) from
files, in real time. For each N and each mode it reports: whether the stations kept
up (frames the image worker ran or passed over by the --rate cap / frames captured, decisions per second per station
against --rate), process CPU % per station, total RSS, and decision latency
(capture -> decision written) p50/p99 and that minus the engine time, per modality.

Modes:
  one      one process, MultiRuntime, stations sharing batched engines
  nobatch  one process, MultiRuntime, an engine per station (one call per station)
  procs    N processes, each one station (what a user had before stations)

    nice -n 5 .venv/bin/python benchmarks/stations_bench.py --engines tiny=ENG \\
        --stations 1 2 4 8 16 --modes one procs --seconds 20 --out bench-out/stations

Writes OUT/result.json and prints a markdown table (pasted into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, resource
from edge_mla.runtime.multi import MultiRuntime
from edge_mla.runtime.replay.recorder import load_session, session_config
from edge_mla.runtime.stations import Station
a = json.loads(sys.argv[1])
s = load_session(a["session"])
st = [Station(f"s{i}", session_config(s, engines=a["engines"], rate=a["rate"], loop=True, json_stdout=False)) for i in range(a["n"])]
rep = MultiRuntime(st, outputs=[], share_engines=a["share"]).run(a["seconds"])
out = {"seconds": rep.seconds, "engines": rep.engines, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "stations": {}}
for name, r in rep.stations.items():
    out["stations"][name] = {"decisions": r.decisions, "workers": r.workers, "latency": r.latency, "cpu_percent": r.cpu_percent}
print(json.dumps(out))
"""


def run_child(args: dict) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=str(ROOT))


def measure(mode: str, n: int, engines: str, session: str, seconds: float, rate: float) -> dict:
    import psutil

    children = [dict(n=n, share=mode == "one", engines=engines, session=session, seconds=seconds, rate=rate)] if mode != "procs" else [dict(n=1, share=True, engines=engines, session=session, seconds=seconds, rate=rate) for _ in range(n)]
    procs = [run_child(c) for c in children]
    ps = [psutil.Process(p.pid) for p in procs]
    cpu0 = {}
    rss_peak = 0.0
    t0 = time.monotonic()
    while any(p.poll() is None for p in procs):
        total = 0.0
        for p in ps:
            try:
                ct = p.cpu_times()
                cpu0.setdefault(p.pid, ct.user + ct.system)
                cpu0[(p.pid, "last")] = ct.user + ct.system
                total += p.memory_info().rss / 2**20
            except psutil.Error:
                pass
        rss_peak = max(rss_peak, total)
        time.sleep(0.5)
    wall = time.monotonic() - t0
    results = [json.loads(p.stdout.read().strip().splitlines()[-1]) for p in procs]
    stations = [st for r in results for st in r["stations"].values()]
    cpu = sum(st["cpu_percent"] for r in results for st in list(r["stations"].values())[:1])  # process-wide: once per process
    e2e = {m: [] for m in ("image", "audio")}
    net = {m: [] for m in ("image", "audio")}
    kept = []
    for st in stations:
        w = st["workers"].get("image", {})
        if w.get("frames"):
            kept.append((w["results"] + w.get("limited", 0)) / w["frames"])  # frames the --rate cap passed over were not lost to load
        for m, lat in st["latency"].items():
            if lat.get("n"):
                e2e[m].append((lat["e2e_p50_ms"], lat["e2e_p99_ms"]))
                net[m].append((lat["overhead_p50_ms"], lat["overhead_p99_ms"]))
    med = lambda xs, i: sorted(x[i] for x in xs)[len(xs) // 2] if xs else float("nan")  # noqa: E731
    dec_rate = sorted(st["decisions"] / seconds for st in stations)[len(stations) // 2]
    return {
        "mode": mode, "stations": n, "wall_s": round(wall, 1),
        "frames_kept": round(min(kept), 3) if kept else None,
        "decisions_per_s_median": round(dec_rate, 2),
        "cpu_percent_per_station": round(cpu / n, 1),
        "rss_mb_total": round(max(rss_peak, sum(r["peak_rss_mb"] for r in results) if mode != "procs" else rss_peak), 1),
        "image_e2e_p50_p99": (round(med(e2e["image"], 0), 1), round(med(e2e["image"], 1), 1)),
        "audio_e2e_p50_p99": (round(med(e2e["audio"], 0), 1), round(med(e2e["audio"], 1), 1)),
        "image_minus_engine_p50_p99": (round(med(net["image"], 0), 2), round(med(net["image"], 1), 2)),
        "audio_minus_engine_p50_p99": (round(med(net["audio"], 0), 2), round(med(net["audio"], 1), 2)),
        "batches": {k: v for r in results for k, v in r["engines"].items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--session", help="a recorded replay session folder (default: record one)")
    ap.add_argument("--stations", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--modes", nargs="+", default=["one", "procs"], choices=["one", "nobatch", "procs"])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("bench-out/stations"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    session = args.session
    if session is None:
        from edge_mla.runtime.replay import Script, record_session

        session = str(record_session(Script(segments=10, segment_seconds=3.0, fps=args.fps, frame_size=(320, 240), faults=[]), args.out / "session").root)
    rows = []
    for spec in args.engines:
        name, _, folder = spec.partition("=")
        for n in args.stations:
            for mode in args.modes:
                r = measure(mode, n, folder, session, args.seconds, args.rate)
                r["engines"] = name
                rows.append(r)
                print(json.dumps(r), flush=True)
    from edge_mla.runtime.profiling.engines import machine_info

    result = {"machine": machine_info(), "load_average": os.getloadavg(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| engines | mode | stations | frames kept (min) | decisions/s per station | CPU % per station | RSS MB total | image e2e p50/p99 ms | audio e2e p50/p99 ms | image minus engine p50/p99 | audio minus engine p50/p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda t: f"{t[0]}/{t[1]}"  # noqa: E731
        print(f"| {r['engines']} | {r['mode']} | {r['stations']} | {r['frames_kept']} | {r['decisions_per_s_median']} | {r['cpu_percent_per_station']} | {r['rss_mb_total']} | {f(r['image_e2e_p50_p99'])} | {f(r['audio_e2e_p50_p99'])} | {f(r['image_minus_engine_p50_p99'])} | {f(r['audio_minus_engine_p50_p99'])} |")
    print(f"\nmachine: {result['machine']}; load average at the end {result['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
