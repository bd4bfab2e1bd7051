"""`edge-mla train` on several processes, and the module torchrun starts.

Two ways in, one code path:

  edge-mla train ... --nproc 2          one machine: runs torch.distributed.run
                                        (--standalone) on this module
  torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
      --rdzv-endpoint HOST:29500 -m edge_mla.cli.ddp ... (train flags)
                                        several machines: every rank runs
                                        `edge-mla train` with torchrun's environment

Only rank 0 writes the run folder. If a rank fails (or torchrun stops the ranks), rank
0 removes the run folder it was writing; with --nproc the launching process also
removes it and prints the failing rank's one-line reason (exit 2).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

from edge_mla.errors import EdgeMlaError
from edge_mla.train.config import TrainConfig
from edge_mla.train.device import cuda_count, resolve_device
from edge_mla.train.dist import World, destroy, world_from_env

# lines of the ranks' own logging (the CLI's format) that the launcher passes through;
# torchrun's own warnings and failure report are dropped in favour of one line
_RANK_LOG = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")
_RANK_ERROR = re.compile(r"^edge-mla train: (error|interrupted)")
# the last line of a rank's traceback: "[rank1]: RuntimeError: ...", "torch.distributed.DistNetworkError: ..."
# (no prefix when it failed before joining the process group), "zipfile.BadZipFile: ..."
_RANK_EXCEPTION = re.compile(r"^(?:\[rank(\d+)\]: )?((?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Interrupt|Exit|File|Failure)\b.*)")
# torchrun's failure report: "  rank      : 1 (local_rank: 1)" and "  exitcode  : -9 (pid: 123)  (SIGKILL)"
_REPORT_RANK = re.compile(r"^\s+rank\s+:\s+(\d+)")
_REPORT_EXIT = re.compile(r"^\s+exitcode\s+:\s+(-?\d+)[^(]*(?:\(pid: \d+\))?\s*(?:\((SIG\w+)\))?")
_LAUNCHER_EXCEPTIONS = ("ChildFailedError", "SignalException")  # torchrun's own summary, not a rank's reason


class FailureReason:
    """Reads torchrun's stderr line by line and keeps the best one-line reason for a
    failed run. In order: a rank's own `edge-mla train: error` line; the signal that
    ended the rank torchrun names as the root cause (the out-of-memory killer's SIGKILL:
    no traceback says more); the last traceback line of that rank, then of any rank;
    the root cause's exit code; a rank's `interrupted` (the ranks torchrun stopped
    after the first one failed)."""

    def __init__(self) -> None:
        self.error: Optional[str] = None
        self.interrupted: Optional[str] = None
        self.exceptions: dict = {}  # rank (None: unknown) -> the last line of its first traceback
        self.root_rank: Optional[str] = None
        self.root: Optional[str] = None
        self.root_signal: Optional[str] = None
        self._in_root = False

    def feed(self, line: str) -> None:
        text = line.rstrip("\n")
        if _RANK_ERROR.match(text):
            said = text.split(": ", 2)[-1]  # "edge-mla train: error: MESSAGE" or "edge-mla train: interrupted"
            if text.startswith("edge-mla train: error") and self.error is None:
                self.error = said
            elif self.interrupted is None:
                self.interrupted = said
            return
        crash = _RANK_EXCEPTION.match(text)
        if crash and not any(name in crash.group(2).split(":", 1)[0] for name in _LAUNCHER_EXCEPTIONS):
            self.exceptions.setdefault(crash.group(1), crash.group(2).strip()[:300])
            return
        if text.startswith("Root Cause"):
            self._in_root = True
        elif self._in_root and self.root is None:
            rank, code = _REPORT_RANK.match(text), _REPORT_EXIT.match(text)
            if rank:
                self.root_rank = rank.group(1)
            elif code:
                sig = self.root_signal = code.group(2)
                how = f"ended by {sig}" if sig else f"exited with code {code.group(1)}"
                self.root = f"rank {self.root_rank}: {how}" if self.root_rank is not None else how

    def reason(self, code: int) -> str:
        if self.error:
            return self.error
        if self.root and self.root_signal:  # killed from outside: no traceback says more
            return self.root
        ranked = sorted(self.exceptions.items(), key=lambda kv: (kv[0] != self.root_rank, kv[0] is not None))
        for rank, text in ranked:
            return f"rank {rank}: {text}" if rank is not None else text
        return self.root or self.interrupted or f"torch.distributed.run exit code {code}"


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ


def wants_launch(cfg: TrainConfig) -> bool:
    """True when this process should start the ranks itself (`--nproc N` outside torchrun)."""
    return cfg.nproc > 1 and not under_torchrun()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def join(cfg: TrainConfig) -> World:
    """This rank's World under torchrun (alone otherwise); cfg.nproc records the world size.
    The device is resolved first: it picks the backend (NCCL on cuda, gloo on cpu), and
    --device cuda without CUDA is one line before any process group or folder."""
    world = world_from_env(resolve_device(cfg.device))
    if world.active:
        cfg.nproc = world.size
        cfg.validate()
        if not world.is_main:
            logging.getLogger().setLevel(logging.WARNING)  # one copy of the progress log
    return world


def _sigterm(signum, frame):  # torchrun stops the other ranks with SIGTERM when one dies
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def rank_guard(cfg: TrainConfig, world: World) -> Iterator[None]:
    """Under torchrun: SIGTERM ends this rank like Ctrl-C (so rank 0's staged run folder
    is removed and an older one survives, see edge_mla.staging), and the process group
    is torn down whatever happens."""
    if not world.active:
        yield
        return
    from edge_mla.train.trainer import default_run_dir

    if cfg.out is None and world.is_main:
        cfg.out = str(default_run_dir(cfg))
    previous = signal.signal(signal.SIGTERM, _sigterm)
    finished = False
    try:
        yield
        finished = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        destroy(barrier=finished)  # a rank that failed must not wait for the others


def _check(cfg: TrainConfig) -> Path:
    if resolve_device(cfg.device) == "cuda":
        gpus = cuda_count()
        if cfg.nproc > gpus:
            raise EdgeMlaError(f"--nproc {cfg.nproc}: more training processes than the {gpus} GPU(s) of this machine (--device {cfg.device} trains one process per GPU; --device cpu uses the cores)")
    else:
        cores = available_cores()
        if cfg.nproc > cores:
            raise EdgeMlaError(f"--nproc {cfg.nproc}: more training processes than the {cores} CPU core(s) this machine gives us")
    from edge_mla.train.trainer import prepare_run_dir

    return prepare_run_dir(cfg)  # the single-process checks: a file, not empty without --force, over its own inputs


def launch(cfg: TrainConfig, test: bool = True, corrupt: bool = True, log_level: str = "INFO") -> int:
    """Run `edge-mla train` as cfg.nproc ranks through torch.distributed.run on this
    machine; the ranks' log lines pass through, a failure becomes one line (exit 2)."""
    out = _check(cfg)
    staged_before = set(out.parent.glob(f".{out.name}.tmp-*")) if out.parent.is_dir() else set()
    values = {**cfg.to_dict(), "out": str(out)}
    with tempfile.TemporaryDirectory(prefix="edge-mla-ddp-") as tmp:
        conf = Path(tmp) / "config.json"
        conf.write_text(json.dumps(values))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", str(cfg.nproc),
               "-m", "edge_mla.cli.ddp", "--config", str(conf), "--log-level", log_level,
               *([] if test else ["--no-test"]), *([] if corrupt else ["--no-corrupt"])]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(cfg.threads or max(1, available_cores() // cfg.nproc)))
        # its own process group: a SIGTERM or Ctrl-C of this launcher is passed on to
        # torchrun and every rank (they trained on and published the run after the
        # launcher had said "interrupted")
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        failure = FailureReason()
        kept: list = []
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                if _RANK_LOG.match(line):
                    sys.stderr.write(line)
                else:
                    failure.feed(line)
                    kept.append(line)
            code = proc.wait()
        except BaseException:
            _stop_group(proc)
            _drop_staging(out, staged_before)
            raise
    if code != 0:
        # Rank 0 writes the run through a staging folder (edge_mla.staging): a failed
        # run never touched ``out``, which may hold the previous run (--force) or be a
        # folder the run refused to replace. Only a staging folder a killed rank left
        # behind is removed.
        _drop_staging(out, staged_before)
        log_note = ""
        if failure.error is None:  # not one of our own one-line errors: keep torchrun's whole story
            log_note = _keep_log(kept)
        raise EdgeMlaError(f"--nproc {cfg.nproc}: a training process failed ({failure.reason(code)}); no run folder written{log_note}")
    return 0


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM torchrun's process group, then SIGKILL what is left after ``grace`` s."""
    import signal as _signal

    for sig, wait in ((_signal.SIGTERM, grace), (_signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _drop_staging(out: Path, before: set) -> None:
    """Remove the staging folders of ``out`` that appeared during this launch."""
    if out.parent.is_dir():
        for tmp in set(out.parent.glob(f".{out.name}.tmp-*")) - before:
            shutil.rmtree(tmp, ignore_errors=True)


def _keep_log(lines: list) -> str:
    """Write torchrun's and the ranks' other stderr lines to a file in the temp folder
    and return the clause naming it ('' if it cannot be written)."""
    try:
        fd, path = tempfile.mkstemp(prefix="edge-mla-ddp-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.writelines(lines)
    except OSError:
        return ""
    return f"; torchrun's output: {path}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The module torchrun runs: `edge-mla train` with the same flags, in torchrun's environment."""
    from edge_mla.cli.main import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


def exit_now(code: int) -> None:
    """End a rank once its work is done and flushed, without the interpreter's
    teardown: destroying torch's distributed objects at exit can abort the process
    ("terminate called without an active exception", SIGABRT; seen on a rank that
    finished first), which torchrun reports as a failed run after the run folder
    was written."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover - started by torchrun
    exit_now(main())
