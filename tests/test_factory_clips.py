"""Event clips: a scripted camera outage in a replayed session gives a "lost" and a
"back" clip with video, WAV, decision records and a reason; the pairs.csv index
reads like a folder dataset; the disk budget deletes the oldest; low confidence
triggers once per episode; an unwritable folder is exit 2 at start."""

from __future__ import annotations

import csv
import json
import os

import pytest

from test_runtime_cli import _one_error_line, session  # noqa: F401
from test_runtime_support import engines, run_cli  # noqa: F401


def _clips(root):
    return sorted(p for p in (root / "clips").iterdir() if not p.name.startswith("."))


def test_camera_outage_writes_lost_and_back_clips(engines, session, tmp_path):
    import cv2
    import soundfile as sf

    from edge_mla.data.folder import read_audio_file, read_image_file
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config

    root = tmp_path / "clips"
    cfg = session_config(session, engines=engines, json_stdout=False, rate=10, clips=root, clip_pre=1.5, clip_post=1.0, clip_confidence=0.0)
    rt = Runtime(cfg, outputs=[])
    rt.run()
    snap = rt.floor.clips.snapshot()
    clips = _clips(root)
    reasons = [json.loads((c / "reason.json").read_text())["reason"] for c in clips]
    assert reasons == ["camera-lost", "camera-back"], reasons
    assert snap["written"] == 2 and snap["dropped"] == 0
    for c in clips:
        meta = json.loads((c / "reason.json").read_text())
        cap = cv2.VideoCapture(str(c / "video.avi"))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert n == meta["frames"] > 5  # frames from before the loss / after the return
        audio, rate = sf.read(str(c / "audio.wav"))
        assert rate == 48000 and abs(len(audio) / rate - meta["audio_seconds"]) < 0.01
        assert 1.5 <= meta["audio_seconds"] <= 3.5  # pre-roll + post-roll of mic audio
        recs = [json.loads(l) for l in (c / "decisions.jsonl").read_text().splitlines()]
        # ~2.5 s of decisions: up to --rate (10) a second from the camera plus one per mic hop (4)
        assert 15 <= len(recs) <= 45 and all(r["engines"] == meta["engines"] for r in recs)
        assert meta["sensors"]["camera"] == ("lost" if meta["reason"] == "camera-lost" else "ok")
    classes = (root / "classes.txt").read_text().split()
    with open(root / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["label"] in classes for r in rows)
    for r in rows:  # what `edge-mla train --dataset folder` reads
        assert read_image_file(root / r["image"], 28).shape == (1, 28, 28)
        assert read_audio_file(root / r["audio"], 16000).size > 16000


def test_disk_budget_keeps_the_newest_and_rebuilds_the_index(engines, session, tmp_path):
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config

    root = tmp_path / "clips"
    cfg = session_config(session, engines=engines, json_stdout=False, rate=10, clips=root, clip_pre=1.5, clip_post=1.0, clip_confidence=0.0, clips_max_mb=0.01)
    rt = Runtime(cfg, outputs=[])
    rt.run()
    snap = rt.floor.clips.snapshot()
    clips = _clips(root)
    assert snap["written"] == 2 and snap["deleted"] == 1 and len(clips) == 1
    assert json.loads((clips[0] / "reason.json").read_text())["reason"] == "camera-back"
    rows = list(csv.DictReader(open(root / "pairs.csv", newline="")))
    assert [r["image"].split("/")[1] for r in rows] == [clips[0].name]


