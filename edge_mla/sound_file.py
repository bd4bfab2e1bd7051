"""Reading a sound file: the one reader behind a folder dataset's clips and a WAV
played as a microphone, so training and the runtime hear the same samples.

libsndfile reads many formats (WAV in every common encoding, WAVE_FORMAT_EXTENSIBLE,
RF64, FLAC, OGG), but it says nothing about a WAV cut mid-data: it returns the
samples that are there. The RIFF layout is checked first so a recording cut short
is refused instead of played (or trained on) short.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from edge_mla.errors import EdgeMlaError, first_line
from edge_mla.preprocess import AUDIO_RATES

# data sizes that mean "unknown length" (a WAV written to a pipe): 0xFFFFFFFF by
# convention; 0x7FFFFFFF and 0x7FFFF000 by some recorders. libsndfile reads them to the end.
STREAMED_SIZE_MIN = 0x7FFFF000


def riff_problem(path: str) -> Optional[str]:
    """What is wrong with a RIFF/WAVE file's layout, or None (also for other formats:
    soundfile decides those)."""
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
                if n < STREAMED_SIZE_MIN and n > have:
                    return f"is truncated: its header announces {n} bytes of audio, the file holds {have}"
                return None
            pos += 8 + n + (n & 1)
    return "has no data chunk (cut short, or not a WAV file)"


def read_sound(path: str, name: str) -> tuple:
    """(mono float32 samples, rate) of a sound file. Channels are mixed down (a stereo
    file with a silent left channel was read as silence by the runtime). Every
    problem is an EdgeMlaError starting with ``name`` (the file, or the option and
    the file)."""
    import soundfile as sf

    try:
        problem = riff_problem(path)
    except OSError as exc:
        raise EdgeMlaError(f"{name}: cannot read ({exc.strerror})") from None
    if problem:
        raise EdgeMlaError(f"{name}: WAV file {problem}")
    try:
        pcm, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise EdgeMlaError(f"{name}: cannot read as audio ({first_line(exc)})") from None
    if pcm.size == 0:
        raise EdgeMlaError(f"{name}: holds no audio samples")
    if not AUDIO_RATES[0] <= rate <= AUDIO_RATES[1]:  # a 1 Hz header made a 1 s clip 256M samples at 16 kHz
        raise EdgeMlaError(f"{name}: sample rate {rate} Hz is not audio ({AUDIO_RATES[0]}-{AUDIO_RATES[1]} Hz)")
    if not np.isfinite(pcm).all():  # every window was gated out as silence while the mic said ok
        raise EdgeMlaError(f"{name}: holds NaN or infinite samples")
    mono = pcm[:, 0] if pcm.shape[1] == 1 else pcm.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono), int(rate)
