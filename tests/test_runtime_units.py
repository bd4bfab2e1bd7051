"""Unit tests of the runtime's parts: no sensors, no real-time waits beyond ~1 s."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from test_runtime_support import ROOT, engines  # noqa: F401


def test_runtime_and_run_command_never_import_torch():
    mods = [
        "edge_mla.runtime", "edge_mla.runtime.app", "edge_mla.runtime.sources.camera", "edge_mla.runtime.sources.microphone",
        "edge_mla.runtime.sources.wavfile", "edge_mla.runtime.replay", "edge_mla.runtime.testing.pulse", "edge_mla.runtime.testing.mjpeg",
        "edge_mla.cli.run_cmd", "edge_mla.runtime.audio_stream",
        "edge_mla.runtime.profiling", "edge_mla.runtime.profiling.runtime_profile", "edge_mla.runtime.profiling.report", "edge_mla.cli.profile_cmd",
    ]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + "from edge_mla.cli.main import build_parser; build_parser(only='run')\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_latest_slot_keeps_newest_and_counts_drops():
    from edge_mla.runtime.sources.base import Item, LatestSlot

    s = LatestSlot()
    for i in range(1, 6):
        s.put(Item(i, float(i), i))
    got = s.get_newer(0, 0.0)
    assert got.seq == 5 and s.drops == 4  # 4 items replaced before anyone took them
    assert s.get_newer(5, 0.01) is None
    t = threading.Timer(0.05, lambda: s.put(Item(6, 6.0, 6)))
    t.start()
    assert s.get_newer(5, 1.0).seq == 6  # a waiting consumer is woken
    assert s.drops == 4


def test_backoff_doubles_caps_and_resets():
    from edge_mla.runtime.sources.base import Backoff

    b = Backoff(0.5, 2.0)
    assert [b.failed(0.0) for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert not b.due(1.0) and b.due(2.0)
    b.reset()
    assert b.failed(0.0) == 0.5


def test_pacer_keeps_rate_without_drift_and_stops():
    from edge_mla.runtime.clock import Pacer

    stop = threading.Event()
    p = Pacer(50, stop)
    t0 = time.monotonic()
    for _ in range(25):
        assert p.wait()
    assert 0.45 < time.monotonic() - t0 < 0.75
    stop.set()
    assert p.wait() is False


def _result(m, logits, t_capture, seq=1):
    from edge_mla.runtime.workers import Result

    return Result(m, np.asarray([logits], np.float32), t_capture, t_capture, t_capture, t_capture, seq)


def test_decide_uses_the_shared_entropy_fusion_and_leaves_out_stale_results():
    from edge_mla.fusion import fuse
    from edge_mla.runtime.fusion_loop import decide

    classes = [str(i) for i in range(10)]
    a = np.zeros(10, np.float32)
    a[3] = 4.0
    b = np.zeros(10, np.float32)
    b[5] = 1.0
    res = {"image": _result("image", a, 10.0), "audio": _result("audio", b, 10.0)}
    out = decide(res, classes, staleness=1.0, t=10.5, sensors={"camera": {"state": "ok"}})
    ref, w = fuse({"image": a[None], "audio": b[None]})
    assert out["decision"] and out["label"] == classes[int(ref.argmax())] == "3"
    assert out["used"] == ["image", "audio"]
    assert out["modalities"]["image"]["weight"] == pytest.approx(float(w["image"][0]), abs=1e-4)
    assert out["modalities"]["image"]["weight"] > out["modalities"]["audio"]["weight"]  # lower entropy, more weight
    assert out["modalities"]["audio"]["age"] == pytest.approx(0.5)
    assert out["sensors"] == {"camera": {"state": "ok"}}
    # the image result goes stale: only audio is used, with weight 1, label 5
    res["image"] = _result("image", a, 8.0)
    out = decide(res, classes, staleness=1.0, t=10.5)
    assert out["used"] == ["audio"] and out["label"] == "5"
    assert out["modalities"]["image"]["used"] is False and out["modalities"]["image"]["weight"] == 0.0
    assert out["modalities"]["audio"]["weight"] == pytest.approx(1.0)
    # nothing fresh: an explicit no decision, never the old label
    out = decide(res, classes, staleness=1.0, t=20.0)
    assert out["decision"] is False and out["label"] is None and out["reason"] == "no fresh modality"
    out = decide({"image": None}, classes, 1.0, 0.0)
    assert out["decision"] is False and out["reason"] == "no result yet"


@pytest.mark.parametrize("src,dst", [(48000, 8000), (44100, 8000), (16000, 8000), (8000, 8000), (44101, 8000)])
def test_stream_resampler_equals_resampling_the_whole_stream(src, dst):
    from edge_mla.preprocess import resample
    from edge_mla.runtime.audio_stream import StreamResampler

    rng = np.random.default_rng(1)
    x = rng.standard_normal(src).astype(np.float32)
    full = resample(x, src, dst)
    s = StreamResampler(src, dst)
    parts, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 2500))
        parts.append(s.feed(x[i : i + n]))
        i += n
    y = np.concatenate(parts)
    assert full.size - 40 <= y.size <= full.size
    np.testing.assert_array_equal(y, full[: y.size])


def test_an_odd_rate_is_resampled_by_a_near_ratio_of_few_phases():
    """44101 -> 8000 Hz is 8000/44101 exactly: a 1.4-million-tap filter rebuilt on
    every mic hop starved the audio engine (and 383987 Hz took 12 M taps). The ratio
    is now the nearest one with at most MAX_PHASES phases; standard rates stay exact,
    and a tone keeps its pitch."""
    from edge_mla.preprocess import MAX_PHASES, resample, resample_ratio

    for src, dst in [(44100, 16000), (48000, 8000), (11025, 16000), (192000, 16000), (8000, 16000)]:
        up, down = resample_ratio(src, dst)
        assert src * up == dst * down  # exact
    for src, dst in [(44101, 8000), (383987, 8000), (96001, 16000), (1001, 16000)]:
        up, down = resample_ratio(src, dst)
        assert max(up, down) <= MAX_PHASES and abs(src * up / down - dst) / dst < 1e-4
    src = 44101
    t = np.arange(src) / src
    y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), src, 8000)
    spectrum = np.abs(np.fft.rfft(y[1000:7000] * np.hanning(6000)))
    assert abs(np.argmax(spectrum) * 8000 / 6000 - 440) < 2  # the pitch is kept
    assert abs(y.size - 8000) <= 1


def test_audio_window_holds_the_newest_engine_window():
    from edge_mla.runtime.audio_stream import AudioWindow

    w = AudioWindow(48000, 8000, 8000)
    t = np.arange(48000 * 2) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = w((tone[:4800], False))
    assert out.shape == (8000,) and np.all(out[:7000] == 0)  # only 0.1 s so far: the rest is silence
    out = w((tone[4800:], False))
    spec = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spec) * 8000 / out.size - 440) < 2  # the tone, at the engine rate
    assert 0.45 < np.abs(out).max() < 0.55


def test_mic_ring_returns_only_new_audio_and_flags_gaps(tmp_path):
    import soundfile as sf

    from edge_mla.runtime.sources.microphone import MicSource

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, np.float32), 8000)
    mic = MicSource(str(wav), window_seconds=1.0)
    blk = np.arange(800, dtype=np.float32)
    mic._on_block(blk, 1.0, False)
    it = mic.latest(0)
    np.testing.assert_array_equal(it.data[0], blk)
    assert it.data[1] is False and it.seq == 800 and it.t_capture == 1.0
    assert mic.latest(800) is None
    for k in range(30):  # 24000 samples: more than the 16000-sample ring
        mic._on_block(blk + k, 2.0, k == 0)
    chunk, gap = mic.latest(800).data
    assert gap and chunk.size == mic._size and chunk[-1] == blk[-1] + 29
    assert mic.status.overflows == 1


def test_console_line_is_readable():
    from edge_mla.runtime.outputs import console_line

    rec = {"time": 0.0, "decision": True, "label": "3", "confidence": 0.91, "used": ["image"], "modalities": {"image": {"used": True, "label": "3", "weight": 1.0, "age": 0.05}, "audio": {"used": False, "label": "1", "weight": 0.0, "age": 2.0}}, "sensors": {"camera": {"state": "ok"}, "mic": {"state": "lost"}}}
    line = console_line(rec)
    assert "3 (0.91)" in line and "audio(stale)" in line and "mic lost" in line
    rec.update(decision=False, label=None, reason="no fresh modality")
    assert "no decision (no fresh modality)" in console_line(rec)


def test_scorer_per_span_accuracy_and_recovery():
    from edge_mla.runtime.replay.scorer import score

    truth = {
        "segments": [{"start": 0.0, "end": 4.0, "label": "1"}, {"start": 4.0, "end": 8.0, "label": "2"}],
        "faults": [{"kind": "camera_gone", "start": 4.0, "end": 6.0}],
    }
    lines = []
    for i in range(80):
        t = i * 0.1
        gone = 4.0 <= t < 6.5
        lab = "1" if t < 4.3 else "2"
        mods = {"image": {"used": not gone, "label": lab}, "audio": {"used": True, "label": "2" if t >= 4.0 else "7"}}
        lines.append({"t": t, "decision": True, "label": lab, "used": [m for m in mods if mods[m]["used"]], "modalities": mods, "sensors": {"camera": {"state": "lost" if gone else "ok"}}})
    s = score(lines, truth, settle=1.0)
    assert s["spans"]["clean"]["accuracy"] == 1.0
    assert s["spans"]["clean"]["audio_only"] == pytest.approx(np.mean([(t >= 4.0) for t in [i * 0.1 for i in range(80)] if (1.0 <= t < 4.0) or (7.0 <= t < 8.0)]), abs=0.02)
    assert s["spans"]["camera_gone"]["image_only"] == 0.0 and s["spans"]["camera_gone"]["audio_only"] == 1.0
    rec = s["recovery"][0]
    assert rec["marked_lost"] and rec["used_again_after_s"] == pytest.approx(0.5, abs=0.011)


def test_engine_checks_the_manifest_against_the_onnx_file(engines, tmp_path):
    import shutil

    from edge_mla.errors import EdgeMlaError
    from edge_mla.manifest import load_manifest
    from edge_mla.runtime.engine import Engine

    d = tmp_path / "eng"
    shutil.copytree(engines, d)
    m = json.loads((d / "manifest.json").read_text())
    m["engines"]["image"]["input"]["name"] = "pixels"
    (d / "manifest.json").write_text(json.dumps(m))
    man = load_manifest(d)
    with pytest.raises(EdgeMlaError, match="does not match its engines"):
        Engine(man.engine("image"), 10)
    e = Engine(man.engine("audio"), 10)
    assert e.run(np.zeros(8000, np.float32)).shape == (1, 10)
    with pytest.raises(EdgeMlaError, match="outputs but the manifest lists 12 classes"):
        Engine(man.engine("audio"), 12)


def test_worker_drops_non_finite_engine_output():
    """An engine that passed its warm-up can still give NaN on some input: that result
    is an error, never a vote (argmax of NaN is class 0) nor a NaN in the JSON lines."""
    import types

    from edge_mla.runtime.workers import Worker

    outs = [np.full((1, 10), np.nan, np.float32), np.ones((1, 10), np.float32), np.array([[np.inf] * 10], np.float32)]

    class Engine:
        def infer(self, x):
            return outs[int(x[0])], (np.array([0.9], np.float32) if int(x[0]) != 1 else np.array([np.nan], np.float32))

    items = [types.SimpleNamespace(seq=i + 1, data=np.array([i], np.float32), t_capture=0.0) for i in range(3)]
    stop = threading.Event()

    def take(last_seq, timeout):
        nxt = next((it for it in items if it.seq > last_seq), None)
        if nxt is None:
            stop.set()
        return nxt

    w = Worker("audio", Engine(), take, lambda x: x, None, stop)
    w._run()
    assert w.results == 0 and w.errors == 3 and w.latest() is None  # NaN logits, NaN reliability, inf logits


def test_audio_worker_gate_drops_silent_windows():
    """A muted mic (digital silence) is not data: the worker publishes nothing for it,
    so the last audio result ages out instead of voting whatever the engine makes of
    silence (measured in the demo: a confident wrong digit)."""
    import threading
    import types

    import numpy as np

    from edge_mla.runtime.workers import Worker

    class FakeEngine:
        def __init__(self):
            self.calls = 0

        def run(self, x):
            self.calls += 1
            return np.ones((1, 10), np.float32)

    items = [types.SimpleNamespace(seq=1, data=np.zeros(8000, np.float32), t_capture=0.0),
             types.SimpleNamespace(seq=2, data=np.full(8000, 0.1, np.float32), t_capture=0.0)]
    served = []
    stop = threading.Event()

    def take(last_seq, timeout):
        for it in items:
            if it.seq > last_seq:
                served.append(it.seq)
                return it
        stop.wait(0.01)
        return None

    thr = 0.002
    engine = FakeEngine()
    w = Worker("audio", engine, take, lambda x: x, None, stop, gate=lambda x: float(np.sqrt(np.mean(x * x))) >= thr)
    w.start()
    for _ in range(200):
        if w.results:
            break
        stop.wait(0.01)
    stop.set()
    w.join()
    assert served[:2] == [1, 2]
    assert w.gated == 1 and engine.calls == 1 and w.results == 1
    assert w.latest().seq == 2


def test_resource_sampler_keeps_a_bounded_window_and_trims_the_heap():
    """A runtime runs for months: its RSS samples stay a bounded window (CPU % and
    peak cover the whole run) and freed heap pages are handed back periodically."""
    import threading
    import time

    from edge_mla.runtime.stats import ResourceSampler

    stop = threading.Event()
    rs = ResourceSampler(stop, period=0.01, maxlen=5, trim_every=0.02)
    calls = []
    rs._trim = lambda pad: calls.append(pad) or 1
    rs.start()
    time.sleep(0.3)
    stop.set()
    out = rs.finish()
    assert len(rs.samples) == 5 and len(out["rss_mb"]) == 5
    assert out["peak_rss_mb"] > 1 and out["cpu_percent"] >= 0
    assert len(calls) >= 2 and set(calls) == {0}


def test_malloc_arenas_are_capped_once_and_the_environment_wins(monkeypatch):
    """The runtime caps glibc's malloc arenas before its threads start (memory of
    many stations), once per process; a MALLOC_ARENA_MAX set by the user wins."""
    from edge_mla.runtime import memory

    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_arenas() is False and memory._done is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(memory, "_libc", lambda: Libc())
    assert memory.limit_arenas() is True and memory.limit_arenas() is False
    assert calls == [(memory.M_ARENA_MAX, memory.RUNTIME_ARENAS)]


def test_a_portaudio_call_that_does_not_return_is_given_up_and_blocks_the_next():
    """A hung sound server blocks PortAudio calls for 30 s or for good: each call is
    waited for a bounded time, and none is made while an earlier one is stuck."""
    import threading
    import time

    from edge_mla.runtime.sources.microphone import portaudio_call

    assert portaudio_call(lambda: 41 + 1, "add") == 42
    with pytest.raises(ZeroDivisionError):
        portaudio_call(lambda: 1 / 0, "divide")  # a call's own error reaches the caller
    release = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(OSError, match="did not answer within 0.2s"):
        portaudio_call(lambda: release.wait(30), "stuck", timeout=0.2)
    assert time.monotonic() - t0 < 5
    with pytest.raises(OSError, match="has not answered an earlier call"):
        portaudio_call(lambda: 1, "next")
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert portaudio_call(lambda: 1, "after") == 1
            break
        except OSError:
            time.sleep(0.05)
    else:
        raise AssertionError("calls stayed blocked after the stuck one returned")


def test_a_stream_url_password_is_masked_in_messages():
    from edge_mla.runtime.sources.camera import shown

    assert shown("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://admin:***@10.0.0.5:554/stream1"
    assert shown("http://user@cam/video") == "http://user@cam/video"  # no password
    assert shown("http://cam/video") == "http://cam/video" and shown("0") == "0" and shown("/data/a@b.avi") == "/data/a@b.avi"
