"""Each method's training step: who moves, and what MLA does to the head."""

import copy

import pytest
import torch

from edge_mla.models import ModelConfig, build_model
from edge_mla.train.config import HEAD_KIND, TrainConfig
from edge_mla.train.methods import make_method


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, 28, 28, generator=g), "audio": torch.randn(n, 8000, generator=g) * 0.1}, torch.randint(0, 10, (n,), generator=g)


def _model(method):
    torch.manual_seed(0)
    return build_model(ModelConfig(preset="tiny", head=HEAD_KIND[method]))


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


def test_mla_inactive_encoder_does_not_move():
    """During the audio step, the image encoder (weights, BN statistics) must stay put,
    even after a previous step left momentum and weight decay in play."""
    cfg = TrainConfig(method="mla", weight_decay=1e-2, modality_order=("audio", "image"))
    model = _model("mla")
    method = make_method(model, cfg)
    x, y = _batch()
    method.step(x, y, (0, 10))  # both encoders have momentum buffers now
    img_before = _snapshot(model.encoders["image"])
    aud_before = _snapshot(model.encoders["audio"])
    method.step({"audio": x["audio"]}, y, (1, 10))  # an audio-only step
    assert _changed(img_before, model.encoders["image"]) == []
    assert _changed(aud_before, model.encoders["audio"])  # the active encoder did move


def test_mla_steps_each_modality_in_turn_and_projects_the_head_gradient():
    cfg = TrainConfig(method="mla", head_grad="owm")
    model = _model("mla")
    method = make_method(model, cfg)
    x, y = _batch()
    out = method.step(x, y, (0, 10))
    assert set(out) == {"loss_audio", "loss_image"}
    assert method.steps == 2
    # The first step of training is not projected, the second one is.
    assert method.projector.updates == 1
    assert method.projector.frobenius < (model.cfg.dim ** 0.5) - 1e-6
    assert 0 < method.projector.last_ratio < 1


def test_mla_projection_changes_the_update_compared_with_none():
    x, y = _batch(seed=3)
    heads = {}
    for mode in ("owm", "none"):
        model = _model("mla")
        method = make_method(model, TrainConfig(method="mla", head_grad=mode))
        for i in range(3):
            method.step(x, y, (i, 10))
        heads[mode] = model.head.weight.detach().clone()
    assert not torch.allclose(heads["owm"], heads["none"])


@pytest.mark.parametrize("method_name", ["joint", "ogm_ge", "unimodal"])
def test_baselines_train_every_encoder(method_name):
    model = _model(method_name)
    method = make_method(model, TrainConfig(method=method_name))
    before = {m: _snapshot(model.encoders[m]) for m in model.encoders}
    x, y = _batch()
    out = method.step(x, y, (0, 10))
    assert all(v == v for v in out.values())  # no NaN
    for m in model.encoders:
        assert _changed(before[m], model.encoders[m]), m


def test_ogm_ge_modulates_the_dominant_modality():
    model = _model("ogm_ge")
    method = make_method(model, TrainConfig(method="ogm_ge", ogm_alpha=1.0))
    x, y = _batch(n=32)
    # Make audio dominant: a head that already predicts the label from audio.
    with torch.no_grad():
        model.head.weight.zero_()
    out = {}
    for i in range(5):
        out = method.step(x, y, (i, 10))
    coeffs = [out[k] for k in out if k.startswith("coeff_")]
    assert len(coeffs) == 2 and all(0 < c <= 1 for c in coeffs)
    stats = method.epoch_stats()
    assert set(stats) == {"ogm_coeff_image", "ogm_coeff_audio"}


def test_separate_heads_are_independent():
    model = _model("unimodal")
    z = model({"image": torch.rand(2, 1, 28, 28)})
    assert set(z) == {"image"} and z["image"].shape == (2, 10)
    assert model.heads["image"] is not model.heads["audio"]


def test_concat_head_parts_sum_to_the_fused_logits():
    model = _model("joint").eval()
    x, _ = _batch(4)
    with torch.no_grad():
        h = [model.embed(m, x[m]) for m in model.modalities]
        fused = model.head(torch.cat(h, dim=1))
        parts = model(x)
    assert torch.allclose(sum(parts.values()), fused, atol=1e-5)
