"""Event-driven fusion: a decision follows each fresh result at once, capped per
modality at --rate, with a heartbeat when results stop."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_mla.runtime.clock import now
from edge_mla.runtime.fusion_loop import FusionLoop
from edge_mla.runtime.workers import Result


def run_loop(rate: float, feed, seconds: float):
    """Run a FusionLoop whose results come from ``feed(loop, latest, stop)``."""
    latest: dict = {"image": None, "audio": None}
    recs = []
    stop = threading.Event()
    loop = FusionLoop(lambda: dict(latest), lambda: {}, [str(i) for i in range(3)], rate, 1.0, lambda rec, timing: recs.append((now(), rec, timing)), stop)
    loop.start()
    feeder = threading.Thread(target=feed, args=(loop, latest, stop))
    feeder.start()
    time.sleep(seconds)
    stop.set()
    feeder.join(2)
    loop.join(2)
    return loop, recs


def publish(loop, latest, m, seq):
    t = now()
    latest[m] = Result(m, np.array([[3.0, 0.0, 0.0]], np.float32), t, t, t, t, seq)
    loop.notify(m)


def first_use_delay(recs, modality: str) -> dict:
    """seq -> seconds from a result's publication to the first decision that used it
    (the feeder stamps capture = done = publication)."""
    out: dict = {}
    for t, rec, timing in recs:
        r = timing["results"][modality]
        if r is not None and r.seq not in out:
            out[r.seq] = t - r.t_done
    return out


def test_decides_right_after_each_result_and_caps_a_fast_camera():
    def feed(loop, latest, stop):
        seq = 0
        while not stop.wait(1 / 30):  # a 30 fps camera
            seq += 1
            publish(loop, latest, "image", seq)

    loop, recs = run_loop(rate=10, feed=feed, seconds=2.0)
    decided = [r for r in recs if r[1]["decision"]]
    assert 14 <= len(decided) <= 22  # ~10/s for 2 s: the cap holds, nothing piles up
    assert loop.heartbeats <= 2  # results keep coming: no heartbeat needed


def test_each_result_of_a_slower_modality_triggers_one_decision_at_once():
    def feed(loop, latest, stop):
        seq = 0
        while not stop.wait(0.25):  # the mic's hop: 4 results/s, below the cap of 10
            seq += 1
            publish(loop, latest, "audio", seq)

    loop, recs = run_loop(rate=10, feed=feed, seconds=2.1)
    first_use = first_use_delay(recs, "audio")
    assert len(first_use) >= 7
    # a fixed 10 Hz tick would use each result 0-100 ms after it arrived (median ~50)
    assert np.median(list(first_use.values())) < 0.025


def test_heartbeat_reports_when_results_stop():
    def feed(loop, latest, stop):
        publish(loop, latest, "image", 1)  # one result, then silence

    loop, recs = run_loop(rate=10, feed=feed, seconds=1.6)
    assert loop.heartbeats >= 10  # ~10/s without results
    late = [rec for t, rec, timing in recs if rec["modalities"]["image"].get("age") is not None and rec["modalities"]["image"]["age"] > 1.0]
    assert late and all(not r["decision"] and r["reason"] == "no fresh modality" for r in late)


def test_flow_limiter_admits_at_most_rate_with_slack_for_jitter():
    from edge_mla.runtime.clock import RATE_SLACK, FlowLimiter

    lim = FlowLimiter(10)
    frames = [i / 30 for i in range(31)]  # one second of a 30 fps camera
    admitted = [t for t in frames if lim.admit(t)]
    assert admitted == frames[::3]  # every third frame: 0, 0.1, 0.2, ... (float spacing 0.0999.. admitted)
    assert lim.refused == 20
    late = FlowLimiter(10)
    assert late.admit(0.0) and not late.admit(0.1 * (1 - RATE_SLACK) - 1e-6) and late.admit(0.1 * (1 - RATE_SLACK) + 1e-6)
    every = FlowLimiter(None)
    assert all(every.admit(t) for t in frames) and every.refused == 0


def test_worker_runs_fast_camera_frames_at_most_rate_as_they_arrive():
    """A 30 fps camera under --rate 10: the image engine runs on every third frame as
    it arrives (no frame waits in the slot for a tick), the rest are passed over."""
    from edge_mla.runtime.sources.base import Item, LatestSlot
    from edge_mla.runtime.workers import Worker

    class Engine:
        runs = 0

        def run(self, x):
            Engine.runs += 1
            return np.zeros((1, 3), np.float32)

    slot, stop, results = LatestSlot(), threading.Event(), []
    w = Worker("image", Engine(), slot.get_newer, lambda x: x, None, stop, on_result=lambda m: results.append(w.latest()), limit=10)
    w.start()
    for seq in range(1, 61):  # 2 s of frames
        slot.put(Item(np.zeros((1, 4, 4), np.float32), now(), seq))
        time.sleep(1 / 30)
    stop.set()
    w.join(2)
    # ~20 runs (every third frame); the rest passed over, not dropped. Bounds allow a
    # loaded machine: late frames make the limiter take every second one at worst
    assert 10 <= w.results <= 30 and w.results + w.limited >= 50
    gaps = np.diff([r.t_capture for r in results])
    assert gaps.min() >= 0.09 * 0.99  # never two runs within a period (less the slack)
    assert np.median([r.t_pre - r.t_capture for r in results]) < 0.02  # run on arrival, not after a wait


def test_results_paced_at_the_rate_each_trigger_their_own_decision():
    """Results already limited to --rate arrive 97-103 ms apart: each triggers its
    own decision (the slack), none waits for the next one."""

    def feed(loop, latest, stop):
        seq = 0
        while not stop.wait(0.097 if seq % 2 else 0.103):
            seq += 1
            publish(loop, latest, "image", seq)

    loop, recs = run_loop(rate=10, feed=feed, seconds=2.05)
    first_use = first_use_delay(recs, "image")
    assert len(first_use) >= 15
    # a held result would wait ~0.1 s for the next one; decided at once is well under 0.05
    assert np.mean(np.array(list(first_use.values())) < 0.05) >= 0.9
