"""The service side: sd_notify over a real NOTIFY_SOCKET (READY, keep-alives only
while the fusion loop is alive), the systemd unit checked by systemd-analyze, and
`edge-mla doctor`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from test_runtime_cli import session  # noqa: F401
from test_runtime_support import ROOT, drain, engines, notify_socket, run_cli, wait_for  # noqa: F401


def test_keepalives_only_while_the_fusion_loop_decides(engines, session, tmp_path, monkeypatch):
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config

    sock = notify_socket(tmp_path, monkeypatch)  # keep-alive every 0.1 s
    cfg = session_config(session, engines=engines, loop=True, json_stdout=False, rate=10)
    rt = Runtime(cfg, outputs=[])
    rt.start()
    got: list = []
    try:
        wait_for(lambda: got.extend(drain(sock)) or sum(m == "WATCHDOG=1" for m in got) >= 5, 10)
        assert any(m.startswith("READY=1") for m in got)
        # the fusion loop hangs (a stuck engine, a deadlock): keep-alives must stop
        hang = __import__("threading").Event()
        rt.fusion._latest = lambda: (hang.wait(30), {})[1]
        time.sleep(max(10.0 / cfg.rate, 2.0) + 1.5)  # past the liveness limit (and a keep-alive already under way)
        drain(sock)
        time.sleep(1.0)
        assert [m for m in drain(sock) if m == "WATCHDOG=1"] == []
        assert rt.floor.keepalive.withheld > 0
        hang.set()
    finally:
        rt.join()
    assert "STOPPING=1" in drain(sock)
    sock.close()


def test_keepalives_stop_when_the_engines_hang_and_the_fusion_loop_does_not(engines, session, tmp_path, monkeypatch):
    """Every engine call blocks: the fusion loop still emits "no fresh modality"
    records, which fed the watchdog while no decision could ever come again."""
    import threading

    from edge_mla.runtime import Runtime, factory
    from edge_mla.runtime.replay.recorder import session_config

    monkeypatch.setattr(factory, "ENGINE_HANG_S", 1.0)
    sock = notify_socket(tmp_path, monkeypatch)
    rt = Runtime(session_config(session, engines=engines, loop=True, json_stdout=False, rate=10), outputs=[])
    rt.start()
    hang = threading.Event()
    got: list = []
    try:
        wait_for(lambda: got.extend(drain(sock)) or sum(m == "WATCHDOG=1" for m in got) >= 3, 10)
        for eng in rt.engines.values():
            eng.infer = lambda x, _h=hang: (_h.wait(60), None)[1]
        time.sleep(2.5)  # past ENGINE_HANG_S
        n = rt._lines
        drain(sock)
        time.sleep(1.0)
        assert rt._lines > n  # the fusion loop is alive, emitting no-decisions
        assert [m for m in drain(sock) if m == "WATCHDOG=1"] == []
    finally:
        hang.set()
        rt.join()
    sock.close()


@pytest.mark.parametrize("usec,period", [("0", None), ("-5", None), ("abc", None), ("20000000000000000", 3600.0), ("200000", 0.1), ("1", 0.05)])
def test_watchdog_period_from_odd_values(monkeypatch, usec, period):
    """0 or negative became a 50 ms keep-alive storm; a huge value killed the
    keep-alive thread (a wait past threading.TIMEOUT_MAX)."""
    from edge_mla.runtime.sd_notify import watchdog_period

    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_period() == period


def test_cli_notifies_ready_under_systemd(engines, session, tmp_path):
    path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        p = subprocess.Popen([os.sys.executable, "-m", "edge_mla.cli.main", "run", "--engines", str(engines), "--replay", str(session.root), "--duration", "3", "--out", str(tmp_path / "o.jsonl")], cwd=str(ROOT), env={**os.environ, "NOTIFY_SOCKET": path}, stderr=subprocess.PIPE, text=True)
        msgs = [sock.recv(4096).decode()]
        p.communicate(timeout=30)
        sock.settimeout(2)
        try:
            while True:
                msgs.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
    finally:
        sock.close()
    assert p.returncode == 0
    assert msgs[0].startswith("READY=1") and "STOPPING=1" in msgs


def test_systemd_unit_verifies():
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (make installs systemd)")
    unit = (ROOT / "deploy" / "edge-mla@.service").read_text()
    assert "Restart=always" in unit and "WatchdogSec=" in unit and "Type=notify" in unit
    # verify an instance whose ExecStart points at this checkout's console script
    # (the unit names /opt/edge-mla, which does not exist on a build machine)
    real = ROOT / ".venv" / "bin" / "edge-mla"
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        inst = os.path.join(d, "edge-mla@line1.service")
        with open(inst, "w") as f:
            f.write(unit.replace("/opt/edge-mla/.venv/bin/edge-mla", str(real)))
        p = subprocess.run([exe, "verify", inst], capture_output=True, text=True, timeout=60)
    problems = [l for l in (p.stdout + p.stderr).splitlines() if "edge-mla@" in l]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


def test_doctor_reports_one_status_per_line(engines, tmp_path):
    p = run_cli(["doctor", "--engines", str(engines), "--clips", str(tmp_path)])
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 7, p.stdout + p.stderr
    assert all(l.split()[0] in ("OK", "WARN", "FAIL") for l in lines)
    keys = [l[6:].split(":")[0] for l in lines]
    assert keys == ["cameras", "microphones", "onnxruntime", "tensorrt", "cpu", "disk for clips", "engines"]
    eng = lines[-1]
    assert eng.startswith(("OK", "WARN")) and "image fp32 (onnx) -> ONNX Runtime CPU" in eng
    assert ("vnni" in lines[4]) == ("vnni" in open("/proc/cpuinfo").read())
    assert p.returncode == (1 if any(l.startswith("FAIL") for l in lines) else 0)
    bad = run_cli(["doctor", "--engines", str(tmp_path / "missing")])
    assert bad.returncode == 1 and bad.stdout.strip().splitlines()[-1].startswith("FAIL  engines")
    # a clips folder under a file can never be made; a newline in a path cannot forge a line
    (tmp_path / "afile").write_text("x")
    odd = run_cli(["doctor", "--clips", str(tmp_path / "afile" / "sub"), "--engines", str(tmp_path / "nl\nOK    engines: forged")])
    lines = odd.stdout.strip().splitlines()
    assert len(lines) == 7 and lines[5].startswith("FAIL  disk for clips") and "is a file, not a folder" in lines[5]
    assert lines[6].startswith("FAIL  engines")
    empty = run_cli(["doctor", "--engines", ""])
    assert empty.returncode == 2 and "--engines: an empty path" in empty.stderr
