"""Property-based layer over the input boundaries (Hypothesis): manifest JSON, run
folder config JSON, train config JSON, pairs.csv, WAV headers and every numeric
option of every command's config dataclass.

The property is the same everywhere: an input is either accepted, and then the
typed result is sound (finite numbers in range, the right types), or refused
with an EdgeMlaError of one line naming the file or option; never another
exception. New fields are fuzzed without new tests: the numeric specs are read
from each config's NUMERIC table, and manifest mutations walk whatever keys the
manifest has. The library is called directly (no subprocess); examples are few.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_mla.errors import EdgeMlaError

# few examples per run (the suite must stay fast); EDGE_MLA_FUZZ_EXAMPLES=2000 for a long hunt.
# No example database: nothing is written into the repository.
FUZZ = settings(max_examples=int(os.environ.get("EDGE_MLA_FUZZ_EXAMPLES", 60)), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FILE = Path("/eng/manifest.json")

scalars = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=5)


def assert_one_line(exc: EdgeMlaError, *starts: str) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    assert any(msg.startswith(s) for s in starts), msg


@functools.lru_cache(maxsize=1)
def base_manifest() -> dict:
    from edge_mla.runtime.testing.tiny_engines import build_tiny_engines

    d = Path(tempfile.mkdtemp(prefix="fuzz-engines-"))
    return json.loads((build_tiny_engines(d) / "manifest.json").read_text())


def key_paths(obj, prefix=()) -> list:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += key_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += key_paths(v, prefix + (i,))
    return out


def mutate(obj, path: tuple, value, delete: bool):
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@FUZZ
@given(st.data())
def test_manifest_mutations_are_accepted_soundly_or_refused_in_one_line(data):
    from edge_mla.manifest import Manifest, ManifestDoc

    m = copy.deepcopy(base_manifest())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = key_paths(m)
        if not paths:
            break
        mutate(m, data.draw(st.sampled_from(paths)), data.draw(json_values), data.draw(st.booleans()))
    try:
        doc = ManifestDoc.parse(FILE, m)
    except EdgeMlaError as exc:
        assert_one_line(exc, f"{FILE}: ")
        return
    assert doc.classes and all(isinstance(c, str) and c.strip() for c in doc.classes)
    man = Manifest(FILE.parent, m, doc)
    for mod, e in doc.engines.items():
        assert isinstance(e.file, str) and not Path(e.file).is_absolute() and ".." not in Path(e.file).parts
        assert e.image_size is None or (isinstance(e.image_size, int) and e.image_size >= 1)
        for v in (e.sample_rate, e.window):
            assert v is None or (isinstance(v, int) and v >= 1)
        assert all(isinstance(a, (int, str)) and not isinstance(a, bool) for a in e.input.shape + e.output.shape)
        for prec in [None, *e.variants]:
            spec = man.engine(mod, prec)
            assert isinstance(spec.input_name, str) and isinstance(spec.output_name, str)


@functools.lru_cache(maxsize=1)
def base_reliability() -> dict:
    """A manifest's reliability block with every part the runtime reads: a
    Mahalanobis map per modality, a fault gate, the sum rule's reference r and a
    power fitted per rule (small dimensions, so mutations reach every key)."""
    import numpy as np

    from edge_mla.reliability import FaultGate, ModalityReliability, Reliability

    eye = np.eye(2)
    mods = {m: ModalityReliability(1.2, ("mahalanobis",), [2.0], 1.0, np.zeros((2, 2)), eye, reference=0.7) for m in ("image", "audio")}
    mods["audio"].fault = FaultGate(np.ones((1, 2)), 3.0, -2.0, ("audio_silence@3",))
    fit = {"sum": {"power": 3.0, "table": {"3": [0.0, 1.0]}, "reference": {"image": 0.95, "audio": 0.7}}, "entropy": {"power": 2.0, "table": {}}}
    return Reliability("mahalanobis", 0.5, mods, {"fp32": {"audio": 0.9}}, 3.0, 0.1, fit).to_dict()


@FUZZ
@given(st.data())
def test_reliability_block_mutations_are_accepted_soundly_or_refused_in_one_line(data):
    """The block the runtime reads at start and on every engine swap: accepted with
    a sound weighting (power and floor in range, every reference in (0, 1]) that
    fusion can use, or refused in one line naming the file."""
    import numpy as np

    from edge_mla.fusion import fuse
    from edge_mla.reliability import Reliability

    b = copy.deepcopy(base_reliability())
    for _ in range(data.draw(st.integers(1, 3))):
        # every key, and whole arrays rather than their numbers (the corrupt-constants tests cover those)
        paths = [k for k in key_paths(b) if not any(isinstance(x, int) for x in k)]
        mutate(b, data.draw(st.sampled_from(paths)), data.draw(json_values), data.draw(st.booleans()))
    try:
        rel = Reliability.from_dict(b, str(FILE))
    except EdgeMlaError as exc:
        assert_one_line(exc, f"{FILE}")
        return
    for r in (rel, rel.for_rule("sum"), rel.for_rule("entropy")):
        w = r.weighting
        assert 0.0 <= w["power"] <= 16.0 and 0.0 <= w["threshold"] <= 1.0
        assert all(isinstance(v, float) and 0.0 < v <= 1.0 for v in w["reference"].values())
        z = {m: np.zeros((2, 3), np.float32) for m in r.modalities}
        fused, _ = fuse(z, "sum", reliability={m: np.array([0.05, 0.9]) for m in z}, **w)
        assert np.all(np.isfinite(fused))


@FUZZ
@given(st.data())
def test_manifest_tolerates_unknown_keys(data):
    """A newer writer's extra keys (anywhere) change nothing for this reader."""
    from edge_mla.manifest import ManifestDoc

    m = copy.deepcopy(base_manifest())
    # objects whose keys are names (engines: modalities, variants: precisions) hold data, not options
    dicts = [p for p in key_paths(m) if isinstance(functools.reduce(lambda o, k: o[k], p, m), dict) and p[-1] not in ("engines", "variants")] + [()]
    for _ in range(data.draw(st.integers(1, 4))):
        where = functools.reduce(lambda o, k: o[k], data.draw(st.sampled_from(dicts)), m)
        where["x_" + data.draw(st.text(max_size=5))] = data.draw(json_values)
    assert ManifestDoc.parse(FILE, m) == ManifestDoc.parse(FILE, base_manifest())


