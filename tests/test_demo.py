"""The demo's steps end to end, in a reduced form (few pairs, a short replay)."""

import json

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, demo_cache):
    from edge_mla.demo import DemoConfig, run_demo

    said = []
    res = run_demo(DemoConfig(out=tmp_path / "demo", epochs=3, limit=1600, batch_size=32, segments=6, segment_seconds=2.0, calib_size=40, progress=False, latency_repeats=10), say=said.append)
    out = tmp_path / "demo"
    assert [s for s in said if s.startswith("[")][-1].startswith("[6/6]")
    for name in ("report.json", "report.md", "timeline.png", "runtime.jsonl", "engines/manifest.json", "run/checkpoint.pt", "replay/truth.json"):
        assert (out / name).is_file(), name
    assert (out / "timeline.png").stat().st_size > 5000
    rep = json.loads((out / "report.json").read_text())
    assert rep["replay"]["overall"]["n"] > 10
    assert set(rep["engines"]) == {"image", "audio"} and set(rep["engines"].values()) <= {"fp32", "int8"}
    assert rep["test_accuracy"]["image"] > 0.3  # real digit images, 150 steps: far above chance
    assert "clean" in rep["weights_per_span"]
    assert {"image", "audio"} <= set(rep["latency"])
    lines = (out / "runtime.jsonl").read_text().splitlines()
    assert len(lines) >= 10 and all("sensors" in json.loads(x) for x in lines[:5])
    assert "| overall |" in (out / "report.md").read_text()


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    from edge_mla.cli.main import main

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("keep")
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "d" / "x").read_text() == "keep"


def test_demo_never_replaces_what_it_reads_and_restores_the_old_demo(tmp_path, capsys, monkeypatch):
    """--out . --force wiped the current folder (then a traceback); a demo cut short
    with --force had already deleted the previous one. Now the current folder and the
    data cache are refused, and the old demo comes back when the new one fails."""
    from edge_mla import demo
    from edge_mla.cli.main import main

    here = tmp_path / "here"
    here.mkdir()
    (here / "precious.txt").write_text("keep")
    monkeypatch.chdir(here)
    assert main(["demo", "--out", ".", "--force"]) == 2
    assert "is the current folder" in capsys.readouterr().err and (here / "precious.txt").read_text() == "keep"
    assert main(["demo", "--out", ""]) == 2
    assert "--out: an empty path" in capsys.readouterr().err
    old = tmp_path / "d"
    old.mkdir()
    (old / "report.md").write_text("the previous demo")

    def cut_short(cfg, out, say):
        (out / "run").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_run_steps", cut_short)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(demo.DemoConfig(out=old, force=True))
    assert sorted(p.name for p in old.iterdir()) == ["report.md"] and (old / "report.md").read_text() == "the previous demo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "here"]  # nothing moved aside left behind
