"""edge_mla.runtime: the streaming runtime (camera + mic -> encoders -> fusion).

Never imports torch: a device installs only the runtime extra (onnxruntime,
OpenCV, sounddevice, soundfile, numpy, psutil).

Data flows sources -> workers -> fusion loop -> outputs:
  clock         monotonic time, drift-free pacer
  config        RunConfig (every CLI flag), validate
  graph         the sensor table: per kind its modality, option, source, preprocessing, gate
                (graph.register adds a kind: one source class, one row, an engine)
  sources/      camera (OpenCV), microphone (sounddevice), wavfile (WAV in real time),
                builtin (the camera and mic rows' builders)
  engine        one ONNX Runtime session per modality, checked against the manifest
  workers       one thread per modality on the newest data
  fusion_loop   event-driven fusion of every modality's newest result, staleness, "no decision"
  outputs       JSON lines, console line, exit summary
  watchdog      per-sensor supervision (stall -> lost -> reconnect with back-off)
  stats         per-stage timestamps, CPU and memory
  app           Runtime, run_for -> RunReport
  factory       wires the factory-floor services below into a Runtime
  mqtt_output   decisions to MQTT (paho), through spool (bounded, on disk, seq)
  metrics       Prometheus /metrics and /healthz
  clips         event clips (pre/post-roll, disk budget, pairs.csv index)
  hot_swap      engine folder swap on SIGHUP / --watch, folder checksum
  sd_notify     systemd READY / watchdog keep-alives
  doctor        `edge-mla doctor` checks
  flags         `edge-mla run` flags derived from RunConfig fields
  replay/       record_session (scripted faults) and score
  testing/      PulseAudio null sink and local MJPEG server for tests and demos
"""

from edge_mla.runtime.app import RunReport, Runtime, run_for
from edge_mla.runtime.config import Outage, RunConfig

__all__ = ["RunConfig", "Outage", "Runtime", "RunReport", "run_for"]
