"""Speech synthesis with eSpeak NG through the library that the PyPI package
``espeakng-loader`` ships (no system install, no network).

Used only to build the demo dataset: it is synthetic speech, so accuracy on it says
nothing about real voices.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

_AUDIO_OUTPUT_RETRIEVAL = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_lock = threading.Lock()


class EspeakSynth:
    """Thin ctypes binding: set a voice/rate/pitch, synthesize text, get int16 PCM."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - guarded by the train extra
            raise RuntimeError("espeakng-loader is not installed (pip install 'edge-mla[train]')") from exc
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sample_rate = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, espeakng_loader.get_data_path().encode(), 0))
        if self.sample_rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        self._chunks: list = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = proto(self._on_audio)  # keep a reference: ctypes does not
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n, _events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(self, text: str, voice: str = "en", rate: int = 170, pitch: int = 50, pitch_range: int = 50) -> np.ndarray:
        with _lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self._lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
            self._chunks = []
            data = text.encode()
            self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
            self._lib.espeak_Synchronize()
            out = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return out.astype(np.int16)
