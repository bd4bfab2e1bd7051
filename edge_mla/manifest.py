"""The engine folder's manifest.json: everything a device needs to run the engines
without the training stack. Written by export, read by the runtime and the profiler.
Pure json/hashlib so the runtime extra can read it.

Schema (format "edge-mla-engines/1"):

{
  "format": "edge-mla-engines/1",
  "edge_mla_version": "0.1.0",
  "created": "2026-11-27T08:00:00Z",
  "model": {"preset": "tiny", "method": "mla", "run_dir": "...", "checkpoint_sha256": "...", "epoch": 3},
  "classes": ["0", ..., "9"],
  "fusion": {"rule": "entropy", "method": "mla",            # the training method's rule
             "reliability": {"signal": "mahalanobis",  # optional (older folders: absent)
                             "threshold": 0.5, "output": "reliability",
                             "modalities": {"<modality>": {"temperature", "features", "coef", "bias", "means", "precision"}},
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

FORMAT = "edge-mla-engines/1"
MANIFEST_NAME = "manifest.json"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class EngineSpec:
    modality: str
    path: Path
    precision: str
    input_name: str
    input_shape: list
    output_name: str
    entry: dict  # the raw manifest entry (image/audio facts, variants)

    @property
    def sample_rate(self) -> Optional[int]:
        return self.entry.get("audio", {}).get("sample_rate")

    @property
    def window(self) -> Optional[int]:
        return self.entry.get("audio", {}).get("window")

    @property
    def image_size(self) -> Optional[int]:
        return self.entry.get("image", {}).get("size")


@dataclass
class Manifest:
    root: Path
    data: dict

    @property
    def classes(self) -> list:
        return list(self.data["classes"])

    @property
    def modalities(self) -> list:
        return list(self.data["engines"])

    @property
    def fusion_rule(self) -> str:
        return self.data.get("fusion", {}).get("rule", "entropy")

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
        engines = self.data["engines"]
        if modality not in engines:
            raise EdgeMlaError(f"{self.root / MANIFEST_NAME}: no engine for modality {modality!r} (have: {', '.join(engines)})")
        e = engines[modality]
        file, prec, sha = e["file"], e["precision"], e.get("sha256")
        if precision and precision != prec:
            var = e.get("variants", {}).get(precision)
            if not var:
                raise EdgeMlaError(f"{self.root / MANIFEST_NAME}: no {precision} variant for {modality} (have: {', '.join(e.get('variants', {})) or prec})")
            file, prec, sha = var["file"], precision, var.get("sha256")
        return EngineSpec(modality, self.root / file, prec, e["input"]["name"], list(e["input"]["shape"]), e["output"]["name"], e)


def write_manifest(root: Path, data: dict) -> Path:
    data = dict(data)
    data.setdefault("format", FORMAT)
    path = Path(root) / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def load_manifest(root: str | Path, verify: bool = True) -> Manifest:
    """Read and check an engine folder: the manifest parses, names its engines, and
    (``verify``) every listed file exists with the recorded sha256."""
    root = Path(root)
    path = required_file(root, MANIFEST_NAME, "engine", "export")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgeMlaError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EdgeMlaError(f"{path}: not an edge-mla engine manifest (expected format {FORMAT})")
    for key in ("classes", "engines"):
        if key not in data:
            raise EdgeMlaError(f"{path}: missing key {key!r}")
    if not data["engines"]:
        raise EdgeMlaError(f"{path}: lists no engines")
    for mod, e in data["engines"].items():
        for key in ("file", "precision", "input", "output"):
            if key not in e:
                raise EdgeMlaError(f"{path}: engine {mod!r} has no {key!r}")
        if verify:
            files = [(e["file"], e.get("sha256"))] + [(v["file"], v.get("sha256")) for v in e.get("variants", {}).values() if v.get("format", "onnx") == "onnx"]
            for fname, sha in files:
                f = root / fname
                if not f.is_file():
                    raise EdgeMlaError(f"{path}: engine file {fname} for {mod} is missing")
                if sha and sha256_of(f) != sha:
                    raise EdgeMlaError(f"{path}: {fname} does not match its sha256 in the manifest (file changed after export?)")
    return Manifest(root, data)
