"""Hot engine swap mid-run: no gap in decisions, the checksum in the records
changes at one decision; a broken folder is refused and the old engines go on."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from test_runtime_cli import session  # noqa: F401
from test_runtime_support import ROOT, Collect, engines, wait_for  # noqa: F401


def _retag(folder, note: str) -> None:
    """Rewrite the manifest with one more key: same engines, a new folder checksum
    (what a redeploy of a retrained model looks like to the runtime)."""
    m = json.loads((folder / "manifest.json").read_text())
    m["model"]["note"] = note
    (folder / "manifest.json").write_text(json.dumps(m, indent=2))


def _reload_refused(rt, out, refused: int, then: int) -> None:
    """Ask for a swap, wait until it is the ``refused``-th refusal, then for ``then``
    more decisions from the old engines."""
    rt.reload()
    wait_for(lambda: rt.floor.swapper.swaps["refused"] == refused, 10)
    n = len(out)
    wait_for(lambda: len(out) >= n + then, 10)


def _max_gap(records: list) -> float:
    t = np.array([r["t"] for r in records])
    return float(np.diff(t).max())


@pytest.mark.parametrize("how", ["request", "watch"])
def test_swap_mid_run_without_a_gap(engines, session, tmp_path, how):
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config

    folder = shutil.copytree(engines, tmp_path / "eng")
    out = Collect()
    rate = 10.0
    cfg = session_config(session, engines=folder, loop=True, json_stdout=False, rate=rate, watch=how == "watch", watch_period=0.2)
    rt = Runtime(cfg, outputs=[out])
    old = rt.engine_checksum
    rt.start()
    try:
        wait_for(lambda: len(out) >= 15, 15)
        _retag(folder, "v2")
        if how == "request":
            rt.reload()
        wait_for(lambda: out.last()["engines"] != old, 10)
        n = len(out)
        wait_for(lambda: len(out) >= n + 10, 10)
    finally:
        rt.join()
    recs = out.records
    sums = [r["engines"] for r in recs]
    k = sums.index(sums[-1])
    assert set(sums[:k]) == {old} and set(sums[k:]) == {sums[-1]}  # one switch, between two decisions
    assert _max_gap(recs) <= 2.0 / rate + 0.05  # no gap longer than 2 ticks
    assert all(r["decision"] for r in recs[k - 3 : k + 3])  # deciding right through the switch
    assert rt.floor.swapper.swaps == {"ok": 1, "refused": 0}


def test_broken_folder_is_refused_and_the_old_engines_keep_running(engines, session, tmp_path, caplog):
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config

    folder = shutil.copytree(engines, tmp_path / "eng")
    out = Collect()
    cfg = session_config(session, engines=folder, loop=True, json_stdout=False, rate=10)
    rt = Runtime(cfg, outputs=[out])
    old = rt.engine_checksum
    rt.start()
    try:
        wait_for(lambda: len(out) >= 10, 15)
        with open(folder / "image.fp32.onnx", "r+b") as f:  # corrupted on the way to the device
            f.seek(100)
            f.write(b"\xff" * 64)
        rt.reload()
        wait_for(lambda: rt.floor.swapper.swaps["refused"] == 1, 10)
        m = json.loads((folder / "manifest.json").read_text())  # a manifest that lies about its engine
        shutil.copy(engines / "image.fp32.onnx", folder / "image.fp32.onnx")
        m["engines"]["image"]["sha256"] = m["engines"]["image"]["variants"]["fp32"]["sha256"] = __import__("hashlib").sha256((folder / "image.fp32.onnx").read_bytes()).hexdigest()
        m["classes"] = m["classes"][::-1]
        (folder / "manifest.json").write_text(json.dumps(m))
        _reload_refused(rt, out, refused=2, then=10)
    finally:
        report = rt.join()
    assert {r["engines"] for r in out.records} == {old}
    assert all(r["decision"] for r in out.records[-10:])
    assert report.workers["image"]["errors"] == 0
    refusals = [r.getMessage() for r in caplog.records if "engine swap refused" in r.getMessage()]
    assert len(refusals) == 2 and "sha256" in refusals[0] and "other classes" in refusals[1]


def test_sighup_swaps_the_running_cli(engines, session, tmp_path):
    folder = shutil.copytree(engines, tmp_path / "eng")
    out = tmp_path / "o.jsonl"
    cmd = [sys.executable, "-m", "edge_mla.cli.main", "run", "--engines", str(folder), "--replay", str(session.root), "--loop", "--out", str(out)]
    p = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 10, 30)
        _retag(folder, "v3")
        p.send_signal(signal.SIGHUP)
        wait_for(lambda: json.loads(out.read_text().splitlines()[-1])["engines"] != json.loads(out.read_text().splitlines()[0])["engines"], 15)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "engine swap: now running" in err
    assert "engine swaps: 1 done, 0 refused" in err


def _new_engine_files(folder) -> None:
    """A retrained model as the runtime sees it: every ONNX file rewritten (other
    bytes, same graph) and the manifest's sha256 of each updated."""
    import hashlib

    import onnx

    m = json.loads((folder / "manifest.json").read_text())
    for entry in m["engines"].values():
        files = {entry["file"]} | {v["file"] for v in entry.get("variants", {}).values() if v.get("format", "onnx") == "onnx"}
        shas = {}
        for name in files:
            model = onnx.load(str(folder / name))
            model.doc_string = "retrained"
            onnx.save(model, str(folder / name))
            shas[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        entry["sha256"] = shas[entry["file"]]
        for v in entry.get("variants", {}).values():
            if v.get("file") in shas:
                v["sha256"] = shas[v["file"]]
    (folder / "manifest.json").write_text(json.dumps(m, indent=2))


def test_stations_sharing_engines_swap_to_shared_engines(engines, session, tmp_path, caplog):
    """Two stations of one process share (batched) engines; after a swap they share
    the new ones (loaded once), the old ones are released, and both keep deciding."""
    from edge_mla.runtime.batching import BatchedEngine
    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.stations import Station

    caplog.set_level("INFO", logger="edge_mla.runtime.hot_swap")
    folder = shutil.copytree(engines, tmp_path / "eng")
    out = Collect()
    st = [Station(n, session_config(session, engines=folder, loop=True, json_stdout=False, rate=10)) for n in ("line1", "line2")]
    multi = MultiRuntime(st, outputs=[out])
    old = {m: e for m, e in multi.runtimes["line1"].engines.items()}
    assert all(isinstance(e, BatchedEngine) for e in old.values())
    old_sum = multi.runtimes["line1"].engine_checksum
    multi.start()
    try:
        wait_for(lambda: len(out) >= 20, 15)
        _new_engine_files(folder)
        multi.reload()
        swapped = lambda: all(rt.engine_checksum != old_sum for rt in multi.runtimes.values())  # noqa: E731
        wait_for(swapped, 15)
        n = len(out)
        wait_for(lambda: {r["station"] for r in out.since(n) if r["decision"]} == {"line1", "line2"}, 10)
        a, b = (multi.runtimes[x].engines for x in ("line1", "line2"))
        for m in old:
            assert a[m] is b[m] and isinstance(a[m], BatchedEngine)  # shared again, one copy
            assert a[m] is not old[m] and old[m]._closed  # the old engine was released
            assert multi.runtimes["line1"].workers[m].engine is a[m]
        assert len(multi.pool.live()) == len(old)  # no sessions left over from before the swap
    finally:
        report = multi.join()
    assert all(rt.floor.swapper.swaps == {"ok": 1, "refused": 0} for rt in multi.runtimes.values())
    assert report.stations["line1"].decisions > 0 and report.stations["line2"].decisions > 0
    swaps = [r.getMessage() for r in caplog.records if "now running" in r.getMessage()]
    assert sorted(m.split(":")[0] for m in swaps) == ["engine swap [line1]", "engine swap [line2]"]  # which station, in the log


def test_a_folder_with_a_corrupt_reliability_block_is_refused_before_its_engines_open(engines, session, tmp_path, caplog):
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config

    folder = shutil.copytree(engines, tmp_path / "eng")
    rt = Runtime(session_config(session, engines=folder, json_stdout=False, rate=10), outputs=[])
    opened = []
    rt.floor.swapper.open_engine = lambda manifest, m: opened.append(m)  # must not be reached
    m = json.loads((folder / "manifest.json").read_text())
    m["fusion"]["reliability"] = {"signal": "mahalanobis", "modalities": {}}
    (folder / "manifest.json").write_text(json.dumps(m))
    assert rt.floor.swapper.swap_now() is False
    assert opened == [] and rt.floor.swapper.swaps == {"ok": 0, "refused": 1}
    refusals = [r.getMessage() for r in caplog.records if "engine swap refused" in r.getMessage()]
    assert len(refusals) == 1 and "manifest.json: corrupt reliability constants" in refusals[0]


@pytest.mark.parametrize("fact", ["IMAGE_SIZE", "WINDOW"])
def test_a_folder_whose_engines_take_other_inputs_is_refused(engines, session, tmp_path, caplog, monkeypatch, fact):
    """The camera's preprocessing and the microphone's ring buffer are built for the
    running engines: a folder taking 32x32 images or a 4000-sample window passed the
    warm-up (shaped by the new manifest) and then every inference failed."""
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.testing import tiny_engines

    folder = shutil.copytree(engines, tmp_path / "eng")
    monkeypatch.setattr(tiny_engines, fact, 32 if fact == "IMAGE_SIZE" else 4000)
    other = tiny_engines.build_tiny_engines(tmp_path / "other", seed=5)
    out = Collect()
    rt = Runtime(session_config(session, engines=folder, loop=True, json_stdout=False, rate=10), outputs=[out])
    old = rt.engine_checksum
    rt.start()
    try:
        wait_for(lambda: len(out) >= 5, 15)
        for name in ("image.fp32.onnx", "audio.fp32.onnx", "manifest.json"):  # the manifest last, as a deploy would
            shutil.copy(other / name, folder / name)
        _reload_refused(rt, out, refused=1, then=5)
    finally:
        report = rt.join()
    assert {r["engines"] for r in out.records} == {old} and all(r["decision"] for r in out.records[-5:])
    assert report.workers["image"]["errors"] == report.workers["audio"]["errors"] == 0
    refusal = next(r.getMessage() for r in caplog.records if "engine swap refused" in r.getMessage())
    want = "image engine takes image size 32, the running one 28" if fact == "IMAGE_SIZE" else "audio engine takes window 4000, the running one 8000"
    assert want in refusal and "restart the runtime" in refusal
