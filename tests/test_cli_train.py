"""`edge-mla train` / `eval` from the command line: errors and a short real run."""

import json
import subprocess
import sys

import pytest

from edge_mla.cli.main import main
from edge_mla.train.config import TrainConfig


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edge_mla.cli.main", *args], capture_output=True, text=True, timeout=900)


def test_help_lists_every_knob():
    r = cli("train", "--help")
    assert r.returncode == 0
    for flag in ("--method", "--preset", "--dataset", "--data-dir", "--epochs", "--batch-size", "--seed", "--limit", "--out", "--config", "--head-grad", "--split",
                 "--aug-gain-db", "--aug-speed", "--no-augment"):
        assert flag in r.stdout, flag


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--epochs", "0"], "--epochs must be an integer >= 1"),
        (["train", "--owm-alpha", "big"], "--owm-alpha must be 'auto' or a positive number"),
        (["train", "--dataset", "avmnist", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir does not exist"),
        (["eval", "/nonexistent/run"], "/nonexistent/run: run folder not found"),
    ],
)
def test_bad_input_gives_one_clear_line(args, message, capsys):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_augment_flags_map_onto_the_config():
    from edge_mla.cli.main import build_parser
    from edge_mla.cli.train_cmd import config_from_args

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    assert cfg("--aug-gain-db", "-12", "3", "--aug-speed", "0.05").audio_augment().gain_db == (-12.0, 3.0)
    assert cfg("--aug-gain-db", "0", "0", "--aug-speed", "0").audio_augment().speed == 0.0
    assert cfg("--no-augment").audio_augment() is None
    assert cfg().audio_augment().gain_db == TrainConfig().aug_gain_db  # the default is the config's


def test_unknown_choice_is_rejected_by_argparse():
    r = cli("train", "--method", "magic")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_config_file_errors(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"epochs": 2, "colour": "red"}')
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown config key(s) colour" in capsys.readouterr().err
    cfg.write_text("{not json")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_existing_run_folder_needs_force(tmp_path, capsys, demo_cache):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    assert main(["train", "--dataset", "demo", "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "run" / "keep.txt").exists()


def test_out_holding_the_data_folder_is_refused_even_with_force(tmp_path, capsys, monkeypatch):
    """--force renames the new run over --out as a whole: a folder that holds the data
    it reads (from --data-dir or $EDGE_MLA_DATA) would be deleted."""
    data = tmp_path / "proj" / "data"
    data.mkdir(parents=True)
    (data / "keep.txt").write_text("x")
    assert main(["train", "--dataset", "folder", "--data-dir", str(data), "--out", str(tmp_path / "proj"), "--force", "--epochs", "1"]) == 2
    assert "holds the data folder" in capsys.readouterr().err
    monkeypatch.setenv("EDGE_MLA_DATA", str(data))
    assert main(["train", "--dataset", "avmnist", "--out", str(data), "--force", "--epochs", "1"]) == 2
    assert "is the data folder" in capsys.readouterr().err
    assert (data / "keep.txt").read_text() == "x"


@pytest.mark.slow
def test_short_training_run_learns_and_evaluates(tmp_path, demo_cache):
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"method": "mla", "preset": "tiny", "dataset": "demo", "epochs": 3, "limit": 1600, "batch_size": 32}))
    r = cli("train", "--config", str(cfg), "--seed", "1", "--out", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "curves.png", "test.json"):
        assert (run / name).is_file(), name
    conf = json.loads((run / "config.json").read_text())
    assert conf["train"]["seed"] == 1 and conf["train"]["epochs"] == 3  # flag overrides the file
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert all("P_frobenius" in x and "proj_ratio_mean" in x for x in lines)
    r = cli("eval", str(run), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in ("image", "audio", "fused", "fused_mean", "image_missing", "audio_missing", "image_black", "audio_silence", "audio_noise"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["fused"] > 0.4, res  # chance is 0.1
    assert res["image"] > 0.4, res


def test_seeded_runs_repeat_on_cpu(tmp_path, demo_cache):
    from edge_mla.train import TrainConfig, train

    outs = []
    for name in ("a", "b"):
        out = train(TrainConfig(method="mla", dataset="demo", epochs=1, limit=256, batch_size=32, seed=3, out=str(tmp_path / name), progress=False, threads=1))
        outs.append(json.loads((out / "metrics.jsonl").read_text().splitlines()[0]))
    assert outs[0]["val"] == outs[1]["val"]
    assert outs[0]["loss_audio"] == outs[1]["loss_audio"]


def test_top_level_help_lists_every_command_without_importing_torch():
    code = ("import sys\nfrom edge_mla.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'help imported torch'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("data", "train", "eval", "export", "run", "profile", "demo"):
        assert f"    {name} " in r.stdout, name
