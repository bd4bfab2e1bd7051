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
from functools import partial
from pathlib import Path
from typing import Optional

from edge_mla.errors import EdgeMlaError
from edge_mla.manifest import load_manifest
from edge_mla.runtime import sd_notify
from edge_mla.runtime.app import Runtime, RunReport, SharedParts
from edge_mla.runtime.backends import parse_providers
from edge_mla.runtime.batching import BatchedEngine
from edge_mla.runtime.clock import now
from edge_mla.runtime.engine import Engine
from edge_mla.runtime.graph import configured_modalities
from edge_mla.runtime.hot_swap import warm_up
from edge_mla.runtime.memory import limit_arenas

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
        _one_clips_folder_per_station(stations)
        limit_arenas()  # before the shared engines' and the stations' threads allocate
        self._key_of = key_of = lambda st, m: _engine_key(st.cfg, m, "" if share_engines else st.name)  # noqa: E731
        clients: dict = {}
        waits: dict = {}
        for st in stations:
            for m in configured_modalities(st.cfg):
                k = key_of(st, m)
                clients[k] = clients.get(k, 0) + 1
                first = waits.setdefault(k, (st.name, st.cfg.batch_wait))
                if first[1] != st.cfg.batch_wait:  # the shared engine took the first station's wait for everyone
                    raise EdgeMlaError(f"station {st.name}: batch_wait {st.cfg.batch_wait:g} differs from station {first[0]}'s {first[1]:g}, "
                                       f"and they share the {m} engine (one batch, one wait); set batch_wait once in [runtime]")
        self._clients = clients
        self.pool = _EnginePool()
        self.shared: dict = {}  # key -> Engine or BatchedEngine, as started (swaps go through the pool)
        manifests: dict = {}  # one load (and hash check) per engine folder
        try:
            for st in stations:
                folder = str(Path(st.cfg.engines).resolve())
                man = manifests.get(folder) or manifests.setdefault(folder, load_manifest(st.cfg.engines))
                for m in configured_modalities(st.cfg):
                    key = key_of(st, m)
                    if key not in self.shared and m in man.modalities:  # a missing modality is reported by the station's Runtime
                        self.shared[key] = self.pool.get(_engine_ident(key, man, st.cfg, m), st.name, lambda: self._build(st, man, m, warm=False))
                    elif key in self.shared:
                        self.pool.use(self.shared[key], st.name)
            self.metrics, self._metrics_server = self._metrics_endpoint(stations)
            lock = threading.Lock()
            self._outputs = list(outputs or [])
            self._shared_out = shared_out = [_SharedOutput(o, lock) for o in self._outputs]
            self.runtimes = {}
            for st in stations:
                engines = {m: self.shared[key_of(st, m)] for m in configured_modalities(st.cfg) if key_of(st, m) in self.shared}
                st.cfg.station = st.name
                parts = SharedParts(engines, manifests[str(Path(st.cfg.engines).resolve())], self.metrics,
                                    open_engine=partial(self._open_for_swap, st), on_swapped=self.pool.swapped, service=False)
                self.runtimes[st.name] = Runtime(st.cfg, outputs=shared_out, shared=parts)
        except EdgeMlaError as exc:
            self._close_engines()
            name = next((s.name for s in stations if s.name not in getattr(self, "runtimes", {})), None)
            raise EdgeMlaError(f"station {name}: {exc}" if name and len(stations) > 1 else str(exc)) from None
        self._t0: Optional[float] = None
        self._stop = threading.Event()
        log.info("%d stations, %d engines (%s batched)", len(stations), len(self.shared), sum(isinstance(e, BatchedEngine) for e in self.shared.values()))

    def _build(self, st, manifest, modality: str, warm: bool = True):
        """One engine for ``st``'s key, batched when several stations feed that key."""
        cfg = st.cfg
        eng = Engine(manifest.engine(modality, cfg.precision), len(manifest.classes), cfg.intra_op_threads, cfg.backend, parse_providers(cfg.providers))
        if warm:
            warm_up(eng, len(manifest.classes))
        n = self._clients[self._key_of(st, modality)]
        return BatchedEngine(eng, n, cfg.batch_wait, name=modality) if n > 1 else eng

    def _open_for_swap(self, st, manifest, modality: str):
        """A hot swap at station ``st``: the stations that shared an engine before share
        the new one (loaded and warmed once, by the first station to swap)."""
        key = self._key_of(st, modality)
        return self.pool.get(_engine_ident(key, manifest, st.cfg, modality), st.name, lambda: self._build(st, manifest, modality))

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
            # systemd hears from the process once: READY when every station runs, and
            # keep-alives only while every station's fusion loop is alive (each station
            # spoke for itself: READY at the first, and one live station masked a stuck one)
            period = sd_notify.watchdog_period()
            if period is not None:
                self._keepalive = sd_notify.Keepalive(lambda: all(rt.floor.fusion_alive() for rt in self.runtimes.values()), self._stop, period)
                self._keepalive.start()
            sd_notify.notify("READY=1\nSTATUS=deciding")
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
        sd_notify.notify("STOPPING=1")
        reports = {name: rt.join(timeout) for name, rt in self.runtimes.items()}
        engines = {f"{Path(k[0]).name}/{k[1]}/{k[2] or 'default'}": e.stats() for k, e in self.pool.live_by_key().items() if isinstance(e, BatchedEngine)}
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
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close_all()


