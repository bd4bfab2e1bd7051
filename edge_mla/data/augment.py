"""Training-time audio perturbations: where a clip lands in the window, how loud it
is and how fast it is spoken.

Why each one: speech reaches a live microphone at any offset in the window; the
level a microphone delivers depends on the speaker's distance, the preamp gain and
the device (FSDD's six speakers were recorded 14 to 22 dB apart, and the two held out
of training by ``--split speaker`` are the quietest); and a new voice differs from the
trained ones in pitch and formants, which a speed change shifts together (Ko et al.,
"Audio augmentation for speech recognition", Interspeech 2015). All three act on the
raw PCM before the engine's own front end, so the exported engines are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edge_mla.preprocess import fit_window, pcm_to_float


@dataclass(frozen=True)
class AudioAugment:
    """One clip's perturbation is drawn per call: a random offset in the window
    (``placement``), a gain drawn uniformly in dB from ``gain_db``, and a speed factor
    drawn uniformly from [1 - speed, 1 + speed]. Gain is applied before the window is
    clipped to [-1, 1], as a real converter would clip."""

    placement: bool = True
    gain_db: tuple = (0.0, 0.0)
    speed: float = 0.0

    def window(self, clip: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
        """``clip`` (int16 or float PCM) perturbed and placed in a ``window``-sample window."""
        x = pcm_to_float(clip)
        if self.speed > 0 and x.shape[0] > 1:
            x = change_speed(x, float(rng.uniform(1.0 - self.speed, 1.0 + self.speed)))
        lo, hi = self.gain_db
        if (lo, hi) != (0.0, 0.0):
            x = x * np.float32(10.0 ** (float(rng.uniform(lo, hi)) / 20.0))
        off: Optional[int] = None
        if self.placement:
            slack = window - x.shape[0]
            off = int(rng.integers(0, slack + 1)) if slack > 0 else -int(rng.integers(0, -slack + 1))
        out = fit_window(x, window, off)
        return np.clip(out, -1.0, 1.0, out=out)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch and formants rise by the same factor,
    the duration shrinks by it), by linear interpolation. At speech's 8 kHz and
    factors within 10% of 1 the little energy folded back from above the new Nyquist
    band is negligible next to the speaker differences this stands in for."""
    n_out = max(1, int(round(x.shape[0] / factor)))
    t = np.arange(n_out, dtype=np.float64) * factor
    return np.interp(t, np.arange(x.shape[0], dtype=np.float64), x).astype(np.float32)
