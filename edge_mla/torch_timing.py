"""PyTorch eager timings for `edge-mla profile`, kept out of the runtime package
because a device installs the runtime without torch. The profiler calls
``torch_eager_timings`` as an extra backend when torch imports and the engine
folder's run folder is there, so eager and ONNX Runtime are timed in one process.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def torch_eager_timings(cfg, manifest, onnx_timings: list, rng) -> list:
    """EngineTimings of ``model.logits(m, x)`` for each modality, batch and thread
    count in ``cfg`` (a ProfileConfig); [] with a logged reason when not possible."""
    from edge_mla.errors import EdgeMlaError
    from edge_mla.runtime.profiling.engines import example_input, make_timing, time_call

    if "torch" not in cfg.backends:
        return []
    model_block = manifest.data.get("model")
    recorded = model_block.get("run_dir") if isinstance(model_block, dict) else None
    if cfg.run_dir is not None and not Path(cfg.run_dir).is_dir():
        raise EdgeMlaError(f"--run-dir {cfg.run_dir}: run folder not found")
    run_dir = cfg.run_dir or (recorded if isinstance(recorded, str) else None)
    if not run_dir or not Path(run_dir).is_dir():
        log.info("PyTorch eager not profiled: no run folder (pass --run-dir)")
        return []
    try:
        import torch
    except ImportError:
        log.info("PyTorch eager not profiled: torch is not installed (runtime-only device)")
        return []
    from edge_mla.checkpoint import load_checkpoint

    want = model_block.get("checkpoint_sha256") if cfg.run_dir is None and isinstance(model_block, dict) else None
    if want is not None:  # the folder named by the manifest: time the model it was exported from, or none
        from edge_mla.checkpoint import CHECKPOINT_NAME
        from edge_mla.manifest import sha256_of

        ckpt = Path(run_dir) / CHECKPOINT_NAME
        if not ckpt.is_file() or sha256_of(ckpt) != want:
            log.warning("PyTorch eager not profiled: %s is not the checkpoint these engines were exported from (sha256 differs; pass --run-dir)", ckpt)
            return []
    try:
        model, _ = load_checkpoint(run_dir)
    except EdgeMlaError as exc:
        log.warning("PyTorch eager not profiled: %s", exc)
        return []
    macs = {m: next((t.macs for t in onnx_timings if t.modality == m and t.precision == "fp32"), None) for m in manifest.modalities}
    out = []
    for m in manifest.modalities:
        for batch in cfg.batches:
            for threads in cfg.threads:
                torch.set_num_threads(threads)
                x = torch.from_numpy(example_input(manifest.data["engines"][m], batch, rng))
                with torch.inference_mode():
                    samples = time_call(lambda: model.logits(m, x), cfg.warmup, cfg.repeats)
                out.append(make_timing(m, "torch", "fp32", batch, threads, samples, macs.get(m), None))
    return out
