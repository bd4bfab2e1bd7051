"""Training on 2 processes (torch.distributed, gloo on CPU): the ranks stay identical,
the data are sharded without overlap, the run folder is the single-process one, and
failures give one line and no run folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_mla.cli.main import main
from edge_mla.data import PairedSplit
from edge_mla.train.dist import World, shard_batches

HERE = Path(__file__).resolve().parent


def _torchrun(out: Path, method: str) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(HERE / "ddp_worker.py"), str(out), method],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return [torch.load(out / f"rank{i}.pt", weights_only=False) for i in range(2)]


@pytest.mark.parametrize("method", ["mla", "ogm_ge", "mmpareto"])
def test_two_ranks_stay_identical(tmp_path, method):
    """After a few steps on different shards, every weight and BatchNorm statistic and
    MLA's projector P are the same on both ranks (each rank started from different
    weights, so the broadcast, gradient averaging and all-reduced statistics are what
    make them equal), and training moved the weights."""
    r0, r1 = _torchrun(tmp_path, method)
    assert r0["world"] == r1["world"] == 2
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    for k in r0["buffers"]:
        assert torch.equal(r0["buffers"][k], r1["buffers"][k]), k
    if method == "mla":
        assert r0["P_updates"] == r1["P_updates"] == 7  # 4 batches x 2 modality steps, the first not projected
        assert torch.equal(r0["P"], r1["P"])
        assert float(r0["P"].norm()) < 8.0 - 1e-3  # it moved from the identity (|I|_F = 8)
    if method == "ogm_ge":
        assert r0["ogm"] == r1["ogm"] and set(r0["ogm"]) == {"ogm_coeff_image", "ogm_coeff_audio"}


def test_shards_cover_each_global_batch_without_overlap():
    n, batch = 53, 12
    split = PairedSplit(np.zeros((n, 1, 2, 2), np.float32), [np.zeros(10, np.int16)] * n, np.arange(n), np.arange(n), np.arange(n))
    for size in (1, 2, 3):
        shards = [list(shard_batches(split, batch, 10, np.random.default_rng(5), World(rank=r, size=size))) for r in range(size)]
        order = np.random.default_rng(5).permutation(n)[: n - n % size]
        assert len({len(s) for s in shards}) == 1  # the same number of steps on every rank
        for b in range(len(shards[0])):
            parts = [shards[r][b][2] for r in range(size)]
            assert len({len(p) for p in parts}) == 1  # equal shard sizes: lockstep, equal weights in the mean
            assert sorted(np.concatenate(parts)) == sorted(order[b * batch : (b + 1) * batch])
        seen = np.concatenate([s[2] for r in range(size) for s in shards[r]])
        assert len(seen) == len(set(seen)) == n - n % size


def _cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edge_mla.cli.main", *args], capture_output=True, text=True, timeout=900, env=env, **kw)


def _kept_log(stderr: str) -> str:
    """The torchrun output the launcher kept on a failure (named at the end of its line)."""
    if "torchrun's output: " not in stderr:
        return ""
    path = Path(stderr.rsplit("torchrun's output: ", 1)[1].split()[0])
    return "\n--- torchrun's output ---\n" + (path.read_text()[-6000:] if path.is_file() else "(gone)")


def _listing(run: Path) -> list:
    return sorted(p.name for p in run.iterdir())


@pytest.mark.slow
def test_two_process_run_folder_is_the_single_process_one(tmp_path, demo_cache):
    base = ["train", "--dataset", "demo", "--epochs", "1", "--limit", "192", "--batch-size", "32", "--val-limit", "96", "--threads", "1",
            "--no-progress", "--no-corrupt", "--method", "mla"]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _cli(*base, "--out", str(one))
    assert r1.returncode == 0, r1.stderr
    r2 = _cli(*base, "--nproc", "2", "--out", str(two))
    assert r2.returncode == 0, r2.stderr + _kept_log(r2.stderr)
    assert _listing(one) == _listing(two)
    c1, c2 = (json.loads((d / "config.json").read_text()) for d in (one, two))
    assert set(c1) == set(c2) and set(c1["train"]) == set(c2["train"])
    assert c2["train"]["nproc"] == 2 and c1["train"]["nproc"] == 1
    m1, m2 = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two))
    assert [set(x) for x in m1] == [set(x) for x in m2]
    t1, t2 = (json.loads((d / "test.json").read_text()) for d in (one, two))
    assert set(t1) == set(t2)
    assert r2.stderr.count("run folder") == 1  # rank 0 alone logs; torchrun's own chatter is not passed through
    r = _cli("eval", str(two), "--json", "--no-corrupt")
    assert r.returncode == 0, r.stderr


def test_nproc_beyond_the_cores_is_one_line(tmp_path, capsys):
    n = len(os.sched_getaffinity(0)) + 1
    assert main(["train", "--nproc", str(n), "--batch-size", str(16 * n), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--nproc {n}: more training processes than the" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_batch_not_divisible_by_nproc(capsys):
    assert main(["train", "--nproc", "2", "--batch-size", "33"]) == 2
    assert "--batch-size 33 is the global batch and must be a multiple of --nproc 2" in capsys.readouterr().err


def test_a_failing_rank_gives_one_line_and_no_run_folder(tmp_path):
    r = _cli("train", "--dataset", "avmnist", "--data-dir", str(tmp_path / "nowhere"), "--nproc", "2", "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "a training process failed" in lines[0] and "does not exist" in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_a_failed_launch_never_deletes_out_nor_what_it_holds(tmp_path, capsys):
    """The launcher removed --out after any failure: with --force the previous run,
    and a folder the run refused to replace (the current folder, the data folder).
    The launcher now checks --out as a single process does, and a failure leaves it."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "checkpoint.pt").write_text("the previous run")
    r = _cli("train", "--dataset", "avmnist", "--data-dir", str(tmp_path / "nowhere"), "--nproc", "2", "--out", str(old), "--force")
    assert r.returncode == 2 and "a training process failed" in r.stderr, r.stderr
    assert (old / "checkpoint.pt").read_text() == "the previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no staging folder left either
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("x")
    assert main(["train", "--dataset", "folder", "--data-dir", str(data), "--nproc", "2", "--out", str(tmp_path), "--force"]) == 2
    assert "holds the data folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--nproc", "2", "--out", str(tmp_path / "afile")]) == 2  # a NotADirectoryError traceback before
    assert "exists and is not a folder" in capsys.readouterr().err
    assert (data / "keep.txt").read_text() == "x"


