"""The microphone: a callback stream (sounddevice) or a WAV played in real time,
feeding a ring buffer that always holds the last audio window.

Why it is built this way:
- Capture happens at the device's rate (48 kHz by default: through a PulseAudio
  null sink lower rates returned garbage) and the ring buffer (the window plus a
  second of slack) stays at that rate; the audio worker takes what is new and
  resamples it to the engine rate with ``runtime.audio_stream`` (the shared
  ``edge_mla.preprocess.resample``, streamed).
- The callback only copies into the ring (no allocation, no lock held for long):
  PortAudio calls it on its own real-time thread.
- An unplugged mic gives no error: callbacks simply stop. ``supervise`` (called by
  the watchdog) notices, closes the stream, re-initialises PortAudio (it lists
  devices only at initialisation) and reopens with back-off.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.clock import now
from edge_mla.runtime.sources.base import ENDED, LOST, OK, STARTING, STOPPED, Backoff, Item, SensorStatus

log = logging.getLogger(__name__)

SLACK_SECONDS = 1.0  # ring holds the window plus this, so a late worker loses nothing
STARTUP_GRACE = 3.0  # a fresh PortAudio stream through PulseAudio took ~2 s to call back
PORTAUDIO_TIMEOUT = 5.0  # seconds a PortAudio call may take before the sound server counts as hung

_hung: set = set()  # helper threads of PortAudio calls that have not returned
_hung_lock = threading.Lock()


def portaudio_call(fn, what: str, timeout: float = PORTAUDIO_TIMEOUT):
    """``fn()`` (PortAudio calls) on a helper thread, waited for at most ``timeout`` s.

    Why: a hung sound server (PulseAudio stopped, not dead) blocks PortAudio for
    30 s per device at initialisation and for good in ``abort``: the start ignored
    SIGTERM for two minutes, the watchdog thread stuck in ``abort``, and at exit
    sounddevice's Pa_Terminate raced it (``double free or corruption``). A call that
    does not return raises OSError, and PortAudio is not called again until it has
    returned; the interpreter's exit then skips Pa_Terminate (``_skip_terminate``)."""
    with _hung_lock:
        if _hung:
            raise OSError(f"the sound server has not answered an earlier call yet; {what} not tried")
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            with _hung_lock:
                _hung.discard(threading.current_thread())

    t = threading.Thread(target=target, name=f"portaudio-{what}", daemon=True)
    with _hung_lock:
        _hung.add(t)
    t.start()
    t.join(timeout)
    if t.is_alive():
        _skip_terminate()
        raise OSError(f"the sound server did not answer within {timeout:g}s ({what})")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _skip_terminate() -> None:
    """At exit, leave PortAudio alone while one of its calls is still stuck: its
    Pa_Terminate (sounddevice's atexit handler) crashed the process after the run."""
    import atexit
    import sys

    sd = sys.modules.get("sounddevice")
    handler = getattr(sd, "_exit_handler", None)
    if handler is not None:
        atexit.unregister(handler)


