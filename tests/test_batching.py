"""The shared, batched engine: N callers in, N rows out; a silent station does not
starve the others; failures reach every caller of the batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_mla.runtime.batching import BatchedEngine


class RowSum:
    """run_batch(x) -> (N, 2): [sum of the row, batch size]; records each batch."""

    def __init__(self, gate: threading.Event | None = None):
        self.sizes, self.runs, self.seconds, self.gate = [], 0, 0.0, gate

    def infer_batch(self, x):
        if self.gate is not None:
            self.gate.wait(5)
        self.sizes.append(len(x))
        self.runs += 1
        s = x.reshape(len(x), -1).sum(1)
        return np.stack([s, np.full(len(x), len(x), np.float32)], 1).astype(np.float32), s / 100


def call_all(be: BatchedEngine, xs: list) -> list:
    out = [None] * len(xs)

    def one(i):
        out[i] = be.run(xs[i])

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(5)
    return out


def test_n_inputs_in_n_rows_out_each_to_its_caller():
    eng = RowSum()
    be = BatchedEngine(eng, clients=8, max_wait=1.0)  # generous wait: all 8 arrive in one batch
    xs = [np.full((3, 2), i, np.float32) for i in range(8)]
    out = call_all(be, xs)
    for i, o in enumerate(out):
        assert o.shape == (1, 2) and o[0, 0] == 6 * i
    be.max_wait = 0.0
    logits, rel = be.infer(np.full((3, 2), 2, np.float32))  # the second output travels with its row
    be.close()
    assert logits[0, 0] == 12 and rel == pytest.approx(0.12)
    assert eng.sizes == [8, 1] and be.stats()["items"] == 9


def test_a_silent_station_cannot_starve_the_others():
    eng = RowSum()
    be = BatchedEngine(eng, clients=4, max_wait=0.02)  # 4 stations share it, only 2 ever call
    for _ in range(5):
        out = call_all(be, [np.ones((2,), np.float32), np.ones((2,), np.float32)])
        assert all(o is not None and o[0, 0] == 2 for o in out)
    be.close()
    assert max(eng.sizes) <= 2 and sum(eng.sizes) == 10


def test_calls_beyond_one_batch_are_served_in_the_next():
    gate = threading.Event()
    eng = RowSum(gate)
    be = BatchedEngine(eng, clients=2, max_wait=0.5)
    res: list = []
    ts = [threading.Thread(target=lambda i=i: res.append(be.run(np.full((1,), i, np.float32)))) for i in range(5)]
    for t in ts:
        t.start()
    gate.set()
    for t in ts:
        t.join(5)
    be.close()
    assert len(res) == 5 and sum(eng.sizes) == 5 and max(eng.sizes) <= 2
    assert sorted(float(r[0, 0]) for r in res) == [0, 1, 2, 3, 4]


def test_one_client_never_waits_for_a_batch():
    eng = RowSum()
    be = BatchedEngine(eng, clients=1, max_wait=10.0)  # would hang 10 s per call if it waited
    done = threading.Event()
    threading.Thread(target=lambda: (be.run(np.zeros(3, np.float32)), done.set())).start()
    assert done.wait(3)
    be.close()


def test_engine_failure_reaches_every_caller_and_close_unblocks():
    class Boom:
        runs, seconds = 0, 0.0

        def infer_batch(self, x):
            raise ValueError("bad input shape")

    be = BatchedEngine(Boom(), clients=2, max_wait=0.5)
    errs = []

    def one():
        try:
            be.run(np.zeros(2, np.float32))
        except ValueError as e:
            errs.append(str(e))

    ts = [threading.Thread(target=one) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(5)
    assert errs == ["bad input shape"] * 2
    be.close()
    with pytest.raises(RuntimeError, match="closed"):
        be.run(np.zeros(2, np.float32))