def _rank_pid(root: int, local_rank: str):
    """The pid of the process below ``root`` whose environment says LOCAL_RANK=local_rank."""
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LOCAL_RANK={local_rank}".encode() in env:
            return pid
        todo += children.get(pid, [])
    return None


@pytest.mark.slow
def test_a_rank_killed_mid_training_leaves_no_run_folder(tmp_path, demo_cache):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_mla.cli.main", "train", "--dataset", "demo", "--epochs", "50", "--batch-size", "32",
                             "--threads", "1", "--no-progress", "--nproc", "2", "--out", str(run)], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300

    def staged() -> list:  # rank 0 writes into a temporary folder beside the run folder (edge_mla.staging)
        return list(tmp_path.glob(".run.tmp-*/config.json"))

    while not staged() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert staged(), "rank 0 never started writing"
    pid = _rank_pid(proc.pid, "1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in err.strip().splitlines() if not ln[:2].isdigit()]  # rank 0's own log lines start with a time
    assert len(lines) == 1 and "a training process failed" in lines[0], err
    assert not run.exists() and not staged() and not list(tmp_path.glob(".run.tmp-*"))


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank(tmp_path, demo_cache):
    """SIGTERM (systemd stop, kill) reached only the launcher: torchrun and the ranks
    were re-parented, trained on and published the run after it said 'interrupted'."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_mla.cli.main", "train", "--dataset", "demo", "--epochs", "50", "--batch-size", "32",
                             "--threads", "1", "--no-progress", "--nproc", "2", "--out", str(run)], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while not list(tmp_path.glob(".run.tmp-*/config.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    ranks = [_rank_pid(proc.pid, r) for r in ("0", "1")]
    assert all(ranks), "the ranks never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted" in err, err
    time.sleep(2)
    for pid in ranks:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), f"rank {pid} still running"
    assert not run.exists() and not list(tmp_path.glob(".run.tmp-*"))


_KILLED = """[rank0]: Traceback (most recent call last):
[rank0]: RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1234
edge-mla train: interrupted
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_07:28:01
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 12292)  (SIGKILL)
  error_file: <N/A>
"""

_RAISED = """[rank0]: zipfile.BadZipFile: not this one, rank 1 failed first
  File "x.py", line 3, in <module>
[rank1]: torch.distributed.DistBackendError: boom here
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 12307)
"""


@pytest.mark.parametrize("text, reason", [
    (_KILLED, "rank 1: ended by SIGKILL"),
    (_RAISED, "rank 1: torch.distributed.DistBackendError: boom here"),
    ("torch.distributed.DistNetworkError: failed to connect to localhost:29500\n", "torch.distributed.DistNetworkError: failed to connect to localhost:29500"),
    ("edge-mla train: interrupted\nedge-mla train: error: --data-dir x: does not exist\n", "--data-dir x: does not exist"),
    ("Root Cause (first observed failure):\n  rank      : 0 (local_rank: 0)\n  exitcode  : 3 (pid: 1)\n", "rank 0: exited with code 3"),
    ("some warning\n", "torch.distributed.run exit code 1"),
])
def test_failure_reason_from_torchrun_output(text, reason):
    """Whatever way a rank fails (its own error line, a traceback with or without the
    rank prefix, a dotted exception name, a signal from outside), the launcher's one
    line names it."""
    from edge_mla.cli.ddp import FailureReason

    f = FailureReason()
    for line in text.splitlines(True):
        f.feed(line)
    assert f.reason(1) == reason