class SoundDeviceInput:
    """Backend for MicSource over a PortAudio input stream."""

    def __init__(self, spec: str, rate: int = 48000, strict: bool = True) -> None:
        self._sd = None
        self.spec = spec
        if spec.lstrip("-").isdigit() and spec.startswith("-"):
            raise EdgeMlaError(f"--mic {spec}: an input device index must be 0 or more")
        self.device = None if spec == "default" else (int(spec) if spec.isascii() and spec.isdigit() else spec)
        self.rate = int(rate)
        self.name = spec
        self._stream = None
        self.resolved = False
        try:
            portaudio_call(lambda: self._resolve(rate), "initialise")  # importing sounddevice initialises PortAudio
        except EdgeMlaError:
            if strict:
                raise
            # not there yet (a USB mic still enumerating): MicSource reports it lost and
            # retries; it must then take the capture rate asked for (--mic-rate)
            log.warning("mic: %s not found at start; retrying (--require-sensors makes this fatal)", spec)
        except OSError as exc:
            if strict:
                raise EdgeMlaError(f"--mic {spec}: {exc}") from None
            log.warning("mic: %s: %s; retrying (--require-sensors makes this fatal)", spec, exc)

    def _import(self):
        if self._sd is None:
            try:
                import sounddevice as sd
            except OSError as exc:  # PortAudio library missing
                raise EdgeMlaError(f"--mic {self.spec}: sounddevice cannot load PortAudio ({exc}); install libportaudio2") from None
            self._sd = sd
        return self._sd

    def _resolve(self, rate: int) -> None:
        sd = self._import()
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            names = [d["name"] for d in sd.query_devices() if d.get("max_input_channels", 0) > 0]
            raise EdgeMlaError(f"--mic {self.spec}: no such input device ({exc}); inputs: {', '.join(names) or 'none'}") from None
        self.rate = int(rate)
        try:
            sd.check_input_settings(self.device, samplerate=self.rate, channels=1, dtype="float32")
        except Exception:
            self.rate = int(info["default_samplerate"])
            log.info("mic: %s does not take %d Hz, capturing at its default %d Hz", info["name"], rate, self.rate)
        self.name = info["name"]
        self.resolved = True

    def describe(self) -> str:
        return f"input device {self.name!r} at {self.rate} Hz"

    def open(self, on_block) -> None:
        if not self.resolved:
            self.device_found()

        def callback(indata, frames, time_info, status) -> None:
            on_block(indata[:, 0], now(), bool(status and status.input_overflow))

        def start() -> None:
            stream = self._import().InputStream(device=self.device, samplerate=self.rate, channels=1, dtype="float32", callback=callback)
            self._stream = stream  # here, not after the wait: an open that returns late is still closed later
            stream.start()

        portaudio_call(start, "open")

    def device_found(self) -> None:
        """A mic missing at start: look it up again (after ``reinit``) keeping the
        ring's rate; raises (OSError) while it is still absent."""
        rate = self.rate
        try:
            portaudio_call(lambda: self._resolve(rate), "look up the device")
        except EdgeMlaError as exc:
            raise OSError(str(exc)) from None
        if self.rate != rate:
            self.rate = rate  # the ring and resampler were built for this rate
            raise OSError(f"{self.name} does not take {rate} Hz (set --mic-rate to its rate)")

    def close(self) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            def stop():
                s.abort()
                s.close()

            try:
                portaudio_call(stop, "close")
            except OSError as exc:
                log.warning("mic: %s; the stream is left open", exc)
            except Exception:
                log.debug("mic: closing a dead stream failed", exc_info=True)

    def reinit(self) -> None:
        """PortAudio enumerates devices only at initialisation: a mic that came
        back (or a restarted sound server) is visible only after this."""
        def again():
            sd = self._import()
            sd._terminate()
            sd._initialize()

        try:
            portaudio_call(again, "re-initialise")
        except Exception:
            log.debug("mic: PortAudio re-initialisation failed", exc_info=True)

    @property
    def ended(self) -> bool:
        return False


def is_sound_file(spec: str) -> bool:
    """A --mic value naming a sound file, not a device: by its extension, or an
    existing file given as a path (an AIFF or ``take.wave`` was looked up as a device
    name, retried for ever and reported lost)."""
    if spec.lower().endswith((".wav", ".flac", ".ogg")):
        return True
    return ("/" in spec or "." in os.path.basename(spec)) and os.path.isfile(spec)


