"""The checkpoint a run folder holds: state dicts + plain config, nothing pickled
beyond tensors and primitives, so it loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from edge_mla.errors import EdgeMlaError, first_line, required_file
from edge_mla.manifest import sha256_of as file_sha256  # noqa: F401  (re-exported for export/)

FORMAT = "edge-mla-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
from edge_mla.manifest import RUN_CONFIG_NAME as CONFIG_NAME  # noqa: E402, F401  (one home)
METRICS_NAME = "metrics.jsonl"


def save_checkpoint(path: Path, model, classes: list, method: str, epoch: int, extra: dict | None = None) -> None:
    import torch

    payload = {
        "format": FORMAT,
        "model_config": model.cfg.to_dict(),
        # CPU tensors whatever the training device: the runtime and export load anywhere
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "method": method,
        "epoch": int(epoch),
        "extra": extra or {},
    }
    tmp = Path(str(path) + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(run_dir: str | os.PathLike):
    """Return (model in eval mode, payload dict). Errors name the file and the problem."""
    import torch

    from edge_mla.models import ModelConfig, build_model

    path = required_file(run_dir, CHECKPOINT_NAME, "run", "train")
    if path.stat().st_size == 0:
        raise EdgeMlaError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        # Untrusted input: tensors and primitives only (weights_only), never a pickle
        # of arbitrary objects. torch warns at length around such failures; the user
        # gets one line instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgeMlaError(f"{path}: cannot load checkpoint ({exc.__class__.__name__}: {first_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EdgeMlaError(f"{path}: not an edge-mla checkpoint (expected format {FORMAT})")
    mc = payload.get("model_config")
    if not isinstance(mc, dict):
        raise EdgeMlaError(f"{path}: checkpoint model_config is malformed (expected an object, got {type(mc).__name__})")
    try:
        cfg = ModelConfig.from_dict(mc)
    except (ValueError, TypeError, EdgeMlaError) as exc:
        raise EdgeMlaError(f"{path}: checkpoint model_config is malformed ({first_line(exc)})") from None
    try:
        model = build_model(cfg)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        # torch's first line is a heading; the second names the first mismatched tensor
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or [exc.__class__.__name__]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise EdgeMlaError(f"{path}: checkpoint does not match its architecture ({detail[:300]})") from None
    except TypeError as exc:  # a field of the wrong type in model_config
        raise EdgeMlaError(f"{path}: checkpoint model_config is malformed ({first_line(exc)})") from None
    _check_payload_fields(path, payload, cfg.num_classes)
    _check_weights(path, payload["state_dict"], model)
    model.eval()
    return model, payload


def _check_weights(path: Path, stored: dict, model) -> None:
    """Every stored weight the model keeps as a float is a float, and finite. Why:
    load_state_dict copies an int64 tensor into a float parameter without a word, and
    NaN weights gave 10% everywhere (and a reliability.json of NaN) with exit 0."""
    import torch

    own = model.state_dict()
    for k, v in stored.items():
        if k in own and own[k].is_floating_point() and isinstance(v, torch.Tensor):
            if not v.is_floating_point():
                raise EdgeMlaError(f"{path}: checkpoint stores {k} as {str(v.dtype).replace('torch.', '')}, not floating point")
            if not bool(torch.isfinite(v).all()):
                raise EdgeMlaError(f"{path}: checkpoint holds non-finite weights ({k}: NaN or inf; did training diverge?)")


def _check_payload_fields(path: Path, payload: dict, num_classes) -> None:
    """The plain fields eval, export and the manifest read from a checkpoint: the
    training method (its fusion rule), the class names and the epoch. A wrong type
    there surfaced as a TypeError deep in eval or export (a list as the method, a
    number as the classes) or was copied into the manifest as it was; an unknown
    method is refused rather than fused by a guessed rule."""
    from edge_mla.train.config import METHODS

    method = payload.get("method")
    if method is not None and (not isinstance(method, str) or method not in METHODS):
        raise EdgeMlaError(f"{path}: checkpoint names an unknown training method {method!r} (known: {', '.join(METHODS)})")
    classes = payload.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() and c.isprintable() for c in classes)
                                or len(set(classes)) != len(classes) or (num_classes is not None and len(classes) != num_classes)):
        raise EdgeMlaError(f"{path}: checkpoint class names are malformed (expected {num_classes} distinct non-empty printable strings, as the model has classes)")
    epoch = payload.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise EdgeMlaError(f"{path}: checkpoint epoch {epoch!r} is not a count of epochs")
