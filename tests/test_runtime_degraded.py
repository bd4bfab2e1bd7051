"""Fault-aware fusion in the runtime: reliability gating in decide(), "all sensors
degraded", the ``degraded`` sensor state (unit and on a replay with a noisy-mic and
a smeared-camera span, with the blank/silence fast paths off), and engine folders
without or with corrupt reliability constants."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from badinput_support import write_video
from test_runtime_support import Collect, run_cli

pytest_plugins = ["export_fixtures"]  # tiny_run, exported (its engines carry the reliability output)

CLASSES = [str(i) for i in range(10)]


def _result(m, logits, t, rel):
    from edge_mla.runtime.workers import Result

    return Result(m, np.asarray([logits], np.float32), t, t, t, t, 1, rel)


def _onehot(k, v=4.0):
    z = np.zeros(10, np.float32)
    z[k] = v
    return z


def test_decide_leaves_out_an_unreliable_modality_and_says_all_sensors_degraded():
    from edge_mla.runtime.fusion_loop import decide

    res = {"image": _result("image", _onehot(3, 1.0), 10.0, 0.9), "audio": _result("audio", _onehot(5, 9.0), 10.0, 0.1)}
    out = decide(res, CLASSES, 1.0, 10.2, {"camera": {"state": "ok"}, "mic": {"state": "ok"}}, "entropy", 0.5)
    # entropy alone would follow the (confidently wrong) audio; the gate leaves it out
    assert out["label"] == "3" and out["used"] == ["image"]
    assert out["modalities"]["audio"]["fresh"] is True and out["modalities"]["audio"]["used"] is False
    assert out["modalities"]["audio"]["weight"] == 0.0 and out["modalities"]["audio"]["reliability"] == pytest.approx(0.1)
    assert decide(res, CLASSES, 1.0, 10.2, None, "entropy", None)["label"] == "5"  # no threshold: the old behaviour
    res["image"] = _result("image", _onehot(3, 1.0), 10.0, 0.2)
    out = decide(res, CLASSES, 1.0, 10.2, None, "entropy", 0.5)
    assert out["decision"] is False and out["label"] is None and out["reason"] == "all sensors degraded"
    out = decide(res, CLASSES, 1.0, 20.0, None, "entropy", 0.5)
    assert out["reason"] == "no fresh modality"  # stale, not degraded


def test_decide_weighs_a_doubtful_modality_down_and_still_judges_it_unreliable():
    """With the manifest's weighting (power 3, floor 0.1) a result at r = 0.3 still
    votes, at (0.3 / 0.9) ** 3 of the other's entropy weight, and counts as unreliable
    for the degraded state (threshold 0.5); one at r = 0.05 is left out."""
    from edge_mla.runtime.degraded import DegradedTracker
    from edge_mla.runtime.fusion_loop import decide, mark_degraded

    weighting = {"threshold": 0.1, "power": 3.0}
    res = {"image": _result("image", _onehot(3, 4.0), 10.0, 0.9), "audio": _result("audio", _onehot(5, 4.0), 10.0, 0.3)}
    out = decide(res, CLASSES, 1.0, 10.2, {"camera": {"state": "ok"}, "mic": {"state": "ok"}}, "entropy", 0.5, weighting)
    ratio = (0.3 / 0.9) ** 3  # equal entropies: the weights are in the ratio of r ** 3
    assert out["used"] == ["image", "audio"] and out["label"] == "3"
    assert out["modalities"]["audio"]["weight"] == pytest.approx(ratio / (1 + ratio), abs=1e-4)
    tr = DegradedTracker(hold=0.0)
    mark_degraded(out, tr, 10.2, 0.5)
    assert out["sensors"]["mic"]["state"] == "degraded"
    res["audio"] = _result("audio", _onehot(5, 4.0), 10.0, 0.05)
    assert decide(res, CLASSES, 1.0, 10.2, None, "entropy", 0.5, weighting)["used"] == ["image"]


def test_decide_weighs_the_sum_rule_against_each_modality_s_reference():
    """The manifest's sum-rule weighting carries a reference r per modality: audio at
    its typical clean r (0.6) weighs fully, as much as the image at 0.95 against its
    0.95; at r 0.3 it weighs (0.3 / 0.6) ** 3, and the degraded state still reads r."""
    from edge_mla.runtime.fusion_loop import decide

    weighting = {"threshold": 0.1, "power": 3.0, "reference": {"image": 0.95, "audio": 0.6}}
    res = {"image": _result("image", _onehot(3, 4.0), 10.0, 0.95), "audio": _result("audio", _onehot(5, 4.0), 10.0, 0.6)}
    out = decide(res, CLASSES, 1.0, 10.2, None, "sum", 0.5, weighting)
    assert out["modalities"]["audio"]["weight"] == pytest.approx(1.0) and out["modalities"]["image"]["weight"] == pytest.approx(1.0)
    res["audio"] = _result("audio", _onehot(5, 4.0), 10.0, 0.3)
    out = decide(res, CLASSES, 1.0, 10.2, None, "sum", 0.5, weighting)
    assert out["modalities"]["audio"]["weight"] == pytest.approx(0.125) and out["label"] == "3"
    assert decide(res, CLASSES, 1.0, 10.2, None, "sum", 0.5, {"threshold": 0.1, "power": 3.0})["modalities"]["audio"]["weight"] == pytest.approx(0.027)


def test_degraded_tracker_needs_the_hold_time_both_ways():
    from edge_mla.runtime.degraded import DegradedTracker

    tr = DegradedTracker(hold=1.0)
    assert tr.update(0.0, "mic", True) is False
    assert tr.update(0.5, "mic", None) is False  # no fresh result: nothing changes
    assert tr.update(0.9, "mic", True) is False
    assert tr.update(1.0, "mic", True) is True
    assert tr.update(1.5, "mic", False) is True  # one good window does not clear it
    assert tr.update(1.7, "mic", True) is True  # ... and resets the recovery clock
    assert tr.update(2.0, "mic", False) is True
    assert tr.update(3.0, "mic", False) is False
    rep = tr.report(t0=0.0, t_end=4.0)
    assert rep["mic"] == {"state": "ok", "spans": [[1.0, 3.0]], "seconds": 2.0}


def test_mark_degraded_reports_only_live_sensors():
    from edge_mla.runtime.degraded import DegradedTracker
    from edge_mla.runtime.fusion_loop import decide, mark_degraded

    tr = DegradedTracker(hold=0.0)
    res = {"image": _result("image", _onehot(3), 10.0, 0.9), "audio": _result("audio", _onehot(5), 10.0, 0.1)}
    rec = decide(res, CLASSES, 1.0, 10.2, {"camera": {"state": "ok"}, "mic": {"state": "ok"}}, "entropy", 0.5)
    mark_degraded(rec, tr, 10.2, 0.5)
    assert rec["sensors"] == {"camera": {"state": "ok"}, "mic": {"state": "degraded"}}
    rec = decide(res, CLASSES, 1.0, 10.3, {"camera": {"state": "ok"}, "mic": {"state": "lost"}}, "entropy", 0.5)
    mark_degraded(rec, tr, 10.3, 0.5)
    assert rec["sensors"]["mic"]["state"] == "lost"  # a lost sensor stays lost
    # ... and its degraded span ends there: the report counted the lost time as
    # degraded, and the first record after it came back read "degraded"
    assert tr.report(0.0, 20.0)["mic"] == {"state": "ok", "spans": [[10.2, 10.3]], "seconds": 0.1}
    tr2 = DegradedTracker(hold=1.0)
    for t in (0.0, 1.0):
        tr2.update(t, "mic", True)
    assert tr2.is_degraded("mic")
    rec = decide(res, CLASSES, 1.0, 15.0, {"camera": {"state": "ok"}, "mic": {"state": "lost"}}, "entropy", 0.5)
    mark_degraded(rec, tr2, 15.0, 0.5)
    rec = decide(res, CLASSES, 1.0, 15.1, {"camera": {"state": "ok"}, "mic": {"state": "ok"}}, "entropy", 0.5)
    mark_degraded(rec, tr2, 15.1, 0.5)
    assert rec["sensors"]["mic"]["state"] == "ok"  # back from lost: judged afresh, the hold applies again


# The 40-step test model's clean audio sits near the Mahalanobis gate; with the
# energy term added it is judged reliable again after the noise (the benchmark's
# default choice is made on real runs, BENCHMARKS.md section 8). This test is about
# the state machine and the runtime, so it pins the signal.
REPLAY_SIGNAL = "energy+mahalanobis"
# The replay's model gets more steps than the shared 40-step one: at 40 steps its
# clean audio scored below the gate on about a quarter of the windows, in stretches
# of 0.25-0.5 s that grew under CPU load until one reached the 1 s hold and CI saw a
# clean mic reported degraded. At 120 steps no clean window of the first span fell
# below 0.55, with the machine's two cores also busy (about 10 s more training).
REPLAY_STEPS = 120


@pytest.fixture(scope="module")
def degraded_replay(demo_cache, tmp_path_factory):
    from edge_mla.export.pipeline import ExportConfig, export_run
    from edge_mla.runtime import run_for
    from export_fixtures import QUICK, make_tiny_run
    from edge_mla.runtime.replay import degraded_script, record_session, score
    from edge_mla.runtime.replay.recorder import session_config

    run = make_tiny_run(tmp_path_factory.mktemp("replay-run") / "tiny", steps=REPLAY_STEPS)
    eng = export_run(ExportConfig(run_dir=run, out=tmp_path_factory.mktemp("eng") / "engines", reliability=REPLAY_SIGNAL, **QUICK)).out
    session = record_session(degraded_script(segments=10, segment_seconds=2.0), tmp_path_factory.mktemp("degraded"))
    out = Collect()
    # the learned signal alone: the blank-frame and silence fast paths are off
    cfg = session_config(session, engines=eng, json_stdout=False, silence_threshold=0.0, blank_threshold=0.0, degraded_hold=1.0)
    report = run_for(cfg, outputs=[out])
    return {"lines": out.records, "report": report, "score": score(out.records, session.truth), "faults": {f["kind"]: f for f in session.truth["faults"]},
            "session_truth": session.truth}


def timing_ok(replay, fault):
    t = next(d for d in replay["score"]["degraded"] if d["fault"] == fault)["ok_after_s"]
    return float("inf") if t is None else t


@pytest.mark.parametrize("fault, sensor, modality", [("mic_noise", "mic", "audio"), ("camera_smear", "camera", "image")])
def test_a_broken_live_sensor_goes_degraded_and_back(degraded_replay, fault, sensor, modality):
    f = degraded_replay["faults"][fault]
    lines = degraded_replay["lines"]

    def states(a, b):
        return [r["sensors"][sensor]["state"] for r in lines if a <= r["t"] < b]

    assert "degraded" not in states(0.0, 4.0)  # the first clean span
    inside = states(f["start"] + 2.5, f["end"])
    assert inside and all(s == "degraded" for s in inside)  # within 2.5 s of the span start (1 s window + 1 s hold)
    # and back once the input is reliable again (1 s window + 1 s hold; a weak test
    # model's clean audio can dip below the threshold, and each such window restarts
    # the hold, so "ok" must be reached within 6 s rather than held; the session stays clean for 12 s after the noise, and
    # the recovery time of real engines is measured in BENCHMARKS.md section 8)
    assert "ok" in states(f["end"], f["end"] + 6.0)
    assert timing_ok(degraded_replay, fault) <= 6.0
    gated = [r["modalities"][modality]["used"] for r in lines if f["start"] + 1.5 <= r["t"] < f["end"]]
    assert np.mean(gated) < 0.2  # the broken sensor is left out of the fusion
    timing = next(d for d in degraded_replay["score"]["degraded"] if d["fault"] == fault)
    assert timing["degraded_after_s"] is not None and timing["degraded_after_s"] <= 2.5
    # the report has the fault as one degraded span that starts inside it and ends after
    # it; a weak fixture model may also dip below the gate later on clean audio (a
    # separate span, not a continuation of this one)
    spans = degraded_replay["report"].degraded[sensor]["spans"]
    overlapping = [sp for sp in spans if sp[0] < f["end"] and (sp[1] is None or sp[1] > f["start"])]
    assert len(overlapping) == 1 and f["start"] < overlapping[0][0] < f["end"] < overlapping[0][1]


def test_report_names_the_signal(degraded_replay):
    assert degraded_replay["report"].reliability == REPLAY_SIGNAL


def _old_folder(exported, dst):
    """The exported folder as an export from before issue 8 wrote it: no reliability
    block, no second output declared."""
    shutil.copytree(exported.out, dst)
    man = json.loads((dst / "manifest.json").read_text())
    man["fusion"] = {"rule": "entropy"}
    for e in man["engines"].values():
        e.pop("reliability_output", None)
    (dst / "manifest.json").write_text(json.dumps(man))
    return dst


def test_old_engine_folder_warns_or_is_refused(exported, tmp_path, caplog):
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.app import Runtime
    from edge_mla.runtime.config import RunConfig

    import soundfile as sf

    engines = _old_folder(exported, tmp_path / "old")
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(8000, np.float32), 8000)
    with caplog.at_level(logging.WARNING, logger="edge_mla.runtime.app"):
        rt = Runtime(RunConfig(engines=engines, camera=None, mic=str(wav)), outputs=[])
    assert rt.reliability is None
    warn = [r.getMessage() for r in caplog.records if "no reliability output" in r.getMessage()]
    assert len(warn) == 1 and "\n" not in warn[0] and "entropy" in warn[0]
    with pytest.raises(EdgeMlaError, match="no reliability output"):
        Runtime(RunConfig(engines=engines, camera=None, mic=str(wav), require_reliability=True), outputs=[])


@pytest.mark.parametrize("value,needle", [(None, None), ("reliability", "engines.image.reliability_output must be an object"),
                                         ({"name": ["x"]}, "engines.image.reliability_output.name must be a string")])
def test_one_engines_reliability_output_null_or_corrupt(exported, tmp_path, caplog, value, needle):
    """A null ``reliability_output`` on one engine, with the fusion block still there,
    is an engine without the second output: a warning, or refused with
    --require-reliability (it ran silently without the camera's reliability). A
    wrong type is one line naming the manifest."""
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.app import Runtime
    from edge_mla.runtime.config import RunConfig

    eng = tmp_path / "eng"
    shutil.copytree(exported.out, eng)
    man = json.loads((eng / "manifest.json").read_text())
    man["engines"]["image"]["reliability_output"] = value
    (eng / "manifest.json").write_text(json.dumps(man))
    video = tmp_path / "v.avi"
    write_video(video)
    cfg = dict(engines=eng, camera=str(video), mic=None)
    if needle is not None:
        with pytest.raises(EdgeMlaError, match=needle) as e:
            Runtime(RunConfig(**cfg), outputs=[])
        assert str(eng / "manifest.json") in str(e.value) and "\n" not in str(e.value)
        return
    with caplog.at_level(logging.WARNING, logger="edge_mla.runtime.app"):
        rt = Runtime(RunConfig(**cfg), outputs=[])
    assert rt.reliability is None and rt.engines["image"].reliability_name is None
    assert any("no reliability output" in r.getMessage() for r in caplog.records)
    with pytest.raises(EdgeMlaError, match="no reliability output"):
        Runtime(RunConfig(**cfg, require_reliability=True), outputs=[])


def test_reliability_constants_missing_for_one_engine_are_refused(exported, tmp_path):
    """An engine with a reliability output whose constants are not in the block was
    fused against defaults (reference 1), silently."""
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.app import Runtime
    from edge_mla.runtime.config import RunConfig

    eng = tmp_path / "eng"
    shutil.copytree(exported.out, eng)
    man = json.loads((eng / "manifest.json").read_text())
    del man["fusion"]["reliability"]["modalities"]["audio"]
    (eng / "manifest.json").write_text(json.dumps(man))
    video = tmp_path / "v.avi"
    write_video(video)
    with pytest.raises(EdgeMlaError, match=r"corrupt reliability constants \(fusion.reliability.modalities has no audio"):
        Runtime(RunConfig(engines=eng, camera=str(video), mic=None), outputs=[])


def test_corrupt_constants_exit_2_naming_the_manifest(exported, tmp_path):
    eng = tmp_path / "eng"
    shutil.copytree(exported.out, eng)
    man = json.loads((eng / "manifest.json").read_text())
    man["fusion"]["reliability"]["modalities"]["audio"]["coef"] = ["not a number"]
    (eng / "manifest.json").write_text(json.dumps(man))
    p = run_cli(["run", "--engines", str(eng), "--camera", "none", "--duration", "1"])
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and str(eng / "manifest.json") in err[0] and "corrupt reliability constants" in err[0]


def test_with_a_fast_path_off_its_fault_is_scored_as_degrading(degraded_replay):
    """The replay scorer times "degraded" for the live faults, and for the fast paths'
    own faults (black frames, digital silence) once their thresholds are off: then the
    engine's learned reliability alone has to see them (BENCHMARKS.md section 8)."""
    from edge_mla.runtime.replay.script import DEGRADING_FAULTS, FAST_PATH_FAULTS, degrading_faults
    from edge_mla.runtime.config import RunConfig
    from edge_mla.runtime.replay import score

    fields = set(RunConfig.__dataclass_fields__)
    assert set(FAST_PATH_FAULTS.values()) <= fields  # the options are the runtime's own
    assert degrading_faults(blank_threshold=8.0, silence_threshold=0.002) == DEGRADING_FAULTS
    assert degrading_faults(blank_threshold=0.0, silence_threshold=0.002) == DEGRADING_FAULTS + ("camera_black",)
    assert set(degrading_faults(blank_threshold=0, silence_threshold=0)) == set(DEGRADING_FAULTS) | set(FAST_PATH_FAULTS)
    truth = {**degraded_replay["session_truth"]}
    truth["faults"] = truth["faults"] + [{"kind": "mic_silent", "start": 0.5, "end": 1.5}]
    sc = score(degraded_replay["lines"], truth, degrading=degrading_faults(silence_threshold=0.0))
    silent = [d for d in sc["degraded"] if d["fault"] == "mic_silent"]
    assert len(silent) == 1 and silent[0]["degraded_fraction"] == 0.0  # 0.5-1.5 s is clean audio: not reported degraded
    assert {"degraded_after_s", "ok_after_s"} <= set(silent[0])
    assert "mic_silent" not in {d["fault"] for d in score(degraded_replay["lines"], truth)["degraded"]}
