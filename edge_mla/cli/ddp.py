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
from edge_mla.train.dist import World, destroy, world_from_env

# lines of the ranks' own logging (the CLI's format) that the launcher passes through;
# torchrun's own warnings and failure report are dropped in favour of one line
_RANK_LOG = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ")
_RANK_ERROR = re.compile(r"^edge-mla train: (error|interrupted)")
_RANK_EXCEPTION = re.compile(r"^\[rank(\d+)\]: (\w+(Error|Exception|Interrupt)\b.*)")  # the last line of a rank's traceback


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
    """This rank's World under torchrun (alone otherwise); cfg.nproc records the world size."""
    world = world_from_env()
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
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        destroy()


def _check(cfg: TrainConfig) -> Path:
    cores = available_cores()
    if cfg.nproc > cores:
        raise EdgeMlaError(f"--nproc {cfg.nproc}: more training processes than the {cores} CPU core(s) this machine gives us")
    from edge_mla.train.trainer import default_run_dir

    out = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if out.exists() and any(out.iterdir()) and not cfg.force:
        raise EdgeMlaError(f"{out}: run folder exists and is not empty (use --force to overwrite)")
    return out


def launch(cfg: TrainConfig, test: bool = True, corrupt: bool = True, log_level: str = "INFO") -> int:
    """Run `edge-mla train` as cfg.nproc ranks through torch.distributed.run on this
    machine; the ranks' log lines pass through, a failure becomes one line (exit 2)."""
    out = _check(cfg)
    existed = out.exists() and any(out.iterdir())
    values = {**cfg.to_dict(), "out": str(out)}
    with tempfile.TemporaryDirectory(prefix="edge-mla-ddp-") as tmp:
        conf = Path(tmp) / "config.json"
        conf.write_text(json.dumps(values))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", str(cfg.nproc),
               "-m", "edge_mla.cli.ddp", "--config", str(conf), "--log-level", log_level,
               *([] if test else ["--no-test"]), *([] if corrupt else ["--no-corrupt"])]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(cfg.threads or max(1, available_cores() // cfg.nproc)))
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        reason: Optional[str] = None
        assert proc.stderr is not None
        for line in proc.stderr:
            crash = _RANK_EXCEPTION.match(line)
            if _RANK_ERROR.match(line) and reason is None:
                reason = line.strip().split(": ", 2)[-1]
            elif crash and reason is None:
                reason = f"rank {crash.group(1)}: {crash.group(2)[:300]}"
            elif _RANK_LOG.match(line):
                sys.stderr.write(line)
        code = proc.wait()
    if code != 0:
        if out.exists() and (not existed or cfg.force):
            shutil.rmtree(out, ignore_errors=True)
        raise EdgeMlaError(f"--nproc {cfg.nproc}: a training process failed ({reason or f'torch.distributed.run exit code {code}'}); no run folder written")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The module torchrun runs: `edge-mla train` with the same flags, in torchrun's environment."""
    from edge_mla.cli.main import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover - started by torchrun
    sys.exit(main())
