"""Stations: several camera + mic pairs described in one TOML file.

``edge-mla run --config FILE.toml``::

    [runtime]              # any RunConfig field, by its long option name ('-' or '_')
    engines = "runs/mla/engines"
    rate = 10

    [[station]]
    name = "line1"
    camera = "0"
    mic = "default"

    [[station]]
    name = "line2"
    camera = "rtsp://camera-line2.local/stream1"
    mic = "hw:2,0"
    engines = "runs/other/engines"   # a station may override any [runtime] option

Each station becomes one RunConfig: the command-line flags the user typed, then
``[runtime]``, then the station's own table (the most specific wins). A sensor
that neither the station nor ``[runtime]`` names is not used at that station. The keys and
their types come from RunConfig itself, so a new runtime option is settable here
without touching this module. Every mistake (unknown key, wrong type, duplicate
or missing station name, a station with no sensor, a value out of range) is one
line naming the file, the table and the key, raised before any sensor opens.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from edge_mla.errors import EdgeMlaError
from edge_mla.runtime import graph
from edge_mla.runtime.config import DEFAULT_STATION, RunConfig, validate

# A station's name: it becomes an MQTT topic level, a Prometheus label value and part
# of the spool file's name, so no '/', wildcard, whitespace or control character.
STATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# RunConfig fields a file cannot set, and why.
NOT_IN_FILE = {
    "camera_outages": "scripted outages come from --replay sessions",
    "mic_outages": "scripted outages come from --replay sessions",
    "station": "a station is named by its name key",
}


@dataclass
class Station:
    """One station: its name and the complete RunConfig it runs with."""

    name: str
    cfg: RunConfig


def _field_types() -> dict:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig) if f.name not in NOT_IN_FILE}


def _accepts(tp: Any, value: Any) -> Optional[str]:
    """None when ``value`` (from TOML) fits the field type ``tp``; else what was expected."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return None if any(_accepts(a, value) is None for a in inner) else " or ".join(filter(None, (_accepts(a, value) for a in inner)))
    if tp is bool:
        return None if isinstance(value, bool) else "true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if tp in (str, Path):
        return None if isinstance(value, str) else "a string"
    return None if isinstance(value, tp) else f"a {getattr(tp, '__name__', tp)}"


def _typename(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _options(table: Mapping, where: str, path: Path, types: dict, allow: frozenset = frozenset()) -> dict:
    """A TOML table -> RunConfig keyword arguments, checked against the field types."""
    out = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if name in allow:
            continue
        if name not in types:
            hint = f" ({NOT_IN_FILE[name]})" if name in NOT_IN_FILE else ""
            raise EdgeMlaError(f"{path}: {where}: unknown key {key!r}{hint}")
        expected = _accepts(types[name], value)
        if expected is not None:
            raise EdgeMlaError(f"{path}: {where}: {key} must be {expected}, not {_typename(value)}")
        if name in out:  # clip-pre and clip_pre are one option: which one won was silent
            raise EdgeMlaError(f"{path}: {where}: {key} sets {name} a second time")
        out[name] = value
    return out


def read_stations(path: str | Path, base: Optional[Mapping] = None) -> list:
    """Parse and check a stations file; ``base`` holds RunConfig keyword arguments from
    the command line (the file's values override them). Returns [Station, ...]."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EdgeMlaError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise EdgeMlaError(f"{path}: not UTF-8 text (a TOML file must be UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise EdgeMlaError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise EdgeMlaError(f"{path}: not valid TOML (nested too deeply)") from None
    unknown = sorted(set(data) - {"runtime", "station"})
    if unknown:
        raise EdgeMlaError(f"{path}: unknown table {unknown[0]!r} (expected [runtime] and [[station]])")
    types = _field_types()
    runtime = data.get("runtime", {})
    if not isinstance(runtime, dict):
        raise EdgeMlaError(f"{path}: runtime must be a table ([runtime])")
    shared = _options(runtime, "[runtime]", path, types)
    common = {**(base or {}), **shared}
    tables = data.get("station", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise EdgeMlaError(f"{path}: station must be an array of tables ([[station]])")
    if not tables:
        raise EdgeMlaError(f"{path}: no [[station]] table: nothing to run")
    stations, seen = [], {}
    for i, table in enumerate(tables, 1):
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise EdgeMlaError(f"{path}: [[station]] #{i}: every station needs a non-empty name (name = \"line1\")")
        if not STATION_NAME.fullmatch(name):
            # it becomes an MQTT topic level, a metrics label and a spool file name
            raise EdgeMlaError(f"{path}: [[station]] #{i}: station name {name!r} must be letters, digits, '.', '_' or '-' "
                               "(it names MQTT topics, metric labels and the spool file)")
        where = f"[[station]] #{i} ({name})"
        if name in seen:
            raise EdgeMlaError(f"{path}: {where}: duplicate station name {name!r} (also station #{seen[name]})")
        seen[name] = i
        own = _options(table, where, path, types, allow=frozenset({"name"}))
        if not ({k.option for k in graph.SENSORS} | {"sensors"}) & (set(own) | set(shared)):
            raise EdgeMlaError(f"{path}: {where}: no sensor: set {graph.options_text()} (in the station or in [runtime])")
        off = {k.option: "none" for k in graph.SENSORS if k.option in types}
        kw = {**off, **common, **own, "station": name}  # a sensor the file does not name is not used
        if "engines" not in kw:
            raise EdgeMlaError(f"{path}: {where}: no engines (set engines in [runtime], the station, or --engines)")
        try:
            cfg = RunConfig(**kw)
            if not graph.configured(cfg):
                raise EdgeMlaError(f"no sensor: set {graph.options_text()} ({'both' if len(graph.SENSORS) == 2 else 'all'} are 'none')")
            validate(cfg)
        except EdgeMlaError as exc:
            raise EdgeMlaError(f"{path}: {where}: {exc}") from None
        stations.append(Station(name, cfg))
    return stations


def single_station(cfg: RunConfig) -> list:
    """Without --config: the command-line flags describe one station named 'default'."""
    return [Station(DEFAULT_STATION, cfg)]