class MicSource:
    """Ring buffer of the newest ``window`` of audio plus its sensor status."""

    def __init__(
        self,
        spec: str,
        window_seconds: float,
        capture_rate: int = 48000,
        timeout: float = 1.5,
        backoff: Optional[Backoff] = None,
        loop: bool = False,
        outages: Optional[list] = None,
        name: str = "mic",
        strict: bool = True,
    ) -> None:
        self.spec = str(spec)
        self.window_seconds = float(window_seconds)
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.name = name
        self.status = SensorStatus(name)
        if is_sound_file(self.spec):
            from edge_mla.runtime.sources.wavfile import WavFileInput

            self.backend = WavFileInput(self.spec, loop=loop, outages=outages)
        else:
            self.backend = SoundDeviceInput(self.spec, capture_rate, strict=strict)
        self.strict = strict
        self.rate = self.backend.rate
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified on every block
        self._size = int(round((self.window_seconds + SLACK_SECONDS) * self.rate))
        self._ring = np.zeros(self._size, np.float32)
        self._written = 0  # total samples ever written
        self._t_last: Optional[float] = None  # runtime clock of the newest sample
        self._opened_at = 0.0
        self._awaiting = False  # reopened, no audio yet: still lost
        self.blocks = 0
        self.samples = 0

    def _on_block(self, block: np.ndarray, t: float, overflow: bool) -> None:
        n = block.shape[0]
        with self._lock:
            if n >= self._size:
                self._ring[:] = block[-self._size :]
            else:
                i = self._written % self._size
                k = min(n, self._size - i)
                self._ring[i : i + k] = block[:k]
                self._ring[: n - k] = block[k:]
            self._written += n
            self._t_last = t
            self._arrived.notify_all()
        self.blocks += 1
        self.samples += n
        if overflow:
            self.status.overflows += 1
        self.status.last_data = t

    def start(self) -> None:
        """Open the input; a device that cannot open yet is reported lost and retried
        by ``supervise`` (with back-off), unless ``strict`` (--require-sensors)."""
        try:
            self.backend.open(self._on_block)
        except EdgeMlaError:
            raise
        except Exception as exc:
            if self.strict:
                raise EdgeMlaError(f"--mic {self.spec}: cannot open {self.backend.describe()} ({exc})") from None
            self._opened_at = now()
            self.status.failures += 1
            wait = self.backoff.failed(now())
            self.status.set(LOST, f"cannot open at start ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); retrying in {wait:.1f}s")
            return
        self._opened_at = now()
        log.info("%s: %s", self.name, self.backend.describe())

    # -- the Source protocol (runtime/graph.py) -------------------------------------------
    def take(self, seq: int, timeout: float) -> Optional[Item]:
        """The audio worker's input: ``fresh``."""
        return self.fresh(seq, timeout)

    @property
    def drops(self) -> None:
        """The ring loses nothing a window needs; what the paced worker misses are its
        hops (its pacer's overruns), so the runtime counts those."""
        return None

    def stats(self) -> dict:
        return {"blocks": self.blocks, "samples": self.samples}

    def fresh(self, seq: int, timeout: float) -> Optional[Item]:
        """Like ``latest``, but first waits up to ``timeout`` s for the next block, so
        the window ends with audio that has just arrived (a paced worker then runs
        right after capture instead of up to one block later)."""
        with self._arrived:
            mark = self._written
            self._arrived.wait_for(lambda: self._written > mark, timeout)
        return self.latest(seq)

    def latest(self, seq: int) -> Optional[Item]:
        """Audio that arrived after sample ``seq`` (the caller's last ``item.seq``):
        ``Item(data=(chunk, gap), t_capture=newest sample's time, seq=samples so
        far)``, or None if nothing new. ``gap`` is True when more arrived than the
        ring holds (the reader fell behind; the oldest part is lost)."""
        with self._lock:
            if self._written <= seq or self._t_last is None:
                return None
            n = self._written - seq
            gap = n > self._size
            n = min(n, self._size)
            end = self._written % self._size
            start = (end - n) % self._size
            if start < end:
                chunk = self._ring[start:end].copy()
            else:
                chunk = np.concatenate([self._ring[start:], self._ring[:end]])
            return Item((chunk, gap), self._t_last, self._written)

    def supervise(self, t: float) -> None:
        """Watchdog hook: callbacks stopped -> lost; reopen with back-off. A reopened
        stream stays lost until audio arrives (it read "starting" for most of an
        outage, and each reopen counted as a reconnect though nothing came back)."""
        st = self.status.state
        last = self.status.last_data
        if st in (OK, STARTING) or (st == LOST and self._awaiting):
            if getattr(self.backend, "ended", False):
                self.status.set(ENDED, "end of file")
                return
            fresh = last is not None and last >= self._opened_at and t - last <= self.timeout
            if fresh:
                if st != OK:
                    if self._awaiting:
                        self.status.reconnects += 1
                        self._awaiting = False
                    self.status.set(OK)
                    self.backoff.reset()
                return
            grace = self.timeout + (STARTUP_GRACE if st == STARTING or self._awaiting else 0.0)
            since = t - (last if last is not None and last >= self._opened_at else self._opened_at)
            if since > grace:
                self.status.failures += 1
                wait = self.backoff.failed(t)
                self._awaiting = False
                # report first: closing a stream whose sound server died can block in
                # PortAudio for seconds, and the outputs must say "lost" meanwhile
                self.status.set(LOST, f"no audio for {since:.1f}s; reopening in {wait:.1f}s")
                self.backend.close()
        elif st == LOST and self.backoff.due(t):
            self.backend.close()
            self.backend.reinit()
            try:
                self.backend.open(self._on_block)
            except Exception as exc:
                wait = self.backoff.failed(now())
                self.status.failures += 1
                log.info("%s: reopen failed (%s); next try in %.1fs", self.name, exc, wait)
                return
            self._opened_at = now()
            self._awaiting = True
            log.info("%s: reopened; waiting for audio", self.name)

    def stop(self) -> None:
        self.backend.close()
        self.status.set(STOPPED)

    def join(self, timeout: float = 5.0) -> None:
        """Nothing to join: the stream (or player thread) is closed in stop()."""
