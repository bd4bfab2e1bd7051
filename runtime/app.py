"""The Runtime: sources -> workers -> fusion loop -> outputs, with watchdogs.

Which sensors exist is not written here: the sensor table (runtime/graph.py) says
per kind its source, preprocessing, gate and worker pace, and the Runtime builds one
source, worker and watchdog per row whose option the config sets (``rt.nodes``,
``rt.sources``, ``rt.source_of(modality)``).

Library API (the CLI, the profiler and the demo all use it)::

    from edge_mla.runtime import RunConfig, Runtime, run_for
    report = run_for(RunConfig(engines="ENG", camera="clip.avi", mic="clip.wav"), duration=10)
    report.latency      # per modality: capture->output p50/p99, engine, overhead
    report.stages       # per result: capture, preprocess, engine, done, fused, output timestamps
    report.workers      # engine runs, inputs dropped, passed over by --rate, errors per modality
    report.sensors      # state, reconnects, failures, overflows per sensor
    report.cpu_percent, report.peak_rss_mb, report.rss_mb  # resources (rss_mb over time)

or, for a long run stopped from outside (signal handler, UI)::

    rt = Runtime(cfg); rt.start(); ...; rt.stop(); report = rt.join()

Everything that can be wrong with the user's input (engine folder, manifest, a
camera that cannot open, an unknown mic) raises EdgeMlaError from the constructor
or ``start()``, before any thread runs, so the CLI prints one line and exits 2.

The factory-floor services (MQTT, metrics, clips, hot engine swap, systemd; see
runtime/factory.py) hang off three hooks here: extra outputs, a per-decision
callback, and start/close around the runtime's own threads. Every record carries
``"engines"``, the running engine folder's checksum.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from edge_mla.errors import EdgeMlaError
from edge_mla.manifest import load_manifest
from edge_mla.runtime import graph
from edge_mla.runtime.clock import now
from edge_mla.runtime.config import RunConfig, validate
from edge_mla.runtime.backends import parse_providers
from edge_mla.runtime.engine import Engine
from edge_mla.runtime.factory import FactoryFloor
from edge_mla.runtime.fusion_loop import FusionLoop
from edge_mla.runtime.graph import SensorNode, Source
from edge_mla.runtime.hot_swap import folder_checksum, warm_up
from edge_mla.runtime.memory import limit_arenas
from edge_mla.runtime.outputs import ConsoleOutput, JsonLinesOutput, OutputFailed
from edge_mla.runtime.sources.base import ENDED
from edge_mla.runtime.stats import ResourceSampler, StageRecorder
from edge_mla.runtime.watchdog import Watchdog
from edge_mla.runtime.workers import Worker

log = logging.getLogger(__name__)

END_DRAIN_S = 3.0  # after every source ended, the most time the paced workers get to run on the last data


@dataclass
class RunReport:
    seconds: float
    decisions: int
    no_decisions: int
    lines: int
    workers: dict
    sensors: dict
    latency: dict
    cpu_percent: float
    peak_rss_mb: float
    rss_mb: list = field(default_factory=list)  # (seconds since start, MB)
    stages: list = field(default_factory=list)  # StageRecorder.as_dicts()
    fusion_overruns: int = 0
    degraded: dict = field(default_factory=dict)  # sensor -> {"state", "spans" (s from start), "seconds"}
    reliability: Optional[str] = None  # the reliability signal fusion used; None: the recorded rule alone
    output_error: Optional[str] = None  # an output failed (disk full, closed pipe): the run stopped
    factory: dict = field(default_factory=dict)  # mqtt / clips counters, engine swaps (issue 10)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class SharedParts:
    """What the stations of one process share (built by MultiRuntime); a field left
    None is made by the station itself."""

    engines: Optional[dict] = None  # modality -> engine (an Engine or a BatchedEngine)
    manifest: object = None  # the engine folder's Manifest, already loaded and hash-checked
    metrics: object = None  # the process's RuntimeMetrics (its endpoint served by the caller)
    open_engine: Optional[Callable] = None  # (manifest, modality) -> warmed engine, for hot swaps
    on_swapped: Optional[Callable] = None  # (station, old engines, new engines) once a swap took effect
    service: bool = True  # this station tells systemd READY / WATCHDOG / STOPPING (a MultiRuntime does it once for all)


class Runtime:
    """Build with a RunConfig; ``start()``, then ``stop()`` + ``join()`` (or ``run()``)."""

    def __init__(self, cfg: RunConfig, outputs: Optional[list] = None, shared: Optional["SharedParts"] = None) -> None:
        """``shared`` carries what several stations of one process share (MultiRuntime);
        by default each Runtime loads its own. ``cfg.station`` names this station in
        every record."""
        validate(cfg)
        limit_arenas()  # before any of this runtime's threads allocate (runtime/memory.py)
        self.cfg = cfg
        shared = shared or SharedParts()
        self._shared = shared
        engines, manifest, metrics = shared.engines, shared.manifest, shared.metrics
        self.manifest = manifest if manifest is not None else load_manifest(cfg.engines)
        self.classes = self.manifest.classes
        self._stop = threading.Event()
        rows = graph.configured(cfg)  # (kind, device) of every sensor this station names
        for kind, _ in rows:
            if kind.modality not in self.manifest.modalities:
                raise EdgeMlaError(f"{cfg.engines}: the engine folder has no {kind.modality} engine (have: {', '.join(self.manifest.modalities)}); run with {kind.flag}")
        self.reliability = self._check_reliability(cfg)
        if engines is None:
            providers = parse_providers(cfg.providers)
            engines = {k.modality: Engine(self.manifest.engine(k.modality, cfg.precision), len(self.classes), cfg.intra_op_threads, cfg.backend, providers) for k, _ in rows}
            for eng in engines.values():
                warm_up(eng, len(self.classes))  # as a hot swap does: a folder that cannot run a blank input stops here, not on every frame
        self.engines = {k.modality: engines[k.modality] for k, _ in rows}
        self.workers: dict = {}
        self.nodes: dict = {}  # modality -> SensorNode (kind, source, preprocessing), in table order
        for kind, dev in rows:
            spec = self.engines[kind.modality].spec
            src = kind.source(cfg, dev, spec)
            self.nodes[kind.modality] = SensorNode(kind, src, kind.preprocess(src, spec, cfg))
        if outputs is None:
            outputs = []
            if cfg.out is not None or cfg.json_stdout:
                outputs.append(JsonLinesOutput(cfg.out, mode=cfg.out_mode))
            if cfg.console:
                outputs.append(ConsoleOutput())
        self.engine_checksum = folder_checksum(self.manifest.root)
        self.last_emit: Optional[float] = None
        self._pending_swap: Optional[tuple] = None
        self.floor = FactoryFloor(self, metrics)  # MQTT, metrics, clips, hot swap, systemd (issue 10)
        self.outputs = list(outputs) + self.floor.outputs
        self.stages = StageRecorder()
        self.resources = ResourceSampler(self._stop)
        self._threads: list = []
        self._t_start: Optional[float] = None
        self._lines = 0
        self.output_error: Optional[str] = None
        self._emit_lock = threading.Lock()

    def check_swap(self, manifest):
        """What a hot swap to ``manifest`` must keep (the sensors' preprocessing and the
        microphone's ring buffer were built for the running engines: a new image size,
        sample rate or window would fail every inference), then its reliability
        constants (``_check_reliability``); raises EdgeMlaError to refuse the folder."""
        for m, eng in self.engines.items():
            old, new = eng.spec, manifest.engine(m, self.cfg.precision)
            for fact in ("image_size", "sample_rate", "window"):
                if getattr(old, fact) != getattr(new, fact):
                    raise EdgeMlaError(f"{manifest.root}: the new {m} engine takes {fact.replace('_', ' ')} {getattr(new, fact)}, the running one {getattr(old, fact)}; "
                                       "the sensors are set up for the running one, so restart the runtime for it")
        return self._check_reliability(self.cfg, manifest)

    def _check_reliability(self, cfg: RunConfig, manifest=None):
        """The manifest's reliability block; an older engine folder without one runs
        on the recorded rule with a one-line warning, or is refused with
        --require-reliability. A corrupt block raises (one line naming the file)."""
        manifest = manifest or self.manifest
        rel = manifest.reliability()
        if rel is None or any(manifest.doc.engines[m].reliability_output is None for m in manifest.modalities):
            where = manifest.root / "manifest.json"
            if cfg.require_reliability:
                raise EdgeMlaError(f"{where}: no reliability output in this engine folder (exported before it existed, or with --reliability off); re-export it, or run without --require-reliability")
            log.warning("%s: no reliability output; fusing by the recorded rule %r alone (degraded sensors are not detected; re-export to add it)", where, manifest.fusion_rule)
            return None
        lacking = [m for m in manifest.modalities if m not in rel.modalities]
        if lacking:  # its r would be weighed against constants that are not there
            raise EdgeMlaError(f"{manifest.root / 'manifest.json'}: corrupt reliability constants (fusion.reliability.modalities has no {', '.join(lacking)}, whose engine has a reliability output)")
        return rel

    # -- wiring ----------------------------------------------------------------------
    @property
    def sources(self) -> dict:
        """Sensor name -> its Source, in table order."""
        return {n.kind.name: n.source for n in self.nodes.values()}

    def source_of(self, modality: str) -> Optional[Source]:
        """The source feeding ``modality``, or None when this station has none."""
        node = self.nodes.get(modality)
        return node.source if node is not None else None

    def sensors(self) -> dict:
        return {name: src.status.snapshot() for name, src in self.sources.items()}

    def _latest(self) -> dict:
        if self._pending_swap is not None:  # on the fusion thread: between two decisions
            self._switch_engines()
        return {m: w.latest() for m, w in self.workers.items()}

    def open_engine(self, manifest, modality: str):
        """A checked, warmed-up engine for ``modality`` of ``manifest`` with this
        station's precision, threads and backend: what a hot swap loads (a MultiRuntime
        hands its stations one that shares engines between them)."""
        if self._shared.open_engine is not None:
            return self._shared.open_engine(manifest, modality)
        cfg = self.cfg
        engine = Engine(manifest.engine(modality, cfg.precision), len(self.classes), cfg.intra_op_threads, cfg.backend, parse_providers(cfg.providers))
        warm_up(engine, len(self.classes))
        return engine

    def apply_swap(self, manifest, engines: dict, checksum: str, reliability=None, timeout: float = 2.0) -> None:
        """Hand checked engines (and the folder's checked reliability constants) to the
        fusion thread, which switches them between two decisions (directly when the
        fusion loop is not running)."""
        old = dict(self.engines)
        done = threading.Event()
        self._pending_swap = (manifest, engines, checksum, done, reliability)
        fusion = getattr(self, "fusion", None)
        if fusion is None or not fusion._thread.is_alive() or not done.wait(timeout):
            self._switch_engines()
        if self._shared.on_swapped is not None:  # the old engines are no longer called by this station
            self._shared.on_swapped(self.cfg.station, old, engines)

    def _switch_engines(self) -> None:
        with self._emit_lock:
            pending, self._pending_swap = self._pending_swap, None
            if pending is None:
                return
            manifest, engines, checksum, done, rel = pending
            for m, w in self.workers.items():
                w.engine = engines[m]
            self.engines.update(engines)
            self.manifest, self.engine_checksum, self.reliability = manifest, checksum, rel
            fusion = getattr(self, "fusion", None)
            if fusion is not None:  # the new folder's rule and reliability constants from the next decision on
                fusion.use(manifest.fusion_rule, rel)
        done.set()

    def reload(self) -> None:
        """Swap to the engine folder's current contents (SIGHUP; safe from a signal handler)."""
        self.floor.swapper.request()

    def metrics_snapshot(self) -> dict:
        """Counters read by /metrics at scrape time."""
        fusion = getattr(self, "fusion", None)
        workers = {}
        for m, w in list(self.workers.items()):
            workers[m] = {"runs": w.results, "errors": w.errors, "dropped": self._dropped(m, w)}
        snap = {
            "decisions": fusion.decisions if fusion else 0,
            "no_decisions": fusion.no_decisions if fusion else 0,
            "sensors": self.sensors(),
            "workers": workers,
            "engines": {"folder": str(self.cfg.engines), "checksum": self.engine_checksum, "swaps": dict(self.floor.swapper.swaps)},
        }
        snap.update(self.floor.snapshot())
        return snap

    def _dropped(self, modality: str, w: Worker) -> int:
        """Inputs a worker never ran on: items replaced in the source's slot (frames),
        or, for a source that loses nothing (the mic's ring), the worker's overrun ticks."""
        drops = self.nodes[modality].source.drops
        return drops if drops is not None else (w.pacer.overruns if w.pacer else 0)

    def _emit(self, rec: dict, timing: dict) -> None:
        rec = {"time": round(time.time(), 3), "t": round(timing["t_fuse"] - self._t_start, 3), "station": self.cfg.station, **rec, "engines": self.engine_checksum}
        self.last_emit = timing["t_fuse"]
        for hook in self.floor.hooks:
            try:
                hook(rec, timing)
            except Exception:
                log.exception("decision hook %s failed", getattr(hook, "__qualname__", hook))
        with self._emit_lock:
            if self.output_error:
                return
            for o in self.outputs:
                try:
                    o.write(rec)
                except OutputFailed as exc:
                    # nothing more can be delivered: stop cleanly, the CLI reports it in one line
                    self.output_error = str(exc)
                    self._stop.set()
                    return
                except Exception:
                    log.exception("output %s failed", type(o).__name__)
            self._lines += 1
        self.stages.add(timing["results"], rec["used"], timing["t_fuse"], timing["t_fused"], now())

    def start(self) -> None:
        """Open the sensors (errors here are the user's: EdgeMlaError) and start
        every thread."""
        self._t_start = now()
        self.floor.start()  # metrics port, broker: before any sensor opens
        self.resources.start()
        started = []
        try:
            for src in self.sources.values():
                src.start()
                started.append(src)
            # Outputs open only now, with every input checked and the sensors open:
            # a failed start never empties an existing results file.
            for o in self.outputs:
                if hasattr(o, "open"):
                    o.open()
        except BaseException:
            self._stop.set()
            for src in started:
                src.stop()
            self.floor.close()
            for o in self.outputs:
                o.close()
            raise
        self.fusion = FusionLoop(self._latest, self.sensors, self.classes, self.cfg.rate, self.cfg.staleness, self._emit, self._stop, degraded_hold=self.cfg.degraded_hold)
        self.fusion.use(self.manifest.fusion_rule, self.reliability)
        for m, node in self.nodes.items():
            k = node.kind
            self.workers[m] = Worker(m, self.engines[m], node.source.take, node.preprocess, k.rate(self.cfg), self._stop, gate=k.gate(self.cfg), on_result=self.fusion.notify, limit=self.cfg.rate)
        self._threads = list(self.workers.values()) + [Watchdog(s, self._stop) for s in self.sources.values()] + [self.fusion]
        for t in self._threads:
            t.start()
        self.floor.start_threads()
        log.info("runtime started: %s", ", ".join(f"{m} <- {w.engine.spec.path.name}" for m, w in self.workers.items()))

    def stop(self) -> None:
        """Ask every thread to finish (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def sources_ended(self) -> bool:
        """Every source of this station reached its end (files without --loop)."""
        srcs = list(self.sources.values())
        return bool(srcs) and all(s.status.state == ENDED for s in srcs)

    def wait(self, duration: Optional[float] = None) -> None:
        """Block until stopped, ``duration`` seconds passed, or every source ended."""
        deadline = None if duration is None else self._t_start + duration
        ended_at, idle = None, {}
        while not self._stop.is_set():
            if deadline is not None and now() >= deadline:
                break
            if self.sources_ended():
                if ended_at is None:
                    ended_at = now()
                    idle = {m: w.skipped for m, w in self.workers.items() if w.rate}
                    log.info("every source ended")
                # stop once each paced worker has had a tick with nothing new, i.e. has run
                # on the last of its data: a WAV shorter than a hop ended before the audio
                # engine ever ran on it (0 decisions, no word)
                if all(self.workers[m].skipped > n for m, n in idle.items()) or now() - ended_at > END_DRAIN_S:
                    break
            self._stop.wait(0.1 if deadline is None else max(min(0.1, deadline - now()), 0.001))
        self._stop.set()

    def join(self, timeout: float = 5.0) -> RunReport:
        """Stop, join every thread, close streams and flush outputs; the report."""
        self._stop.set()
        sources = self.sources
        final = {src.name: src.status.state for src in sources.values()}
        for src in sources.values():
            src.stop()
        for t in self._threads:
            t.join(timeout)
        for src in sources.values():
            src.join(timeout)
        self.floor.close()
        for o in self.outputs:
            o.close()
        res = self.resources.finish()
        # this station's own threads (other stations of a --config run are still stopping:
        # listing every thread of the process warned about theirs)
        own = [*self._threads, *(getattr(src, "_thread", None) for src in sources.values()), getattr(self.resources, "_thread", None)]
        own = [getattr(t, "_thread", t) for t in own]  # a Watchdog holds its thread: one stuck in supervise was reported "clean"
        alive = [t.name for t in own if isinstance(t, threading.Thread) and t.is_alive()]
        if alive:
            log.warning("shutdown: threads still running: %s", ", ".join(alive))
        else:
            log.info("clean shutdown: all runtime threads joined, streams closed, outputs flushed")
        seconds = now() - (self._t_start or now())
        workers = {}
        for m, w in self.workers.items():
            workers[m] = {"results": w.results, "rate": w.results / max(seconds, 1e-9), "dropped": self._dropped(m, w), "limited": w.limited, "errors": w.errors, "engine_ms_mean": 1000 * w.engine.seconds / max(w.engine.runs, 1)}
        for m, node in self.nodes.items():
            counters = workers.setdefault(m, {})
            counters.update(node.source.stats())
            if node.kind.gated_as:
                counters[node.kind.gated_as] = self.workers[m].gated if m in self.workers else 0
        sensors = {}
        for src in sources.values():
            snap = src.status.snapshot()
            snap["state"] = final.get(src.name, src.status.state)  # before shutdown
            sensors[src.name] = snap
        fusion = getattr(self, "fusion", None)
        return RunReport(
            seconds=seconds,
            decisions=fusion.decisions if fusion else 0,
            no_decisions=fusion.no_decisions if fusion else 0,
            lines=self._lines,
            workers=workers,
            sensors=sensors,
            latency=self.stages.summary(),
            cpu_percent=res["cpu_percent"],
            peak_rss_mb=res["peak_rss_mb"],
            rss_mb=res["rss_mb"],
            stages=self.stages.as_dicts(),
            fusion_overruns=getattr(fusion, "overruns", 0) if fusion else 0,
            degraded=fusion.degraded.report(self._t_start or 0.0, now()) if fusion else {},
            reliability=self.reliability.signal if self.reliability is not None else None,
            output_error=self.output_error,
            factory={**self.floor.snapshot(), "swaps": dict(self.floor.swapper.swaps), "engines": self.engine_checksum},
        )

    def run(self, duration: Optional[float] = None) -> RunReport:
        self.start()
        try:
            self.wait(duration if duration is not None else self.cfg.duration)
        finally:
            report = self.join()
        return report


def run_for(cfg: RunConfig, duration: Optional[float] = None, outputs: Optional[list] = None) -> RunReport:
    """Run the runtime for ``duration`` seconds (or cfg.duration, or until every
    source ends) and return its RunReport: the programmatic entry point for the
    profiler and the demo."""
    return Runtime(cfg, outputs=outputs).run(duration)
