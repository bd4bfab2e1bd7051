"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class EdgeMlaError(Exception):
    """A problem with the user's input (a file, a flag, a folder) rather than a bug.

    The message must name the file or option and say what is wrong, because the
    CLI prints it alone, without a traceback.
    """

    exit_code = 2
