"""One engine shared by several stations, run on batches.

Stations that use the same engine file share one ``BatchedEngine``. Each station's
worker still takes its own newest input at its own pace and calls ``run(x)``; the
engine's batcher thread gathers the calls that are waiting, up to one per client,
for at most ``max_wait`` seconds after the first arrives (DeepStream's stream muxer
and Triton's dynamic batcher work the same way), runs them as one batch and hands
each caller its row. So N stations cost one engine call per tick instead of N, a
slow or dead station cannot hold the others back for longer than ``max_wait``, and
with one station nothing waits at all (the batch is full as soon as it arrives).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class _Request:
    x: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    out: Optional[tuple] = None  # (logits (1, C), reliability or None)
    error: Optional[BaseException] = None


class BatchedEngine:
    """Wraps an engine with ``infer_batch(x) -> (logits (N, C), reliability (N,) or
    None)``; ``infer(x)`` (one example, no batch axis) blocks until the batch holding
    it has run and returns its row: (logits (1, C), reliability or None).

    ``clients`` is how many workers share it (the batch is full when each has one
    call waiting); ``max_wait`` bounds how long the first call waits for the others.
    """

    def __init__(self, engine, clients: int, max_wait: float = 0.005, name: str = "engine") -> None:
        self.engine = engine
        self.spec = getattr(engine, "spec", None)
        self.clients = max(int(clients), 1)
        self.max_wait = max(float(max_wait), 0.0)
        self._cv = threading.Condition()
        self._pending: list = []
        self._closed = False
        self.batches = 0
        self.items = 0
        self.batch_sizes: dict = {}  # size -> count
        self._thread = threading.Thread(target=self._loop, name=f"{name}-batcher", daemon=True)
        self._thread.start()

    # the Engine surface the workers and reports use
    @property
    def runs(self) -> int:
        return self.engine.runs

    @property
    def seconds(self) -> float:
        return self.engine.seconds

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.infer(x)[0]

    def infer(self, x: np.ndarray) -> tuple:
        req = _Request(np.asarray(x, np.float32))
        with self._cv:
            if self._closed:
                raise RuntimeError("batched engine is closed")
            self._pending.append(req)
            self._cv.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.out

    def _take_batch(self) -> list:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait(0.5)
            if self._closed and not self._pending:
                return []
            deadline = time.monotonic() + self.max_wait
            while len(self._pending) < self.clients and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, self._pending = self._pending[: self.clients], self._pending[self.clients :]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            try:
                logits, rel = self.engine.infer_batch(np.stack([r.x for r in batch]))
                for i, r in enumerate(batch):
                    r.out = (logits[i : i + 1], None if rel is None else float(rel[i]))
            except BaseException as exc:  # every caller sees the failure of its batch
                for r in batch:
                    r.error = exc
            self.batches += 1
            self.items += len(batch)
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            for r in batch:
                r.done.set()

    def close(self, timeout: float = 2.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        for r in self._pending:  # callers still waiting get an error, not a hang
            r.error = RuntimeError("batched engine closed")
            r.done.set()

    def stats(self) -> dict:
        return {"batches": self.batches, "items": self.items, "mean_batch": self.items / max(self.batches, 1), "batch_sizes": dict(sorted(self.batch_sizes.items()))}
