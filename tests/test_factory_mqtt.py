"""MQTT output against a real Mosquitto broker (started by the test on a free
loopback port; the system service is not used): every decision arrives, in order,
exactly once after dropping duplicates by "seq", across a broker stop and restart
in the middle of a run; the spool is bounded and keeps seq across restarts; bad
MQTT options give one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from test_runtime_cli import _one_error_line, session  # noqa: F401
from test_runtime_support import Collect, engines, run_cli, wait_for  # noqa: F401

pytestmark = pytest.mark.sensors


@pytest.fixture
def broker():
    from edge_mla.runtime.testing.mosquitto import MosquittoBroker

    b = MosquittoBroker().start()
    yield b
    b.close()


def test_spool_is_bounded_ordered_and_keeps_seq_across_restarts(tmp_path):
    from edge_mla.runtime.spool import Spool

    s = Spool(tmp_path / "s.db", max_messages=5)
    assert s.push([(i, f"m{i}") for i in range(1, 9)]) == 3  # 8 into 5: the 3 oldest dropped
    rows = s.pending(0, 100)
    assert [r[1] for r in rows] == [4, 5, 6, 7, 8] and s.depth == 5 and s.dropped == 3
    s.ack([rows[0][0], rows[1][0]])
    assert [r[1] for r in s.pending(0, 100)] == [6, 7, 8] and s.depth == 3
    s.close()
    s2 = Spool(tmp_path / "s.db", max_messages=5)  # a restarted runtime
    assert (s2.last_seq, s2.dropped, s2.depth) == (8, 3, 3)
    assert [r[2] for r in s2.pending(0, 2)] == ["m6", "m7"]
    s2.close()


def test_spool_has_one_holder_and_refuses_corrupt_contents(tmp_path):
    """Two runs with one station name shared the default spool (each published the
    other's decisions, seq repeated); a spool whose counters are not counts made every
    decision raise in the output, lost with a traceback each."""
    import os
    import sqlite3

    from edge_mla.runtime.spool import Spool

    path = tmp_path / "s.db"
    s = Spool(path, max_messages=5)
    code = f"from edge_mla.runtime.spool import Spool; Spool({str(path)!r}, 5)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert other.returncode != 0 and f"in use by another edge-mla run (pid {os.getpid()})" in other.stderr
    s.push([(1, "m1")])
    s.close()
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0  # released on close
    for sql, needle in (("UPDATE meta SET last_seq = 'abc'", "meta.last_seq is 'abc'"), ("UPDATE meta SET last_seq = 1, dropped = -4", "meta.dropped is -4"),
                        ("UPDATE meta SET dropped = 0; INSERT INTO queue (seq, payload) VALUES ('x', 'p')", "1 queued messages are not")):
        db = sqlite3.connect(str(path))
        db.executescript(sql)
        db.close()
        with pytest.raises(ValueError, match=needle):
            Spool(path, max_messages=5)
    Spool(tmp_path / "fresh.db", max_messages=5).close()  # the lock of a refused spool is released too


@pytest.mark.parametrize("url,needle", [("http://h:1/t", "must start with mqtt://"), ("mqtt://:1883/t", "no broker host"), ("mqtt://h:1883/", "give a topic"), ("mqtt://h:99999/t", "malformed URL"), ("mqtt://h/a/#", "without wildcards"),
                                         ("mqtt://h:0/t", "port 0"), ("mqtt://u:pw@h/t", "credentials in the URL"), ("mqtt://a..b/t", "not a valid host name"),
                                         ("mqtt://" + "x" * 64 + ".example/t", "not a valid host name"), ("mqtt://h/" + "a" * 70000, "MQTT allows"),
                                         ("mqtt://h/a\udcffb", "not UTF-8 text"), ("mqtt://h/a\x00b", "NUL character")])
def test_malformed_mqtt_url(url, needle):
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.mqtt_output import parse_mqtt_url

    with pytest.raises(EdgeMlaError, match=needle):
        parse_mqtt_url(url)


def test_bad_mqtt_options_exit_2_at_start(engines, session, tmp_path):
    from edge_mla.runtime.testing.mjpeg import free_port

    base = ["run", "--engines", str(engines), "--replay", str(session.root), "--out", str(tmp_path / "o.jsonl"), "--mqtt-spool", str(tmp_path / "spool.db")]
    _one_error_line(run_cli(base + ["--mqtt", "mqtt//nohost"]), "--mqtt mqtt//nohost")
    # strings paho would have failed on in its own thread (MQTT silently dead for the run)
    _one_error_line(run_cli(base + ["--mqtt", "mqtt://127.0.0.1:1883/t", "--mqtt-client-id", "c" * 70000]), "--mqtt-client-id: the client id is 70000 bytes")
    _one_error_line(run_cli(base + ["--mqtt", "mqtt://127.0.0.1:1883/t", "--mqtt-username", "u" * 70000]), "--mqtt-username: the user name is 70000 bytes")
    assert not (tmp_path / "spool.db").exists()  # refused before the spool is made
    _one_error_line(run_cli(base + ["--mqtt", "mqtt://127.0.0.1:1883/t", "--mqtt-password-file", str(tmp_path / "none.txt")]), "--mqtt-password-file")
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    _one_error_line(run_cli(base + ["--mqtt", "mqtts://127.0.0.1:8883/t", "--mqtt-ca", str(bad_ca)]), "--mqtt-ca")
    # nothing listens there: with --mqtt-required the start fails, without it the run goes on
    url = f"mqtt://127.0.0.1:{free_port()}/plant/t"
    _one_error_line(run_cli(base + ["--mqtt", url, "--mqtt-required"], timeout=60), "cannot reach the broker")
    p = run_cli(base + ["--mqtt", url, "--duration", "2"], timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("cannot reach the broker") == 1  # warned once
    assert "left in the spool" in p.stderr
    assert "mqtt: 0 acknowledged" in p.stderr


def test_a_port_that_is_no_broker_is_reported(engines, session, tmp_path):
    """A listener that accepts TCP and never sends a CONNACK (a stalled broker, another
    service): no warning came, decisions piled up in the spool in silence."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []
    threading.Thread(target=lambda: [held.append(srv.accept()) for _ in range(4)], daemon=True).start()
    url = f"mqtt://127.0.0.1:{srv.getsockname()[1]}/plant/t"
    p = run_cli(["run", "--engines", str(engines), "--replay", str(session.root), "--out", str(tmp_path / "o.jsonl"),
                 "--mqtt-spool", str(tmp_path / "spool.db"), "--mqtt", url, "--duration", "7"], timeout=90)
    srv.close()
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("no MQTT answer within 5s") == 1 and "spooled" in p.stderr, p.stderr


def test_every_seq_arrives_once_across_a_broker_restart(engines, session, broker, tmp_path):
    """The broker is stopped for 3 s and restarted in the middle of a run; the
    runtime spools meanwhile and sends the backlog in order on reconnect."""
    from edge_mla.runtime import Runtime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.testing.mosquitto import Subscriber

    topic = "plant/line1/decisions"
    sub = Subscriber(broker.port, topic)
    assert sub.connected.wait(10)
    out = Collect()
    cfg = session_config(session, engines=engines, loop=True, json_stdout=False, rate=20, mqtt=f"{broker.url_base}/{topic}", mqtt_spool=tmp_path / "spool.db")
    rt = Runtime(cfg, outputs=[out])
    rt.start()
    try:
        wait_for(lambda: len(sub.payloads(topic)) >= 20, 15)
        broker.stop()
        n_stop = len(out)
        time.sleep(3.0)
        assert len(out) - n_stop >= 30  # the runtime kept deciding while the broker was away
        assert rt.floor.mqtt.spool_depth > 0
        broker.start()
        wait_for(lambda: rt.floor.mqtt.connected and rt.floor.mqtt.spool_depth < 5, 20)
        time.sleep(1.0)
    finally:
        report = rt.join()
    wait_for(lambda: len({json.loads(p)["seq"] for p in sub.payloads(topic)}) >= report.lines, 10)
    sub.close()
    msgs = [json.loads(p) for p in sub.payloads(topic)]
    seqs = [m["seq"] for m in msgs]
    unique = sorted(set(seqs))
    assert unique == list(range(1, report.lines + 1))  # every decision, exactly once after dedup
    assert len(out.records) == report.lines
    # the payload is the decision record: same labels and times as the local output
    by_seq = {m["seq"]: m for m in msgs}
    assert all(by_seq[i + 1]["t"] == r["t"] and by_seq[i + 1]["label"] == r["label"] for i, r in enumerate(out.records))
    assert all(m["station"] == "default" and m["engines"] == rt.engine_checksum for m in msgs)
    # in order: apart from resent duplicates, each seq first arrives after all smaller ones
    firsts, seen = [], set()
    for q in seqs:
        if q not in seen:
            seen.add(q)
            firsts.append(q)
    assert firsts == unique
    status = sub.payloads(f"{topic}/status")
    assert status[-1] == b"offline" and b"online" in status


def test_last_will_marks_a_killed_runtime_offline(engines, session, broker, tmp_path):
    import signal
    import subprocess
    import sys

    from edge_mla.runtime.testing.mosquitto import Subscriber
    from test_runtime_support import ROOT

    topic = "plant/line2"
    sub = Subscriber(broker.port, topic, client_id="will-watcher")
    assert sub.connected.wait(10)
    cmd = [sys.executable, "-m", "edge_mla.cli.main", "run", "--engines", str(engines), "--replay", str(session.root), "--loop", "--out", str(tmp_path / "o.jsonl"), "--mqtt", f"{broker.url_base}/{topic}", "--mqtt-spool", str(tmp_path / "spool.db")]
    p = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sub.payloads(f"{topic}/status")[-1:] == [b"online"] and len(sub.payloads(topic)) > 5, 30)
        p.send_signal(signal.SIGKILL)  # no clean shutdown: the broker publishes the will
        p.wait(10)
        wait_for(lambda: sub.payloads(f"{topic}/status")[-1:] == [b"offline"], 40)  # keepalive 15 s x 1.5
    finally:
        if p.poll() is None:
            p.kill()
        sub.close()


