"""Prometheus metrics and a health check for the running runtime.

``--metrics HOST:PORT`` serves ``/metrics`` (Prometheus text format, from
prometheus-client) and ``/healthz`` (200 while every station decided within
``--health-window`` seconds, 503 with a JSON reason otherwise). One endpoint per
process: the stations of a ``--config`` file share it, each series labelled with
its ``station``.

Why a collector that reads the runtime at scrape time: counters the runtime keeps
anyway (decisions, engine runs, drops, reconnects, spool depth) are read when
Prometheus asks, so the decision path pays nothing for them; only the two latency
histograms and the fusion weights are fed per decision, from the fusion thread.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.clock import now

log = logging.getLogger(__name__)

METRICS_CLIENT_TIMEOUT_S = 10.0  # a scrape answers in milliseconds; an idle connection is closed after this

# every state a sensor can report (sources/base.py, camera.py); a state not listed
# here (a newer one) still gets its own series
SENSOR_STATES = ("off", "starting", "ok", "lost", "frozen", "blank", "degraded", "ended", "stopped")
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
ENGINE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def parse_host_port(value: str, option: str = "--metrics") -> tuple:
    """``HOST:PORT`` -> (host, port); one clear line otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise EdgeMlaError(f"{option} {value}: expected HOST:PORT (e.g. 0.0.0.0:9100)")
    return host, int(port)


