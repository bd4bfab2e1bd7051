"""The engine folder's manifest.json: everything a device needs to run the engines
without the training stack. Written by export, read by the runtime and the profiler.
Pure json/hashlib so the runtime extra can read it.

The one schema check of the project's JSON inputs lives here (the manifest, and a
run folder's config.json): typed dataclasses parsed from JSON, every field checked
for type and range, required keys required, errors in one style
(``FILE: dotted.key problem``), unknown keys ignored so that a file written by a
newer edge-mla stays readable. The runtime, the profiler and the export (which
checks what it writes) share it.

Schema (format "edge-mla-engines/1"):

{
  "format": "edge-mla-engines/1",
  "edge_mla_version": "0.1.0",
  "created": "2026-11-27T08:00:00Z",
  "model": {"preset": "tiny", "method": "mla", "run_dir": "...", "checkpoint_sha256": "...", "epoch": 3},
  "classes": ["0", ..., "9"],
  "fusion": {"rule": "entropy", "method": "mla",            # the training method's rule
             "logits": "calibrated",      # optional: each engine's logits are divided by its temperature
             "reliability": {"signal": "mahalanobis",  # optional (older folders: absent)
                             "threshold": 0.5, "output": "reliability",
                             "power": 3.0, "floor": 0.1,    # fusion weight x min(1, r / reference) ** power, none below floor (absent: hard gate at threshold)
                             "modalities": {"<modality>": {"temperature", "features", "coef", "bias", "means", "precision",
                                                           "fault",        # optional: the fault gate's prototypes
                                                           "reference"}},  # optional (absent: 1): the sum rule's r of a typical clean input, on the shipped engine
                             "auroc": {"fp32": {...}, "int8": {...}}}},
  "engines": {
    "<modality>": {
      "file": "image.int8.onnx",            # the engine the runtime loads by default
      "precision": "int8",                  # of "file"
      "sha256": "...",                      # of "file"
      "format": "onnx",
      "input":  {"name": "image", "shape": ["batch", 1, 28, 28], "dtype": "float32"},
      "output": {"name": "logits", "shape": ["batch", 10], "dtype": "float32"},
      "image": {"size": 28, "colour": "grey", "range": [0.0, 1.0]},        # image engines
      "audio": {"sample_rate": 8000, "window": 8000, "dtype": "float32"},  # audio engines
      "variants": {"fp32": {"file": ..., "sha256": ..., ...}, "int8": {...}, "trt": {...}}
    }
  }
}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edge_mla.errors import EdgeMlaError, required_file
from edge_mla.preprocess import AUDIO_RATES
from edge_mla.validate import names_inside, number

FORMAT = "edge-mla-engines/1"
MANIFEST_NAME = "manifest.json"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# -- the schema: one reader, one error style ("FILE: dotted.key problem") -----------

_KINDS = {"string": str, "object": dict, "list": list}
_ARTICLE = {"string": "a string", "object": "an object", "list": "a list"}
SHA256_HEX = set("0123456789abcdef")


class _Obj:
    """One JSON object of ``file`` at ``prefix`` (e.g. ``engines.image``). Every read
    checks the type (and range, for numbers); keys not asked for are ignored, so a
    file written by a newer edge-mla stays readable."""

    def __init__(self, file: Path, data, prefix: str = "") -> None:
        self.file, self.prefix = file, prefix
        if not isinstance(data, dict):
            raise EdgeMlaError(f"{file}: {prefix or 'the file'} must be a JSON object (got {_kind(data)})")
        self.data = data

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def fail(self, k: str, problem: str) -> EdgeMlaError:
        return EdgeMlaError(f"{self.file}: {self.key(k)} {problem}")

    def get(self, k: str, kind: str, required: bool = True, default=None):
        if k not in self.data or (self.data[k] is None and not required):
            if required:
                raise self.fail(k, "is missing")
            return default
        v = self.data[k]
        if not isinstance(v, _KINDS[kind]):
            raise self.fail(k, f"must be {_ARTICLE[kind]} (got {_kind(v)})")
        if kind == "string" and not v.strip():
            raise self.fail(k, "must not be empty")
        return v

    def num(self, k: str, required: bool = True, default=None, **rng):
        if k not in self.data or (self.data[k] is None and not required):
            if required:
                raise self.fail(k, "is missing")
            return default
        return number(self.data[k], self.key(k), where=str(self.file), **rng)

    def obj(self, k: str, required: bool = True) -> Optional["_Obj"]:
        v = self.get(k, "object", required)
        return None if v is None else _Obj(self.file, v, self.key(k))


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(v), "a number")


def _rel_file(o: _Obj, k: str = "file") -> str:
    """An engine file name: relative, inside the engine folder (the folder is
    untrusted input, so no absolute paths or ``..``)."""
    f = o.get(k, "string")
    if not names_inside(f):
        raise o.fail(k, f"must name a file inside the engine folder (got {f!r})")
    return f


def _sha(o: _Obj) -> Optional[str]:
    sha = o.get("sha256", "string", required=False)
    if sha is not None and (len(sha) != 64 or not set(sha) <= SHA256_HEX):
        raise o.fail("sha256", "must be 64 lower-case hex digits")
    return sha


@dataclass
class TensorSpec:
    name: str
    shape: list  # ints (fixed axes) and strings (named dynamic axes)

    @classmethod
    def parse(cls, o: _Obj) -> "TensorSpec":
        shape = o.get("shape", "list")
        if not shape:
            raise o.fail("shape", "must not be empty")
        axes = [a if isinstance(a, str) else number(a, o.key(f"shape[{i}]"), where=str(o.file), lo=1, integer=True) for i, a in enumerate(shape)]
        return cls(o.get("name", "string"), axes)


@dataclass
class VariantSpec:
    file: str
    sha256: Optional[str]
    format: str

    @classmethod
    def parse(cls, o: _Obj) -> "VariantSpec":
        return cls(_rel_file(o), _sha(o), o.get("format", "string", required=False, default="onnx"))


@dataclass
class EngineEntry:
    modality: str
    file: str
    precision: str
    sha256: Optional[str]
    format: str
    input: TensorSpec
    output: TensorSpec
    image_size: Optional[int]  # image engines: the square input side
    sample_rate: Optional[int]  # audio engines
    window: Optional[int]  # audio engines: samples per example
    variants: dict  # precision -> VariantSpec
    reliability_output: Optional[str] = None  # the second output's name; None: an engine exported without one

    @classmethod
    def parse(cls, modality: str, o: _Obj) -> "EngineEntry":
        image, audio = o.obj("image", required=False), o.obj("audio", required=False)
        variants = o.obj("variants", required=False)
        rel = o.obj("reliability_output", required=False)
        return cls(
            modality=modality,
            file=_rel_file(o),
            precision=o.get("precision", "string"),
            sha256=_sha(o),
            format=o.get("format", "string", required=False, default="onnx"),
            input=TensorSpec.parse(o.obj("input")),
            output=TensorSpec.parse(o.obj("output")),
            image_size=image.num("size", required=False, lo=1, hi=4096, integer=True) if image else None,
            sample_rate=audio.num("sample_rate", lo=AUDIO_RATES[0], hi=AUDIO_RATES[1], integer=True) if audio else None,
            window=audio.num("window", lo=1, hi=10_000_000, integer=True) if audio else None,
            variants={p: VariantSpec.parse(variants.obj(p)) for p in variants.data} if variants else {},
            reliability_output=rel.get("name", "string") if rel else None,
        )

    def files(self) -> list:
        """(file, sha256) of every ONNX file the entry names: the ones to verify."""
        out = [(self.file, self.sha256)] if self.format == "onnx" else []
        return out + [(v.file, v.sha256) for v in self.variants.values() if v.format == "onnx" and (v.file, v.sha256) not in out]


@dataclass
class ManifestDoc:
    """manifest.json, typed and checked (see the module docstring for the schema)."""

    classes: list
    fusion_rule: str
    engines: dict  # modality -> EngineEntry

    @classmethod
    def parse(cls, file: Path, data) -> "ManifestDoc":
        from edge_mla.fusion import FUSION_RULES

        top = _Obj(file, data)
        if data.get("format") != FORMAT:
            raise EdgeMlaError(f"{file}: not an edge-mla engine manifest (expected format {FORMAT})")
        classes = top.get("classes", "list")
        if not classes:
            raise top.fail("classes", "must list at least one class")
        for i, c in enumerate(classes):
            if not isinstance(c, str) or not c.strip():
                raise top.fail(f"classes[{i}]", f"must be a non-empty string (got {c!r})")
        if len(set(classes)) != len(classes):
            raise top.fail("classes", "lists a class twice")
        fusion = top.obj("fusion", required=False)
        rule = fusion.get("rule", "string", required=False, default="entropy") if fusion else "entropy"
        if rule not in FUSION_RULES:
            raise top.fail("fusion.rule", f"must be one of {', '.join(FUSION_RULES)} (got {rule!r})")
        engines = top.obj("engines")
        if not engines.data:
            raise EdgeMlaError(f"{file}: lists no engines")
        parsed = {m: EngineEntry.parse(m, engines.obj(m)) for m in engines.data}
        for m, e in parsed.items():
            v = e.variants.get(e.precision)
            if v is not None and v.file != e.file:  # run loads one file, profile would time the other
                raise engines.fail(f"{m}.file", f"is {e.file!r} but variants.{e.precision}.file, the same precision, is {v.file!r}")
            # facts that must agree, or the runtime would fail on every frame instead of at start
            out_shape, in_shape = e.output.shape, e.input.shape
            if isinstance(out_shape[-1], int) and out_shape[-1] != len(classes):
                raise engines.fail(f"{m}.output.shape", f"ends in {out_shape[-1]} but classes lists {len(classes)}")
            if e.image_size is not None and len(in_shape) >= 2 and all(isinstance(a, int) for a in in_shape[-2:]) and in_shape[-2:] != [e.image_size] * 2:
                raise engines.fail(f"{m}.image.size", f"is {e.image_size} but input.shape ends in {in_shape[-2:]}")
            if e.window is not None and isinstance(in_shape[-1], int) and in_shape[-1] != e.window:
                raise engines.fail(f"{m}.audio.window", f"is {e.window} but input.shape ends in {in_shape[-1]}")
        return cls(list(classes), rule, parsed)


@dataclass
class EngineSpec:
    modality: str
    path: Path
    precision: str
    input_name: str
    input_shape: list
    output_name: str
    entry: dict  # the raw manifest entry (image/audio facts, variants)
    parsed: Optional[EngineEntry] = None
    classes: Optional[list] = None  # the manifest's class list (checked against the engine's own stamp)

    @property
    def sample_rate(self) -> Optional[int]:
        return self.parsed.sample_rate if self.parsed else self.entry.get("audio", {}).get("sample_rate")

    @property
    def window(self) -> Optional[int]:
        return self.parsed.window if self.parsed else self.entry.get("audio", {}).get("window")

    @property
    def image_size(self) -> Optional[int]:
        return self.parsed.image_size if self.parsed else self.entry.get("image", {}).get("size")


@dataclass
class Manifest:
    root: Path
    data: dict  # the raw JSON (newer keys included)
    doc: ManifestDoc

    @property
    def classes(self) -> list:
        return list(self.doc.classes)

    @property
    def modalities(self) -> list:
        return list(self.doc.engines)

    @property
    def fusion_rule(self) -> str:
        return self.doc.fusion_rule

    def reliability(self):
        """The fusion block's reliability constants (an edge_mla.reliability.Reliability),
        or None for an engine folder exported without them. A malformed block is the
        user's problem: one line naming the manifest."""
        from edge_mla.reliability import Reliability

        block = (self.data.get("fusion") or {}).get("reliability")
        if block is None:
            return None
        return Reliability.from_dict(block, str(self.root / MANIFEST_NAME))

    def engine(self, modality: str, precision: Optional[str] = None) -> EngineSpec:
        """The engine for ``modality``; ``precision`` picks a variant (fp32, int8)
        instead of the default one the export chose."""
        engines = self.doc.engines
        if modality not in engines:
            raise EdgeMlaError(f"{self.root / MANIFEST_NAME}: no engine for modality {modality!r} (have: {', '.join(engines)})")
        e = engines[modality]
        file, prec = e.file, e.precision
        if precision and precision != prec:
            var = e.variants.get(precision)
            if not var:
                raise EdgeMlaError(f"{self.root / MANIFEST_NAME}: no {precision} variant for {modality} (have: {', '.join(e.variants) or prec})")
            file, prec = var.file, precision
        return EngineSpec(modality, self.root / file, prec, e.input.name, list(e.input.shape), e.output.name, self.data["engines"][modality], e, list(self.doc.classes))


