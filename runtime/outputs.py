"""Where decisions go: JSON lines (stdout or a file), a readable console line, and
the summary printed on exit.

Every JSON line is flushed as it is written, so a consumer tailing the file (or a
killed runtime) never loses a finished decision. One line (abridged)::

    {"time": 1795765718.803,          # wall clock (epoch seconds) of the decision
     "t": 12.327,                     # seconds since the runtime started (monotonic)
     "decision": true, "label": "3", "class_index": 3, "confidence": 0.97,
     "used": ["image", "audio"],      # modalities fused into this decision
     "modalities": {"image": {"used": true, "age": 0.02, "weight": 0.71, "label": "3",
                              "confidence": 0.99, "logits": [...]},
                    "audio": {"used": false, "age": 1.8, "weight": 0.0, ...}},   # stale
     "sensors": {"camera": {"state": "ok", "since": 8.1, "reconnects": 1, "failures": 3, "overflows": 0},
                 "mic": {"state": "lost", ...}},
     "engines": "dbd2115376425968"}  # checksum of the running engine folder (changes on a hot swap)

With no fresh modality: ``"decision": false, "label": null, "reason": "no fresh modality"``.
With engines that have a reliability output, each modality also carries
``"fresh"`` and ``"reliability"`` (0..1; below the manifest's threshold it is not
``used``), and when every fresh modality is unreliable: ``"decision": false,
"reason": "all sensors degraded"``.
Sensor states: starting, ok, lost (reconnecting), frozen (identical frames), blank (blank
frames), degraded (alive, but judged unreliable for --degraded-hold seconds), ended, stopped.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import IO, Optional

from edge_mla.errors import EdgeMlaError, first_line
from edge_mla.validate import writable_location


class OutputFailed(EdgeMlaError):
    """An output could not be written (disk full, closed pipe, ...): the runtime stops
    cleanly and the CLI prints this one line."""


def check_output_path(path: Path, mode: str = "new") -> None:
    """Everything about ``--out`` that can be checked before the run starts, so a bad
    path fails with one line and an existing file is never emptied unasked
    (``mode``: new refuses an existing non-empty file, append adds to it,
    overwrite replaces it)."""
    path = Path(path)
    if path.is_dir():
        raise EdgeMlaError(f"--out {path}: is a folder; give a file name")
    if path.exists():
        if path.is_file() and mode == "new" and path.stat().st_size > 0:
            raise EdgeMlaError(f"--out {path}: file exists ({path.stat().st_size} bytes); pass --force to overwrite it or --append to add to it")
        if not os.access(path, os.W_OK):
            raise EdgeMlaError(f"--out {path}: not writable")
        return
    writable_location(path, "--out")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BrokenPipeError):
        return "broken pipe: the reader closed it"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return first_line(exc)


def _open_fifo(path: Path) -> IO:
    """A named pipe for writing, or one line when no process reads it. Why: a plain
    open() of a FIFO blocks until a reader comes, and a blocked open ignores
    SIGTERM and --duration (the handlers only set a flag), so the run hung for good."""
    import errno
    import fcntl

    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise EdgeMlaError(f"--out {path}: a named pipe that no process is reading; start the reader first") from None
        raise
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)  # then write as to any file
    return os.fdopen(fd, "w", buffering=1)


class _Sink:
    """A text target (a file opened late, or a stream) whose write failures become
    one OutputFailed instead of a traceback per line."""

    def __init__(self, path: Optional[Path], stream: Optional[IO], mode: str) -> None:
        self.path = Path(path) if path is not None else None
        self._stream = stream
        self._mode = mode
        self._f: Optional[IO] = None
        self.lines = 0  # lines really written (flushed without error)
        self.failed: Optional[str] = None

    @property
    def target(self) -> str:
        return f"--out {self.path}" if self.path is not None else (getattr(self._stream, "name", None) or "stdout").strip("<>")

    def open(self) -> None:
        """Open the file: called by the runtime only once every input is checked and
        the sensors are open, so a failed start leaves an existing file untouched."""
        if self._f is not None:
            return
        if self.path is None:
            self._f = self._stream or sys.stdout
            return
        check_output_path(self.path, self._mode)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISFIFO(self.path.stat().st_mode if self.path.exists() else 0):
                self._f = _open_fifo(self.path)
            else:
                self._f = open(self.path, "a" if self._mode == "append" else "w", buffering=1)
        except OSError as exc:
            raise EdgeMlaError(f"{self.target}: cannot open ({_reason(exc)})") from None

    def write_text(self, text: str) -> None:
        if self.failed:
            raise OutputFailed(self.failed)
        self.open()
        try:
            self._f.write(text)
            self._f.flush()
        except (OSError, ValueError) as exc:
            self.failed = f"{self.target}: write failed after {self.lines} lines ({_reason(exc)}); the run stopped"
            raise OutputFailed(self.failed) from None
        self.lines += 1

    def close(self) -> None:
        f, self._f = self._f, None
        if f is None:
            return
        try:
            f.flush()
        except (OSError, ValueError):
            pass
        if self.path is not None:
            try:
                f.close()
            except OSError:
                pass
        elif self.failed:
            # a closed pipe: point the descriptor at /dev/null so the interpreter's
            # final flush of stdout does not print "Exception ignored ... BrokenPipeError"
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, f.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass


class JsonLinesOutput(_Sink):
    """One JSON object per decision; ``path`` None writes to ``stream`` (stdout).
    ``mode`` for an existing file: new (refuse), append, overwrite."""

    def __init__(self, path: Optional[Path] = None, stream: Optional[IO] = None, mode: str = "new") -> None:
        super().__init__(path, stream, mode)

    def write(self, record: dict) -> None:
        self.write_text(json.dumps(record, separators=(",", ":")) + "\n")


def console_line(rec: dict) -> str:
    """e.g. ``08:01:02.345  3 (0.91)  image w=0.72 age=0.05  audio w=0.28 age=0.20  | camera ok  mic lost``"""
    ts = time.strftime("%H:%M:%S", time.localtime(rec.get("time", time.time()))) + f".{int((rec.get('time', 0) % 1) * 1000):03d}"
    head = f"{rec['label']} ({rec['confidence']:.2f})" if rec["decision"] else f"no decision ({rec.get('reason', '')})"
    parts = []
    for m, d in rec["modalities"].items():
        if d.get("age") is None:
            parts.append(f"{m} -")
        else:
            parts.append(f"{m}{'' if d['used'] else '(stale)'} {d.get('label', '-')} w={d['weight']:.2f} age={d['age']:.2f}")
    sensors = "  ".join(f"{k} {v['state']}" for k, v in rec.get("sensors", {}).items())
    return f"{ts}  {head:<22}  {'  '.join(parts)}  | {sensors}"


class ConsoleOutput(_Sink):
    def __init__(self, stream: Optional[IO] = None) -> None:
        super().__init__(None, stream or sys.stderr, "append")

    def write(self, record: dict) -> None:
        self.write_text(console_line(record) + "\n")


def format_summary(report) -> str:
    """The few lines printed on exit: counts, drops, sensors, latency, resources."""
    r = report
    lines = [
        f"ran {r.seconds:.1f}s: {r.decisions} decisions, {r.no_decisions} no-decision, {r.lines} lines written",
    ]
    for m, w in r.workers.items():
        lines.append(f"  {m}: {w['results']} engine runs ({w['rate']:.1f}/s), {w['dropped']} inputs dropped, " + (f"{w['limited']} passed over by --rate, " if w.get("limited") else "") + f"{w['errors']} errors")
    for s, st in r.sensors.items():
        lines.append(f"  {s}: {st['state']}, {st['reconnects']} reconnects, {st['failures']} failures, {st['overflows']} overflows")
    for s, d in (getattr(r, "degraded", None) or {}).items():
        if d["spans"]:
            lines.append(f"  {s}: degraded {d['seconds']:.1f}s in {len(d['spans'])} span(s): " + ", ".join(f"{a:.1f}-{b:.1f}s" for a, b in d["spans"]))
    lat = r.latency
    for m, d in lat.items():
        if d.get("n"):
            lines.append(
                f"  latency {m}: capture->output p50 {d['e2e_p50_ms']:.1f} ms p99 {d['e2e_p99_ms']:.1f} ms; engine p50 {d['engine_p50_ms']:.2f} ms; overhead p50 {d['overhead_p50_ms']:.1f} ms p99 {d['overhead_p99_ms']:.1f} ms (n={d['n']})"
            )
    lines.append(f"  cpu {r.cpu_percent:.0f}% of one core, peak RSS {r.peak_rss_mb:.0f} MB")
    f = getattr(r, "factory", None) or {}
    if f.get("mqtt"):
        q = f["mqtt"]
        lines.append(f"  mqtt: {q['published']} acknowledged, {q['spool_depth']} left in the spool, {q['spool_dropped']} dropped from a full spool")
    if f.get("clips"):
        c = f["clips"]
        lines.append(f"  clips: {c['written']} written, {c['dropped']} dropped, {c['deleted']} deleted by the disk budget")
    if f.get("swaps", {}).get("ok") or f.get("swaps", {}).get("refused"):
        lines.append(f"  engine swaps: {f['swaps']['ok']} done, {f['swaps']['refused']} refused; running {f['engines']}")
    return "\n".join(lines)
