"""Several stations in one process, sharing engines.

Each station is a ``Runtime`` of its own (sensors, workers, fusion, watchdogs), so an
outage at one station cannot disturb another's state. What they share:

- engines: stations whose engine folder, modality, precision and backend are the same
  use one engine, wrapped in a ``BatchedEngine`` when more than one station feeds it,
  so N stations cost one engine call per tick and one copy of the weights;
- outputs: one JSON-lines stream (each record carries ``"station"``), written under
  one lock, closed once at the end.

Library API::

    from edge_mla.runtime.multi import MultiRuntime
    from edge_mla.runtime.stations import read_stations
    report = MultiRuntime(read_stations("stations.toml"), outputs=[...]).run(duration=60)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edge_mla.errors import EdgeMlaError
from edge_mla.manifest import load_manifest
from edge_mla.runtime.app import Runtime, RunReport
from edge_mla.runtime.backends import parse_providers
from edge_mla.runtime.batching import BatchedEngine
from edge_mla.runtime.clock import now
from edge_mla.runtime.engine import Engine
from edge_mla.runtime.graph import configured_modalities

log = logging.getLogger(__name__)

class _SharedOutput:
    """One real output written by several stations, under one lock. Records are held
    in memory until every station has started (``release``), so a station that fails
    to start never leaves a truncated results file; ``close`` is left to the
    MultiRuntime (a station that stops must not close the shared stream)."""

    def __init__(self, out, lock: threading.Lock) -> None:
        self.out, self._lock = out, lock
        self._held: Optional[list] = []

    def write(self, record: dict) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(record)
            else:
                self.out.write(record)

    def release(self) -> None:
        """Every station started: open the real output and write what was held."""
        with self._lock:
            held, self._held = self._held or [], None
            if hasattr(self.out, "open"):
                self.out.open()
            for rec in held:
                self.out.write(rec)

    def close(self) -> None:
        pass


@dataclass
class MultiReport:
    seconds: float
    stations: dict  # name -> RunReport
    engines: dict = field(default_factory=dict)  # "folder/modality/precision" -> batching stats

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "stations": {k: v.to_dict() for k, v in self.stations.items()}, "engines": self.engines}


def _engine_key(cfg, modality: str, station: str = "") -> tuple:
    return (str(Path(cfg.engines).resolve()), modality, cfg.precision, cfg.backend, cfg.providers, cfg.intra_op_threads, station)


class MultiRuntime:
    """Build from [Station, ...]; ``start()``, ``wait()``, ``join()`` like Runtime."""

    def __init__(self, stations: list, outputs: Optional[list] = None, share_engines: bool = True) -> None:
        """``share_engines=False`` gives every station engines of its own, one call per
        station per input (the baseline the batching is measured against)."""
        if not stations:
            raise EdgeMlaError("no stations to run")
        _one_spool_per_station(stations)
        key_of = lambda st, m: _engine_key(st.cfg, m, "" if share_engines else st.name)  # noqa: E731
        clients: dict = {}
        for st in stations:
            for m in configured_modalities(st.cfg):
                clients[key_of(st, m)] = clients.get(key_of(st, m), 0) + 1
        self.shared: dict = {}  # key -> Engine or BatchedEngine
        manifests: dict = {}  # one load (and hash check) per engine folder
        try:
            for st in stations:
                folder = str(Path(st.cfg.engines).resolve())
                man = manifests.get(folder) or manifests.setdefault(folder, load_manifest(st.cfg.engines))
                for m in configured_modalities(st.cfg):
                    key = key_of(st, m)
                    if key in self.shared or m not in man.modalities:
                        continue  # a missing modality is reported by the station's Runtime
                    eng = Engine(man.engine(m, st.cfg.precision), len(man.classes), st.cfg.intra_op_threads, st.cfg.backend, parse_providers(st.cfg.providers))
                    self.shared[key] = BatchedEngine(eng, clients[key], st.cfg.batch_wait, name=m) if clients[key] > 1 else eng
            self.metrics, self._metrics_server = self._metrics_endpoint(stations)
            lock = threading.Lock()
            self._outputs = list(outputs or [])
            self._shared_out = shared_out = [_SharedOutput(o, lock) for o in self._outputs]
            self.runtimes = {}
            for st in stations:
                engines = {m: self.shared[key_of(st, m)] for m in configured_modalities(st.cfg) if key_of(st, m) in self.shared}
                st.cfg.station = st.name
                self.runtimes[st.name] = Runtime(st.cfg, outputs=shared_out, engines=engines, manifest=manifests[str(Path(st.cfg.engines).resolve())], metrics=self.metrics)
        except EdgeMlaError as exc:
            self._close_engines()
            name = next((s.name for s in stations if s.name not in getattr(self, "runtimes", {})), None)
            raise EdgeMlaError(f"station {name}: {exc}" if name and len(stations) > 1 else str(exc)) from None
        self._t0: Optional[float] = None
        self._stop = threading.Event()
        log.info("%d stations, %d engines (%s batched)", len(stations), len(self.shared), sum(isinstance(e, BatchedEngine) for e in self.shared.values()))

    @staticmethod
    def _metrics_endpoint(stations: list) -> tuple:
        """(RuntimeMetrics, MetricsServer) shared by every station when ``metrics``
        is set (one endpoint per process: the same address for all), else (None, None)."""
        addresses = {st.cfg.metrics for st in stations}
        if addresses == {None} or addresses == {""}:
            return None, None
        if len(addresses) > 1:
            raise EdgeMlaError(f"metrics is one endpoint per process: every station must use the same address (got {', '.join(sorted(str(a) for a in addresses))})")
        from edge_mla.runtime.metrics import MetricsServer, RuntimeMetrics

        cfg = stations[0].cfg
        hub = RuntimeMetrics(cfg.health_window)
        return hub, MetricsServer(cfg.metrics, hub)  # parses HOST:PORT now

    def start(self) -> None:
        self._t0 = now()
        started = []
        try:
            if self._metrics_server is not None:
                self._metrics_server.start()  # before any sensor opens: a port in use stops the start
            for rt in self.runtimes.values():
                rt.start()
                started.append(rt)
            for o in self._shared_out:
                o.release()
        except BaseException:
            for rt in started:
                rt.stop()
                rt.join()
            self._close_engines()
            self._close_metrics()
            raise

    def reload(self) -> None:
        """SIGHUP: every station swaps to its engine folder's current contents."""
        for rt in self.runtimes.values():
            rt.reload()

    def stop(self) -> None:
        """Ask every station to finish (safe from a signal handler)."""
        self._stop.set()
        for rt in self.runtimes.values():
            rt.stop()

    def wait(self, duration: Optional[float] = None) -> None:
        """Until stopped, ``duration`` passed, or every station's sources ended."""
        deadline = None if duration is None else (self._t0 or now()) + duration
        while not self._stop.is_set():
            if deadline is not None and now() >= deadline:
                break
            if all(rt.stopping or rt.sources_ended() for rt in self.runtimes.values()):
                break
            self._stop.wait(0.1 if deadline is None else max(min(0.1, deadline - now()), 0.001))
        self.stop()

    def join(self, timeout: float = 5.0) -> MultiReport:
        self.stop()
        reports = {name: rt.join(timeout) for name, rt in self.runtimes.items()}
        engines = {f"{Path(k[0]).name}/{k[1]}/{k[2] or 'default'}": e.stats() for k, e in self.shared.items() if isinstance(e, BatchedEngine)}
        self._close_engines()
        self._close_metrics()
        for o in self._outputs:
            o.close()
        return MultiReport(now() - (self._t0 or now()), reports, engines)

    def run(self, duration: Optional[float] = None) -> MultiReport:
        self.start()
        try:
            self.wait(duration)
        finally:
            report = self.join()
        return report

    def _close_metrics(self) -> None:
        server = getattr(self, "_metrics_server", None)
        if server is not None:
            server.close()

    def _close_engines(self) -> None:
        for e in getattr(self, "shared", {}).values():
            if isinstance(e, BatchedEngine):
                e.close()


def _one_spool_per_station(stations: list) -> None:
    """An MQTT spool holds one station's queue and seq: two stations on one file would
    send each other's backlog. (Without --mqtt-spool each station gets its own file.)"""
    owner: dict = {}
    for st in stations:
        if st.cfg.mqtt and st.cfg.mqtt_spool is not None:
            path = str(Path(st.cfg.mqtt_spool).resolve())
            if path in owner:
                raise EdgeMlaError(f"station {st.name}: mqtt_spool {st.cfg.mqtt_spool} is station {owner[path]}'s spool too; give each station its own file (or leave it unset)")
            owner[path] = st.name


def format_multi_summary(report: MultiReport, format_one) -> str:
    """The exit summary: each station's (``format_one`` is outputs.format_summary), then batching."""
    parts = [f"[{name}] " + format_one(r) for name, r in report.stations.items()]
    for key, st in report.engines.items():
        parts.append(f"batched engine {key}: {st['batches']} batches, {st['items']} inputs, mean batch {st['mean_batch']:.2f}")
    return "\n".join(parts)


__all__ = ["MultiRuntime", "MultiReport", "RunReport", "format_multi_summary"]
