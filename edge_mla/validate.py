"""One home for checking numbers from the user: every numeric option of every
command (CLI flag, JSON config key, manifest field) goes through ``number``.

Why: argparse's ``type=float`` accepts "nan" and "inf", and ``nan <= 0`` is False,
so a plain ``if x <= 0`` lets NaN through (``--rate nan`` became a busy loop). Here
a value must be a real number (bool is not), finite, of the right kind and in
range, or the user gets one line naming the option: ``--rate must be a finite
number > 0 (got nan)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

from edge_mla.errors import EdgeMlaError


def flag(name: str) -> str:
    """A dataclass field name as the user typed it: ``camera_timeout`` -> ``--camera-timeout``."""
    return name if name.startswith("-") else "--" + name.replace("_", "-")


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def number(
    value,
    name: str,
    *,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    optional: bool = False,
    where: str = "",
):
    """``value`` checked, or EdgeMlaError. ``name``: the option as the user wrote it
    (a dataclass field name is turned into its flag); ``where``: a file to name
    first (``config.json: ...``). Integers given as floats (3.0) are accepted for
    integer options; returns the value as int or float."""
    if value is None and optional:
        return None
    label = f"{where}: {name}" if where else flag(name)
    kind = "an integer" if integer else "a finite number"
    rng = _bounds(lo, hi, lo_open, hi_open)
    want = f"{kind}{' ' + rng if rng else ''}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EdgeMlaError(f"{label} must be {want} (got {value!r})")
    if not math.isfinite(value):
        raise EdgeMlaError(f"{label} must be {want} (got {value})")
    if integer:
        if value != int(value):
            raise EdgeMlaError(f"{label} must be {want} (got {value})")
        value = int(value)
    else:
        value = float(value)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise EdgeMlaError(f"{label} must be {want} (got {value:g})")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise EdgeMlaError(f"{label} must be {want} (got {value:g})")
    return value


def numbers(obj, specs: dict, where: str = "") -> None:
    """Check and normalise several fields of a dataclass in place:
    ``specs = {"rate": dict(lo=0, lo_open=True), "threads": dict(lo=1, integer=True)}``."""
    for name, kw in specs.items():
        setattr(obj, name, number(getattr(obj, name), name, where=where, **kw))


def writable_location(path, label: str) -> None:
    """``path`` (which may not exist yet) can be created: its first existing ancestor
    is a folder we may write in. Checked before any work starts, so ``--out`` under
    a file or in a read-only place fails with one line instead of a traceback at
    the end of a long run."""
    text = str(path)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):  # a newline in a folder name split one-line messages and moved build_engines.sh's cd
        raise EdgeMlaError(f"{label} {text!r}: holds a control character (newline, tab, ...); choose a plain name")
    parent = Path(path).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise EdgeMlaError(f"{label} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgeMlaError(f"{label} {path}: cannot create files in {parent} (permission denied)")


def not_over_inputs(out, inputs: dict, label: str = "--out") -> None:
    """``out`` (a folder the command will replace as a whole) is not one of its own
    ``inputs`` ({what: path}) nor a folder holding one. Why: the finished folder is
    renamed over ``out`` and the old one removed, so ``export RUN --out RUN --force``
    (or ``--out`` a folder above RUN) deleted the run it had just read. The current
    folder counts as an input: ``--out .`` cannot be renamed away."""
    target = Path(out).resolve()
    for what, path in {**inputs, "the current folder": Path.cwd()}.items():
        if path is None:
            continue
        src = Path(path).resolve()
        if src == target or target in src.parents:
            where = "is" if src == target else "holds"
            raise EdgeMlaError(f"{label} {out}: {where} {what} {path}, which replacing it would delete; choose another folder")


def no_links_under(folder, names, label: str = "--out") -> None:
    """None of ``names`` in ``folder`` (nor anything under one that is a folder) is a
    symbolic link. Why: profile writes its results into the engine folder by
    default, and an engine folder is untrusted input: a ``profile.png`` linked to a
    file elsewhere was overwritten through the link."""
    for name in names:
        top = Path(folder) / name
        paths = [top]
        if top.is_dir() and not top.is_symlink():
            for root, dirs, files in os.walk(top):
                paths += [Path(root) / n for n in dirs + files]
        for p in paths:
            if p.is_symlink():
                raise EdgeMlaError(f"{label} {folder}: {p} is a symbolic link; results are written only as plain files there (remove the link or choose another --out)")


def not_empty_path(value, name: str) -> None:
    """A path option given as "" (or spaces) is refused: ``Path("")`` is the current
    folder, so ``--clips ""`` wrote there and ``train --out ""`` fell back to the default."""
    if isinstance(value, str) and not value.strip():
        raise EdgeMlaError(f"{flag(name)}: an empty path (leave the option out instead)")


def names_inside(name: str) -> bool:
    """``name`` (from a manifest, pairs.csv or truth.json) names something inside the
    folder it belongs to: relative and without ``..``. The one test for it."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts
