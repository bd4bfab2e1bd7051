"""`edge-mla eval --json` with the corruption suite: the JSON schema of
"corruptions", "corruption_summary", "ece" and "reliability", and the regret
arithmetic, on the tiny demo run."""

from __future__ import annotations

import json

import pytest

from test_runtime_support import run_cli

pytest_plugins = ["export_fixtures"]  # tiny_run


@pytest.fixture(scope="module")
def eval_json(tiny_run):
    p = run_cli(["eval", str(tiny_run), "--json", "--limit", "60"], timeout=900)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_corruption_entries_have_the_schema_and_regret_is_the_shortfall(eval_json):
    from edge_mla.corruptions import suite

    res = eval_json
    assert res["n"] == 60 and res["rule"] == "entropy"
    assert set(res["corruptions"]) == {c.name for c in suite()}
    for name, c in res["corruptions"].items():
        assert {"modality", "held_out", "image", "audio", "fused", "regret"} <= set(c)
        assert c["modality"] in ("image", "audio") and isinstance(c["held_out"], bool)
        for k in ("image", "audio", "fused"):
            assert 0.0 <= c[k] <= 1.0
        assert c["regret"] == pytest.approx(max(0.0, 100 * (max(c["image"], c["audio"]) - c["fused"])))
        assert c["regret_base"] == pytest.approx(max(0.0, 100 * (max(c["image"], c["audio"]) - c["fused_base"])))
        assert 0.0 <= c["auroc"] <= 1.0
    for part in ("held_out", "train"):
        s = res["corruption_summary"][part]
        regrets = [c["regret"] for c in res["corruptions"].values() if c["held_out"] == (part == "held_out")]
        assert s["worst_regret"] == pytest.approx(max(regrets)) and s["mean_regret"] == pytest.approx(sum(regrets) / len(regrets))
        assert res["corruptions"][s["worst"]]["regret"] == pytest.approx(s["worst_regret"])


def test_ece_and_auroc_blocks(eval_json):
    res = eval_json
    for m in ("image", "audio"):
        e = res["ece"][m]
        assert 0.0 <= e["raw"] <= 1.0 and 0.0 <= e["calibrated"] <= 1.0 and e["temperature"] > 0
        # the noise floor: what a calibrated encoder would score on this many distinct inputs
        assert 0.0 < e["floor"] <= e["floor_p90"] < 1.0 and 0.0 <= e["p"] <= 1.0 and 0 < e["distinct"] <= res["n"]
        assert {"held_out", "train"} <= set(res["reliability"]["auroc"][m])
    from edge_mla.reliability import DEFAULT_SIGNAL, POWERS, default_weighting

    assert res["reliability"]["signal"] == DEFAULT_SIGNAL
    # the weighting the fused figures used: the power the run's fit picked, the rule's floor
    assert res["reliability"]["power"] in POWERS and res["reliability"]["floor"] == default_weighting("entropy")[1]
    # MLA's entropy rule weighs r itself (no reference r; the sum rule has one)
    assert res["reliability"]["reference"] == {"image": 1.0, "audio": 1.0}
    # the fault gate's prototypes, per modality that has one: train-family blocks only
    from edge_mla.corruptions import suite

    train_names = {c.name for c in suite(held_out=False)}
    assert isinstance(res["reliability"]["fault_gate"], dict)
    assert all(set(b) <= train_names and b for b in res["reliability"]["fault_gate"].values())
    assert 0.0 <= res["fused_reliable"] <= 1.0 and 0.0 <= res["fused_rule"] <= 1.0
    # the legacy keys are still there
    for key in ("image", "audio", "fused", "fused_mean", "image_black", "audio_silence", "audio_noise"):
        assert key in res


def test_bad_limit_and_signal_exit_2(tiny_run):
    p = run_cli(["eval", str(tiny_run), "--limit", "-1"])
    assert p.returncode == 2 and "--limit" in p.stderr
    p = run_cli(["eval", str(tiny_run), "--signal", "nope", "--limit", "10"])
    assert p.returncode == 2 and "--signal" in p.stderr


def test_eval_keeps_its_result_in_the_run_folder_without_following_links(tiny_run, tmp_path):
    """SPLIT.json is written beside and renamed (a link there, from an untrusted run
    folder, made eval overwrite the file it named); a --limit subset goes to its own
    file instead of replacing the full figures; a folder in the way is one line
    before any evaluation."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "test.json").unlink(missing_ok=True)
    (run / "test.json").symlink_to(victim)
    p = run_cli(["eval", str(run), "--no-corrupt", "--limit", "20"], timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "test-limit20.json").read_text())["n"] == 20 and (run / "test.json").is_symlink()
    p = run_cli(["eval", str(run), "--no-corrupt"], timeout=300)
    assert p.returncode == 0, p.stderr
    assert victim.read_text() == "precious" and not (run / "test.json").is_symlink()
    assert json.loads((run / "test.json").read_text())["n"] > 20
    (run / "val.json").mkdir()
    p = run_cli(["eval", str(run), "--split", "val"], timeout=300)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "val.json: is a folder" in err[0], p.stderr
    assert not list(run.glob(".*tmp*"))