RUN_CONFIG_VALUES = {
    "dataset": st.sampled_from(["avmnist", "demo", "folder", "imagenet", ""]) | json_values,
    "data_dir": st.sampled_from(["/data", None]) | json_values,
    "seed": st.integers(-3, 2**40) | json_values,
    "split": st.sampled_from(["official", "speaker", "random"]) | json_values,
}


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(RUN_CONFIG_VALUES) + ["train", "model"]), st.none(), max_size=6).flatmap(
    lambda d: st.fixed_dictionaries({k: RUN_CONFIG_VALUES.get(k, json_values) for k in d})))
def test_run_folder_config(data):
    from edge_mla.data.registry import DATASETS
    from edge_mla.manifest import SPLITS, RunFolderConfig

    path = Path("/run/config.json")
    try:
        c = RunFolderConfig.parse(path, data)
    except EdgeMlaError as exc:
        assert_one_line(exc, f"{path}: ")
        return
    assert c.dataset is None or c.dataset in DATASETS
    assert isinstance(c.seed, int) and c.seed >= 0 and c.split in SPLITS
    assert c.data_dir is None or isinstance(c.data_dir, str)


def _train_fields() -> list:
    from edge_mla.train.config import TrainConfig

    return sorted(TrainConfig.__dataclass_fields__)


@FUZZ
@given(st.data())
def test_train_config_file(data):
    from edge_mla.train.config import TrainConfig

    conf = data.draw(st.dictionaries(st.sampled_from(_train_fields()), json_values, max_size=4))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "my.json"
        p.write_text(json.dumps(conf))
        try:
            cfg = TrainConfig.from_file(str(p), {})
        except EdgeMlaError as exc:
            assert_one_line(exc, f"{p}: ")
            return
    assert_sound_numbers(cfg, __import__("edge_mla.train.config", fromlist=["NUMERIC"]).NUMERIC)


# -- pairs.csv --------------------------------------------------------------------

cells = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from([",", '"', "\n", " ", "\ufeff", "a"]), max_size=6) | st.sampled_from(["train", "test", " a "])


@FUZZ
@given(
    header=st.lists(st.sampled_from(["image", "audio", "label", "split", " label", "x"]), min_size=0, max_size=5),
    rows=st.lists(st.lists(cells | st.sampled_from(["train", "val", "test", "a.png", "a.wav", "3"]), max_size=5), max_size=5),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]),
)
def test_pairs_csv_rows(header, rows, encoding):
    import csv

    from edge_mla.data.folder import REQUIRED, read_pairs_csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    try:
        raw = buf.getvalue().encode(encoding)
    except UnicodeEncodeError:
        return
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pairs.csv"
        p.write_bytes(raw)
        try:
            out = read_pairs_csv(p)
        except EdgeMlaError as exc:
            assert_one_line(exc, f"{p}: ", f"{p}:")
            return
    assert out
    for r in out:
        assert all(r[c] and r[c] == r[c].strip() for c in REQUIRED)
        assert r["split"] in ("", "train", "val", "test")


