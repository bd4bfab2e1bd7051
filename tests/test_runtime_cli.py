"""`edge-mla run` as a user meets it: bad arguments give one clear line and exit 2;
a run on files writes valid JSON lines; SIGTERM shuts down cleanly."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from export_fixtures import exported, tiny_run  # noqa: F401
from test_runtime_support import ROOT, engines, read_jsonl, run_cli  # noqa: F401


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from edge_mla.runtime.replay import Fault, Script, record_session

    script = Script(segments=4, segment_seconds=2.0, fps=15, frame_size=(160, 120), faults=[Fault("camera_gone", 2.0, 4.0)])
    return record_session(script, tmp_path_factory.mktemp("cli-session"))


def _one_error_line(p: subprocess.CompletedProcess, needle: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith("edge-mla run: error:")]
    assert len(errors) == 1, p.stderr
    assert p.stderr.strip().splitlines()[-1] == errors[0]  # the last thing the user sees
    assert needle in errors[0], errors[0]
    return errors[0]


def test_missing_engine_folder(tmp_path):
    _one_error_line(run_cli(["run", "--engines", str(tmp_path / "nope"), "--camera", "none", "--mic", "none"]), "nothing to run")
    _one_error_line(run_cli(["run", "--engines", str(tmp_path / "nope"), "--mic", "none"]), "engine folder not found")
    (tmp_path / "empty").mkdir()
    _one_error_line(run_cli(["run", "--engines", str(tmp_path / "empty"), "--mic", "none"]), "manifest.json: missing")


def test_manifest_that_does_not_match_its_engines(engines, tmp_path, session):
    d = shutil.copytree(engines, tmp_path / "eng")
    m = json.loads((d / "manifest.json").read_text())
    m["engines"]["audio"]["input"]["name"] = "pcm"
    (d / "manifest.json").write_text(json.dumps(m))
    _one_error_line(run_cli(["run", "--engines", str(d), "--camera", "none", "--mic", str(session.audio)]), "does not match its engines")
    # an engine file changed after export
    d2 = shutil.copytree(engines, tmp_path / "eng2")
    with open(d2 / "image.fp32.onnx", "ab") as f:
        f.write(b"\0")
    _one_error_line(run_cli(["run", "--engines", str(d2), "--camera", str(session.video), "--mic", "none"]), "does not match its sha256")
    # a modality the folder has no engine for
    d3 = shutil.copytree(engines, tmp_path / "eng3")
    m = json.loads((d3 / "manifest.json").read_text())
    del m["engines"]["audio"]
    (d3 / "manifest.json").write_text(json.dumps(m))
    _one_error_line(run_cli(["run", "--engines", str(d3), "--camera", str(session.video), "--mic", str(session.audio)]), "no audio engine")
    _one_error_line(run_cli(["run", "--engines", str(engines), "--precision", "int8", "--camera", str(session.video), "--mic", "none"]), "no int8 variant")


def test_camera_that_cannot_open(engines, tmp_path):
    from edge_mla.runtime.testing.mjpeg import free_port

    _one_error_line(run_cli(["run", "--engines", str(engines), "--camera", str(tmp_path / "missing.avi"), "--mic", "none"]), "no such file")
    # a device or stream that cannot open is fatal only with --require-sensors (see test_factory_boot.py)
    _one_error_line(run_cli(["run", "--engines", str(engines), "--camera", "9", "--mic", "none", "--require-sensors"]), "--camera 9: cannot open the camera (index)")
    bad = tmp_path / "notavideo.avi"
    bad.write_text("hello")
    _one_error_line(run_cli(["run", "--engines", str(engines), "--camera", str(bad), "--mic", "none"]), "cannot open the camera")
    _one_error_line(run_cli(["run", "--engines", str(engines), "--camera", f"http://127.0.0.1:{free_port()}/video", "--mic", "none", "--require-sensors"]), "cannot open the camera (url)")


def test_unknown_mic(engines):
    _one_error_line(run_cli(["run", "--engines", str(engines), "--camera", "none", "--mic", "no-such-mic-xyz", "--require-sensors"]), "--mic no-such-mic-xyz: no such input device")
    _one_error_line(run_cli(["run", "--engines", str(engines), "--camera", "none", "--mic", "/no/such.wav"]), "no such WAV file")


def test_bad_values(engines, session):
    _one_error_line(run_cli(["run", "--engines", str(engines), "--replay", str(session.root), "--rate", "0"]), "--rate must be a finite number >= 0.001")
    _one_error_line(run_cli(["run", "--engines", str(engines), "--replay", str(session.root.parent)]), "not a replay session")


def test_run_on_files_writes_json_lines_and_a_summary(engines, session, tmp_path):
    out = tmp_path / "run.jsonl"
    p = run_cli(["run", "--engines", str(engines), "--replay", str(session.root), "--out", str(out), "--rate", "5", "--precision", "fp32"], timeout=60)
    assert p.returncode == 0, p.stderr
    lines = read_jsonl(out)
    # 8 s of media, then every source ended; each modality triggers at most 5 decisions/s
    # (the 4 Hz audio hop every one of its results), plus heartbeats while results pause
    assert 30 <= len(lines) <= 8 * 5 * 3
    for r in lines:
        assert set(r) >= {"time", "t", "station", "decision", "label", "confidence", "used", "modalities", "sensors"}
        assert r["station"] == "default"
        for m in ("image", "audio"):
            d = r["modalities"][m]
            assert set(d) >= {"used", "age", "weight"}
    mid = [r for r in lines if 3.0 <= r["t"] < 3.8]
    assert mid and all(r["sensors"]["camera"]["state"] == "lost" and r["used"] == ["audio"] for r in mid)
    assert f"{len(lines)} lines written" in p.stderr
    assert "latency image: capture->output p50" in p.stderr and "peak RSS" in p.stderr
    # --console: a readable line per decision on stdout
    # --video-rate caps the image engine below the 15 fps of the file
    p = run_cli(["run", "--engines", str(engines), "--replay", str(session.root), "--console", "--duration", "2", "--mic", "none", "--video-rate", "5"], timeout=60)
    assert p.returncode == 0, p.stderr
    rows = [l for l in p.stdout.splitlines() if l.strip()]
    assert len(rows) >= 15 and all("| camera" in l for l in rows)
    assert not any(l.startswith("{") for l in rows)
    import re

    runs = int(re.search(r"image: (\d+) engine runs", p.stderr).group(1))
    assert 5 <= runs <= 12, p.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(engines, session, tmp_path, sig):
    out = tmp_path / "run.jsonl"
    cmd = [sys.executable, "-m", "edge_mla.cli.main", "run", "--engines", str(engines), "--replay", str(session.root), "--loop", "--out", str(out)]
    p = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while (not out.exists() or len(out.read_text().splitlines()) < 20) and time.monotonic() - t0 < 30:
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()[1]
        p.send_signal(sig)
        t1 = time.monotonic()
        _, err = p.communicate(timeout=10)
        assert time.monotonic() - t1 < 5
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert f"{sig.name}: stopping" in err
    assert "clean shutdown: all runtime threads joined" in err
    lines = out.read_text().splitlines()
    assert all(json.loads(l) for l in lines)  # every line complete: flushed, not cut
    assert f"{len(lines)} lines written" in err


def test_runs_engines_written_by_edge_mla_export(exported, session, tmp_path):
    """The real export's folder (INT8 QDQ default + FP32 variant) loads and runs."""
    for precision in ("int8", "fp32"):
        out = tmp_path / f"{precision}.jsonl"
        p = run_cli(["run", "--engines", str(exported.out), "--replay", str(session.root), "--precision", precision, "--duration", "3", "--out", str(out)], timeout=60)
        assert p.returncode == 0, p.stderr
        lines = read_jsonl(out)
        assert len(lines) >= 20 and sum(r["decision"] for r in lines) >= 20
        assert f".{precision}.onnx" in p.stderr  # "runtime started: image <- image.int8.onnx, ..."
        assert "0 errors" in p.stderr and " 1 errors" not in p.stderr
