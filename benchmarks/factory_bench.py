"""Factory-floor benchmark (issue 10): MQTT, metrics scrape, clips CPU, engine swap.

    .venv/bin/python benchmarks/factory_bench.py --engines ENG --out bench-out/factory \
        [--restarts 10 --restart-period 18] [--mqtt-seconds 10]

Measures, in one run:
  1. MQTT: decisions/s sustained to a local Mosquitto (QoS 1, through the spool),
     and what ``write`` adds on the fusion thread (p50/p99 of its own time);
  2. lost sequence numbers across broker restarts (stop 3 s, start, every
     --restart-period s) at 20 decisions/s, after consumer-side dedup by seq;
  3. /metrics scrape time against a running runtime (median, p99 of 200 scrapes);
  4. clip-writing CPU at 30 fps: the CPU time of the clip threads (collector +
     writer, per-thread CPU from /proc) over the run, as % of one core, with a clip
     triggered every ~4 s by scripted camera outages;
  5. engine swap time (load + check + warm-up + switch) for ENG, median of 5.

Writes OUT/result.json and OUT/factory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from runtime_bench import cpu_model  # noqa: E402


def pct(xs, q):
    import numpy as np

    return float(np.percentile(np.asarray(xs, float), q)) if xs else float("nan")


def cpu_flags_note() -> str:
    from edge_mla.runtime.doctor import cpu_flags

    f = cpu_flags()
    return "AVX512+VNNI" if any("vnni" in x for x in f) else ("AVX512" if "avx512f" in f else "AVX2 only")


def mqtt_throughput(seconds: float, target_rate: float, tmp: Path) -> dict:
    from edge_mla.runtime.config import RunConfig
    from edge_mla.runtime.mqtt_output import MqttOutput
    from edge_mla.runtime.testing.mosquitto import MosquittoBroker, Subscriber

    rec = {"decision": True, "label": "3", "class_index": 3, "confidence": 0.97, "used": ["image", "audio"], "modalities": {"image": {"used": True, "age": 0.02, "weight": 0.7, "label": "3", "confidence": 0.99, "logits": [0.1] * 10}, "audio": {"used": True, "age": 0.2, "weight": 0.3, "label": "3", "confidence": 0.8, "logits": [0.1] * 10}}, "sensors": {"camera": {"state": "ok"}, "mic": {"state": "ok"}}}
    with MosquittoBroker() as b:
        sub = Subscriber(b.port, "bench/t")
        sub.connected.wait(10)
        out = MqttOutput(RunConfig(engines=tmp, mqtt=f"{b.url_base}/bench/t", mqtt_spool=tmp / "tp.db"))
        out.start()
        time.sleep(1.0)
        costs = []
        n = int(seconds * target_rate)
        t0 = time.perf_counter()
        for i in range(n):
            target = t0 + i / target_rate
            d = target - time.perf_counter()
            if d > 0:
                time.sleep(d)
            a = time.perf_counter()
            out.write({**rec, "t": i})
            costs.append(time.perf_counter() - a)
        t_written = time.perf_counter() - t0
        deadline = time.monotonic() + 60
        while len(sub.payloads("bench/t")) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        t_all = time.perf_counter() - t0
        got = len({json.loads(p)["seq"] for p in sub.payloads("bench/t")})
        out.close()
        sub.close()
    return {"target_rate": target_rate, "decisions": n, "received_unique": got, "write_seconds": t_written, "all_received_after_s": t_all, "sustained_rate": got / t_all, "write_p50_us": pct(costs, 50) * 1e6, "write_p99_us": pct(costs, 99) * 1e6, "write_max_us": max(costs) * 1e6}


def mqtt_restarts(restarts: int, period: float, rate: float, tmp: Path) -> dict:
    from edge_mla.runtime.config import RunConfig
    from edge_mla.runtime.mqtt_output import MqttOutput
    from edge_mla.runtime.testing.mosquitto import MosquittoBroker, Subscriber

    b = MosquittoBroker().start()
    sub = Subscriber(b.port, "bench/r")
    sub.connected.wait(10)
    out = MqttOutput(RunConfig(engines=tmp, mqtt=f"{b.url_base}/bench/r", mqtt_spool=tmp / "rs.db"))
    out.start()
    stop = threading.Event()
    written = [0]

    def writer():
        i = 0
        t0 = time.perf_counter()
        while not stop.is_set():
            i += 1
            out.write({"decision": True, "label": "1", "i": i})
            written[0] = i
            d = t0 + i / rate - time.perf_counter()
            if d > 0:
                time.sleep(d)

    th = threading.Thread(target=writer)
    t_start = time.monotonic()
    th.start()
    peak_depth = 0
    for _ in range(restarts):
        time.sleep(period - 3.0)
        b.stop()
        for _ in range(30):
            time.sleep(0.1)
            peak_depth = max(peak_depth, out.spool_depth)
        b.start()
    time.sleep(3.0)
    stop.set()
    th.join()
    deadline = time.monotonic() + 60
    while len({json.loads(p)["seq"] for p in sub.payloads("bench/r")}) < written[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    duration = time.monotonic() - t_start
    seqs = [json.loads(p)["seq"] for p in sub.payloads("bench/r")]
    uniq = set(seqs)
    lost = sorted(set(range(1, written[0] + 1)) - uniq)
    out.close()
    sub.close()
    b.close()
    return {"restarts": restarts, "duration_s": duration, "rate": rate, "decisions": written[0], "received": len(seqs), "duplicates": len(seqs) - len(uniq), "lost": len(lost), "peak_spool_depth": peak_depth, "reconnects": out.connects}


def thread_cpu(names: tuple) -> float:
    """CPU seconds of this process's threads whose name starts with ``names``."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    by_id = {t.native_id: t.name for t in threading.enumerate()}
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        name = by_id.get(int(tid), "")
        if name.startswith(names):
            fields = Path(f"/proc/{os.getpid()}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def runtime_parts(engines: Path, tmp: Path, seconds: float) -> dict:
    """Metrics scrape time and clip-thread CPU on one real runtime at 30 fps."""
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay import Fault, Script, record_session
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.testing.mjpeg import free_port

    faults = [Fault("camera_gone", s, s + 1.0) for s in range(3, int(seconds) - 2, 4)]
    script = Script(segments=int(seconds // 3), segment_seconds=3.0, fps=30, frame_size=(320, 240), faults=faults)
    sess = record_session(script, tmp / "session")
    port = free_port()
    cfg = session_config(sess, engines=engines, json_stdout=False, rate=10, metrics=f"127.0.0.1:{port}", clips=tmp / "clips", clip_pre=2.0, clip_post=1.0, clip_confidence=0.0)
    rt = Runtime(cfg, outputs=[])
    rt.start()
    t0 = time.monotonic()
    time.sleep(2.0)
    scrapes = []
    while len(scrapes) < 200 and time.monotonic() - t0 < seconds - 1:
        a = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            r.read()
        scrapes.append(time.perf_counter() - a)
        time.sleep(0.02)
    rt.wait(seconds)
    collector_cpu, writer_cpu = thread_cpu(("clips-collector",)), thread_cpu(("clips-writer",))
    clip_cpu = collector_cpu + writer_cpu
    wall = time.monotonic() - t0
    report = rt.join()
    snap = rt.floor.clips.snapshot()
    return {"scrapes": len(scrapes), "scrape_p50_ms": pct(scrapes, 50) * 1e3, "scrape_p99_ms": pct(scrapes, 99) * 1e3, "clip_cpu_s": clip_cpu, "wall_s": wall, "clip_cpu_percent": 100 * clip_cpu / wall, "collector_cpu_percent": 100 * collector_cpu / wall, "writer_cpu_s_per_clip": writer_cpu / max(rt.floor.clips.written, 1), "process_cpu_percent": report.cpu_percent, "frames": report.workers["image"]["frames"], "clips_written": snap["written"], "clips_dropped": snap["dropped"], "fps": 30}


def swap_time(engines: Path, tmp: Path, repeats: int = 5) -> dict:
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay import Script, record_session
    from edge_mla.runtime.replay.recorder import session_config

    folder = shutil.copytree(engines, tmp / "swap-eng")
    sess = record_session(Script(segments=4, segment_seconds=3.0, fps=15, frame_size=(160, 120)), tmp / "swap-session")
    rt = Runtime(session_config(sess, engines=folder, json_stdout=False, loop=True, rate=10), outputs=[])
    rt.start()
    times = []
    try:
        time.sleep(1.0)
        for _ in range(repeats):
            assert rt.floor.swapper.swap_now()
            times.append(rt.floor.swapper.last_seconds)
            time.sleep(0.5)
    finally:
        rt.join()
    return {"repeats": repeats, "swap_p50_s": pct(times, 50), "swap_max_s": max(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", required=True)
    ap.add_argument("--out", default="bench-out/factory")
    ap.add_argument("--mqtt-seconds", type=float, default=10.0)
    ap.add_argument("--mqtt-rate", type=float, default=1000.0)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--restart-period", type=float, default=18.0)
    ap.add_argument("--runtime-seconds", type=float, default=30.0)
    ap.add_argument("--parts", default="mqtt,restarts,runtime,swap", help="comma-separated subset to run (the table needs all four)")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    out = Path(a.out)
    tmp = out / "work"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    eng = Path(a.engines)
    res = {"machine": f"{cpu_model()}, {os.cpu_count()} cores, {cpu_flags_note()}", "command": " ".join(sys.argv)}
    steps = {"mqtt": lambda: mqtt_throughput(a.mqtt_seconds, a.mqtt_rate, tmp), "restarts": lambda: mqtt_restarts(a.restarts, a.restart_period, 20.0, tmp), "runtime": lambda: runtime_parts(eng, tmp, a.runtime_seconds), "swap": lambda: swap_time(eng, tmp)}
    for name, step in steps.items():
        if name in parts:
            res[name] = step()
            print(json.dumps(res[name]), flush=True)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    if len(res) < 6:
        return
    m, r, rt, s = res["mqtt"], res["restarts"], res["runtime"], res["swap"]
    md = f"""Machine: {res['machine']}. Command: `{res['command']}`.

| measure | target | measured |
|---|---|---|
| MQTT decisions/s to a local broker (QoS 1, through the spool) | >= 1,000 | {m['sustained_rate']:.0f}/s ({m['received_unique']}/{m['decisions']} received; offered at {m['target_rate']:.0f}/s) |
| added to the fusion thread per decision (`write`) | <= 1 ms p99 | p50 {m['write_p50_us']:.0f} us, p99 {m['write_p99_us']:.0f} us, max {m['write_max_us']:.0f} us |
| lost seq across {r['restarts']} broker restarts in {r['duration_s']:.0f} s at {r['rate']:.0f}/s | 0 | {r['lost']} lost of {r['decisions']} ({r['duplicates']} duplicates dropped by seq; peak spool {r['peak_spool_depth']}) |
| /metrics scrape (runtime running) | <= 5 ms | p50 {rt['scrape_p50_ms']:.2f} ms, p99 {rt['scrape_p99_ms']:.2f} ms ({rt['scrapes']} scrapes) |
| clip pre-roll (collector thread) at {rt['fps']} fps | <= 1% | {rt['collector_cpu_percent']:.2f}% of one core |
| clip threads in all, collector + writer | | {rt['clip_cpu_percent']:.2f}% of one core with {rt['clips_written']} clips written in {rt['wall_s']:.0f} s ({rt['writer_cpu_s_per_clip'] * 1000:.0f} ms CPU per clip; {rt['clips_dropped']} dropped; {rt['frames']} frames; process total {rt['process_cpu_percent']:.0f}%) |
| engine swap (load + check + warm-up + switch) | < 1 s | median {s['swap_p50_s'] * 1000:.0f} ms, max {s['swap_max_s'] * 1000:.0f} ms ({s['repeats']} swaps) |
"""
    (out / "factory.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