# -- WAV headers --------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def base_wav() -> bytes:
    import numpy as np
    import soundfile as sf

    b = io.BytesIO()
    sf.write(b, (0.1 * np.sin(np.arange(1600) / 5)).astype(np.float32), 8000, format="WAV", subtype="PCM_16")
    return b.getvalue()


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 47), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 3300),
    data_size=st.none() | st.integers(0, 2**32 - 1),
)
def test_wav_headers(edits, cut, data_size):
    from edge_mla.preprocess import AUDIO_RATES
    from edge_mla.runtime.sources.wavfile import WavFileInput

    b = bytearray(base_wav())
    for pos, val in edits:
        b[pos] = val
    if data_size is not None:
        b[40:44] = data_size.to_bytes(4, "little")
    if cut is not None:
        b = b[:cut]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "mic.wav"
        p.write_bytes(bytes(b))
        try:
            w = WavFileInput(str(p))
        except EdgeMlaError as exc:
            assert_one_line(exc, f"--mic {p}: ")
            return
    assert w.pcm.size > 0 and AUDIO_RATES[0] <= w.rate <= AUDIO_RATES[1]
    assert w.pcm.dtype.kind == "f"


# -- numeric options of every command --------------------------------------------------

def assert_sound_numbers(obj, specs: dict) -> None:
    """Every accepted numeric field is a finite int/float inside its declared range."""
    for name, kw in specs.items():
        v = getattr(obj, name)
        if v is None:
            assert kw.get("optional"), name
            continue
        assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (name, v)
        if kw.get("integer"):
            assert isinstance(v, int), (name, v)
        lo, hi = kw.get("lo"), kw.get("hi")
        assert lo is None or v > lo or (v == lo and not kw.get("lo_open")), (name, v)
        assert hi is None or v < hi or (v == hi and not kw.get("hi_open")), (name, v)


def _run_cfg(**kw):
    from edge_mla.runtime.config import RunConfig, validate

    cfg = RunConfig(engines="eng", camera="0", mic=None, **kw)
    validate(cfg)
    return cfg


def _train_cfg(**kw):
    from edge_mla.train.config import TrainConfig

    return TrainConfig(**kw)


def _export_cfg(**kw):
    from edge_mla.export.pipeline import ExportConfig

    return ExportConfig(run_dir="run", **kw)


def _demo_cfg(**kw):
    from edge_mla.demo import DemoConfig

    return DemoConfig(out=Path(tempfile.gettempdir()) / "edge-mla-fuzz-demo-never-written", **kw)


def _specs(module: str, attr: str = "NUMERIC") -> dict:
    return getattr(__import__(module, fromlist=[attr]), attr)


COMMANDS = {
    "run": (_run_cfg, lambda: _specs("edge_mla.runtime.config"), lambda n: _specs("edge_mla.runtime.config", "FLAG_OF").get(n, "--" + n.replace("_", "-"))),
    "train": (_train_cfg, lambda: _specs("edge_mla.train.config"), None),
    "export": (_export_cfg, lambda: _specs("edge_mla.export.pipeline"), None),
    "demo": (_demo_cfg, lambda: _specs("edge_mla.demo"), None),
}
numbers_st = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**12), 10**12) | st.sampled_from([0, 1, -1, 0.5, 2.0, 1e9, True, "3", None, [1]])


@pytest.mark.parametrize("command", list(COMMANDS))
@FUZZ
@given(data=st.data())
def test_numeric_options(command, data):
    make, specs_fn, flag_of = COMMANDS[command]
    specs = specs_fn()
    name = data.draw(st.sampled_from(sorted(specs)))
    value = data.draw(numbers_st)
    flag = flag_of(name) if flag_of else "--" + name.replace("_", "-")
    try:
        cfg = make(**{name: value})
    except EdgeMlaError as exc:
        msg = str(exc)
        assert "\n" not in msg and (flag in msg or name in msg), (flag, msg)
        return
    assert_sound_numbers(cfg, {name: specs[name]})


@FUZZ
@given(batches=st.lists(numbers_st, min_size=1, max_size=3), threads=st.lists(numbers_st, min_size=1, max_size=3), repeats=numbers_st, warmup=numbers_st)
def test_profile_numeric_options(batches, threads, repeats, warmup):
    from edge_mla.runtime.profiling.engines import ProfileConfig

    try:
        cfg = ProfileConfig(engines="eng", batches=batches, threads=threads, repeats=repeats, warmup=warmup)
    except EdgeMlaError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(("--batch", "--threads", "--repeats", "--warmup")), str(exc)
        return
    assert all(isinstance(b, int) and b >= 1 for b in cfg.batches + cfg.threads)
    assert isinstance(cfg.repeats, int) and cfg.repeats >= 1 and isinstance(cfg.warmup, int) and cfg.warmup >= 0
