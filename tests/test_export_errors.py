"""Bad input to `edge-mla export`: one clear line, exit code 2, no engine folder
(and no temporary folder) left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["export_fixtures"]  # tiny_run; constants imported inside tests (after pytest loaded it)


def run_cli(capsys, *args) -> tuple[int, str]:
    from edge_mla.cli.main import main
    from export_fixtures import QUICK_FLAGS

    rc = main(["export", *map(str, args), *QUICK_FLAGS, "--calib-size", "20"])
    err = capsys.readouterr().err.strip()
    return rc, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("edge-mla export: error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def assert_nothing_written(parent: Path, allowed: set) -> None:
    left = {p.name for p in parent.iterdir()} - allowed
    assert not left, f"left behind: {left}"


def test_missing_run_folder(tmp_path, capsys):
    rc, err = run_cli(capsys, tmp_path / "nope")
    assert_one_line_error(rc, err, "nope", "run folder not found")
    assert_nothing_written(tmp_path, set())


def test_run_folder_without_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "demo"}))
    rc, err = run_cli(capsys, run)
    assert_one_line_error(rc, err, "checkpoint.pt", "missing")
    assert_nothing_written(run, {"config.json"})


def test_run_folder_without_config_needs_dataset(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "checkpoint.pt", run / "checkpoint.pt")
    rc, err = run_cli(capsys, run)
    assert_one_line_error(rc, err, "config.json", "--dataset")
    assert_nothing_written(run, {"checkpoint.pt"})


def test_checkpoint_of_another_architecture(tiny_run, tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload["model_config"]["preset"] = "resnet18"  # tiny weights, resnet18 config
    payload["model_config"]["dim"] = 0
    torch.save(payload, run / "checkpoint.pt")
    before = {p.name for p in run.iterdir()}  # the fixture run may carry an earlier export's reliability.json
    rc, err = run_cli(capsys, run)
    assert_one_line_error(rc, err, "checkpoint.pt", "does not match its architecture")
    assert_nothing_written(run, before)


def test_not_a_checkpoint(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoint.pt").write_bytes(b"garbage")
    rc, err = run_cli(capsys, run)
    assert_one_line_error(rc, err, "checkpoint.pt", "cannot load")


def test_unknown_modality(tiny_run, tmp_path, capsys):
    rc, err = run_cli(capsys, tiny_run, "--out", tmp_path / "eng", "--modalities", "image", "video")
    assert_one_line_error(rc, err, "video", "image, audio")
    assert_nothing_written(tmp_path, set())


def test_existing_output_folder_needs_force(tiny_run, tmp_path, capsys):
    out = tmp_path / "eng"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, err = run_cli(capsys, tiny_run, "--out", out)
    assert_one_line_error(rc, err, str(out), "--force")
    assert (out / "keep.txt").read_text() == "mine"
    assert_nothing_written(tmp_path, {"eng"})


def test_output_path_is_a_file(tiny_run, tmp_path, capsys):
    out = tmp_path / "eng"
    out.write_text("x")
    rc, err = run_cli(capsys, tiny_run, "--out", out)
    assert_one_line_error(rc, err, "not a folder")


def test_empty_calibration_folder(tiny_run, tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    rc, err = run_cli(capsys, tiny_run, "--out", tmp_path / "eng", "--int8", "on", "--calib-data", calib)
    assert_one_line_error(rc, err, "--calib-data", "empty", "pairs.csv")
    assert_nothing_written(tmp_path, {"calib"})


def test_wrong_calibration_folder(tiny_run, tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "notes.txt").write_text("hello")
    rc, err = run_cli(capsys, tiny_run, "--out", tmp_path / "eng", "--int8", "on", "--calib-data", calib)
    assert_one_line_error(rc, err, "--calib-data", "no pairs.csv")
    # a pairs.csv that lacks columns
    (calib / "pairs.csv").write_text("file,label\na.png,1\n")
    rc, err = run_cli(capsys, tiny_run, "--out", tmp_path / "eng", "--int8", "on", "--calib-data", calib)
    assert_one_line_error(rc, err, "--calib-data", "missing column")
    assert_nothing_written(tmp_path, {"calib"})


def test_wrong_calibration_npz(tiny_run, tmp_path, capsys):
    bad = tmp_path / "calib.npz"
    np.savez(bad, image=np.zeros((4, 1, 64, 64), np.float32), audio=np.zeros((4, 8000), np.float32))
    rc, err = run_cli(capsys, tiny_run, "--out", tmp_path / "eng", "--int8", "on", "--calib-data", bad)
    assert_one_line_error(rc, err, "calib.npz", "image has shape")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    rc, err = run_cli(capsys, tiny_run, "--out", tmp_path / "eng", "--int8", "on", "--calib-data", tmp_path / "junk.npz")
    assert_one_line_error(rc, err, "junk.npz", "cannot read")
    rc, err = run_cli(capsys, tiny_run, "--out", tmp_path / "eng", "--int8", "on", "--calib-data", tmp_path / "missing.npz")
    assert_one_line_error(rc, err, "missing.npz", "not found")
    assert_nothing_written(tmp_path, {"calib.npz", "junk.npz"})


def test_calibration_from_a_folder_dataset(tiny_run, tmp_path, capsys):
    """The happy path of --calib-data DIR: a pairs.csv folder calibrates the engine."""
    import cv2
    import soundfile as sf

    calib = tmp_path / "calib"
    (calib / "images").mkdir(parents=True)
    (calib / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,audio,label,split"]
    for i in range(20):
        cv2.imwrite(str(calib / "images" / f"{i}.png"), (rng.random((40, 40)) * 255).astype(np.uint8))
        sf.write(str(calib / "audio" / f"{i}.wav"), (rng.standard_normal(16000) * 0.05).astype(np.float32), 16000)
        rows.append(f"images/{i}.png,audio/{i}.wav,{i % 5},{'train' if i < 15 else 'val'}")
    (calib / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eng"
    rc, err = run_cli(capsys, tiny_run, "--out", out, "--int8", "on", "--calib-data", calib, "--modalities", "audio")
    assert rc == 0, err
    man = json.loads((out / "manifest.json").read_text())
    cal = man["engines"]["audio"]["variants"]["int8"]["calibration"]
    assert cal["source"].startswith("folder") and cal["samples"] == 15


def test_no_temporary_folder_survives_a_failure(tiny_run, tmp_path, monkeypatch):
    """A failure after the temporary folder exists (here: in quantization) removes it."""
    from edge_mla.export import pipeline
    from edge_mla.export.pipeline import ExportConfig, export_run
    from export_fixtures import QUICK

    def boom(*a, **k):
        raise RuntimeError("quantizer exploded")

    monkeypatch.setattr("edge_mla.export.quantize.quantize_int8", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        export_run(ExportConfig(run_dir=tiny_run, out=tmp_path / "eng", int8="on", modalities=["image"], **{**QUICK, "calib_size": 20}))
    assert_nothing_written(tmp_path, set())
    assert pipeline  # imported for the monkeypatch target


def test_out_that_is_or_holds_an_input_is_refused_before_any_work(tiny_run, tmp_path, capsys, monkeypatch):
    """--out is renamed over as a whole: the run folder itself, a folder above it, the
    folder of --calib-data or the current folder would be deleted with --force."""
    proj = tmp_path / "proj"
    run = proj / "runs" / "r"
    shutil.copytree(tiny_run, run)
    (proj / "notes.txt").write_text("keep")
    before = sorted(p.relative_to(proj) for p in proj.rglob("*"))
    for out, needle in ((run, "is the run folder"), (proj, "holds the run folder"), (proj / "runs", "holds the run folder")):
        rc, err = run_cli(capsys, run, "--out", out, "--force")
        assert_one_line_error(rc, err, str(out), needle, "choose another folder")
    np.savez(proj / "calib.npz", image=np.zeros((4, 1, 28, 28), np.float32))
    outside = tmp_path / "calibdir"
    outside.mkdir()
    (outside / "c.npz").write_bytes((proj / "calib.npz").read_bytes())
    rc, err = run_cli(capsys, run, "--out", outside, "--force", "--int8", "on", "--calib-data", outside / "c.npz")
    assert_one_line_error(rc, err, "holds --calib-data")
    monkeypatch.chdir(tmp_path / "calibdir")
    rc, err = run_cli(capsys, run, "--out", ".", "--force")
    assert_one_line_error(rc, err, "is the current folder")
    (proj / "calib.npz").unlink()
    assert sorted(p.relative_to(proj) for p in proj.rglob("*")) == before
    assert (run / "checkpoint.pt").read_bytes() == (tiny_run / "checkpoint.pt").read_bytes()


@pytest.mark.parametrize("kind", ["folder", "nested-too-deeply"])
def test_unreadable_reliability_cache_is_one_line_and_leaves_nothing(tiny_run, tmp_path, capsys, kind):
    """A run folder's reliability.json that is a folder (the refit's rename failed
    after the whole fit, leaving reliability.json.tmp) or nested too deeply."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = run / "reliability.json"
    if path.exists():
        path.unlink()
    if kind == "folder":
        path.mkdir()
    else:
        path.write_text("[" * 5000 + "]" * 5000)
    before = sorted(p.name for p in run.iterdir())
    rc, err = run_cli(capsys, run, "--out", tmp_path / "e")
    assert_one_line_error(rc, err, str(path), "delete it")
    assert sorted(p.name for p in run.iterdir()) == before
    assert_nothing_written(tmp_path, {"run"})


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m.pop("audio"), "holds constants for image, but the model has audio, image"),
    (lambda m: m["image"].update(means=[r[:3] for r in m["image"]["means"]], precision=[r[:3] for r in m["image"]["precision"][:3]]), "the image class means are (10, 3)"),
    (lambda m: m["image"].update(temperature=1e-300), "temperature 1e-300 is outside"),
])
def test_cached_reliability_constants_must_be_this_models(tiny_run, tmp_path, capsys, edit, needle):
    """reliability.json is run-folder input: constants of another run (another feature
    size, another modality set) or an absurd temperature gave a matmul traceback or
    figures that do not belong to the model."""
    from edge_mla.cli.main import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cache = run / "reliability.json"
    if not cache.is_file():
        assert main(["eval", str(run), "--limit", "20"]) == 0
        capsys.readouterr()
    d = json.loads(cache.read_text())
    for cand in d["candidates"].values():
        if "means" in cand["modalities"]["image"]:  # the default signal's candidates carry the Gaussian
            edit(cand["modalities"])
    cache.write_text(json.dumps(d))
    rc = main(["eval", str(run), "--limit", "20"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(cache) in err[0] and needle in err[0], err


def test_the_reliability_cache_is_written_through_a_fresh_name(tmp_path):
    """A link at the old fixed temp name (reliability.json.tmp) made a fit write the
    constants wherever it pointed; two fits at once raced on that one name."""
    from edge_mla.reliability_fit import save

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "reliability.json.tmp").symlink_to(victim)
    save(run, {})
    assert victim.read_text() == "precious" and json.loads((run / "reliability.json").read_text())["candidates"] == {}
    assert not (run / "reliability.json").is_symlink() and sorted(p.name for p in run.iterdir()) == ["reliability.json", "reliability.json.tmp"]


def test_out_with_a_control_character_is_refused(tiny_run, tmp_path, capsys):
    """A folder name ending in a newline split the final one-line message, and the
    build_engines.sh written there changed into the sibling folder."""
    rc, err = run_cli(capsys, tiny_run, "--out", str(tmp_path / "eng\n"))
    assert_one_line_error(rc, err, "holds a control character")
    assert_nothing_written(tmp_path, set())