def write_manifest(root: Path, data: dict) -> Path:
    """Write manifest.json; checked against the same schema the readers use first, so
    the export can never ship a manifest the runtime refuses."""
    data = dict(data)
    data.setdefault("format", FORMAT)
    path = Path(root) / MANIFEST_NAME
    ManifestDoc.parse(path, data)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: Path):
    """A JSON file's content; unreadable or invalid -> one line naming the file. The
    one reader of every JSON file a user or a folder hands edge-mla (manifest, run
    folder config, reliability constants, train --config)."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise EdgeMlaError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise EdgeMlaError(f"{path}: not UTF-8 text") from None
    except ValueError as exc:
        raise EdgeMlaError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:  # json's decoder recurses per level: '[' * 1000 is enough
        raise EdgeMlaError(f"{path}: not valid JSON (nested too deeply)") from None


def _inside(root: Path, f: Path, manifest: Path, what: str) -> None:
    """``f`` (which may not exist) resolves inside the engine folder ``root``. Why: the
    names are checked for ``..`` and absolute paths (``_rel_file``), but a link in the
    folder (an untrusted input) could still point anywhere, and the runtime, profile
    and doctor would load what it points at."""
    real, top = f.resolve(), root.resolve()
    if real != top and top not in real.parents:
        raise EdgeMlaError(f"{manifest}: {what} is a link that leads outside the engine folder (to {real}); copy the file into the folder")


def load_manifest(root: str | Path, verify: bool = True) -> Manifest:
    """Read and check an engine folder: the manifest parses against the schema, and
    (``verify``) every listed ONNX file exists with the recorded sha256, before
    anything loads it."""
    root = Path(root)
    path = required_file(root, MANIFEST_NAME, "engine", "export")
    _inside(root, path, path, "the manifest")
    data = read_json(path)
    doc = ManifestDoc.parse(path, data)
    for mod, e in doc.engines.items():
        for fname in dict.fromkeys([e.file, *(v.file for v in e.variants.values())]):
            _inside(root, root / fname, path, f"engine file {fname} for {mod}")
    if verify:
        for mod, e in doc.engines.items():
            for fname, sha in e.files():
                f = root / fname
                if not f.is_file():
                    raise EdgeMlaError(f"{path}: engine file {fname} for {mod} is missing")
                if sha and sha256_of(f) != sha:
                    raise EdgeMlaError(f"{path}: {fname} does not match its sha256 in the manifest (file changed after export?)")
    return Manifest(root, data, doc)


# -- the run folder's config.json (written by train; read by eval and export) -------

RUN_CONFIG_NAME = "config.json"
SPLITS = ("official", "speaker")


@dataclass
class RunFolderConfig:
    """The flat keys of a run folder's config.json that later stages read."""

    path: Path
    dataset: Optional[str]
    data_dir: Optional[str]
    seed: int
    split: str
    data: dict  # the whole file (nested train/model/dataset blocks)

    @classmethod
    def parse(cls, path: Path, data) -> "RunFolderConfig":
        from edge_mla.data.registry import DATASETS

        o = _Obj(path, data)
        dataset = o.get("dataset", "string", required=False)
        if dataset is not None and dataset not in DATASETS:
            raise o.fail("dataset", f"must be one of {', '.join(DATASETS)} (got {dataset!r})")
        split = o.get("split", "string", required=False, default="official")
        if split not in SPLITS:
            raise o.fail("split", f"must be one of {', '.join(SPLITS)} (got {split!r})")
        return cls(path, dataset, o.get("data_dir", "string", required=False), o.num("seed", required=False, default=0, lo=0, integer=True), split, data)

    def need_dataset(self, hint: str = "") -> str:
        if not self.dataset:
            raise EdgeMlaError(f"{self.path}: dataset is missing{hint}")
        return self.dataset


def load_run_config(run_dir: str | Path, required: bool = True) -> RunFolderConfig:
    """config.json of a run folder, checked; ``required`` False: an absent file reads
    as an empty config (export can be told the dataset with flags)."""
    path = Path(run_dir) / RUN_CONFIG_NAME
    if not required and not path.is_file():
        return RunFolderConfig(path, None, None, 0, "official", {})
    if required:
        path = required_file(run_dir, RUN_CONFIG_NAME, "run", "train")
    return RunFolderConfig.parse(path, read_json(path))
