"""Hot model swap: a new engine folder replaces the running one without a restart.

On SIGHUP (``request()``), or under ``--watch`` when the folder's manifest.json
changes, the new folder is loaded *beside* the old engines, on this thread:
manifest and sha256 of every file (load_manifest), ONNX Runtime sessions checked
against the manifest (Engine), and one warm-up inference per engine whose output
must be finite with one logit per class. Only then is the switch handed to the
runtime, which applies it on the fusion thread between two decisions (all
modalities at once). Anything wrong -> one log line, a counted refusal, and the
old engines keep running. A folder with other classes or without a modality in
use is refused too: that is a different model, which needs a restart.

Results already computed by the old engines stay in fusion until newer ones
replace them (a few tens of ms for the image engine, one hop for audio), so there
is no gap in decisions.

Deploy by writing the engine files first and manifest.json last (or renaming a
whole folder into place): the manifest is what triggers --watch.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edge_mla.errors import EdgeMlaError
from edge_mla.manifest import load_manifest
from edge_mla.runtime.clock import now

log = logging.getLogger(__name__)


def folder_checksum(root: Path) -> str:
    """Short sha256 of manifest.json, which holds the sha256 of every engine file:
    it names the exact engines running (JSON lines and metrics carry it)."""
    try:
        return hashlib.sha256((Path(root) / "manifest.json").read_bytes()).hexdigest()[:16]
    except OSError:
        return "unreadable"


def _manifest_signature(root: Path) -> Optional[tuple]:
    try:
        st = (Path(root) / "manifest.json").stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def warm_up(engine, num_classes: int) -> None:
    """One inference on a blank input shaped as the sensor's preprocessing shapes it
    (``graph.example_input``; zeros of the manifest's shape where no kind declares
    one); raise one line if it fails or its output is not (1, classes) and finite.
    Why at start too: a manifest whose named axes hide a size the engine does not
    take, an engine with another input type, or one that gives NaN, otherwise passed
    the load checks and failed on every frame (or sent NaN decisions)."""
    from edge_mla.runtime.graph import example_input

    x = example_input(engine.spec)
    if x is None:
        x = np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in engine.spec.input_shape[1:]], np.float32)
    try:
        out = np.asarray(engine.run(x))
    except EdgeMlaError:
        raise
    except Exception as exc:  # the backend's own error (ONNX Runtime, TensorRT), on one line
        said = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise EdgeMlaError(f"{engine.spec.path}: warm-up inference on a blank {engine.spec.modality} input of shape {list(x.shape)} failed ({said})") from None
    if out.shape != (1, num_classes):
        raise EdgeMlaError(f"{engine.spec.path}: warm-up inference gave logits of shape {out.shape} (expected (1, {num_classes}))")
    if not np.all(np.isfinite(out)):
        raise EdgeMlaError(f"{engine.spec.path}: warm-up inference on a blank {engine.spec.modality} input gave non-finite logits (NaN or inf)")


class EngineSwapper:
    """Thread that prepares swaps; ``check(manifest)`` (the runtime's) returns what
    the runtime needs from the new folder besides its engines (its reliability
    constants) or raises EdgeMlaError to refuse it, before any engine opens;
    ``open_engine(manifest, modality)`` (the runtime's, or a MultiRuntime's that
    shares engines between stations) returns a checked, warmed-up engine, and
    ``apply(manifest, engines, checksum, checked)`` (the runtime's) performs the
    switch between two decisions."""

    def __init__(self, root: Path, modalities: list, classes: list, open_engine: Callable, apply: Callable, stop: threading.Event, watch: bool = False, period: float = 1.0,
                 check: Optional[Callable] = None, station: str = "") -> None:
        self.root = Path(root)
        self._who = f" [{station}]" if station else ""  # which station swapped, in a --config run
        self.modalities = list(modalities)
        self.classes = list(classes)
        self.open_engine = open_engine
        self._apply = apply
        self._check = check
        self._stop = stop
        self.watch, self.period = watch, period
        self._requested = threading.Event()
        self._signature = _manifest_signature(self.root)
        self.swaps = {"ok": 0, "refused": 0}
        self.last_seconds: Optional[float] = None  # load + check + switch of the last good swap
        self._thread = threading.Thread(target=self._run, name="engine-swap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """Ask for a swap (safe from a signal handler)."""
        self._requested.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            fired = self._requested.wait(self.period if self.watch else 0.5)
            if self._stop.is_set():
                break
            if not fired and self.watch:
                sig = _manifest_signature(self.root)
                if sig is None or sig == self._signature:
                    continue
                self._signature = sig
                if self._stop.wait(0.2):  # let a writer finish the file
                    break
            elif not fired:
                continue
            self._requested.clear()
            self._signature = _manifest_signature(self.root)
            self.swap_now()

    def swap_now(self) -> bool:
        """Load, check and switch; False (one log line) when the folder is refused."""
        t0 = now()
        try:
            manifest, engines, checked = self._load()
        except EdgeMlaError as exc:
            self.swaps["refused"] += 1
            log.error("engine swap%s refused: %s; the running engines stay", self._who, exc)
            return False
        except Exception as exc:  # anything else the new folder triggers: still refused
            self.swaps["refused"] += 1
            log.error("engine swap%s refused: %s: %s; the running engines stay", self._who, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return False
        checksum = folder_checksum(self.root)
        self._apply(manifest, engines, checksum, checked)
        self.last_seconds = now() - t0
        self.swaps["ok"] += 1
        log.info("engine swap%s: now running %s (checksum %s; loaded and checked in %.2fs)", self._who, self.root, checksum, self.last_seconds)
        return True

    def _load(self) -> tuple:
        manifest = load_manifest(self.root)
        if manifest.classes != self.classes:
            raise EdgeMlaError(f"{self.root}: the new manifest has other classes ({', '.join(manifest.classes)}); restart the runtime for a different model")
        missing = [m for m in self.modalities if m not in manifest.modalities]
        if missing:
            raise EdgeMlaError(f"{self.root}: the new folder has no {', '.join(missing)} engine")
        checked = self._check(manifest) if self._check is not None else None
        return manifest, {m: self.open_engine(manifest, m) for m in self.modalities}, checked

    def join(self, timeout: float = 5.0) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)
