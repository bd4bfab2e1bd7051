"""Several stations in one process on replay files: every station decides, an outage at
one station does not disturb another, engines are shared and batched, and the run
report records the decision latency of the event-driven fusion."""

from __future__ import annotations

import pytest

from test_runtime_support import engines, read_jsonl, run_cli  # noqa: F401


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, demo_cache):
    from edge_mla.runtime.replay import Fault, Script, record_session

    clean = Script(segments=3, segment_seconds=2.0, fps=15, frame_size=(160, 120), faults=[])
    broken = Script(segments=3, segment_seconds=2.0, fps=15, frame_size=(160, 120), faults=[Fault("camera_gone", 1.0, 6.0), Fault("mic_gone", 1.0, 6.0)])
    return record_session(clean, tmp_path_factory.mktemp("st-clean")), record_session(broken, tmp_path_factory.mktemp("st-broken"))


def test_two_stations_share_batched_engines_and_stay_independent(engines, sessions):  # noqa: F811
    from edge_mla.runtime.batching import BatchedEngine
    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.stations import Station

    clean, broken = sessions

    class Collect:
        def __init__(self):
            self.records = []

        def write(self, r):
            self.records.append(r)

        def close(self):
            pass

    out = Collect()
    st = [Station("line1", session_config(clean, engines=engines, rate=5.0)), Station("line2", session_config(broken, engines=engines, rate=5.0))]
    multi = MultiRuntime(st, outputs=[out])
    assert all(isinstance(e, BatchedEngine) for e in multi.shared.values()) and len(multi.shared) == 2
    report = multi.run(duration=5.0)
    by = {name: [r for r in out.records if r["station"] == name] for name in ("line1", "line2")}
    line1 = by["line1"]
    assert len(line1) >= 10 and all(r["decision"] for r in line1[3:])  # the clean station decides throughout
    assert not any(r["decision"] for r in by["line2"] if 2.5 <= r["t"] <= 4.5)  # line2 has no sensor then
    assert report.stations["line1"].decisions > report.stations["line2"].decisions > 0
    lat = report.stations["line1"].latency
    assert lat["image"]["n"] > 5 and lat["image"]["e2e_p50_ms"] > 0  # the report records capture->decision latency
    stats = report.engines
    assert sum(s["items"] for s in stats.values()) > 0 and all(s["mean_batch"] >= 1 for s in stats.values())


def test_config_file_run_writes_one_stream_with_station_names(engines, sessions, tmp_path):  # noqa: F811
    clean, broken = sessions
    cfg = tmp_path / "stations.toml"
    cfg.write_text(
        f'[runtime]\nengines = "{engines}"\nrate = 5\n\n'
        f'[[station]]\nname = "a"\ncamera = "{clean.video}"\nmic = "{clean.audio}"\n\n'
        f'[[station]]\nname = "b"\ncamera = "{broken.video}"\n'
    )
    out = tmp_path / "d.jsonl"
    p = run_cli(["run", "--config", str(cfg), "--duration", "3", "--out", str(out)], timeout=90)
    assert p.returncode == 0, p.stderr
    recs = read_jsonl(out)
    names = {r["station"] for r in recs}
    assert names == {"a", "b"}
    assert all(set(r["modalities"]) == {"image"} for r in recs if r["station"] == "b")  # b has no mic
    assert "batched engine" in p.stderr and "[a]" in p.stderr and "[b]" in p.stderr


def test_config_errors_stop_before_any_sensor_opens(engines, tmp_path):  # noqa: F811
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[runtime]\nengines = "{engines}"\n[[station]]\nname = "a"\ncamera = "x.avi"\n[[station]]\nname = "a"\nmic = "y.wav"\n')
    p = run_cli(["run", "--config", str(cfg)])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "duplicate station name 'a'" in p.stderr.strip().splitlines()[-1]
    p = run_cli(["run", "--config", str(cfg), "--camera", "1"])
    assert p.returncode == 2 and "--camera cannot be combined with --config" in p.stderr
    p = run_cli(["run"])
    assert p.returncode == 2 and "--engines DIR is required" in p.stderr


def test_systemd_hears_from_a_multi_station_process_once(engines, sessions, tmp_path, monkeypatch):  # noqa: F811
    """Each station sent its own READY (at the first station's start), keep-alives and
    STOPPING, so one live station fed the watchdog while another's loop was stuck."""
    import threading
    import time

    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.stations import Station

    from test_runtime_support import drain as drain_socket, notify_socket

    sock = notify_socket(tmp_path, monkeypatch)

    def drain() -> list:
        return drain_socket(sock)

    clean, _ = sessions
    st = [Station(n, session_config(clean, engines=engines, rate=10.0, loop=True, json_stdout=False)) for n in ("line1", "line2")]
    multi = MultiRuntime(st, outputs=[])
    multi.start()
    hang = threading.Event()
    try:
        time.sleep(1.5)
        got = drain()
        assert sum(m.startswith("READY=1") for m in got) == 1 and sum(m == "WATCHDOG=1" for m in got) >= 3
        multi.runtimes["line2"].fusion._latest = lambda: (hang.wait(30), {})[1]  # one station's loop sticks
        time.sleep(max(10.0 / 10.0, 2.0) + 1.5)
        drain()
        time.sleep(1.0)
        assert [m for m in drain() if m == "WATCHDOG=1"] == []  # line1 alone no longer feeds the watchdog
    finally:
        hang.set()
        multi.join()
    assert [m for m in drain() if m.startswith("STOPPING")] == ["STOPPING=1"]
    sock.close()