def test_mqtts_with_user_and_password(engines, session, tmp_path):
    """TLS with the plant's CA (--mqtt-ca) and an account (--mqtt-username,
    --mqtt-password-file); a wrong password with --mqtt-required is exit 2."""
    from edge_mla.runtime.testing.mosquitto import MosquittoBroker, Subscriber

    with MosquittoBroker(users={"line1": "s3cret", "reader": "r"}, tls=True) as b:
        sub = Subscriber(b.port, "plant/tls", client_id="tls-reader", username="reader", password="r", ca_file=b.ca_file)
        assert sub.connected.wait(10)
        pw = tmp_path / "pw"
        pw.write_text("s3cret\n")
        url = f"mqtts://127.0.0.1:{b.port}/plant/tls"
        base = ["run", "--engines", str(engines), "--replay", str(session.root), "--out", str(tmp_path / "o.jsonl"), "--mqtt", url, "--mqtt-ca", str(b.ca_file), "--mqtt-username", "line1", "--mqtt-spool", str(tmp_path / "s.db")]
        p = run_cli(base + ["--mqtt-password-file", str(pw), "--mqtt-required", "--duration", "3"], timeout=60)
        assert p.returncode == 0, p.stderr
        wait_for(lambda: len(sub.payloads("plant/tls")) >= 10, 10)
        sub.close()
        assert ", 0 left in the spool" in p.stderr  # all acknowledged before exit
        wrong = tmp_path / "wrong"
        wrong.write_text("nope\n")
        _one_error_line(run_cli(base + ["--force", "--mqtt-password-file", str(wrong), "--mqtt-required"], timeout=60), "cannot reach the broker")


