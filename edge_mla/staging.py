"""Write a folder completely or not at all: build it in a temporary folder beside
the target and rename it into place at the end.

Why: training and export run for minutes; an error, Ctrl-C or SIGTERM (the CLI
turns it into KeyboardInterrupt) half-way must not leave a run or engine folder
that looks usable but lacks files, nor destroy the previous one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edge_mla.errors import EdgeMlaError


def _identity(path: Path):
    """(device, inode) of ``path`` itself (a link is not followed), or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def swap_into_place(tmp: Path, out: Path, expect=False) -> None:
    """Replace ``out`` by ``tmp``; the old folder is moved aside first and removed
    only once the new one is in place. ``expect``: what ``out`` was when the command
    started (``_identity``); if something else is there now, another command wrote it
    meanwhile and nothing is replaced (two exports to one --out: the later one
    silently deleted the earlier one's folder, without --force)."""
    if expect is not False and _identity(out) != expect:
        raise EdgeMlaError(f"--out {out}: changed while this command ran (another command writing there?); nothing was replaced, run it again")
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(out: Path, label: str = "--out") -> Iterator[Path]:
    """Yields an empty temporary folder beside ``out``; on success it replaces
    ``out``, on any exception (KeyboardInterrupt included) it is removed."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise EdgeMlaError(f"{label} {out}: cannot create the folder ({exc.strerror})") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the result is an ordinary folder
    before = _identity(out)
    try:
        yield tmp
        swap_into_place(tmp, out, expect=before)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_file(path: Path, write, what: str = "") -> None:
    """Write a file by ``write(tmp)`` into a fresh temporary name beside ``path``, then
    rename it over ``path``. Why one home: a link at ``path`` (a run or engine folder is
    untrusted) is replaced, never written through; a failure leaves neither half a
    file nor the temporary one; two writers never share a temporary name."""
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise EdgeMlaError(f"{path}: cannot write{' ' + what if what else ''} ({exc.strerror})") from None
