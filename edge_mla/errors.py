"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from pathlib import Path


class EdgeMlaError(Exception):
    """A problem with the user's input (a file, a flag, a folder) rather than a bug.

    The message must name the file or option and say what is wrong, because the
    CLI prints it alone, without a traceback.
    """

    exit_code = 2


def required_file(folder, name: str, kind: str, command: str) -> Path:
    """``folder/name``, or the one-line error a user needs when a run or engine folder
    is missing or was not written by ``edge-mla COMMAND``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeMlaError(f"{folder}: {kind} folder not found")
    path = folder / name
    if not path.is_file():
        raise EdgeMlaError(f"{path}: missing (is {folder} a folder written by 'edge-mla {command}'?)")
    return path


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (or its class name when
    the message is empty), cut to ``limit`` characters: library messages (torch's
    run to several hundred characters over many lines) must fit the CLI's one line."""
    for line in str(exc).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return exc.__class__.__name__
