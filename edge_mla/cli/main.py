"""Entry point of the `edge-mla` console script.

Each subcommand lives in its own module exposing ``register(subparsers, common)``
(adds its parser with ``parents=[common]`` and sets ``func``) and is imported only when listed here, so `edge-mla run` on
a device never imports torch. User errors (EdgeMlaError) print one line and exit 2;
Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from edge_mla import __version__
from edge_mla.errors import EdgeMlaError

# subcommand name -> module that registers it
COMMANDS = {
    "data": "edge_mla.cli.data_cmd",
    "train": "edge_mla.cli.train_cmd",
    "eval": "edge_mla.cli.eval_cmd",
    "export": "edge_mla.cli.export_cmd",
    "run": "edge_mla.cli.run_cmd",
    "profile": "edge_mla.cli.profile_cmd",
    "demo": "edge_mla.cli.demo_cmd",
    "doctor": "edge_mla.cli.doctor_cmd",
}
# one line per command for `edge-mla --help`, which must not import the commands
SUMMARIES = {
    "data": "build the demo dataset or describe a dataset",
    "train": "train MLA or a baseline -> run folder",
    "eval": "accuracy per modality, fused, missing and corrupted inputs",
    "export": "one engine per modality (ONNX FP32/INT8, TensorRT) + manifest.json",
    "run": "the streaming runtime: camera + mic -> fused decisions",
    "profile": "latency per engine, precision, backend and runtime stage",
    "demo": "the whole path on built-in data (what `make demo` runs)",
    "doctor": "what this machine has for the runtime (OK/WARN/FAIL per line)",
}

DESCRIPTION = """\
edge-mla: train a camera + microphone classifier with MLA, export one engine per
modality (ONNX FP32/INT8, TensorRT), and run it as a streaming runtime.

  edge-mla data demo                 build the built-in demo dataset
  edge-mla train --dataset avmnist   train (MLA or a baseline) -> run folder
  edge-mla eval RUN_DIR              accuracy per modality, fused, missing/corrupted
  edge-mla export RUN_DIR --int8     engines + manifest.json
  edge-mla run --engines DIR --camera 0 --mic default
  edge-mla profile DIR               latency per engine, precision, stage
"""


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-mla", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edge-mla {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            # A cheap placeholder keeps `edge-mla --help` listing every command
            # without importing their (possibly heavy) modules.
            sub.add_parser(name, help=SUMMARIES[name], add_help=False)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("edge_mla.cli"):
                continue  # subcommand not built yet
            raise
        mod.register(sub, common)
    return parser


# arguments that name a file or folder, by their argparse dest
PATH_ARGUMENTS = ("run_dir", "engines", "data_dir", "out", "config", "replay", "calib_data", "clips")


def _empty_path_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[str]:
    """The flag (or positional) of a path argument given as "" or blanks, or None."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[args.command]._actions:
        value = getattr(args, action.dest, None)
        if action.dest in PATH_ARGUMENTS and isinstance(value, (str, os.PathLike)) and not str(value).strip():
            return action.option_strings[0] if action.option_strings else action.metavar or action.dest
    return None


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A SIGTERM (a job scheduler, `kill`) becomes KeyboardInterrupt, so every command
    cleans up (temporary folders removed, outputs closed) exactly as on Ctrl-C instead
    of dying mid-write. `edge-mla run` installs its own handler inside (stop cleanly)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = next((a for a in argv if a in COMMANDS), None)
    interrupted = _watch_interrupts()
    try:
        return _main(argv, only)
    except (KeyboardInterrupt, ImportError) as exc:  # Ctrl-C anywhere, also while the parser imports the command's
        if isinstance(exc, ImportError) and not interrupted.is_set():  # modules (in onnxruntime's native init: an ImportError)
            raise
        print(f"edge-mla {only or ''}: interrupted".replace(" :", ":"), file=sys.stderr)
        return 130


def _watch_interrupts() -> threading.Event:
    """An Event set by Ctrl-C: an interrupt that lands inside a native module's
    initialisation surfaces as an ImportError, which is then told apart."""
    seen = threading.Event()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        def handler(signum, frame):
            seen.set()
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, handler)
    return seen


def _main(argv: list, only: Optional[str]) -> int:
    parser = build_parser(only=only if only else "__none__")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, getattr(args, "log_level", "INFO")), format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    empty = _empty_path_argument(parser, args)
    if empty:  # Path("") is the current folder: `eval ''` read it, `--replay ''` replayed it
        print(f"edge-mla {args.command}: error: {empty}: an empty path (leave the option out instead)", file=sys.stderr)
        return 2
    real_stdout, sys.stdout = sys.stdout, _StdoutGuard(sys.stdout)
    try:
        with _sigterm_as_interrupt():
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a full disk shows here, not in the interpreter's exit
            return code
    except _StdoutFailed as exc:  # `edge-mla data info > /dev/full`: a traceback before
        _quiet_stdout()
        print(f"edge-mla {args.command}: error: cannot write to standard output ({exc.strerror})", file=sys.stderr)
        return 1
    except EdgeMlaError as exc:
        one_line = " ".join(str(exc).split())  # a message quoting user text never breaks the one line
        print(f"edge-mla {args.command}: error: {one_line}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `edge-mla data info ... | head -1`: the reader has what it wanted
        _quiet_stdout()
        return 141
    finally:
        sys.stdout = real_stdout


class _StdoutFailed(OSError):
    """Writing to standard output failed (not a closed pipe): told apart from the
    OSErrors of files a command opens itself."""


class _StdoutGuard:
    """sys.stdout while a command runs: its write errors become _StdoutFailed."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def _guard(self, fn, *a):
        try:
            return fn(*a)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _StdoutFailed(exc.errno, exc.strerror) from None

    def write(self, text: str) -> int:
        return self._guard(self._inner.write, text)

    def flush(self) -> None:
        self._guard(self._inner.flush)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's exit flush does not raise again
    (a second traceback, 'Exception ignored ... BrokenPipeError')."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
