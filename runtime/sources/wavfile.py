"""A WAV file played in real time as if it were a microphone.

A thread pushes blocks at the file's own pace into the same callback a sound card
would call, so the mic path downstream (ring buffer, resampling, watchdog) is the
one a live device runs. ``outages`` (replay only) stop the blocks and make opening
fail for scripted spans of media time, i.e. an unplugged USB mic: no error, just
no callbacks, which the watchdog must notice.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Optional

import numpy as np

from edge_mla.errors import EdgeMlaError, first_line
from edge_mla.preprocess import AUDIO_RATES
from edge_mla.runtime.clock import now
from edge_mla.runtime.sources.base import in_outage

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.02
MIN_RATE, MAX_RATE = AUDIO_RATES


def riff_problem(path: str) -> Optional[str]:
    """What is wrong with a RIFF/WAVE file's layout, or None. libsndfile reads a WAV
    cut mid-data without complaint (it returns the samples that are there), so a
    recording that was cut short would play silently short; the header's data size
    says how much there should be."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None  # not a WAV file: soundfile decides
        order = "little" if head[:4] == b"RIFF" else "big"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            hdr = f.read(8)
            cid, n = hdr[:4], int.from_bytes(hdr[4:8], order)
            if cid == b"data":
                have = size - pos - 8
                if n == 0:
                    return "holds no audio samples (its data chunk is empty)"
                if n != 0xFFFFFFFF and n > have:
                    return f"is truncated: its header announces {n} bytes of audio, the file holds {have}"
                return None
            pos += 8 + n + (n & 1)
    return "has no data chunk (cut short, or not a WAV file)"


class WavFileInput:
    """Backend for MicSource: ``open(on_block)`` starts the player thread."""

    def __init__(self, path: str, loop: bool = False, outages: Optional[list] = None) -> None:
        if not os.path.isfile(path):
            raise EdgeMlaError(f"--mic {path}: no such WAV file")
        import soundfile as sf

        problem = riff_problem(path)
        if problem:
            raise EdgeMlaError(f"--mic {path}: WAV file {problem}")
        try:
            pcm, rate = sf.read(path, dtype="float32", always_2d=True)
        except Exception as exc:
            raise EdgeMlaError(f"--mic {path}: cannot read as audio ({first_line(exc)})") from None
        if pcm.size == 0:
            raise EdgeMlaError(f"--mic {path}: holds no audio samples")
        if not MIN_RATE <= rate <= MAX_RATE:
            raise EdgeMlaError(f"--mic {path}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
        if not np.isfinite(pcm).all():  # every window was gated out as silence while the mic said ok
            raise EdgeMlaError(f"--mic {path}: holds NaN or infinite samples")
        self.path = path
        self.pcm = np.ascontiguousarray(pcm[:, 0])
        self.rate = int(rate)
        self.loop = loop
        self.outages = list(outages or [])
        self.ended = False
        self._t0: Optional[float] = None  # runtime clock at media time 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def describe(self) -> str:
        return f"WAV {self.path} ({self.rate} Hz, {self.pcm.size / self.rate:.1f}s)"

    def open(self, on_block: Callable[[np.ndarray, float, bool], None]) -> None:
        t = now()
        if self._t0 is None:
            self._t0 = t
        if in_outage(self.outages, t - self._t0):
            raise OSError("device gone (scripted outage)")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, args=(on_block, self._stop), name="mic-wavplayer", daemon=True)
        self._thread.start()

    def _play(self, on_block, stop: threading.Event) -> None:
        block = max(int(self.rate * BLOCK_SECONDS), 1)
        n = self.pcm.size
        pos = min(int((now() - self._t0) * self.rate), n)  # resume at "now" after an outage
        while not stop.wait(max((pos + block) / self.rate - (now() - self._t0), 0.001)):
            media = now() - self._t0
            if in_outage(self.outages, media):
                return  # unplugged: callbacks simply stop, no error
            target = min(int(media * self.rate), n)
            if target > pos:
                on_block(self.pcm[pos:target], now(), False)
                pos = target
            if pos >= n:
                if not self.loop:
                    self.ended = True
                    return
                self._t0 += n / self.rate
                pos = 0

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._thread = None

    def reinit(self) -> None:
        """Nothing to re-enumerate for a file."""
