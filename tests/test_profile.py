"""`edge-mla profile` on a tiny export: every promised field, sane numbers."""

import json
import subprocess
import sys

import pytest

pytest_plugins = ["export_fixtures"]  # tiny_run, exported (shared session fixtures)


def test_macs_are_counted_exactly_for_the_tiny_image_engine(exported):
    from edge_mla.runtime.profiling.macs import count_macs

    out = exported.out
    # conv 1->16 @28x28, 16->32 @14x14, 32->64 @7x7 (3x3), proj 64x64, head 64x10
    expected = 28 * 28 * 16 * 9 + 14 * 14 * 32 * 16 * 9 + 7 * 7 * 64 * 32 * 9 + 64 * 64 + 64 * 10
    # the reliability output (issue 8): h'P (64x64), h'P mu_c (64x10 classes) where the
    # Mahalanobis term is used, then the logistic over the features
    rel = json.loads((out / "manifest.json").read_text())["fusion"].get("reliability")
    if rel:
        feats = rel["modalities"]["image"]["features"]
        expected += (64 * 64 + 64 * 10 if "mahalanobis" in feats else 0) + len(feats)
    assert count_macs(out / "image.fp32.onnx") == expected
    assert count_macs(out / "image.int8.onnx") == expected  # QDQ does not change the compute


def test_profile_json_has_every_field(exported, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "edge_mla.cli.main", "profile", str(exported.out), "--batch", "1", "4", "--threads", "1",
         "--repeats", "15", "--warmup", "3", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res == json.loads((tmp_path / "profile.json").read_text())
    assert (tmp_path / "profile.png").stat().st_size > 1000
    assert {"cpu", "cores", "isa", "onnxruntime"} <= set(res["machine"])
    combos = {(t["modality"], t["backend"], t["precision"], t["batch"]) for t in res["timings"]}
    for m in ("image", "audio"):
        for prec in ("fp32", "int8"):
            for b in (1, 4):
                assert (m, "onnxruntime", prec, b) in combos
        assert (m, "torch", "fp32", 1) in combos  # the run folder is there and torch imports
    for t in res["timings"]:
        ms = t["ms"]
        assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"] <= ms["max"]
        assert ms["n"] == 15 and len(t["samples_ms"]) == 15
        assert t["macs"] > 0 and t["gmacs_per_s"] > 0
    assert set(res["ratios"]["int8_over_fp32"]) == {f"{m}/batch{b}/threads1" for m in ("image", "audio") for b in (1, 4)}
    assert all(v > 0 for v in res["ratios"]["torch_over_onnxruntime"].values())
    assert any("TensorRT" in n for n in res["notes"])


def test_profile_of_a_missing_folder_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge_mla.cli.main", "profile", str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "engine folder not found" in r.stderr and "Traceback" not in r.stderr


def test_profile_never_writes_through_a_link_in_the_engine_folder(exported, tmp_path, capsys):
    """An engine folder is untrusted input, and profile writes into it by default: a
    ``profile.png`` (or ``profile-replay``, or a file under it) that is a link to a
    file elsewhere is refused before any timing, and nothing outside is touched."""
    import shutil

    from edge_mla.cli.main import main

    victim = tmp_path / "victim.txt"
    for name in ("profile.png", "profile.json", "profile-replay", "profile-replay/replay/session.wav"):
        eng = tmp_path / f"eng-{name.replace('/', '-')}"
        shutil.copytree(exported.out, eng)
        victim.write_text("precious")
        link = eng / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim)
        rc = main(["profile", str(eng), "--backend", "onnxruntime", "--repeats", "1", "--warmup", "0", "--batch", "1", "--threads", "1"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "is a symbolic link" in err and str(link) in err, err
        assert victim.read_text() == "precious" and (link == eng / "profile.json" or not (eng / "profile.json").exists())


def test_profile_out_that_cannot_be_made_is_one_line_before_timing(exported, tmp_path, capsys):
    from edge_mla.cli.main import main

    rc = main(["profile", str(exported.out), "--backend", "onnxruntime", "--out", "/proc/edge-mla-profile"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--out /proc/edge-mla-profile: cannot create the folder" in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_profile_runtime_stages(exported, tmp_path, demo_cache):
    from edge_mla.runtime.profiling.runtime_profile import RuntimeProfileConfig, profile_runtime

    res = profile_runtime(RuntimeProfileConfig(engines=exported.out, duration=4.0, workdir=tmp_path))
    assert res["decisions"] > 10
    for m in ("image", "audio"):
        st = res["stages"][m]
        assert st["n"] > 0
        for k in ("capture->preprocess", "preprocess->engine", "engine->done", "done->fused", "fused->output", "end_to_end", "overhead (e2e - engine)"):
            assert k in st and st[k]["p50"] >= 0, k
        assert st["end_to_end"]["p50"] >= st["engine->done"]["p50"]
    assert res["cpu_percent"] > 0 and res["peak_rss_mb"] > 0


def test_profile_runs_on_a_device_without_torch(exported, tmp_path):
    """A device installs only the runtime extra: with torch unimportable the profiler
    still times every ONNX engine and says why PyTorch eager is missing."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edge_mla.cli.main import main\n"
        f"sys.exit(main(['profile', {str(exported.out)!r}, '--batch', '1', '--threads', '1', '--repeats', '5', '--warmup', '1', '--out', {str(tmp_path)!r}, '--json', '--no-plot']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    backends = {t["backend"] for t in res["timings"]}
    assert backends == {"onnxruntime"}
    assert {t["precision"] for t in res["timings"]} == {"fp32", "int8"}
