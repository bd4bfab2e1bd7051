"""edge_mla.runtime: the streaming runtime (camera + mic -> encoders -> fusion).

Never imports torch: a device installs only the runtime extra (onnxruntime,
OpenCV, sounddevice, soundfile, numpy, psutil).

Data flows sources -> workers -> fusion loop -> outputs:
  clock         monotonic time, drift-free pacer
  config        RunConfig (every CLI flag), validate
  sources/      camera (OpenCV), microphone (sounddevice), wavfile (WAV in real time)
  engine        one ONNX Runtime session per modality, checked against the manifest
  workers       one thread per modality on the newest data
  fusion_loop   entropy fusion at a fixed rate, staleness, "no decision"
  outputs       JSON lines, console line, exit summary
  watchdog      per-sensor supervision (stall -> lost -> reconnect with back-off)
  stats         per-stage timestamps, CPU and memory
  app           Runtime, run_for -> RunReport
  replay/       record_session (scripted faults) and score
  testing/      PulseAudio null sink and local MJPEG server for tests and demos
"""

from edge_mla.runtime.app import RunReport, Runtime, run_for
from edge_mla.runtime.config import Outage, RunConfig

__all__ = ["RunConfig", "Outage", "Runtime", "RunReport", "run_for"]
