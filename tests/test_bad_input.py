"""The bad-input matrix: for every subcommand, one parametrized test per kind of
mistake. Each asserts exit 2, stderr exactly one line naming the file or option
and the problem, no traceback, and that nothing was written, changed or emptied.

In-process (``main([...])``) except where the process boundary is the point: a
closed stdout pipe, SIGTERM, and what torch prints around a refused checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from badinput_support import (  # noqa: F401  (fixtures)
    ROOT, assert_one_error_line, bad_folder, cli, cli_subprocess, edit_manifest, folder_dataset, manifest_copy, media, pairs_root, snapshot, tiny_engines, write_wav,
)

NAN_INF = ["nan", "inf", "-inf"]


# -- run -------------------------------------------------------------------------------

RUN_NUMBERS = [
    ("--rate", "nan"), ("--rate", "inf"), ("--rate", "0"), ("--rate", "1e9"),
    ("--staleness", "nan"), ("--staleness", "-1"),
    ("--threads", "0"), ("--threads", "-3"),
    ("--mic-rate", "0"), ("--blank-threshold", "-1"), ("--blank-threshold", "nan"),
    ("--silence-threshold", "inf"), ("--hop", "nan"), ("--duration", "nan"), ("--duration", "inf"),
    ("--video-rate", "inf"), ("--camera-timeout", "0"), ("--mic-timeout", "nan"),
    # a wait past threading.TIMEOUT_MAX killed the fusion or worker thread; OpenCV takes int32 ms
    ("--rate", "1e-12"), ("--video-rate", "1e-10"), ("--camera-timeout", "3000000"), ("--mic-timeout", "1e12"),
]


@pytest.mark.parametrize("flag,value", RUN_NUMBERS, ids=[f"{f}={v}" for f, v in RUN_NUMBERS])
def test_run_rejects_bad_numbers(capsys, tmp_path, tiny_engines, media, flag, value):
    out = tmp_path / "results.jsonl"
    out.write_text("kept\n")
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--camera", media["video"], "--mic", media["wav"], "--out", out, "--force", flag, value)
    assert_one_error_line("run", rc, err, flag, {"1e9": "1e+09", "1e12": "1e+12", "3000000": "3e+06"}.get(value, value))
    assert out.read_text() == "kept\n"


def _set(path: list, value):
    def fn(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        if value is KeyError:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return fn


MANIFEST_MISTAKES = {
    "engines-is-a-list": (_set(["engines"], ["image"]), "engines must be an object"),
    "input-is-a-string": (_set(["engines", "image", "input"], "image"), "engines.image.input must be an object"),
    "file-is-an-int": (_set(["engines", "image", "file"], 3), "engines.image.file must be a string"),
    "sample-rate-is-a-string": (_set(["engines", "audio", "audio", "sample_rate"], "8000"), "engines.audio.audio.sample_rate must be an integer"),
    "classes-is-a-string": (_set(["classes"], "0123456789"), "classes must be a list"),
    "image-size-negative": (_set(["engines", "image", "image", "size"], -5), "engines.image.image.size must be an integer >= 1"),
    "classes-empty": (_set(["classes"], []), "classes must list at least one class"),
    "output-missing": (_set(["engines", "audio", "output"], KeyError), "engines.audio.output is missing"),
    "sha256-garbage": (_set(["engines", "image", "sha256"], "xyz"), "engines.image.sha256 must be 64"),
    "file-outside-folder": (_set(["engines", "image", "file"], "../image.fp32.onnx"), "must name a file inside the engine folder"),
    "classes-vs-output": (_set(["engines", "image", "output", "shape"], ["batch", 3]), "ends in 3 but classes lists 10"),
    "unknown-fusion-rule": (_set(["fusion", "rule"], "vote"), "fusion.rule must be one of"),
    "window-nan": (_set(["engines", "audio", "audio", "window"], float("nan")), "engines.audio.audio.window must be an integer"),
    "default-file-not-its-variant": (_set(["engines", "image", "file"], "audio.fp32.onnx"), "engines.image.file is 'audio.fp32.onnx' but variants.fp32.file"),
}


@pytest.mark.parametrize("mistake", list(MANIFEST_MISTAKES))
def test_run_rejects_bad_manifest_and_keeps_results(capsys, tmp_path, tiny_engines, media, mistake):
    fn, needle = MANIFEST_MISTAKES[mistake]
    eng = edit_manifest(manifest_copy(tiny_engines, tmp_path / "eng"), fn)
    out = tmp_path / "results.jsonl"
    out.write_text('{"old": 1}\n')
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "run", "--engines", eng, "--camera", media["video"], "--mic", media["wav"], "--out", out, "--force", "--duration", "1")
    assert_one_error_line("run", rc, err, str(eng / "manifest.json"), needle)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b"\xff\xfe{}", b"[" * 1000 + b"]" * 1000], ids=["empty", "not-json", "array", "not-utf8", "nested-too-deeply"])
def test_run_rejects_unreadable_manifest(capsys, tmp_path, tiny_engines, content):
    eng = manifest_copy(tiny_engines, tmp_path / "eng")
    (eng / "manifest.json").write_bytes(content)
    rc, _, err = cli(capsys, "run", "--engines", eng, "--camera", "none", "--mic", "x.wav")
    assert_one_error_line("run", rc, err, "manifest.json")


def test_run_verifies_engine_hashes_before_loading(capsys, tmp_path, tiny_engines, media):
    eng = manifest_copy(tiny_engines, tmp_path / "eng")
    (eng / "audio.fp32.onnx").write_bytes(b"not an onnx file")  # would crash ORT if loaded
    rc, _, err = cli(capsys, "run", "--engines", eng, "--camera", "none", "--mic", media["wav"])
    assert_one_error_line("run", rc, err, "audio.fp32.onnx", "does not match its sha256")


def _wav_variants(tmp: Path, wav: Path) -> dict:
    b = wav.read_bytes()
    (tmp / "cut.wav").write_bytes(b[: 44 + (len(b) - 44) // 2])
    (tmp / "header-only.wav").write_bytes(b[:44])
    (tmp / "zero.wav").write_bytes(b[:40] + (0).to_bytes(4, "little"))
    (tmp / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (tmp / "text.wav").write_text("hello")
    import soundfile as sf

    sf.write(str(tmp / "nan.wav"), np.full(8000, np.nan, np.float32), 8000, subtype="FLOAT")
    return {"cut": ("cut.wav", "truncated"), "header-only": ("header-only.wav", "truncated"), "zero": ("zero.wav", "no audio samples"),
            "garbage": ("garbage.wav", "WAV"), "text": ("text.wav", "cannot read as audio"), "missing": ("nope.wav", "no such WAV file"),
            "nan": ("nan.wav", "NaN or infinite samples")}


@pytest.mark.parametrize("kind", ["cut", "header-only", "zero", "garbage", "text", "missing", "nan"])
def test_run_rejects_bad_wav(capsys, tmp_path, tiny_engines, media, kind):
    name, needle = _wav_variants(tmp_path, media["wav"])[kind]
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--camera", "none", "--mic", tmp_path / name, "--out", tmp_path / "o.jsonl")
    assert_one_error_line("run", rc, err, f"--mic {tmp_path / name}", needle)
    assert not (tmp_path / "o.jsonl").exists()


def test_run_out_mistakes(capsys, tmp_path, tiny_engines, media):
    base = ["run", "--engines", tiny_engines, "--camera", "none", "--mic", media["wav"], "--duration", "1"]
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "afile").write_text("x")
    res = tmp_path / "results.jsonl"
    res.write_text('{"old": 1}\n')
    before = snapshot(tmp_path)
    for out, needle in ((tmp_path / "dir.jsonl", "is a folder"), (tmp_path / "afile" / "r.jsonl", "is a file, not a folder"), (res, "file exists")):
        rc, _, err = cli(capsys, *base, "--out", out)
        assert_one_error_line("run", rc, err, f"--out {out}", needle)
    # a camera that cannot open, even with --force: the old results stay
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--camera", tmp_path / "afile", "--mic", "none", "--out", res, "--force")
    assert_one_error_line("run", rc, err, "--camera", "cannot open")
    assert snapshot(tmp_path) == before
    # --append adds, --force replaces
    assert cli(capsys, *base, "--out", res, "--append")[0] == 0
    lines = res.read_text().splitlines()
    assert lines[0] == '{"old": 1}' and len(lines) > 1 and all(json.loads(x) for x in lines)
    assert cli(capsys, *base, "--out", res, "--force")[0] == 0
    assert '{"old": 1}' not in res.read_text()


@pytest.mark.parametrize("camera,needle", [("2147483648", "a camera index must be 0 to 2147483647"), ("-1", "a camera index must be 0 to"),
                                           ("file:///tmp/clip.avi", "without file://")])
def test_run_camera_values_that_cannot_open_are_one_line(capsys, tiny_engines, camera, needle):
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--camera", camera, "--mic", "none", "--duration", "1")
    assert_one_error_line("run", rc, err, f"--camera {camera}", needle)


@pytest.mark.parametrize("key", ["out", "engines", "clips", "metrics", "camera"])
def test_stations_file_value_with_a_nul_is_one_line(capsys, tmp_path, tiny_engines, media, key):
    """TOML can carry a NUL ("\\u0000"); open(), bind() and OpenCV raised a traceback."""
    values = {"engines": str(tiny_engines), "camera": str(media["video"]), "out": str(tmp_path / "o.jsonl")}
    values[key] = values.get(key, "x") + "\x00y"
    body = "[runtime]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if k != "camera") + f"[[station]]\nname = 'a'\ncamera = {json.dumps(values['camera'])}\n"
    conf = tmp_path / "stations.toml"
    conf.write_text(body)
    rc, _, err = cli(capsys, "run", "--config", conf)
    assert_one_error_line("run", rc, err, "NUL")
    assert "\x00" not in err and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda t: [1, 2], "not an edge-mla replay truth file"),
    (lambda t: t.pop("video") and t, "video must name a file inside the session folder (got None)"),
    (lambda t: {**t, "video": 5}, "video must name a file inside the session folder (got 5)"),
    (lambda t: {**t, "audio": "../../../../etc/passwd"}, "audio must name a file inside the session folder"),
    (lambda t: {**t, "outages": None}, "outages must be an object"),
    (lambda t: {**t, "outages": {"camera": [[1]]}}, "outages.camera must be a list of [start, end] seconds"),
    (lambda t: {**t, "outages": {"camera": [["a", "b"]]}}, "outages.camera must be a list of [start, end] seconds"),
    (lambda t: {**t, "outages": {"Camera": [[1, 2]]}}, "outages.Camera: unknown sensor"),  # ignored: the scripted outage never happened
])
def test_run_replay_with_a_corrupt_truth_file_is_one_line(capsys, tmp_path, tiny_engines, media, edit, needle):
    """A replay session's truth.json is a file handed to the runtime: a wrong type gave
    AttributeError / KeyError / TypeError tracebacks, and a '..' name was followed out
    of the session folder."""
    import shutil

    from edge_mla.runtime.replay.recorder import TRUTH_FORMAT

    session = tmp_path / "session"
    session.mkdir()
    shutil.copy(media["video"], session / "session.avi")
    shutil.copy(media["wav"], session / "session.wav")
    truth = {"format": TRUTH_FORMAT, "video": "session.avi", "audio": "session.wav", "outages": {"camera": [], "mic": []}}
    (session / "truth.json").write_text(json.dumps(edit(truth)))
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--replay", session, "--duration", "1")
    assert_one_error_line("run", rc, err, str(session / "truth.json"), needle)


@pytest.mark.parametrize("args,needle", [
    (["run", "--camera", "none", "--clips", ""], "--clips: an empty path"),  # Path("") is ".": clips went into the current folder
    (["run", "--camera", "none", "--out", ""], "--out: an empty path"),
    (["run", "--camera", "none", "--mic", ""], "--mic: an empty path"),  # "Multiple input devices found for ''"
    (["run", "--camera", ""], "--camera: an empty path"),
    (["train", "--dataset", "demo", "--out", ""], "--out: an empty path"),
    (["eval", "RUN", "--no-corrupt", "--signal", "foo"], "--signal 'foo': choose one of"),
])
def test_empty_paths_and_unused_but_wrong_options_are_one_line(capsys, tmp_path, tiny_engines, media, args, needle):
    args = [str(tmp_path) if a == "RUN" else a for a in args]
    if args[0] == "run":
        args += ["--engines", tiny_engines, "--duration", "1"] + ([] if "--mic" in args else ["--mic", media["wav"]])
    rc, _, err = cli(capsys, *args)
    assert_one_error_line(args[0], rc, err, needle)


def test_a_stations_key_given_twice_is_one_line(capsys, tmp_path, tiny_engines, media):
    conf = tmp_path / "stations.toml"
    conf.write_text(f"[runtime]\nengines = {json.dumps(str(tiny_engines))}\nclip-pre = 3\nclip_pre = 9\n[[station]]\nname = 'a'\nmic = {json.dumps(str(media['wav']))}\n")
    rc, _, err = cli(capsys, "run", "--config", conf)
    assert_one_error_line("run", rc, err, str(conf), "sets clip_pre a second time")


def test_run_out_named_pipe_needs_a_reader_and_feeds_one(capsys, tmp_path, tiny_engines, media):
    """A FIFO nobody reads blocked open() for good (SIGTERM and --duration ignored);
    with a reader the records go through it."""
    import threading

    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    base = ["run", "--engines", tiny_engines, "--camera", "none", "--mic", media["wav"], "--duration", "1", "--out", fifo]
    rc, _, err = cli(capsys, *base)
    assert_one_error_line("run", rc, err, f"--out {fifo}", "no process is reading")
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(open(fifo).read().splitlines()))
    reader.start()
    for _ in range(200):  # the reader's open() returns only once a writer opens
        rc, _, err = cli(capsys, *base)
        if rc == 0 or "no process is reading" not in err:
            break
        time.sleep(0.01)
    reader.join(10)
    assert rc == 0, err
    assert got and all(json.loads(x)["t"] >= 0 for x in got)


def test_a_closed_stdout_pipe_is_no_traceback_for_any_command(demo_cache):
    """`edge-mla data info ... | head -1` ended in a BrokenPipeError traceback."""
    p = subprocess.Popen([sys.executable, "-m", "edge_mla.cli.main", "data", "info", "--dataset", "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    p.stdout.close()  # the reader is gone before the command prints
    err = p.stderr.read().decode()
    assert p.wait(120) == 141 and "Traceback" not in err and "Exception ignored" not in err, err


def test_stdout_on_a_full_disk_is_one_line_for_any_command(demo_cache):
    """`edge-mla data info > /dev/full` ended in an OSError traceback."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "edge_mla.cli.main", "data", "info", "--dataset", "demo"], stdout=full, stderr=subprocess.PIPE, text=True, cwd=str(ROOT), timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1] == "edge-mla data: error: cannot write to standard output (No space left on device)"


