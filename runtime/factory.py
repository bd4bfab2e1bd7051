"""The factory-floor services around one Runtime: MQTT output, Prometheus metrics
and /healthz, event clips, hot engine swap, systemd notifications.

Why one wiring module: app.py stays the data path (sources -> workers -> fusion ->
outputs); everything here hangs off three hooks the Runtime offers (extra outputs,
a per-decision callback, start/stop) and is built only when its option is set
(the swapper always: SIGHUP must work on every runtime). Everything that can be
wrong with an option (a malformed URL, an unreadable file, a port in use, a clips
folder that cannot be written) raises EdgeMlaError before any sensor opens.
"""

from __future__ import annotations

import logging
from typing import Optional

from edge_mla.runtime import sd_notify
from edge_mla.runtime.clock import now
from edge_mla.runtime.config import DEFAULT_STATION
from edge_mla.runtime.hot_swap import EngineSwapper

log = logging.getLogger(__name__)

ENGINE_HANG_S = 10.0  # one engine call this long is a hung engine (a slow one takes milliseconds)


class FactoryFloor:
    def __init__(self, rt, metrics=None) -> None:
        """``metrics``: a RuntimeMetrics shared by several stations (its endpoint is
        served by whoever made it); otherwise ``--metrics`` makes and serves one."""
        cfg = rt.cfg
        self.rt = rt
        self.outputs: list = []
        self.hooks: list = []
        self.mqtt = self.metrics = self.server = self.clips = None
        self.keepalive: Optional[sd_notify.Keepalive] = None
        if cfg.mqtt:
            from edge_mla.runtime.mqtt_output import MqttOutput

            self.mqtt = MqttOutput(cfg)
            self.outputs.append(self.mqtt)
        if metrics is None and cfg.metrics:
            from edge_mla.runtime.metrics import MetricsServer, RuntimeMetrics

            metrics = RuntimeMetrics(cfg.health_window)
            self.server = MetricsServer(cfg.metrics, metrics)  # parses HOST:PORT now
        if metrics is not None:
            self.metrics = metrics.add_station(cfg.station, rt.metrics_snapshot)
            self.hooks.append(self.metrics.on_decision)
        if cfg.clips is not None:
            from edge_mla.runtime.clips import ClipRecorder

            self.clips = ClipRecorder(cfg, rt.source_of("image"), rt.source_of("audio"), rt.classes, lambda: rt.engine_checksum)
            self.hooks.append(self.clips.on_decision)
        self.swapper = EngineSwapper(cfg.engines, list(rt.engines), rt.classes, rt.open_engine, rt.apply_swap, rt._stop, watch=cfg.watch, period=cfg.watch_period,
                                     check=rt.check_swap, station="" if cfg.station == DEFAULT_STATION else cfg.station)
        self._started: list = []

    def start(self) -> None:
        """Before the sensors open: bind the metrics port, connect to the broker
        (EdgeMlaError on a port in use, or an unreachable broker with --mqtt-required)."""
        try:
            if self.server is not None:
                self.server.start()
                self._started.append(self.server)
            if self.mqtt is not None:
                self.mqtt.start()
        except Exception:
            self.close()
            raise

    def start_threads(self) -> None:
        """After the runtime's threads run: clips, swapper, systemd READY + watchdog."""
        if self.clips is not None:
            self.clips.start()
            self._started.append(self.clips)
        self.swapper.start()
        if not self.rt._shared.service:  # one of several stations: the MultiRuntime speaks for all of them
            return
        period = sd_notify.watchdog_period()
        if period is not None:
            self.keepalive = sd_notify.Keepalive(self.fusion_alive, self.rt._stop, period)
            self.keepalive.start()
        sd_notify.notify("READY=1\nSTATUS=deciding")

    def fusion_alive(self) -> bool:
        """The watchdog's test: the fusion thread runs and produced a record recently,
        and no engine call has been running for ENGINE_HANG_S. Why the second part: the
        fusion loop goes on emitting "no fresh modality" records when every engine hangs,
        which fed the watchdog while no decision could come again. A lost sensor is not a
        hang (its worker waits for data, not for the engine), so it does not restart the
        service."""
        fusion = getattr(self.rt, "fusion", None)
        last = self.rt.last_emit
        limit = max(10.0 / self.rt.cfg.rate, 2.0)
        t = now()
        hung = any(w.busy_since is not None and t - w.busy_since > ENGINE_HANG_S for w in self.rt.workers.values())
        return fusion is not None and fusion._thread.is_alive() and last is not None and t - last < limit and not hung

    def close(self) -> None:
        """After the runtime's threads stopped, before the outputs close."""
        if self.rt._shared.service:
            sd_notify.notify("STOPPING=1")
        self.swapper.join(2.0)
        for part in reversed(self._started):
            try:
                part.close()
            except Exception:
                log.exception("shutdown: %s failed to close", type(part).__name__)
        self._started = []

    def snapshot(self) -> dict:
        out = {"mqtt": None, "clips": None}
        if self.mqtt is not None:
            out["mqtt"] = {"spool_depth": self.mqtt.spool_depth, "spool_dropped": self.mqtt.spool_dropped, "published": self.mqtt.published, "connected": self.mqtt.connected}
        if self.clips is not None:
            out["clips"] = self.clips.snapshot()
        return out
