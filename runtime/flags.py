"""argparse flags derived from RunConfig's dataclass fields.

Why: one home per option. A field carries its default, type and help; the flag
(``--mqtt-password-file`` for ``mqtt_password_file``) and the mapping back onto
RunConfig come from it, so a config file layer can later map onto the same names
without a second list of options.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from edge_mla.runtime.config import RunConfig, flag_fields


def _base_type(tp) -> type:
    """Optional[X] -> X; string annotations resolved through RunConfig's hints."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def add_run_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per RunConfig field that has a "help" in its metadata."""
    hints = typing.get_type_hints(RunConfig)
    for f in flag_fields():
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        kw = {"help": f.metadata["help"], "default": f.default, "dest": f.name}
        if tp is bool:
            parser.add_argument(flag, action="store_true", **kw)
            continue
        kw["type"] = str if tp is Path else tp
        for key in ("metavar", "choices"):
            if key in f.metadata:
                kw[key] = f.metadata[key]
        parser.add_argument(flag, **kw)


def run_config_values(args: argparse.Namespace) -> dict:
    """The derived flags' values, keyed by RunConfig field name."""
    return {f.name: getattr(args, f.name) for f in flag_fields() if hasattr(args, f.name)}