def test_low_confidence_triggers_once_per_episode(tmp_path):
    from edge_mla.runtime.clips import ClipRecorder
    from edge_mla.runtime.config import RunConfig

    cfg = RunConfig(engines=tmp_path, clips=tmp_path / "c", clip_confidence=0.6, clip_low_seconds=1.0, clip_post=0.5)
    rec = ClipRecorder(cfg, None, None, ["a", "b"])
    sensors = {"camera": {"state": "ok"}, "mic": {"state": "ok"}}
    t = 0.0
    for conf in [0.9] * 5 + [0.4] * 30 + [0.9] * 3 + [0.3] * 5:
        rec._check(t, {"decision": True, "label": "a", "confidence": conf, "sensors": sensors})
        t += 0.1
    assert rec._active is not None and rec._active["reasons"] == ["low-confidence"]  # 3 s low: one trigger; 0.5 s low: none
    assert abs(rec._active["t0"] - 1.5) < 1e-6  # fired 1 s into the episode that began at 0.5 s


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: permissions cannot make a folder unwritable")
def test_unwritable_clips_dir_exits_2(engines, session, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    _one_error_line(run_cli(["run", "--engines", str(engines), "--replay", str(session.root), "--clips", str(ro / "x")]), "--clips")


def test_clips_path_that_is_a_file_exits_2(engines, session, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _one_error_line(run_cli(["run", "--engines", str(engines), "--replay", str(session.root), "--out", str(tmp_path / "o.jsonl"), "--clips", str(f / "sub")]), "--clips")


def test_the_roll_of_camera_frames_is_bounded_in_memory(engines, session, tmp_path):
    """Frames are kept raw for the pre-roll: 1080p at 30 fps with --clip-pre 60 held
    about 11 GB. --clips-buffer-mb caps the roll; the oldest frames go first, counted."""
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config

    cfg = session_config(session, engines=engines, json_stdout=False, rate=10, clips=tmp_path / "clips", clip_pre=60.0, clip_post=1.0, clips_buffer_mb=1.0, duration=6.0)
    rt = Runtime(cfg, outputs=[])
    clips = rt.floor.clips
    peak = []
    orig = clips._pop

    def watch(dq):
        peak.append(clips._frame_bytes)
        orig(dq)

    clips._pop = watch
    rt.run()
    frame = session_frame_bytes(session)
    assert clips.trimmed > 0 and clips.snapshot()["trimmed"] == clips.trimmed
    assert max(peak) <= 2**20 + frame  # at most one frame over the cap, before it is trimmed
    assert clips._frame_bytes <= 2**20


def session_frame_bytes(session) -> int:
    import cv2

    cap = cv2.VideoCapture(str(session.video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame.nbytes


def test_a_failed_clip_leaves_no_temp_folder_and_the_index_keeps_classes(engines, session, tmp_path, monkeypatch):
    """A clip that failed mid-write (disk full, read-only) left its .tmp-* folder for
    good; a clips folder removed mid-run came back without classes.txt."""
    from edge_mla.runtime import Runtime, clips as clips_mod
    from edge_mla.runtime.replay.recorder import session_config

    real = clips_mod.ClipRecorder._write_into
    calls = []

    def first_fails(self, tmp, job, clips, name):
        calls.append(name)
        if len(calls) == 1:
            (tmp / "video.avi").write_bytes(b"half")
            raise OSError(28, "No space left on device")
        return real(self, tmp, job, clips, name)

    monkeypatch.setattr(clips_mod.ClipRecorder, "_write_into", first_fails)
    root = tmp_path / "clips"
    rt = Runtime(session_config(session, engines=engines, json_stdout=False, rate=10, clips=root, clip_pre=1.5, clip_post=1.0, clip_confidence=0.0), outputs=[])
    rt.run()
    snap = rt.floor.clips.snapshot()
    assert len(calls) >= 2 and snap["dropped"] == 1 and snap["written"] == len(calls) - 1
    assert not list((root / "clips").glob(".tmp-*"))
    (root / "classes.txt").unlink()
    rt.floor.clips._enforce_budget()
    assert (root / "classes.txt").read_text().split() == rt.classes


def _clip_job(frames):
    return {"wall": 1.7e9, "reasons": ["camera-lost"], "t0": 0.0, "t_end": 1.0, "frames": [(i * 0.1, f) for i, f in enumerate(frames)],
            "trigger_frame": frames[0], "audio": [], "records": [], "record": {"decision": False, "sensors": {}}, "checksum": ""}


def test_clip_video_holds_every_frame_whatever_the_camera_gives(tmp_path):
    """OpenCV's MJPG writer skips a 4-channel, 1-channel or 16-bit frame without
    raising: the clip was kept with an empty video.avi. Each kind is written now."""
    import cv2
    import numpy as np

    from edge_mla.runtime.clips import ClipRecorder
    from edge_mla.runtime.config import RunConfig

    rec = ClipRecorder(RunConfig(engines=tmp_path, clips=tmp_path / "c"), None, None, ["a"])
    kinds = [np.full((24, 32, 4), 90, np.uint8), np.full((24, 32, 1), 90, np.uint8), np.full((24, 32), 90, np.uint8),
             np.full((24, 32, 3), 90 * 256, np.uint16)]
    for n, frame in enumerate(kinds):
        rec._write(_clip_job([frame] * 6))
        clip = sorted((tmp_path / "c" / "clips").iterdir())[n]
        cap = cv2.VideoCapture(str(clip / "video.avi"))
        got = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            got.append(f)
        cap.release()
        assert len(got) == 6, (frame.shape, frame.dtype)
        assert abs(float(got[0].mean()) - 90) < 3  # the 16-bit frame scaled, not clipped to white
        assert cv2.imread(str(clip / "frame.png")).shape == (24, 32, 3)


def test_a_video_write_opencv_drops_silently_fails_the_clip(tmp_path, monkeypatch):
    """A write OpenCV drops without raising (a full disk) left a clip without its
    video; the written file is read back and the clip counts as failed."""
    import cv2
    import numpy as np

    from edge_mla.runtime import clips as clips_mod
    from edge_mla.runtime.config import RunConfig

    real = cv2.VideoWriter

    class Dropping:
        def __init__(self, *a):
            self._vw = real(*a)

        def isOpened(self):
            return self._vw.isOpened()

        def write(self, frame):  # what OpenCV does on a failed write: nothing, no error
            pass

        def release(self):
            self._vw.release()

    monkeypatch.setattr(cv2, "VideoWriter", Dropping)
    rec = clips_mod.ClipRecorder(RunConfig(engines=tmp_path, clips=tmp_path / "c"), None, None, ["a"])
    with pytest.raises(OSError, match="wrote 0 of 6 frames"):
        rec._write(_clip_job([np.full((24, 32, 3), 90, np.uint8)] * 6))
    assert list((tmp_path / "c" / "clips").iterdir()) == []
