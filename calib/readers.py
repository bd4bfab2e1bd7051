"""Calibration readers: feed preprocessed arrays to ONNX Runtime's calibrator.

The arrays were already made by the one preprocessing (edge_mla.preprocess), so a
reader only batches them; it never transforms data itself.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
from onnxruntime.quantization import CalibrationDataReader


def equal_batch_size(n: int, limit: int) -> int:
    """The largest batch size <= ``limit`` that divides ``n``: ONNX Runtime's
    entropy and percentile calibrators stack every batch's outputs into one array
    and fail on a short last batch."""
    limit = max(1, min(int(limit), n))
    return next(b for b in range(limit, 0, -1) if n % b == 0)


class ArrayCalibrationReader(CalibrationDataReader):
    """Yields ``{input_name: batch}`` dicts over ``data`` (N, ...) float32.

    ``rewind()`` restarts it, so one reader can serve several calibration passes
    (ONNX Runtime consumes a reader once per ``collect_data``).
    """

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 32) -> None:
        data = np.ascontiguousarray(data, dtype=np.float32)
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(f"calibration data for {input_name!r} must be a non-empty (N, ...) array, got shape {data.shape}")
        self.input_name = input_name
        self.data = data
        self.batch_size = equal_batch_size(data.shape[0], batch_size)
        self._it: Optional[Iterator[dict]] = None
        self.rewind()

    def _batches(self) -> Iterator[dict]:
        for s in range(0, self.data.shape[0], self.batch_size):
            yield {self.input_name: self.data[s : s + self.batch_size]}

    def get_next(self) -> Optional[dict]:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()

    def __len__(self) -> int:
        return -(-self.data.shape[0] // self.batch_size)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict to batches [start_index, end_index) (ORT's strided calibration)."""
        sel = self.data[start_index * self.batch_size : end_index * self.batch_size]
        self._it = ({self.input_name: sel[s : s + self.batch_size]} for s in range(0, sel.shape[0], self.batch_size))
