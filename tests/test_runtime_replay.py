"""Every scripted fault, replayed through the real file sources in real time, and
bounded memory over a longer looped replay.

One 30 s session (10 segments of 3 s) holds each fault once: camera gone, mic
gone, black frames, frozen frames, mic silent. The runtime runs on it once
(module fixture) and each test checks one behaviour in its JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_runtime_support import ROOT, Collect, engines  # noqa: F401


@pytest.fixture(scope="module")
def replay(engines, tmp_path_factory):
    from edge_mla.runtime import run_for
    from edge_mla.runtime.replay import default_script, record_session, score
    from edge_mla.runtime.replay.recorder import session_config

    session = record_session(default_script(segments=10, segment_seconds=3.0), tmp_path_factory.mktemp("replay"))
    out = Collect()
    cfg = session_config(session, engines=engines, json_stdout=False, camera_timeout=1.0, mic_timeout=1.0, staleness=1.0, backoff_max=1.0)
    report = run_for(cfg, outputs=[out])
    lines = out.records
    return {"session": session, "lines": lines, "report": report, "score": score(lines, session.truth), "faults": {f["kind"]: f for f in session.truth["faults"]}}


def _span(replay, kind, after_start=0.0, before_end=0.0):
    f = replay["faults"][kind]
    return [r for r in replay["lines"] if f["start"] + after_start <= r["t"] < f["end"] - before_end]


def test_session_runs_in_real_time_to_the_end(replay):
    rep = replay["report"]
    assert 29.0 < rep.seconds < 33.0  # media played in real time; stopped when both files ended
    assert rep.decisions >= 280 and rep.no_decisions <= 3
    assert rep.workers["image"]["errors"] == 0 and rep.workers["audio"]["errors"] == 0
    # 4 Hz hop, minus the 3 s outage; windows of digital silence are counted, not classified
    assert rep.workers["audio"]["results"] + rep.workers["audio"]["silent_windows"] >= 100
    assert rep.workers["image"]["frames"] >= 500  # 30 fps minus outage and frozen span


@pytest.mark.parametrize(
    "fault, sensor, remaining, after_start",
    [("camera_gone", "camera", "audio", 1.5), ("mic_gone", "mic", "image", 2.0)],
    ids=["camera_gone_runs_on_the_mic_and_reconnects", "mic_gone_runs_on_the_camera_and_reopens"],
)
def test_sensor_gone_runs_on_the_other_and_reconnects(replay, fault, sensor, remaining, after_start):
    lines = _span(replay, fault, after_start=after_start)
    assert lines and all(r["sensors"][sensor]["state"] == "lost" for r in lines)
    assert all(r["decision"] and r["used"] == [remaining] for r in lines)
    rec = next(x for x in replay["score"]["recovery"] if x["fault"] == fault)
    assert rec["marked_lost"] and rec["used_again_after_s"] is not None and rec["used_again_after_s"] < 2.5
    assert replay["report"].sensors[sensor]["reconnects"] >= 1


def test_frozen_frames_age_out_of_fusion(replay):
    lines = _span(replay, "camera_frozen", after_start=2.2)
    assert lines and all("image" not in r["used"] for r in lines)  # the frozen frame stopped voting
    assert all(r["sensors"]["camera"]["state"] == "frozen" for r in lines)
    f = replay["faults"]["camera_frozen"]
    back = [r for r in replay["lines"] if f["end"] + 0.5 <= r["t"] < f["end"] + 1.5]
    assert back and all("image" in r["used"] and r["sensors"]["camera"]["state"] == "ok" for r in back)


def test_black_frames_are_blank_and_age_out(replay):
    lines = _span(replay, "camera_black", after_start=1.2)
    assert lines and all(r["sensors"]["camera"]["state"] == "blank" and r["used"] == ["audio"] for r in lines)
    f = replay["faults"]["camera_black"]
    # the next span (frozen frames) starts with one new frame: the camera is ok again
    # until the frozen timeout (1 s) passes
    back = [r for r in replay["lines"] if f["end"] + 0.3 <= r["t"] < f["end"] + 0.9]
    assert back and all("image" in r["used"] and r["sensors"]["camera"]["state"] == "ok" for r in back)
    assert replay["report"].workers["image"]["blanks"] >= 60  # 3 s at 30 fps, not classified


def test_silence_keeps_the_mic_ok_and_leaves_audio_out(replay):
    # A muted mic still calls back: the sensor stays ok, but a window of digital
    # silence is not classified (an engine can be confidently wrong on it, measured in
    # the demo), so once the window is silent (1 s) and the last result is stale
    # (1 s) fusion follows the image alone.
    lines = _span(replay, "mic_silent", after_start=2.3)
    assert lines and all(r["sensors"]["mic"]["state"] == "ok" and r["used"] == ["image"] for r in lines)
    assert all(r["label"] == r["modalities"]["image"]["label"] for r in lines)
    assert replay["report"].workers["audio"]["silent_windows"] >= 4


def test_fused_accuracy_beats_each_modality(replay):
    s = replay["score"]
    o = s["overall"]
    assert o["n"] >= 150
    assert o["accuracy"] >= 0.85, s
    assert o["accuracy"] >= max(o["image_only"], o["audio_only"]), o
    assert s["spans"]["clean"]["accuracy"] >= 0.9
    assert s["spans"]["camera_gone"]["image_only"] == 0.0 and s["spans"]["mic_gone"]["audio_only"] == 0.0


def test_latency_and_stage_records(replay):
    rep = replay["report"]
    for m in ("image", "audio"):
        lat = rep.latency[m]
        assert lat["n"] > 50
        assert 0 < lat["engine_p50_ms"] < lat["e2e_p50_ms"] < 400
        assert lat["overhead_p99_ms"] >= lat["overhead_p50_ms"] > 0
    st = rep.stages[0]
    assert st["capture"] <= st["preprocess"] <= st["engine"] <= st["done"] <= st["fused"] <= st["output"]


_LONG_REPLAY = """
import json, sys
from edge_mla.runtime import run_for
from edge_mla.runtime.outputs import JsonLinesOutput
from edge_mla.runtime.replay.recorder import load_session, session_config
session, engines, seconds, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
cfg = session_config(load_session(session), engines=engines, loop=True, json_stdout=False, backoff_max=1.0)
rep = run_for(cfg, duration=seconds, outputs=[JsonLinesOutput(out + ".jsonl")])
json.dump({"seconds": rep.seconds, "rss_mb": rep.rss_mb, "decisions": rep.decisions, "image_errors": rep.workers["image"]["errors"]}, open(out, "w"))
"""


def test_memory_stays_bounded_over_a_long_replay(engines, replay, tmp_path):
    """RSS must not grow over a few minutes of replay: every queue is bounded.

    The runtime runs in a process of its own, as it is deployed: inside the test
    process the curve also carried whatever the earlier tests' torch training left in
    glibc's heap (steps of 6-10 MB at a 790 MB RSS, seen in CI), which is not the
    runtime's memory."""
    seconds = float(os.environ.get("EDGE_MLA_MEMTEST_SECONDS", "90"))
    out = tmp_path / "long.json"
    args = [sys.executable, "-c", _LONG_REPLAY, str(replay["session"].root), str(engines), str(seconds), str(out)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(out.read_text())
    rss = np.array(rep["rss_mb"])  # (seconds, MB) once a second
    assert rep["seconds"] >= seconds - 1 and len(rss) >= seconds - 5
    early = np.median(rss[(rss[:, 0] >= 15) & (rss[:, 0] < 35), 1])  # after warm-up (first loop done)
    late = np.median(rss[rss[:, 0] >= seconds - 20, 1])
    assert late - early < 8.0, f"RSS grew from {early:.1f} MB to {late:.1f} MB"
    assert rep["image_errors"] == 0 and rep["decisions"] >= 9 * seconds


def test_a_scripted_camera_outage_from_the_start_is_not_fatal(engines, tmp_path):
    """`edge-mla demo --segments 2` scripted the camera's outage from t=0, and the file
    source took "not open at t=0" for a file it cannot open: exit 2 after minutes of
    training and export."""
    from edge_mla.runtime import run_for
    from edge_mla.runtime.replay import default_script, record_session
    from edge_mla.runtime.replay.recorder import session_config

    script = default_script(2, 1.0)
    assert any(f.kind == "camera_gone" and f.start == 0 for f in script.faults)
    session = record_session(script, tmp_path / "s", dataset="demo")
    out = Collect()
    report = run_for(session_config(session, engines=engines, json_stdout=False), duration=script.duration, outputs=[out])
    assert report.decisions > 0
    assert out.records[0]["sensors"]["camera"]["state"] == "lost"