def test_two_stations_on_one_topic_keep_their_own_status_and_client(engines, session, broker, tmp_path):
    """Two stations of one process publish to one topic with one --mqtt-client-id: each
    connects under its own id (a broker drops the older of two equal ids), each
    decision says its station and seq, and each station has its own retained status."""
    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.stations import Station
    from edge_mla.runtime.testing.mosquitto import Subscriber

    topic = "plant/hall1"
    sub = Subscriber(broker.port, topic, client_id="hall-watcher")
    assert sub.connected.wait(10)
    st = [Station(n, session_config(session, engines=engines, loop=True, json_stdout=False, rate=10, mqtt=f"{broker.url_base}/{topic}",
                                    mqtt_client_id="hall1", mqtt_spool=tmp_path / f"spool-{n}.db")) for n in ("line1", "line2")]
    multi = MultiRuntime(st, outputs=[Collect()])
    assert {rt.floor.mqtt.client_id for rt in multi.runtimes.values()} == {"hall1-line1", "hall1-line2"}
    multi.start()
    try:
        per = lambda name: [json.loads(p) for p in sub.payloads(topic) if json.loads(p)["station"] == name]  # noqa: E731
        wait_for(lambda: len(per("line1")) >= 10 and len(per("line2")) >= 10, 20)
        for name in ("line1", "line2"):
            assert sub.payloads(f"{topic}/status/{name}")[-1:] == [b"online"]
            seqs = [m["seq"] for m in per(name)]
            assert seqs[:5] == list(range(seqs[0], seqs[0] + 5))  # each station counts its own seq
        time.sleep(1.0)
        assert all(rt.floor.mqtt.connected for rt in multi.runtimes.values())  # neither kicked the other off
    finally:
        multi.join()
    wait_for(lambda: all(sub.payloads(f"{topic}/status/{n}")[-1:] == [b"offline"] for n in ("line1", "line2")), 10)
    assert sub.payloads(f"{topic}/status") == []  # no station named "default" here
    sub.close()


def test_two_stations_on_one_spool_file_are_refused(engines, session, tmp_path):
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.replay.recorder import session_config
    from edge_mla.runtime.stations import Station

    st = [Station(n, session_config(session, engines=engines, mqtt="mqtt://127.0.0.1:1/t", mqtt_spool=tmp_path / "one.db")) for n in ("a", "b")]
    with pytest.raises(EdgeMlaError, match="station b: mqtt_spool .* is station a's spool too"):
        MultiRuntime(st)
    assert not (tmp_path / "one.db").exists()  # refused before anything opened
