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

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime.clock import now
from edge_mla.runtime.sources.base import in_outage
from edge_mla.sound_file import read_sound

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.02


class WavFileInput:
    """Backend for MicSource: ``open(on_block)`` starts the player thread."""

    def __init__(self, path: str, loop: bool = False, outages: Optional[list] = None) -> None:
        if not os.path.isfile(path):
            raise EdgeMlaError(f"--mic {path}: no such WAV file")
        pcm, rate = read_sound(path, f"--mic {path}")
        self.path = path
        self.pcm = pcm
        self.rate = rate
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
            target = int(media * self.rate)
            if not self.loop:
                target = min(target, n)
            parts = []
            while target > pos:  # a looped file shorter than one wake-up wraps several times in it
                end = min(target, n)
                parts.append(self.pcm[pos:end])
                pos = end
                if pos >= n and self.loop:
                    self._t0 += n / self.rate
                    target -= n
                    pos = 0
            if parts:
                on_block(parts[0] if len(parts) == 1 else np.concatenate(parts), now(), False)
            if pos >= n and not self.loop:
                self.ended = True
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._thread = None

    def reinit(self) -> None:
        """Nothing to re-enumerate for a file."""