class RuntimeMetrics:
    """One registry for the process (one ``/metrics`` endpoint, however many stations
    run in it): the process collector, the two latency histograms and a collector
    that reads every station's counters at scrape time. Each station feeds it through
    its own ``StationMetrics`` (``add_station``); every series carries ``station``."""

    def __init__(self, health_window: float) -> None:
        from prometheus_client import CollectorRegistry, Histogram, ProcessCollector

        self.health_window = health_window
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.e2e = Histogram("edge_mla_capture_to_decision_seconds", "sensor capture to the decision that used it", ["station", "modality"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.engine = Histogram("edge_mla_engine_seconds", "one engine run", ["station", "modality"], buckets=ENGINE_BUCKETS, registry=self.registry)
        self.stations: dict = {}  # name -> StationMetrics, in the order they were added
        self._lock = threading.Lock()
        self.registry.register(_Collector(self))

    def add_station(self, name: str, snapshot: Callable[[], dict]) -> "StationMetrics":
        """The feed of one station; ``snapshot`` is its Runtime's ``metrics_snapshot``."""
        with self._lock:
            if name in self.stations:
                raise EdgeMlaError(f"metrics: station {name!r} registered twice")
            st = self.stations[name] = StationMetrics(self, name, snapshot)
        return st

    def health(self) -> tuple:
        """(healthy, JSON-able body): healthy while every station decided within the
        health window; the reason names each station that did not."""
        t = now()
        with self._lock:
            stations = list(self.stations.values())
        rows, bad = [], []
        for st in stations:
            age = st.decision_age(t)
            rows.append({"station": st.name, "last_decision_age_s": None if age is None else round(age, 3)})
            if age is None:
                bad.append(f"station {st.name}: no decision yet")
            elif age > self.health_window:
                bad.append(f"station {st.name}: no decision for {age:.1f}s (window {self.health_window:g}s)")
        if stations and not bad:
            return True, {"status": "ok", "stations": rows}
        return False, {"status": "unhealthy", "reason": "; ".join(bad) or "no station", "stations": rows}

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class StationMetrics:
    """One station's part: the per-decision hook (latencies, weights, degraded time)
    and its last decision, read by the collector and the health check."""

    def __init__(self, hub: RuntimeMetrics, name: str, snapshot: Callable[[], dict]) -> None:
        self.hub, self.name, self.snapshot = hub, name, snapshot
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
            self.hub.e2e.labels(self.name, m).observe(max(t - r.t_capture, 0.0))
            self.hub.engine.labels(self.name, m).observe(max(r.t_done - r.t_engine, 0.0))

    def decision_age(self, t: float) -> Optional[float]:
        with self._lock:
            return None if self.last_decision is None else t - self.last_decision


class _Collector:
    """Counters and gauges read from every station's runtime at scrape time."""

    def __init__(self, m: RuntimeMetrics) -> None:
        self.m = m

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        fams: dict = {}

        def add(kind, name, doc, labels, rows):
            f = fams.get(name)
            if f is None:
                f = fams[name] = (CounterMetricFamily if kind == "c" else GaugeMetricFamily)(name, doc, labels=labels)
            for values, v in rows:
                f.add_metric(values, v)

        t = now()
        for station in list(self.m.stations.values()):
            self._station(station, station.snapshot(), t, add)
        yield from fams.values()

    @staticmethod
    def _station(m: "StationMetrics", s: dict, t: float, fam) -> None:
        st = m.name
        fam("c", "edge_mla_decisions", "fused decisions with a label", ["station"], [([st], s["decisions"])])
        fam("c", "edge_mla_no_decisions", "ticks with no fresh modality", ["station"], [([st], s["no_decisions"])])
        fam("c", "edge_mla_degraded_seconds", "time with at least one sensor not ok", ["station"], [([st], m.degraded_seconds)])
        sensors = s["sensors"]
        rows = []
        for name, snap in sensors.items():
            states = SENSOR_STATES if snap["state"] in SENSOR_STATES else SENSOR_STATES + (snap["state"],)
            rows += [([st, name, state], 1.0 if snap["state"] == state else 0.0) for state in states]
        fam("g", "edge_mla_sensor_state", "1 for the sensor's current state", ["station", "sensor", "state"], rows)
        fam("c", "edge_mla_sensor_reconnects", "sensor reconnections", ["station", "sensor"], [([st, n], v["reconnects"]) for n, v in sensors.items()])
        fam("c", "edge_mla_sensor_failures", "sensor read/open failures", ["station", "sensor"], [([st, n], v["failures"]) for n, v in sensors.items()])
        w = s["workers"]
        fam("c", "edge_mla_engine_runs", "engine runs", ["station", "modality"], [([st, k], v["runs"]) for k, v in w.items()])
        fam("c", "edge_mla_engine_errors", "failed engine runs", ["station", "modality"], [([st, k], v["errors"]) for k, v in w.items()])
        fam("c", "edge_mla_inputs_dropped", "inputs replaced before an engine took them", ["station", "modality"], [([st, k], v["dropped"]) for k, v in w.items()])
        fam("g", "edge_mla_fusion_weight", "fusion weight of each modality in the last decision", ["station", "modality"], [([st, k], v) for k, v in dict(m.weights).items()])
        age = m.decision_age(t)
        fam("g", "edge_mla_last_decision_age_seconds", "seconds since the last decision (-1: none yet)", ["station"], [([st], -1.0 if age is None else age)])
        e = s["engines"]
        fam("g", "edge_mla_engine_folder_info", "the engine folder in use (its manifest checksum)", ["station", "folder", "checksum"], [([st, e["folder"], e["checksum"]], 1.0)])
        fam("c", "edge_mla_engine_swaps", "engine folder swaps by result", ["station", "result"], [([st, k], v) for k, v in e["swaps"].items()])
        q = s.get("mqtt")
        if q is not None:
            fam("g", "edge_mla_mqtt_spool_depth", "decisions waiting in the MQTT spool", ["station"], [([st], q["spool_depth"])])
            fam("c", "edge_mla_mqtt_spool_dropped", "oldest decisions dropped from a full spool", ["station"], [([st], q["spool_dropped"])])
            fam("c", "edge_mla_mqtt_published", "decisions acknowledged by the broker", ["station"], [([st], q["published"])])
            fam("g", "edge_mla_mqtt_connected", "1 while connected to the broker", ["station"], [([st], 1.0 if q["connected"] else 0.0)])
        c = s.get("clips")
        if c is not None:
            fam("c", "edge_mla_clips_written", "event clips written", ["station"], [([st], c["written"])])
            fam("c", "edge_mla_clips_dropped", "clip events dropped (queue full or write failed)", ["station"], [([st], c["dropped"])])
            fam("c", "edge_mla_clips_deleted", "clips deleted by the disk budget", ["station"], [([st], c["deleted"])])


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
            # a client that sends half a request and waits held a thread and a file
            # descriptor for good; enough of them starved the process of descriptors
            timeout = METRICS_CLIENT_TIMEOUT_S

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

        server_class = ThreadingHTTPServer
        if ":" in self.host:  # an IPv6 address ([::1]:9100, [::]:9100): the default family is IPv4 only
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self._server = server_class((self.host, self.port), Handler)
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
