"""Prometheus metrics and a health check for the running runtime.

``--metrics HOST:PORT`` serves ``/metrics`` (Prometheus text format, from
prometheus-client) and ``/healthz`` (200 while every station decided within
``--health-window`` seconds, 503 with a JSON reason otherwise).

Why a collector that reads the runtime at scrape time: counters the runtime keeps
anyway (decisions, engine runs, drops, reconnects, spool depth) are read when
Prometheus asks, so the decision path pays nothing for them; only the two latency
histograms and the fusion weights are fed per decision, from the fusion thread.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.clock import now

log = logging.getLogger(__name__)

# every state a sensor can report (sources/base.py, camera.py); a state not listed
# here (a newer one) still gets its own series
SENSOR_STATES = ("off", "starting", "ok", "lost", "frozen", "blank", "degraded", "ended", "stopped")
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
ENGINE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def parse_host_port(value: str, option: str = "--metrics") -> tuple:
    """``HOST:PORT`` -> (host, port); one clear line otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgeMlaError(f"{option} {value}: expected HOST:PORT (e.g. 0.0.0.0:9100)")
    return host, int(port)


class RuntimeMetrics:
    """Registry + per-decision hook + health; ``snapshot()`` is the runtime's
    ``metrics_snapshot`` (counters read at scrape time)."""

    def __init__(self, snapshot: Callable[[], dict], station: str, health_window: float) -> None:
        from prometheus_client import CollectorRegistry, Histogram, ProcessCollector

        self.snapshot = snapshot
        self.station = station
        self.health_window = health_window
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.e2e = Histogram("edge_mla_capture_to_decision_seconds", "sensor capture to the decision that used it", ["station", "modality"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.engine = Histogram("edge_mla_engine_seconds", "one engine run", ["station", "modality"], buckets=ENGINE_BUCKETS, registry=self.registry)
        self.registry.register(_Collector(self))
        self.weights: dict = {}
        self.last_decision: Optional[float] = None
        self.degraded_seconds = 0.0
        self._last_tick: Optional[float] = None
        self._seen: dict = {}
        self._lock = threading.Lock()

    def on_decision(self, rec: dict, timing: dict) -> None:
        """Fusion-thread hook: latency of newly used results, weights, degraded time."""
        t = timing["t_fused"]
        with self._lock:
            degraded = any(s.get("state") != "ok" for s in rec.get("sensors", {}).values())
            if self._last_tick is not None and degraded:
                self.degraded_seconds += t - self._last_tick
            self._last_tick = t
            if rec.get("decision"):
                self.last_decision = t
            for m, d in rec.get("modalities", {}).items():
                self.weights[m] = d.get("weight", 0.0)
        for m in rec.get("used", []):
            r = timing["results"].get(m)
            if r is None or self._seen.get(m) == r.seq:
                continue
            self._seen[m] = r.seq
            self.e2e.labels(self.station, m).observe(max(t - r.t_capture, 0.0))
            self.engine.labels(self.station, m).observe(max(r.t_done - r.t_engine, 0.0))

    def health(self) -> tuple:
        """(healthy, JSON-able body)."""
        t = now()
        with self._lock:
            last = self.last_decision
        age = None if last is None else t - last
        ok = age is not None and age <= self.health_window
        station = {"station": self.station, "last_decision_age_s": None if age is None else round(age, 3)}
        if ok:
            return True, {"status": "ok", "stations": [station]}
        reason = f"station {self.station}: no decision yet" if age is None else f"station {self.station}: no decision for {age:.1f}s (window {self.health_window:g}s)"
        return False, {"status": "unhealthy", "reason": reason, "stations": [station]}

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Collector:
    """Counters and gauges read from the runtime at scrape time."""

    def __init__(self, m: RuntimeMetrics) -> None:
        self.m = m

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.m.snapshot()
        st = self.m.station

        def fam(kind, name, doc, labels, rows):
            f = (CounterMetricFamily if kind == "c" else GaugeMetricFamily)(name, doc, labels=labels)
            for values, v in rows:
                f.add_metric(values, v)
            return f

        yield fam("c", "edge_mla_decisions", "fused decisions with a label", ["station"], [([st], s["decisions"])])
        yield fam("c", "edge_mla_no_decisions", "ticks with no fresh modality", ["station"], [([st], s["no_decisions"])])
        yield fam("c", "edge_mla_degraded_seconds", "time with at least one sensor not ok", ["station"], [([st], self.m.degraded_seconds)])
        sensors = s["sensors"]
        rows = []
        for name, snap in sensors.items():
            states = SENSOR_STATES if snap["state"] in SENSOR_STATES else SENSOR_STATES + (snap["state"],)
            rows += [([st, name, state], 1.0 if snap["state"] == state else 0.0) for state in states]
        yield fam("g", "edge_mla_sensor_state", "1 for the sensor's current state", ["station", "sensor", "state"], rows)
        yield fam("c", "edge_mla_sensor_reconnects", "sensor reconnections", ["station", "sensor"], [([st, n], v["reconnects"]) for n, v in sensors.items()])
        yield fam("c", "edge_mla_sensor_failures", "sensor read/open failures", ["station", "sensor"], [([st, n], v["failures"]) for n, v in sensors.items()])
        w = s["workers"]
        yield fam("c", "edge_mla_engine_runs", "engine runs", ["station", "modality"], [([st, m], v["runs"]) for m, v in w.items()])
        yield fam("c", "edge_mla_engine_errors", "failed engine runs", ["station", "modality"], [([st, m], v["errors"]) for m, v in w.items()])
        yield fam("c", "edge_mla_inputs_dropped", "inputs replaced before an engine took them", ["station", "modality"], [([st, m], v["dropped"]) for m, v in w.items()])
        yield fam("g", "edge_mla_fusion_weight", "fusion weight of each modality in the last decision", ["station", "modality"], [([st, m], v) for m, v in self.m.weights.items()])
        age = None if self.m.last_decision is None else now() - self.m.last_decision
        yield fam("g", "edge_mla_last_decision_age_seconds", "seconds since the last decision (-1: none yet)", ["station"], [([st], -1.0 if age is None else age)])
        e = s["engines"]
        yield fam("g", "edge_mla_engine_folder_info", "the engine folder in use (its manifest checksum)", ["station", "folder", "checksum"], [([st, e["folder"], e["checksum"]], 1.0)])
        yield fam("c", "edge_mla_engine_swaps", "engine folder swaps by result", ["station", "result"], [([st, k], v) for k, v in e["swaps"].items()])
        q = s.get("mqtt")
        if q is not None:
            yield fam("g", "edge_mla_mqtt_spool_depth", "decisions waiting in the MQTT spool", ["station"], [([st], q["spool_depth"])])
            yield fam("c", "edge_mla_mqtt_spool_dropped", "oldest decisions dropped from a full spool", ["station"], [([st], q["spool_dropped"])])
            yield fam("c", "edge_mla_mqtt_published", "decisions acknowledged by the broker", ["station"], [([st], q["published"])])
            yield fam("g", "edge_mla_mqtt_connected", "1 while connected to the broker", ["station"], [([st], 1.0 if q["connected"] else 0.0)])
        c = s.get("clips")
        if c is not None:
            yield fam("c", "edge_mla_clips_written", "event clips written", ["station"], [([st], c["written"])])
            yield fam("c", "edge_mla_clips_dropped", "clip events dropped (queue full or write failed)", ["station"], [([st], c["dropped"])])
            yield fam("c", "edge_mla_clips_deleted", "clips deleted by the disk budget", ["station"], [([st], c["deleted"])])


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one port, in a daemon thread."""

    def __init__(self, address: str, metrics: RuntimeMetrics) -> None:
        self.host, self.port = parse_host_port(address)
        self.metrics = metrics
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    from prometheus_client import CONTENT_TYPE_LATEST

                    self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, body = metrics.health()
                    self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every few seconds: not worth a log line
                pass

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise EdgeMlaError(f"--metrics {self.host}:{self.port}: cannot listen ({exc.strerror or exc})") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics: http://%s:%d/metrics and /healthz", self.host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
