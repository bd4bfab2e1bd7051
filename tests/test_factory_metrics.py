"""/metrics and /healthz over real HTTP against a running runtime, parsed with
prometheus-client's own exposition parser."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from test_runtime_cli import _one_error_line, session  # noqa: F401
from test_runtime_support import Collect, engines, run_cli, wait_for  # noqa: F401


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _families(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict, name: str, **labels) -> float:
    for f in fams.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_and_health_of_a_running_runtime(engines, session):
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.testing.mjpeg import free_port

    port = free_port()
    out = Collect()
    cfg = session_config(session, engines=engines, loop=True, json_stdout=False, rate=10, metrics=f"127.0.0.1:{port}", health_window=2.0)
    rt = Runtime(cfg, outputs=[out])
    rt.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: sum(r["decision"] for r in out.since(0)) >= 10, 15)
        code, body = _get(base + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        code, text = _get(base + "/metrics")
        assert code == 200
        fams = _families(text)
        n_dec = sum(r["decision"] for r in out.since(0))
        got = _value(fams, "edge_mla_decisions_total", station="default")
        assert 10 <= got <= n_dec + 5  # read at scrape time, a few ticks after our count
        assert _value(fams, "edge_mla_sensor_state", sensor="mic", state="ok") == 1.0
        assert _value(fams, "edge_mla_sensor_state", sensor="mic", state="lost") == 0.0
        assert _value(fams, "edge_mla_engine_runs_total", modality="image") > 0
        assert _value(fams, "edge_mla_engine_seconds_count", modality="audio") > 0
        assert _value(fams, "edge_mla_capture_to_decision_seconds_count", modality="image") > 0
        assert _value(fams, "edge_mla_engine_folder_info", checksum=rt.engine_checksum) == 1.0
        w = _value(fams, "edge_mla_fusion_weight", modality="image") + _value(fams, "edge_mla_fusion_weight", modality="audio")
        assert w == pytest.approx(1.0, abs=0.01) or w == pytest.approx(0.0)
        assert _value(fams, "process_resident_memory_bytes") > 10e6 and "process_cpu_seconds" in fams
        for name in ("edge_mla_no_decisions", "edge_mla_degraded_seconds", "edge_mla_sensor_reconnects", "edge_mla_engine_errors", "edge_mla_inputs_dropped", "edge_mla_engine_swaps"):
            assert name in fams, name
        assert _get(base + "/nope")[0] == 404
        # the runtime stops deciding (fusion halted): health turns 503 with a reason
        rt.stop()
        rt.fusion.join()
        wait_for(lambda: _get(base + "/healthz")[0] == 503, 6)
        code, body = _get(base + "/healthz")
        assert json.loads(body)["status"] == "unhealthy" and "no decision for" in json.loads(body)["reason"]
    finally:
        rt.join()
    with pytest.raises(OSError):  # the port is closed with the runtime
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_metrics_port_in_use_and_bad_address(engines, session, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        base = ["run", "--engines", str(engines), "--replay", str(session.root), "--out", str(tmp_path / "o.jsonl")]
        _one_error_line(run_cli(base + ["--metrics", f"127.0.0.1:{port}"]), f"--metrics 127.0.0.1:{port}: cannot listen")
    _one_error_line(run_cli(base + ["--metrics", "9100"]), "--metrics 9100: expected HOST:PORT")


def test_two_stations_share_one_metrics_endpoint(engines, session, tmp_path):
    """A --config run with two stations serves one /metrics with every series per
    station, and /healthz names the station that stopped deciding (the other is
    still deciding: the reason is about it alone)."""
    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.stations import Station
    from edge_mla.runtime.testing.mjpeg import free_port

    port = free_port()
    addr = f"127.0.0.1:{port}"
    out = Collect()
    st = [Station(n, session_config(session, engines=engines, loop=True, json_stdout=False, rate=10, metrics=addr, health_window=2.0)) for n in ("line1", "line2")]
    multi = MultiRuntime(st, outputs=[out])
    base = f"http://{addr}"
    multi.start()
    try:
        both = lambda: {r["station"] for r in out.since(0) if r["decision"]} == {"line1", "line2"}  # noqa: E731
        wait_for(both, 15)
        wait_for(lambda: _get(base + "/healthz")[0] == 200, 5)
        body = json.loads(_get(base + "/healthz")[1])
        assert body["status"] == "ok" and [s["station"] for s in body["stations"]] == ["line1", "line2"]
        fams = _families(_get(base + "/metrics")[1])
        for name in ("line1", "line2"):
            assert _value(fams, "edge_mla_decisions_total", station=name) > 0
            assert _value(fams, "edge_mla_engine_runs_total", station=name, modality="image") > 0
            assert _value(fams, "edge_mla_sensor_state", station=name, sensor="camera", state="ok") == 1.0
        # line2's fusion halts: health turns 503 naming line2 only
        multi.runtimes["line2"].stop()
        multi.runtimes["line2"].fusion.join()
        wait_for(lambda: _get(base + "/healthz")[0] == 503, 6)
        reason = json.loads(_get(base + "/healthz")[1])["reason"]
        assert "station line2: no decision for" in reason and "line1" not in reason
    finally:
        multi.join()
    with pytest.raises(OSError):  # the endpoint closes with the last station
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_stations_with_different_metrics_addresses_are_refused(engines, session):
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.stations import Station

    st = [Station(n, session_config(session, engines=engines, metrics=a)) for n, a in (("a", "127.0.0.1:9101"), ("b", "127.0.0.1:9102"))]
    with pytest.raises(EdgeMlaError, match="one endpoint per process"):
        MultiRuntime(st)


def test_metrics_on_an_ipv6_address():
    """[::1]:PORT was refused with 'Address family not supported': the server was
    IPv4 only."""
    import urllib.request

    from edge_mla.runtime.metrics import MetricsServer, RuntimeMetrics
    from edge_mla.runtime.testing.mjpeg import free_port

    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    srv = MetricsServer(f"[::1]:{port}", RuntimeMetrics(5.0))
    srv.start()
    try:
        body = urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5).read().decode()
    finally:
        srv.close()
    assert "edge_mla_" in body


def test_an_idle_metrics_connection_is_closed(monkeypatch):
    """A client that sends half a request and waits held a thread and a file
    descriptor for good; enough of them starved the process of descriptors."""
    from edge_mla.runtime import metrics as m
    from edge_mla.runtime.testing.mjpeg import free_port

    monkeypatch.setattr(m, "METRICS_CLIENT_TIMEOUT_S", 0.5)
    port = free_port()
    srv = m.MetricsServer(f"127.0.0.1:{port}", m.RuntimeMetrics(5.0))
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET /metr")  # and nothing more
            c.settimeout(5)
            t0 = time.monotonic()
            assert c.recv(100) == b""  # the server hung up
            assert time.monotonic() - t0 < 3
    finally:
        srv.close()