def _engine_ident(key: tuple, manifest, cfg, modality: str) -> tuple:
    """What makes two engines the same: the sharing key and the exact file (path and
    the manifest's sha256 of it); a swap to a folder whose file did not change keeps
    the engine that runs."""
    spec = manifest.engine(modality, cfg.precision)
    entry = spec.entry
    sha = (entry.get("variants", {}).get(spec.precision) or {}).get("sha256") or entry.get("sha256")
    return key, str(spec.path), sha


class _EnginePool:
    """The engines the stations of one process share, each with the stations using it.
    A swap asks the pool (``get``): the first station builds the new engine, the
    others get the same object; once no station calls an old engine (``swapped``) it
    is closed, so swaps do not pile up sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_ident: dict = {}  # ident -> engine
        self._users: dict = {}  # id(engine) -> set of station names
        self._key: dict = {}  # id(engine) -> the sharing key (first element of its ident)

    def get(self, ident: tuple, station: str, build):
        with self._lock:  # builds under the lock: two stations swapping at once load it once
            e = self._by_ident.get(ident)
            if e is None:
                e = self._by_ident[ident] = build()
                self._key[id(e)] = ident[0]
            self._users.setdefault(id(e), set()).add(station)
            return e

    def use(self, engine, station: str) -> None:
        with self._lock:
            self._users.setdefault(id(engine), set()).add(station)

    def swapped(self, station: str, old: dict, new: dict) -> None:
        """``station`` switched from ``old`` to ``new`` engines (modality -> engine)."""
        done = []
        with self._lock:
            for m, e in old.items():
                if new.get(m) is e:
                    continue
                users = self._users.get(id(e))
                if users is None:
                    continue
                users.discard(station)
                if not users:
                    del self._users[id(e)]
                    key = self._key.pop(id(e), None)
                    self._by_ident = {i: x for i, x in self._by_ident.items() if x is not e}
                    done.append((e, key[1] if key else m))
        for e, modality in done:
            if isinstance(e, BatchedEngine):
                e.close()
            log.info("engine swap: no station uses the old %s engine any more; released", modality)

    def live(self) -> list:
        with self._lock:
            return list(self._by_ident.values())

    def live_by_key(self) -> dict:
        """key -> live engine (the newest for a key that was swapped)."""
        with self._lock:
            return {self._key[id(e)]: e for e in self._by_ident.values() if id(e) in self._key}

    def close_all(self) -> None:
        for e in self.live():
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


def _one_clips_folder_per_station(stations: list) -> None:
    """Stations given one clips folder (``clips`` in [runtime]) each write to
    FOLDER/STATION: in one folder their clips had the same temporary names and one
    index, and destroyed each other's (and reason.json did not say which station)."""
    by: dict = {}
    for st in stations:
        if st.cfg.clips is not None:
            by.setdefault(str(Path(st.cfg.clips).resolve()), []).append(st)
    for group in by.values():
        if len(group) > 1:
            for st in group:
                st.cfg.clips = Path(st.cfg.clips) / st.name
            log.info("clips: %d stations share %s; each writes to its own subfolder", len(group), group[0].cfg.clips.parent)


def format_multi_summary(report: MultiReport, format_one) -> str:
    """The exit summary: each station's (``format_one`` is outputs.format_summary), then batching."""
    parts = [f"[{name}] " + format_one(r) for name, r in report.stations.items()]
    for key, st in report.engines.items():
        parts.append(f"batched engine {key}: {st['batches']} batches, {st['items']} inputs, mean batch {st['mean_batch']:.2f}")
    return "\n".join(parts)


__all__ = ["MultiRuntime", "MultiReport", "RunReport", "format_multi_summary"]