def test_run_disk_full_ends_cleanly(capsys, tiny_engines, media):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--camera", "none", "--mic", media["wav"], "--loop", "--duration", "5", "--out", "/dev/full")
    assert rc == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last == "edge-mla run: error: --out /dev/full: write failed after 0 lines (No space left on device); the run stopped", err
    assert "0 lines written" in err  # the summary agrees


def test_run_closed_stdout_pipe_ends_cleanly(tiny_engines, media):
    """`edge-mla run ... | head -1`: one line, non-zero exit, no interpreter noise."""
    p = subprocess.Popen([sys.executable, "-m", "edge_mla.cli.main", "run", "--engines", str(tiny_engines), "--camera", "none", "--mic", str(media["wav"]), "--loop", "--rate", "50", "--duration", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    first = p.stdout.readline()
    assert json.loads(first)["t"] >= 0
    p.stdout.close()
    _, err = p.communicate(timeout=60)
    err = err.decode()
    assert p.returncode == 2, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edge-mla run: error: stdout: write failed after ") and "broken pipe" in last, err
    n = int(last.split("after ")[1].split(" ")[0])
    assert n >= 1 and f"{n} lines written" in err


@pytest.mark.parametrize("delay", [0.15, 0.25, 0.4, 0.8])  # before ~0.1 s Python itself is still starting
def test_ctrl_c_at_any_point_of_the_start_is_interrupted_not_a_traceback(tiny_engines, media, delay):
    """Ctrl-C while the command's modules were still importing gave a KeyboardInterrupt
    traceback (the parser ran outside the handler), or inside onnxruntime's native
    initialisation an ``ImportError: initialization failed`` (exit 1)."""
    p = subprocess.Popen([sys.executable, "-m", "edge_mla.cli.main", "run", "--engines", str(tiny_engines), "--camera", "none", "--mic", str(media["wav"]), "--loop"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT), text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert p.returncode in (0, 130), err  # 0: it had started, and Ctrl-C stopped the run cleanly
    assert p.returncode == 0 or err.strip().splitlines()[-1] == "edge-mla run: interrupted", err


def test_a_camera_password_never_reaches_the_output(capsys, tiny_engines):
    """The stream URL, password and all, was in the error line and in every reconnect log line."""
    from edge_mla.runtime.testing.mjpeg import free_port

    url = f"http://admin:s3cret@127.0.0.1:{free_port()}/video"
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--mic", "none", "--require-sensors", "--camera", url)
    assert_one_error_line("run", rc, err, "http://admin:***@127.0.0.1", "cannot open the camera")
    assert "s3cret" not in err


def test_sigterm_while_a_required_stream_is_opening_is_an_interrupt(tiny_engines):
    """With --require-sensors, SIGTERM during a stalled stream open waited for the open
    timeout and then exited as a camera error (exit 2), not as stopped (130)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # accepts (the kernel does), never answers
    try:
        p = subprocess.Popen([sys.executable, "-m", "edge_mla.cli.main", "run", "--engines", str(tiny_engines), "--mic", "none", "--require-sensors",
                              "--camera", f"http://127.0.0.1:{srv.getsockname()[1]}/video"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT), text=True)
        time.sleep(2.0)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        srv.close()
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "edge-mla run: interrupted", err


# -- data / train ------------------------------------------------------------------

def _csv(rows: list, enc: str = "utf-8", bom: bool = False) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + ("\n".join(rows) + "\n").encode(enc)


def _rows(pairs_root: Path) -> list:
    return (pairs_root / "pairs.csv").read_text().splitlines()


PAIRS_MISTAKES = {
    "latin-1": (lambda r: _csv(r[:1] + [r[1][:-1] + "caf\u00e9"] + r[2:], "latin-1"), "not UTF-8"),
    "missing-column": (lambda r: _csv(["image,audio,lab"] + r[1:]), "missing column(s) label"),
    "empty-label": (lambda r: _csv(r[:3] + [r[3].rsplit(",", 1)[0] + ","] + r[4:]), ":4: empty label"),
    "short-row": (lambda r: _csv(r[:2] + ["images/a0.png"] + r[2:]), ":3: empty audio"),
    "label-only-in-test": (lambda r: _csv(["image,audio,label,split"] + [x + ",train" for x in r[1:9]] + [x + ",val" for x in r[9:]] + [r[1].split(",")[0] + "," + r[2].split(",")[1] + ",z,test"]), "'z' have no training pairs (only in test)"),
    "bad-split": (lambda r: _csv(["image,audio,label,split"] + [x + ",training" for x in r[1:]]), "split 'training' must be train, val or test"),
    "no-rows": (lambda r: _csv(r[:1]), "no pairs listed"),
    "label-column-twice": (lambda r: _csv(["image,audio,label,label"] + [x + ",zzz" for x in r[1:]]), "'label' appear more than once"),  # the last one won
    "one-class": (lambda r: _csv(r[:1] + [x.rsplit(",", 1)[0] + ",a" for x in r[1:]]), "only one class ('a')"),
    "image-outside": (lambda r: _csv(r[:2] + ["../" + r[2]] + r[3:]), ":3: image '../images/"),  # read from anywhere before
    "audio-absolute": (lambda r: _csv(r[:2] + [r[2].split(",")[0] + ",/etc/passwd," + r[2].rsplit(",", 1)[1]] + r[3:]), ":3: audio '/etc/passwd' must be a path inside"),
    "image-a-fifo": (lambda r: _csv(r[:2] + ["fifo.png," + r[2].split(",", 1)[1]] + r[3:]), "'fifo.png' is not a regular file"),
    # listed twice: the copy landed in train and test alike, and the test score counted training pairs
    "pair-twice": (lambda r: _csv(r[:4] + ["", r[2]] + r[4:]), ":6: the pair 'images/a1.png', 'audio/a1.wav' is listed before, on line 3"),
    # a tab or a no-break space trained a whole run, which the checkpoint check then refused
    "label-with-a-tab": (lambda r: _csv(r[:3] + [r[3].rsplit(",", 1)[0] + ",a\tb"] + r[4:]), ":4: label 'a\\tb' holds a non-printable character (U+0009)"),
    "label-with-a-no-break-space": (lambda r: _csv(r[:3] + [r[3].rsplit(",", 1)[0] + ",\u00d6l\u00a0pumpe"] + r[4:]), "holds a non-printable character (U+00A0)"),
    "nul-in-a-name": (lambda r: _csv(r[:2] + [r[2].replace(".png,", ".png\x00,")] + r[3:]), ":3: image name holds a NUL character"),  # C read a0.png
}


@pytest.mark.parametrize("mistake", list(PAIRS_MISTAKES))
def test_data_info_rejects_bad_pairs_csv(capsys, tmp_path, pairs_root, mistake):
    make, needle = PAIRS_MISTAKES[mistake]
    d = bad_folder(pairs_root, tmp_path / "ds", make(_rows(pairs_root)))
    os.mkfifo(d / "fifo.png")  # a FIFO named as an image hung the command
    rc, _, err = cli(capsys, "data", "info", "--dataset", "folder", "--data-dir", d)
    assert_one_error_line("data", rc, err, str(d / "pairs.csv"), needle)


def test_pairs_csv_header_names_in_any_case_read(tmp_path, pairs_root):
    """A ``Split`` column was dropped without a word (the random split was drawn
    instead of the user's), while ``TRAIN`` as a value was accepted."""
    from edge_mla.data.folder import load_folder

    rows = _rows(pairs_root)
    parts = ["train"] * 4 + ["val", "test"]
    d = bad_folder(pairs_root, tmp_path / "ds", _csv(["Image, AUDIO ,Label,Split"] + [x + "," + parts[i % 6] for i, x in enumerate(rows[1:])]))
    ds = load_folder(str(d))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (8, 2, 2)


def test_superscript_digit_labels_are_names_not_a_traceback(tmp_path, pairs_root):
    """``²`` passes str.isdigit but int() refuses it: a ValueError traceback."""
    from edge_mla.data.folder import load_folder

    rows = _rows(pairs_root)
    rows = rows[:1] + [r[:-1] + {"a": "\u00b9", "b": "\u00b2"}[r[-1]] for r in rows[1:]]
    ds = load_folder(str(bad_folder(pairs_root, tmp_path / "ds", _csv(rows))))
    assert ds.classes == sorted(["\u00b9", "\u00b2"])  # names, in code-point order
    rows = _rows(pairs_root)  # "--3" was taken for an integer (every leading dash stripped): a ValueError traceback
    rows = rows[:1] + [r[:-1] + {"a": "--3", "b": "-4"}[r[-1]] for r in rows[1:]]
    ds = load_folder(str(bad_folder(pairs_root, tmp_path / "ds2", _csv(rows))))
    assert ds.classes == ["--3", "-4"]


@pytest.mark.parametrize("kind", ["jpeg-cut", "progressive-jpeg-cut", "huge-png-header"])
def test_images_cut_short_or_too_large_are_one_line(capsys, tmp_path, pairs_root, kind):
    """OpenCV decodes a JPEG cut short with a grey bottom half and no error (it was
    trained on); a PNG header claiming 100000 x 100000 pixels was a cv2.error
    traceback. An intact JPEG, progressive or with a trailer after its end, reads."""
    import shutil
    import struct
    import zlib

    import cv2

    d = tmp_path / "ds"
    shutil.copytree(pairs_root, d)
    first = d / _rows(pairs_root)[1].split(",")[0]
    img = cv2.imread(str(first))
    if kind == "huge-png-header":
        def chunk(t, b):
            return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)
        first.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0))
                          + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
        needle = "larger than"
    else:
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(kind.startswith("progressive"))])
        whole = enc.tobytes()
        from edge_mla.data.folder import jpeg_problem, read_image_file

        first.write_bytes(whole + b"\xff\xd8 a motion photo's video " * 2000)  # what follows the end marker is not the image's
        assert read_image_file(first, 28).shape == (1, 28, 28)
        for cut in (len(whole) // 10, len(whole) // 2, len(whole) - 2):
            first.write_bytes(whole[:cut])
            assert jpeg_problem(first), cut
        first.write_bytes(whole[: len(whole) // 2])
        needle = "JPEG is cut short"
    rc, _, err = cli(capsys, "data", "info", "--dataset", "folder", "--data-dir", d)
    assert_one_error_line("data", rc, err, str(first), needle)


def test_pairs_csv_with_bom_and_padding_reads(tmp_path, pairs_root):
    """Excel's UTF-8 with BOM and cells padded with spaces are a valid pairs.csv."""
    from edge_mla.data.folder import load_folder

    rows = [", ".join(c.strip() for c in r.split(",")) for r in _rows(pairs_root)]
    d = bad_folder(pairs_root, tmp_path / "ds", _csv(rows, bom=True))
    ds = load_folder(str(d))
    assert ds.classes == ["a", "b"] and len(ds.train) + len(ds.val) + len(ds.test) == 12


def test_folder_without_test_pairs_is_refused_before_training(capsys, tmp_path, pairs_root):
    """A split column with train and val only: the run trained to the end, then the
    test scoring failed with a traceback and the run was lost."""
    rows = _rows(pairs_root)
    d = bad_folder(pairs_root, tmp_path / "ds", _csv(["image,audio,label,split"] + [x + (",train" if i % 2 else ",val") for i, x in enumerate(rows[1:])]))
    rc, _, err = cli(capsys, "train", "--dataset", "folder", "--data-dir", d, "--out", tmp_path / "run", "--epochs", "1", "--no-progress")
    assert_one_error_line("train", rc, err, "the test split has no pairs", "--no-test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("kind", ["1-hz", "nan", "cut", "zero-frames", "header-only"])
def test_folder_audio_that_is_not_audio_is_one_line(capsys, tmp_path, pairs_root, kind):
    """A 1 Hz header resampled a one-second clip into 256M samples (GiBs); NaN samples
    were cast to undefined int16 values with a warning; a WAV cut mid-data trained on
    the half that was there, and one of 0 frames as a labelled clip of silence (the
    runtime refused both: the two now share one reader)."""
    import shutil

    import soundfile as sf

    d = tmp_path / "ds"
    shutil.copytree(pairs_root, d)
    first = d / _rows(pairs_root)[1].split(",")[1]
    if kind == "1-hz":
        sf.write(str(first), np.zeros(16000, np.float32), 1)
    elif kind == "nan":
        sf.write(str(first), np.full(8000, np.nan, np.float32), 8000, subtype="FLOAT")
    else:
        sf.write(str(first), np.full(8000 if kind != "zero-frames" else 0, 0.1, np.float32), 8000, subtype="PCM_16")
        b = first.read_bytes()
        first.write_bytes({"cut": b[: 44 + (len(b) - 44) // 2], "header-only": b[:44], "zero-frames": b}[kind])
    needle = {"1-hz": "sample rate 1 Hz is not audio", "nan": "NaN or infinite samples", "cut": "truncated", "header-only": "truncated",
              "zero-frames": "no audio samples"}[kind]
    rc, _, err = cli(capsys, "data", "info", "--dataset", "folder", "--data-dir", d)
    assert_one_error_line("data", rc, err, str(first), needle)


def test_a_stereo_wav_is_mixed_down_for_training_and_the_runtime_alike(tmp_path):
    """The runtime played channel 0 of a WAV alone: a recording whose voice was on
    the right channel was silence to the engine (no decision for its whole length),
    while the dataset reader mixed the same file down."""
    import soundfile as sf

    from edge_mla.data.folder import read_audio_file
    from edge_mla.runtime.sources.wavfile import WavFileInput

    t = np.arange(8000) / 8000
    voice = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    sf.write(str(tmp_path / "right.wav"), np.stack([0 * voice, voice], 1), 8000, subtype="PCM_16")
    sf.write(str(tmp_path / "mono.wav"), voice / 2, 8000, subtype="PCM_16")
    played = WavFileInput(str(tmp_path / "right.wav")).pcm
    assert np.abs(played - voice / 2).max() < 1e-3
    np.testing.assert_allclose(read_audio_file(tmp_path / "right.wav", 8000), read_audio_file(tmp_path / "mono.wav", 8000), atol=2)


def test_a_streamed_wav_placeholder_size_is_not_truncation(tmp_path):
    """A WAV written to a pipe cannot know its length: its data size is a placeholder
    (0xFFFFFFFF, or 0x7FFFFFFF from some recorders), which libsndfile reads to the
    end. Only 0xFFFFFFFF was accepted; a real cut is still refused."""
    import soundfile as sf

    from edge_mla.sound_file import read_sound

    sf.write(str(tmp_path / "a.wav"), np.full(8000, 0.1, np.float32), 8000, subtype="PCM_16")
    b = bytearray((tmp_path / "a.wav").read_bytes())
    assert b[36:40] == b"data"
    for size in (0xFFFFFFFF, 0x7FFFFFFF):
        b[40:44] = size.to_bytes(4, "little")
        (tmp_path / "s.wav").write_bytes(bytes(b))
        pcm, rate = read_sound(str(tmp_path / "s.wav"), "s.wav")
        assert rate == 8000 and pcm.size == 8000
    b[40:44] = (16000 + 2).to_bytes(4, "little")  # two bytes more than the file holds
    (tmp_path / "s.wav").write_bytes(bytes(b))
    from edge_mla.errors import EdgeMlaError

    with pytest.raises(EdgeMlaError, match="truncated"):
        read_sound(str(tmp_path / "s.wav"), "s.wav")


@pytest.mark.parametrize("frames,rate", [(1, 8000), (10, 48000), (48, 48000)])
def test_a_looped_wav_shorter_than_a_wake_up_plays_at_its_rate(tmp_path, frames, rate):
    """A looped file shorter than one wake-up of the player (about rate/1000 samples)
    was delivered once per wake-up: 10 samples at 48 kHz played at 8.8 kHz."""
    import time

    import soundfile as sf

    from edge_mla.runtime.sources.wavfile import WavFileInput

    sf.write(str(tmp_path / "short.wav"), np.linspace(-0.5, 0.5, frames, dtype=np.float32), rate, subtype="PCM_16")
    w = WavFileInput(str(tmp_path / "short.wav"), loop=True)
    got = []
    w.open(lambda block, t, gap: got.append(block.size))
    time.sleep(1.0)
    w.close()
    assert 0.7 * rate < sum(got) < 1.3 * rate  # about one second of samples in one second


AVMNIST_MISTAKES = {
    "y-train-cut": ("mnist", lambda d: d.update(y_train=d["y_train"][:100]), "y_train must be"),
    "x-train-only-validation": ("mnist", lambda d: d.update(x_train=d["x_train"][:10000], y_train=d["y_train"][:10000]), "more than the 10000 validation rows"),
    "labels-past-9": ("mnist", lambda d: d.update(y_test=d["y_test"] + 10), "y_test must hold the digits 0-9"),
    "nan-images": ("mnist", lambda d: d.update(x_test=np.full(d["x_test"].shape, np.nan, np.float32)), "x_test must hold finite pixel values"),
    "a-digit-missing": ("fsdd", lambda d: d.update(label=np.where(d["label"] == 3, 4, d["label"])), "label must hold the digits 0-9"),
    "rate-an-array": ("fsdd", lambda d: d.update(sample_rate=np.array([8000, 8000])), "sample_rate"),
    "audio-2d": ("fsdd", lambda d: d.update(audio=d["audio"][:, None]), "audio must be one finite 1-D array"),
    "offsets-reversed": ("fsdd", lambda d: d.update(offsets=d["offsets"][::-1].copy()), "offsets must cut the audio"),
    "speaker-short": ("fsdd", lambda d: d.update(speaker=d["speaker"][:-5]), "speaker must have one entry per clip"),
}


@pytest.mark.parametrize("mistake", list(AVMNIST_MISTAKES))
def test_corrupt_avmnist_archives_are_one_line(capsys, tmp_path, mistake):
    """The user's data folder: a cut y_train trained on 0 pairs and published a run, a
    missing digit or an array as the rate gave tracebacks, NaN images trained NaN."""
    import shutil

    from edge_mla.data.avmnist import resolve_data_dir

    src = resolve_data_dir(None)
    which, edit, needle = AVMNIST_MISTAKES[mistake]
    d_dir = tmp_path / "data"
    d_dir.mkdir()
    other = "fsdd" if which == "mnist" else "mnist"
    (d_dir / f"{other}.npz").symlink_to(src / f"{other}.npz")
    with np.load(src / f"{which}.npz") as z:
        d = {k: z[k] for k in z.files}
    edit(d)
    np.savez(d_dir / f"{which}.npz", **d)
    rc, _, err = cli(capsys, "data", "info", "--dataset", "avmnist", "--data-dir", d_dir)
    assert_one_error_line("data", rc, err, str(d_dir / f"{which}.npz"), needle)
    shutil.rmtree(d_dir)


DEMO_CACHE_MISTAKES = {
    "no-voice": (lambda d: d.pop("voice"), "no 'voice' array"),
    "labels-past-9": (lambda d: d.update(image_labels=d["image_labels"] + 20), "labels are not the digits 0-9"),
    "rate-an-array": (lambda d: d.update(sample_rate=np.array([8000, 8000], np.int32)), "sample rate"),
    "rate-zero": (lambda d: d.update(sample_rate=np.int32(0)), "sample rate"),
    "flat-images": (lambda d: d.update(images=d["images"].reshape(len(d["images"]), -1)), "images of shape"),
    "offsets-reversed": (lambda d: d.update(offsets=d["offsets"][::-1].copy()), "clip offsets"),
    "truncated": (None, "corrupt demo dataset"),
}


@pytest.mark.parametrize("mistake", list(DEMO_CACHE_MISTAKES))
def test_corrupt_demo_cache_is_one_line(capsys, tmp_path, demo_cache, monkeypatch, mistake):
    """The demo cache lives outside the repo and outlives versions and crashes: a
    missing key, labels past 9, an array as the rate or broken offsets gave
    KeyError / ValueError / TypeError tracebacks or trained on garbage."""
    from edge_mla.data.demo import demo_path

    src = demo_path()
    monkeypatch.setenv("EDGE_MLA_CACHE", str(tmp_path / "cache"))
    dst = demo_path()
    dst.parent.mkdir()
    edit, needle = DEMO_CACHE_MISTAKES[mistake]
    if edit is None:
        dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    else:
        with np.load(src) as z:
            d = {k: z[k] for k in z.files}
        edit(d)
        np.savez(dst, **d)
    rc, _, err = cli(capsys, "train", "--dataset", "demo", "--epochs", "1", "--out", tmp_path / "run")
    assert_one_error_line("train", rc, err, str(dst), needle, "run 'edge-mla data demo'")
    assert not (tmp_path / "run").exists()


def test_demo_cache_path_mistakes_are_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("EDGE_MLA_CACHE", str(tmp_path / "afile" / "sub"))
    rc, _, err = cli(capsys, "data", "demo")
    assert_one_error_line("data", rc, err, "cannot create the cache folder", "EDGE_MLA_CACHE")
    monkeypatch.setenv("EDGE_MLA_CACHE", str(tmp_path / "cache"))
    from edge_mla.data.demo import demo_path

    demo_path().mkdir(parents=True)  # a folder where the archive goes: refused before minutes of synthesis
    rc, _, err = cli(capsys, "data", "demo", "--force")
    assert_one_error_line("data", rc, err, "exists and is not a file")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [demo_path().name]


@pytest.mark.parametrize("mistake", ["latin-1", "label-only-in-test", "empty-label"])
def test_train_rejects_bad_pairs_csv_and_writes_nothing(capsys, tmp_path, pairs_root, mistake):
    make, needle = PAIRS_MISTAKES[mistake]
    d = bad_folder(pairs_root, tmp_path / "ds", make(_rows(pairs_root)))
    rc, _, err = cli(capsys, "train", "--dataset", "folder", "--data-dir", d, "--out", tmp_path / "run", "--epochs", "1", "--no-progress")
    assert_one_error_line("train", rc, err, "pairs.csv", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


TRAIN_NUMBERS = [("--epochs", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-0.1"), ("--momentum", "1.5"), ("--momentum", "nan"),
                 ("--weight-decay", "nan"), ("--batch-size", "-1"), ("--seed", "-1"), ("--limit", "0"), ("--val-limit", "0"),
                 ("--owm-alpha", "nan"), ("--owm-alpha", "0"), ("--ogm-alpha", "inf"), ("--threads", "-1"),
                 ("--aug-speed", "0.9"), ("--aug-speed", "nan"),
                 ("--mmpareto-gamma", "nan"), ("--mmpareto-gamma", "-5"), ("--weight-decay", "1e300")]


@pytest.mark.parametrize("flag,value", TRAIN_NUMBERS, ids=[f"{f}={v}" for f, v in TRAIN_NUMBERS])
def test_train_rejects_bad_numbers(capsys, tmp_path, flag, value):
    rc, _, err = cli(capsys, "train", "--dataset", "demo", "--out", tmp_path / "run", flag, value)
    assert_one_error_line("train", rc, err, flag, {"1e300": "1e+300"}.get(value, value))
    assert not any(tmp_path.iterdir())


TRAIN_CONFIG_MISTAKES = {"seed-a-string": ({"seed": "zero"}, "seed"), "epochs-fractional": ({"epochs": 2.5}, "epochs"), "lr-null": ({"lr": None}, "lr"),
                         "augment-a-string": ({"augment": "yes"}, "augment"), "order-an-int": ({"modality_order": 3}, "modality_order"),
                         "method-a-list": ({"method": ["mla"]}, "method"), "unknown-key": ({"epochz": 3}, "epochz"),
                         "gain-one-number": ({"aug_gain_db": 6}, "aug-gain-db"), "gain-three": ({"aug_gain_db": [-6, 0, 6]}, "aug-gain-db"),
                         "gain-too-loud": ({"aug_gain_db": [0, 90]}, "aug-gain-db"), "gain-a-string": ({"aug_gain_db": ["-6", "6"]}, "aug-gain-db"),
                         "gamma-a-string": ({"mmpareto_gamma": "abc"}, "mmpareto-gamma"), "gamma-null": ({"mmpareto_gamma": None}, "mmpareto-gamma"),
                         "lr-step-past-the-end": ({"lr_step": 3}, "lr-step"), "ogm-ends-before-it-starts": ({"ogm_start": 3, "ogm_end": 1}, "is before --ogm-start")}


@pytest.mark.parametrize("mistake", list(TRAIN_CONFIG_MISTAKES))
def test_train_rejects_bad_config_file(capsys, tmp_path, mistake):
    data, needle = TRAIN_CONFIG_MISTAKES[mistake]
    conf = tmp_path / "my.json"
    conf.write_text(json.dumps(data))
    rc, _, err = cli(capsys, "train", "--config", conf, "--out", tmp_path / "run")
    assert_one_error_line("train", rc, err, str(conf), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.json"]


@pytest.mark.parametrize("command", ["train", "run"])
def test_config_files_nested_too_deeply_are_one_line(capsys, tmp_path, tiny_engines, command):
    """The JSON and TOML parsers recurse per level: a 2 KB file of brackets raised
    RecursionError with a traceback."""
    conf = tmp_path / ("my.json" if command == "train" else "stations.toml")
    conf.write_text("[" * 5000 + "]" * 5000 if command == "train" else "a = " + "[" * 5000 + "]" * 5000)
    args = ["--out", tmp_path / "run"] if command == "train" else ["--engines", tiny_engines]
    rc, _, err = cli(capsys, command, "--config", conf, *args)
    assert_one_error_line(command, rc, err, str(conf), "nested too deeply")


@pytest.mark.parametrize("low,high,needle", [("6", "-24", "LOW must not exceed HIGH"), ("nan", "0", "nan"), ("-90", "0", "-90")])
def test_train_rejects_bad_gain_range(capsys, tmp_path, low, high, needle):
    rc, _, err = cli(capsys, "train", "--dataset", "demo", "--out", tmp_path / "run", "--aug-gain-db", low, high)
    assert_one_error_line("train", rc, err, "--aug-gain-db", needle)
    assert not any(tmp_path.iterdir())


def test_a_diverging_training_run_is_not_published(capsys, tmp_path):
    """--lr 100 is in range but blows the weights up: the run folder was published with
    NaN weights and chance-level scores, exit 0."""
    rc, _, err = cli(capsys, "train", "--dataset", "demo", "--limit", "200", "--val-limit", "50", "--epochs", "1", "--lr", "100", "--no-progress", "--no-test", "--out", tmp_path / "run")
    assert_one_error_line("train", rc, err, "training diverged in epoch 1", "lower --lr")
    assert not any(tmp_path.iterdir())


def test_train_out_under_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    rc, _, err = cli(capsys, "train", "--dataset", "demo", "--out", tmp_path / "f" / "run")
    assert_one_error_line("train", rc, err, "--out", "is a file, not a folder")


@pytest.mark.slow
def test_train_is_all_or_nothing_under_sigterm(tmp_path, pairs_root):
    """A finished run appears whole (test.json included); SIGTERM during a --force
    rerun leaves the old run folder as it was and no temporary folder."""
    out = tmp_path / "run"
    base = ["train", "--dataset", "folder", "--data-dir", pairs_root, "--out", out, "--no-progress", "--threads", "1", "--batch-size", "4", "--no-corrupt"]
    p = cli_subprocess(*base, "--epochs", "1", timeout=300)
    assert p.returncode == 0, p.stderr
    assert {"checkpoint.pt", "config.json", "metrics.jsonl", "summary.json", "test.json"} <= {f.name for f in out.iterdir()}
    before = snapshot(tmp_path)

    proc = subprocess.Popen([sys.executable, "-m", "edge_mla.cli.main", *map(str, base), "--epochs", "100000", "--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until an epoch finished inside the temporary folder
        tmp = [d for d in tmp_path.iterdir() if d.name.startswith(".run.tmp-")]
        if tmp and (tmp[0] / "metrics.jsonl").is_file() and (tmp[0] / "metrics.jsonl").stat().st_size > 0:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training never started")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "edge-mla train: interrupted", err
    assert snapshot(tmp_path) == before  # old run intact, nothing half-written beside it


# -- eval / export: the run folder is input ----------------------------------------

@pytest.fixture
def run_folder(tmp_path, pairs_root) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "folder", "data_dir": str(pairs_root), "seed": 0, "split": "official"}))
    (run / "checkpoint.pt").write_bytes(b"")
    return run


RUN_FOLDER_MISTAKES = {
    "config-lacks-dataset": ("config.json", {"seed": 0}, "dataset is missing"),
    "config-seed-a-string": ("config.json", {"dataset": "folder", "seed": "zero"}, "seed must be an integer"),
    "config-unknown-dataset": ("config.json", {"dataset": "imagenet"}, "dataset must be one of"),
    "config-not-json": ("config.json", b"{", "not valid JSON"),
    "config-array": ("config.json", [], "must be a JSON object"),
    "config-nested-too-deeply": ("config.json", b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    "checkpoint-empty": ("checkpoint.pt", b"", "empty file (0 bytes)"),
    "checkpoint-garbage": ("checkpoint.pt", b"PK\x03\x04garbage", "cannot load checkpoint"),
}


def _apply(run: Path, name: str, content) -> None:
    (run / name).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())


@pytest.mark.parametrize("mistake", list(RUN_FOLDER_MISTAKES))
def test_eval_rejects_bad_run_folder(capsys, run_folder, mistake):
    name, content, needle = RUN_FOLDER_MISTAKES[mistake]
    _apply(run_folder, name, content)
    before = snapshot(run_folder.parent)
    rc, _, err = cli(capsys, "eval", run_folder)
    assert_one_error_line("eval", rc, err, str(run_folder / name) if mistake != "config-lacks-dataset" else "config.json", needle)
    assert snapshot(run_folder.parent) == before


@pytest.mark.parametrize("mistake", [m for m in RUN_FOLDER_MISTAKES if m != "config-lacks-dataset"])
def test_export_rejects_bad_run_folder(capsys, run_folder, mistake):
    name, content, needle = RUN_FOLDER_MISTAKES[mistake]
    _apply(run_folder, name, content)
    before = snapshot(run_folder.parent)
    rc, _, err = cli(capsys, "export", run_folder, "--no-progress")
    assert_one_error_line("export", rc, err, str(run_folder / name), needle)
    assert snapshot(run_folder.parent) == before


EXPORT_NUMBERS = [("--calib-size", "0"), ("--tolerance", "nan"), ("--tolerance", "-1"), ("--eval-limit", "-1"), ("--latency-repeats", "0"),
                  ("--opset", "5"), ("--max-batch", "0"), ("--workspace-mb", "0"), ("--dla-core", "-1")]


@pytest.mark.parametrize("flag,value", EXPORT_NUMBERS, ids=[f"{f}={v}" for f, v in EXPORT_NUMBERS])
def test_export_rejects_bad_numbers(capsys, run_folder, flag, value):
    before = snapshot(run_folder.parent)
    rc, _, err = cli(capsys, "export", run_folder, flag, value)
    assert_one_error_line("export", rc, err, flag, value)
    assert snapshot(run_folder.parent) == before


def test_export_out_under_a_file(capsys, run_folder):
    (run_folder.parent / "f").write_text("x")
    rc, _, err = cli(capsys, "export", run_folder, "--out", run_folder.parent / "f" / "engines")
    assert_one_error_line("export", rc, err, "--out", "is a file, not a folder")


@pytest.mark.parametrize("kind", ["object-in-torch-save", "plain-pickle"])
def test_refused_checkpoint_is_one_line_without_torch_warnings(tmp_path, run_folder, kind):
    """A pickle of an arbitrary object is never unpickled (weights_only): the file it
    would create stays absent; torch's warning (a plain pickle: several hundred
    characters on stderr) and its long explanation are not printed."""
    import pickle

    import torch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    if kind == "plain-pickle":
        (run_folder / "checkpoint.pt").write_bytes(pickle.dumps({"format": "edge-mla-checkpoint/1", "state_dict": {}}, protocol=4))
    else:
        torch.save({"format": "edge-mla-checkpoint/1", "x": Evil()}, run_folder / "checkpoint.pt")
    p = cli_subprocess("export", run_folder, "--no-progress", env={**os.environ, "PYTHONWARNINGS": "always"})
    assert_one_error_line("export", p.returncode, p.stderr, "checkpoint.pt", "cannot load checkpoint")
    assert len(p.stderr.strip()) < 400
    assert not marker.exists()


@pytest.mark.parametrize("field,value,msg", [
    ("method", ["mla"], "unknown training method"),  # unhashable: a TypeError in the fusion rule's lookup before
    ("method", "gradient-magic", "unknown training method"),
    ("classes", 5, "class names are malformed"),  # list(5) in the export before
    ("classes", "0123456789", "class names are malformed"),
    ("classes", ["0", "1"], "class names are malformed"),  # not the model's 10
    ("classes", ["0"] * 10, "class names are malformed"),
    ("classes", [str(i) for i in range(9)] + ["a\nb"], "class names are malformed"),  # a newline split every one-line message naming it
    ("epoch", "three", "is not a count of epochs"),  # copied into the manifest as it was before
    ("epoch", -1, "is not a count of epochs"),
])
def test_checkpoint_plain_fields_are_checked_in_one_line(tmp_path, field, value, msg):
    """The fields eval, export and the manifest read from a checkpoint besides the
    weights: a wrong one is refused when the checkpoint loads, naming the file."""
    import torch

    from edge_mla.checkpoint import load_checkpoint, save_checkpoint
    from edge_mla.errors import EdgeMlaError
    from edge_mla.models import ModelConfig, build_model

    save_checkpoint(tmp_path / "checkpoint.pt", build_model(ModelConfig(preset="tiny")), [str(i) for i in range(10)], "mla", 2)
    _, payload = load_checkpoint(tmp_path)  # sound as written
    torch.save({**payload, field: value}, tmp_path / "checkpoint.pt")
    with pytest.raises(EdgeMlaError, match=rf"checkpoint\.pt: .*{msg}") as err:
        load_checkpoint(tmp_path)
    assert "\n" not in str(err.value)


def _nan_weights(sd):
    return {k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in sd.items()}


def _int_weights(sd):
    return {k: v.to(__import__("torch").int64) if v.is_floating_point() else v for k, v in sd.items()}


@pytest.mark.parametrize("edit,msg", [
    (lambda p: {**p, "model_config": [1, 2]}, "model_config is malformed (expected an object, got list)"),
    (lambda p: {**p, "model_config": {**p["model_config"], "hop": 0}}, "model_config: hop must be an integer >= 1"),
    (lambda p: {**p, "model_config": {**p["model_config"], "n_fft": 100000}}, "n_fft must be an integer >= 16 and <= 16384"),
    (lambda p: {**p, "model_config": {**p["model_config"], "sample_rate": -8000}}, "sample_rate must be an integer >= 1000"),
    (lambda p: {**p, "model_config": {**p["model_config"], "num_classes": 0}}, "num_classes must be an integer >= 1"),
    (lambda p: {**p, "model_config": {**p["model_config"], "window": 100}}, "need hop <= n_fft <= window"),
    (lambda p: {**p, "state_dict": _nan_weights(p["state_dict"])}, "holds non-finite weights"),
    (lambda p: {**p, "state_dict": _int_weights(p["state_dict"])}, "as int64, not floating point"),
])
def test_checkpoint_model_config_and_weights_are_checked_in_one_line(tmp_path, capsys, edit, msg):
    """An untrusted checkpoint's front-end numbers failed deep in torch (hop 0), took
    37 GiB (n_fft 100000) or ran silently wrong (a negative rate); NaN or int weights
    loaded without a word and scored 10% everywhere."""
    import torch

    from edge_mla.checkpoint import load_checkpoint, save_checkpoint
    from edge_mla.errors import EdgeMlaError
    from edge_mla.models import ModelConfig, build_model

    save_checkpoint(tmp_path / "checkpoint.pt", build_model(ModelConfig(preset="tiny")), [str(i) for i in range(10)], "mla", 2)
    _, payload = load_checkpoint(tmp_path)
    torch.save(edit(payload), tmp_path / "checkpoint.pt")
    with pytest.raises(EdgeMlaError, match=r"checkpoint\.pt: ") as err:
        load_checkpoint(tmp_path)
    assert msg in str(err.value) and "\n" not in str(err.value)
    assert capsys.readouterr().err == ""  # no torch warning (num_classes 0 printed one before the line)


@pytest.mark.parametrize("command", ["eval", "export"])
def test_data_whose_classes_are_not_the_checkpoints_is_one_line(capsys, tmp_path, pairs_root, command):
    """eval scored a model trained on a/b on a folder labelled c/d (the same count)
    and printed the accuracy; export and eval share one check."""
    from edge_mla.checkpoint import save_checkpoint
    from edge_mla.models import ModelConfig, build_model

    other = folder_dataset(tmp_path / "other", classes=("c", "d"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "folder", "data_dir": str(pairs_root), "seed": 0, "split": "official"}))
    save_checkpoint(run / "checkpoint.pt", build_model(ModelConfig(preset="tiny", num_classes=2, sample_rate=16000, window=16000)), ["a", "b"], "mla", 1)
    args = ["--no-corrupt"] if command == "eval" else ["--out", tmp_path / "eng", "--no-progress"]
    rc, _, err = cli(capsys, command, run, "--data-dir", other, *args)
    assert_one_error_line(command, rc, err, "has classes c, d but the checkpoint was trained on a, b")
    assert not (tmp_path / "eng").exists() and not (run / "test.json").exists()


# -- profile / demo ------------------------------------------------------------------

PROFILE_NUMBERS = [("--batch", "0"), ("--threads", "0"), ("--repeats", "0"), ("--warmup", "-1"), ("--duration", "nan")]


@pytest.mark.parametrize("flag,value", PROFILE_NUMBERS, ids=[f"{f}={v}" for f, v in PROFILE_NUMBERS])
def test_profile_rejects_bad_numbers(capsys, tmp_path, tiny_engines, flag, value):
    eng = manifest_copy(tiny_engines, tmp_path / "eng")
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "profile", eng, "--backend", "onnxruntime", "--runtime", flag, value)
    assert_one_error_line("profile", rc, err, flag, value)
    assert snapshot(tmp_path) == before


def test_profile_input_and_output_mistakes(capsys, tmp_path, tiny_engines):
    eng = edit_manifest(manifest_copy(tiny_engines, tmp_path / "eng"), _set(["engines", "image", "image", "size"], -5))
    rc, _, err = cli(capsys, "profile", eng, "--backend", "onnxruntime")
    assert_one_error_line("profile", rc, err, "manifest.json", "size must be an integer >= 1")
    (tmp_path / "f").write_text("x")
    rc, _, err = cli(capsys, "profile", tiny_engines, "--backend", "onnxruntime", "--out", tmp_path / "f")
    assert_one_error_line("profile", rc, err, "--out", "not a folder")


PROFILE_FOLDER_MISTAKES = {  # what `run` refuses, profile and doctor refuse too; what it tolerates, they tolerate without a traceback
    "variants-null": (_set(["engines", "image", "variants"], None), None),
    "model-null": (_set(["model"], None), None),
    "model-run-dir-a-number": (_set(["model"], {"run_dir": 5}), None),
    "shape-not-the-engines": (lambda m: (_set(["engines", "image", "input", "shape"], ["batch", 1, 30, 30])(m), _set(["engines", "image", "image", "size"], 30)(m)), "does not match the manifest's"),
    "named-axes-hide-size": (lambda m: (_set(["engines", "image", "input", "shape"], ["batch", 1, "h", "w"])(m), _set(["engines", "image", "image", "size"], 64)(m)), "warm-up inference"),
}


@pytest.mark.parametrize("mistake", list(PROFILE_FOLDER_MISTAKES))
def test_profile_and_doctor_check_the_folder_as_run_does(capsys, tmp_path, tiny_engines, mistake):
    fn, needle = PROFILE_FOLDER_MISTAKES[mistake]
    eng = edit_manifest(manifest_copy(tiny_engines, tmp_path / "eng"), fn)
    rc, out, err = cli(capsys, "profile", eng, "--repeats", "1", "--warmup", "0", "--batch", "1", "--threads", "1", "--no-plot")
    if needle is None:
        assert rc == 0 and "Traceback" not in err, err
    else:
        assert_one_error_line("profile", rc, err, str(eng), needle)
    rc, out, err = cli(capsys, "doctor", "--engines", eng)
    line = next(ln for ln in out.splitlines() if " engines: " in ln)
    assert line.startswith("OK" if needle is None else "FAIL"), line
    if needle is not None:
        assert needle in line


def test_profile_precision_the_folder_lacks_and_a_file_as_folder(capsys, tmp_path, tiny_engines):
    rc, _, err = cli(capsys, "profile", tiny_engines, "--backend", "onnxruntime", "--precision", "int8", "--no-plot")
    assert_one_error_line("profile", rc, err, "--precision int8", "has no int8 engine (has: fp32)")
    (tmp_path / "afile").write_text("x")
    rc, _, err = cli(capsys, "profile", tmp_path / "afile")
    assert_one_error_line("profile", rc, err, "afile: engine folder not found")


def test_profile_explicit_run_dir_must_exist(capsys, tmp_path, tiny_engines):
    rc, _, err = cli(capsys, "profile", tiny_engines, "--backend", "torch", "--run-dir", tmp_path / "nope")
    assert_one_error_line("profile", rc, err, "--run-dir", "run folder not found")


DEMO_MISTAKES = [("--epochs", "0"), ("--segments", "1"), ("--segment-seconds", "nan"), ("--segment-seconds", "inf"), ("--seed", "-1"), ("--limit", "0")]


@pytest.mark.parametrize("flag,value", DEMO_MISTAKES, ids=[f"{f}={v}" for f, v in DEMO_MISTAKES])
def test_demo_rejects_bad_numbers(capsys, tmp_path, flag, value):
    rc, _, err = cli(capsys, "demo", "--out", tmp_path / "d", flag, value)
    assert_one_error_line("demo", rc, err, flag, value)
    assert not any(tmp_path.iterdir())


def test_demo_out_mistakes(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    rc, _, err = cli(capsys, "demo", "--out", tmp_path / "f")
    assert_one_error_line("demo", rc, err, "--out", "not a folder")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("x")
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "demo", "--out", tmp_path / "d")
    assert_one_error_line("demo", rc, err, "demo folder exists and is not empty")
    assert snapshot(tmp_path) == before


def test_staged_folder_is_all_or_nothing(tmp_path):
    """The one mechanism behind train's and export's folders: a failure inside
    leaves the old folder as it was and no temporary folder; an unwritable place is
    one line."""
    from edge_mla.errors import EdgeMlaError
    from edge_mla.staging import staged_folder

    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and (out / "old.txt").read_text() == "old"
    with staged_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(EdgeMlaError, match=r"^--out /proc/edge-mla-nope/engines: cannot create the folder"):
        with staged_folder(Path("/proc/edge-mla-nope/engines")):
            pass
    # another command published --out while this one ran: it is not replaced (two
    # exports to one --out: the later one deleted the earlier one's folder)
    for before in (None, "old"):
        other = tmp_path / f"other-{before}"
        if before:
            other.mkdir()
        with pytest.raises(EdgeMlaError, match="changed while this command ran"):
            with staged_folder(other) as tmp:
                (tmp / "mine.txt").write_text("mine")
                side = tmp_path / "side"
                side.mkdir()
                (side / "theirs.txt").write_text("theirs")
                if before:
                    os.replace(other, tmp_path / "gone")
                os.replace(side, other)
        assert sorted(p.name for p in other.iterdir()) == ["theirs.txt"]
        assert not list(tmp_path.glob(f".{other.name}.tmp-*"))


@pytest.mark.parametrize("path,value,needle", [(["engines", "image", "image", "size"], 32, "image.size is 32 but input.shape ends in [28, 28]"),
                                               (["engines", "audio", "audio", "window"], 16000, "audio.window is 16000 but input.shape ends in 8000")])
def test_manifest_facts_must_agree_with_shapes(capsys, tmp_path, tiny_engines, media, path, value, needle):
    """An image size or audio window the engine does not take would fail on every
    frame in a worker thread; the manifest check refuses it at start."""
    eng = edit_manifest(manifest_copy(tiny_engines, tmp_path / "eng"), _set(path, value))
    rc, _, err = cli(capsys, "run", "--engines", eng, "--camera", media["video"], "--mic", media["wav"], "--duration", "1")
    assert_one_error_line("run", rc, err, "manifest.json", needle)


def _odd_image_engine(path: Path, kind: str) -> None:
    """An image engine with the tiny engine's names and shapes that loads and passes
    every static check, but gives NaN (``nan``) or takes float16 (``float16``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_mla.runtime.testing.tiny_engines import CLASSES, IMAGE_SIZE

    n = IMAGE_SIZE * IMAGE_SIZE
    w = np.full((n, len(CLASSES)), np.nan if kind == "nan" else 0.01, np.float32)
    in_type = TensorProto.FLOAT16 if kind == "float16" else TensorProto.FLOAT
    nodes = ([helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT)] if kind == "float16" else [helper.make_node("Identity", ["image"], ["x"])]) + [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("image", in_type, ["batch", 1, IMAGE_SIZE, IMAGE_SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(CLASSES)])], initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


@pytest.mark.parametrize("kind,needle", [
    ("named-axes", "warm-up inference on a blank image input of shape [1, 64, 64] failed"),
    ("nan", "warm-up inference on a blank image input gave non-finite logits"),
    ("float16", "warm-up inference on a blank image input of shape [1, 28, 28] failed"),
])
def test_run_warms_every_engine_up_at_start(capsys, tmp_path, tiny_engines, media, kind, needle):
    """What the static checks cannot see (a size hidden behind named axes, an engine
    that gives NaN or takes another input type) ran on every frame with a traceback
    per frame, or sent NaN decisions; a blank input through the sensor's own
    preprocessing at start refuses the folder in one line."""
    from edge_mla.manifest import sha256_of

    eng = manifest_copy(tiny_engines, tmp_path / "eng")
    if kind == "named-axes":
        def fn(m):
            m["engines"]["image"]["input"]["shape"] = ["batch", 1, "h", "w"]
            m["engines"]["image"]["image"]["size"] = 64
    else:
        _odd_image_engine(eng / "image.fp32.onnx", kind)
        sha = sha256_of(eng / "image.fp32.onnx")

        def fn(m):
            m["engines"]["image"]["sha256"] = m["engines"]["image"]["variants"]["fp32"]["sha256"] = sha
    edit_manifest(eng, fn)
    out = tmp_path / "results.jsonl"
    rc, _, err = cli(capsys, "run", "--engines", eng, "--camera", media["video"], "--mic", media["wav"], "--out", out, "--duration", "1")
    assert_one_error_line("run", rc, err, str(eng / "image.fp32.onnx"), needle)
    assert not out.exists()


@pytest.mark.parametrize("link", ["engine-file", "folder-in-path", "manifest"])
def test_links_leading_out_of_the_engine_folder_are_refused(capsys, tmp_path, tiny_engines, media, link):
    """``..`` and absolute names are refused by the schema; a link inside the folder
    (to a file, or a folder on the engine's path) pointed the runtime at whatever it
    names. A link that stays inside the folder is fine."""
    eng = manifest_copy(tiny_engines, tmp_path / "eng")
    outside = manifest_copy(tiny_engines, tmp_path / "outside")
    if link == "engine-file":
        (eng / "image.fp32.onnx").unlink()
        (eng / "image.fp32.onnx").symlink_to(outside / "image.fp32.onnx")
        needle = "engine file image.fp32.onnx for image is a link that leads outside"
    elif link == "folder-in-path":
        (eng / "sub").symlink_to(outside)
        edit_manifest(eng, lambda m: (_set(["engines", "image", "file"], "sub/image.fp32.onnx")(m), _set(["engines", "image", "variants", "fp32", "file"], "sub/image.fp32.onnx")(m)))
        needle = "engine file sub/image.fp32.onnx for image is a link that leads outside"
    else:
        (eng / "manifest.json").unlink()
        (eng / "manifest.json").symlink_to(outside / "manifest.json")
        needle = "the manifest is a link that leads outside"
    for command in (["run", "--engines", eng, "--camera", media["video"], "--mic", media["wav"], "--duration", "1"], ["profile", eng, "--backend", "onnxruntime", "--no-plot"]):
        rc, _, err = cli(capsys, *command)
        assert_one_error_line(command[0], rc, err, needle)
    inside = manifest_copy(tiny_engines, tmp_path / "inside")
    (inside / "store").mkdir()
    (inside / "image.fp32.onnx").rename(inside / "store" / "image.fp32.onnx")
    (inside / "image.fp32.onnx").symlink_to(inside / "store" / "image.fp32.onnx")
    from edge_mla.manifest import load_manifest

    assert load_manifest(inside).engine("image").path == inside / "image.fp32.onnx"


EMPTY_PATHS = {
    "data-info": (["data", "info", "--dataset", "avmnist", "--data-dir", ""], "--data-dir"),
    "eval-data-dir": (["eval", "RUN", "--data-dir", ""], "--data-dir"),
    "eval-run": (["eval", ""], "RUN_DIR"),
    "export-run": (["export", ""], "RUN_DIR"),
    "export-calib": (["export", "RUN", "--calib-data", "", "--out", "OUT"], "--calib-data"),
    "export-data-dir": (["export", "RUN", "--dataset", "avmnist", "--data-dir", "", "--out", "OUT"], "--data-dir"),
    "profile": (["profile", ""], "ENGINE_DIR"),
    "run-replay": (["run", "--engines", "RUN", "--replay", " "], "--replay"),
    "train-config": (["train", "--config", ""], "--config"),
}


@pytest.mark.parametrize("case", list(EMPTY_PATHS))
def test_an_empty_path_argument_is_one_line(capsys, run_folder, case, monkeypatch):
    """``""`` is the current folder to Path: ``--data-dir ''`` read $EDGE_MLA_DATA,
    ``export --calib-data ''`` calibrated on the current folder, ``--replay ''``
    replayed it. Each is refused before anything is read or written."""
    monkeypatch.setenv("EDGE_MLA_DATA", str(run_folder.parent))  # what --data-dir "" used to fall back to
    args, needle = EMPTY_PATHS[case]
    args = [str(run_folder) if a == "RUN" else str(run_folder.parent / "out") if a == "OUT" else a for a in args]
    before = snapshot(run_folder.parent)
    rc, _, err = cli(capsys, *args)
    assert_one_error_line(args[0], rc, err, needle, "an empty path")
    assert snapshot(run_folder.parent) == before


# -- recordings the runtime has not seen -------------------------------------------------

def _avi(path, frames: int, fps: float = 10.0):
    import cv2

    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        f = np.full((48, 64, 3), (i * 37) % 200 + 20, np.uint8)
        cv2.putText(f, str(i), (5, 30), 0, 1, (255, 255, 255), 2)
        vw.write(f)
    vw.release()
    return path


def _play(spec, seconds: float = 15.0):
    from edge_mla.runtime.sources.camera import CameraSource

    cam = CameraSource(str(spec), blank_threshold=0)
    cam.start()
    t0 = time.monotonic()
    while cam.status.state != "ended" and time.monotonic() - t0 < seconds:
        time.sleep(0.05)
    cam.stop()
    cam.join()
    return cam


def test_a_frame_that_does_not_decode_is_skipped_not_the_end_of_the_file(tmp_path, caplog):
    """One corrupt frame ended the camera as if the file were over (and --loop replayed
    only what came before it); a video cut short ended without a word."""
    import struct

    base = _avi(tmp_path / "base.avi", 40)
    b = bytearray(base.read_bytes())
    chunks = [i for i in range(len(b)) if b[i : i + 4] == b"00dc"]
    i = chunks[11]  # the 11th frame (the first 00dc is in the index list)
    n = struct.unpack("<I", b[i + 4 : i + 8])[0]
    b[i + 8 : i + 8 + n] = bytes(n)
    (tmp_path / "corrupt.avi").write_bytes(bytes(b))
    cam = _play(tmp_path / "corrupt.avi")
    assert cam.frames == 39 and cam.bad_frames == 1
    raw = base.read_bytes()
    (tmp_path / "cut.avi").write_bytes(raw[: len(raw) // 3])
    with caplog.at_level("WARNING"):
        cam = _play(tmp_path / "cut.avi")
    assert 0 < cam.frames < 20
    assert "its header announces" in caplog.text


def test_a_looped_video_restart_is_not_a_reconnect(tmp_path):
    """Each restart of a looped file counted as a reconnect: a 1-frame video reported
    about 30 reconnects a second, which hid real ones."""
    from edge_mla.runtime.sources.camera import CameraSource

    cam = CameraSource(str(_avi(tmp_path / "one.avi", 2, fps=20.0)), loop=True, blank_threshold=0)
    cam.start()
    time.sleep(1.0)
    cam.stop()
    cam.join()
    assert cam.frames >= 4 and cam.status.reconnects == 0


def test_a_video_without_a_frame_is_one_line(capsys, tmp_path, tiny_engines):
    """A 0-frame video opened, then "ended" at once (with --loop: reconnected for ever)."""
    _avi(tmp_path / "empty.avi", 0)
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--camera", tmp_path / "empty.avi", "--mic", "none", "--out", tmp_path / "o.jsonl")
    assert_one_error_line("run", rc, err, str(tmp_path / "empty.avi"), "holds no frame")
    assert not (tmp_path / "o.jsonl").exists()


def test_a_video_frame_rate_is_trusted_only_when_it_is_one(tmp_path):
    """A header of 1e9 fps played the whole file in one step (0 decisions), 1e-9 fps
    one frame and then "lost"; a real 0.5 fps file was reported lost between frames."""
    from edge_mla.runtime.clock import now
    from edge_mla.runtime.sources.camera import DEFAULT_FILE_FPS, CameraSource, file_fps

    assert file_fps(1e9, "x") == file_fps(1e-9, "x") == file_fps(0.0, "x") == file_fps(float("nan"), "x") == DEFAULT_FILE_FPS
    assert file_fps(0.5, "x") == 0.5 and file_fps(25.0, "x") == 25.0
    cam = CameraSource(str(_avi(tmp_path / "slow.avi", 3, fps=0.5)), timeout=1.0, blank_threshold=0)
    cam.start()
    try:
        time.sleep(0.3)
        cam.supervise(now() + 2.5)  # 2.5 s without a frame: one frame interval (2 s) plus less than the timeout
        assert cam.status.state == "ok"
        cam.supervise(now() + 3.5)
        assert cam.status.state == "lost"
    finally:
        cam.stop()
        cam.join()


@pytest.mark.parametrize("name", ["take.wave", "take.aiff", "recordings/take"])
def test_a_mic_sound_file_without_a_wav_name_is_played_not_looked_up_as_a_device(tmp_path, name):
    """``--mic take.wave`` (or an AIFF) was looked up as a sound device, retried for
    ever and reported lost; an existing file given as a path is played."""
    import soundfile as sf

    from edge_mla.runtime.sources.microphone import MicSource

    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    sf.write(str(path), np.full(8000, 0.1, np.float32), 8000, subtype="PCM_16", format="AIFF" if name.endswith("aiff") else "WAV")
    mic = MicSource(str(path), window_seconds=1.0)
    assert type(mic.backend).__name__ == "WavFileInput" and mic.rate == 8000 and mic.backend.pcm.size == 8000


def test_a_wav_shorter_than_a_hop_is_still_classified(capsys, tmp_path, tiny_engines):
    """The run stopped as soon as every source ended: a 0.1 s WAV ended before the
    audio engine's first tick, so it was never classified (0 decisions, exit 0)."""
    import soundfile as sf

    t = np.arange(1600) / 16000
    sf.write(str(tmp_path / "short.wav"), (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, subtype="PCM_16")
    rc, _, err = cli(capsys, "run", "--engines", tiny_engines, "--camera", "none", "--mic", tmp_path / "short.wav", "--out", tmp_path / "o.jsonl",
                     "--silence-threshold", "0")
    assert rc == 0, err
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert any("audio" in r["used"] for r in records), records
