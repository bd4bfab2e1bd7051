"""Each method's training step: who moves, and what MLA does to the head."""

import copy
import math

import pytest
import torch

from edge_mla.models import ModelConfig, build_model
from edge_mla.train.config import HEAD_KIND, TrainConfig
from edge_mla.train.methods import make_method, ogm_coefficients, pareto_combine, pareto_weight


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


@pytest.mark.parametrize("method_name", ["joint", "ogm_ge", "unimodal", "mmpareto"])
def test_baselines_train_every_encoder(method_name):
    model = _model(method_name)
    method = make_method(model, TrainConfig(method=method_name))
    before = {m: _snapshot(model.encoders[m]) for m in model.encoders}
    x, y = _batch()
    out = method.step(x, y, (0, 10))
    assert all(v == v for v in out.values())  # no NaN
    for m in model.encoders:
        assert _changed(before[m], model.encoders[m]), m


def test_ogm_ge_coefficient_is_the_published_one():
    """k = 1 - tanh(alpha * rho) for the dominant modality (rho, not rho - 1): at rho = 1.2
    and alpha = 0.5 that is 0.463 (the old form gave 0.900); the other modality gets 1."""
    k = ogm_coefficients({"image": 12.0, "audio": 10.0}, alpha=0.5)
    assert k["audio"] == 1.0
    assert k["image"] == pytest.approx(1 - math.tanh(0.6)) and k["image"] == pytest.approx(0.4630, abs=1e-4)
    k = ogm_coefficients({"image": 5.0, "audio": 20.0}, alpha=0.1)  # audio dominant, rho = 4
    assert k == {"image": 1.0, "audio": pytest.approx(1 - math.tanh(0.4))}
    assert ogm_coefficients({"image": 3.0, "audio": 3.0}, alpha=0.5) == {"image": 1.0, "audio": 1.0}


def test_ogm_ge_touches_only_convolution_weights():
    """Against the same joint step without modulation: the 4-D conv weight gradients are
    scaled and noised, every other parameter (Linear weights, biases, BatchNorm, head)
    gets exactly the plain gradient."""
    x, y = _batch(n=16)
    grads = {}
    for name in ("joint", "ogm_ge"):
        model = _model("ogm_ge")
        method = make_method(model, TrainConfig(method=name, ogm_alpha=0.5))
        method.opt.step = lambda: None  # keep the gradients to compare them
        method.step(x, y, (0, 10))
        grads[name] = {k: p.grad.clone() for k, p in model.named_parameters()}
    conv = [k for k, g in grads["joint"].items() if g.dim() == 4]
    assert conv and all(k.startswith("encoders.") for k in conv)
    for k, g in grads["joint"].items():
        if g.dim() == 4:
            assert not torch.allclose(grads["ogm_ge"][k], g), k
        else:
            assert torch.equal(grads["ogm_ge"][k], g), k


def test_ogm_ge_reports_its_coefficients():
    model = _model("ogm_ge")
    method = make_method(model, TrainConfig(method="ogm_ge", ogm_alpha=1.0))
    x, y = _batch(n=32)
    out = {}
    for i in range(3):
        out = method.step(x, y, (i, 10))
    coeffs = [out[k] for k in out if k.startswith("coeff_")]
    assert len(coeffs) == 2 and all(0 < c <= 1 for c in coeffs) and min(coeffs) < 1 and max(coeffs) == 1
    assert set(method.epoch_stats()) == {"ogm_coeff_image", "ogm_coeff_audio"}


def test_mmpareto_two_gradient_case_by_hand():
    """g_mm = (1, 0), g_m = (-1, 1): cosine < 0, so the min-norm weight on g_mm is
    a = ((g_m - g_mm) . g_m) / |g_mm - g_m|^2 = 3 / 5 = 0.6; new = 2 (0.6 g_mm + 0.4 g_m)
    = (0.4, 0.8), shorter than the plain sum (0, 1), so it is stretched to length 1:
    (0.4, 0.8) / sqrt(0.8), then times gamma = 1.5."""
    g_mm, g_m = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert pareto_weight(g_mm, g_m) == pytest.approx(0.6)
    a, (new,) = pareto_combine([g_mm], [g_m], gamma=1.5)
    assert a == pytest.approx(0.6)
    expected = torch.tensor([0.4, 0.8]) / math.sqrt(0.8) * 1.5
    assert torch.allclose(new, expected, atol=1e-6)
    # The min-norm point: no other weight on the segment gives a shorter combination.
    for b in torch.linspace(0, 1, 101):
        assert float((b * g_mm + (1 - b) * g_m).norm()) >= float((0.6 * g_mm + 0.4 * g_m).norm()) - 1e-6


def test_mmpareto_agreeing_gradients_are_weighted_equally():
    """Cosine > 0: a = 0.5, so per tensor new = g_mm + g_m (the plain gradient) times gamma."""
    g_mm = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])]
    g_m = [torch.tensor([3.0, 0.0]), torch.tensor([[1.0]])]
    a, new = pareto_combine(g_mm, g_m, gamma=1.5)
    assert a == 0.5
    for n, gm, gu in zip(new, g_mm, g_m):
        assert torch.allclose(n, 1.5 * (gm + gu))


def test_mmpareto_step_uses_the_pareto_gradient_on_encoders_and_the_plain_one_on_heads():
    model = _model("mmpareto")
    method = make_method(model, TrainConfig(method="mmpareto"))
    method.opt.step = lambda: None
    x, y = _batch(n=16)
    method.step(x, y, (0, 10))
    got = {k: p.grad.clone() for k, p in model.named_parameters()}
    # Recompute by hand with autograd on a copy.
    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    h = {m: ref.embed(m, x[m]) for m in ref.modalities}
    loss_mm = torch.nn.functional.cross_entropy(sum(ref.head_logits(m, h[m]) for m in h), y)
    loss_u = {m: torch.nn.functional.cross_entropy(ref.aux_logits(m, h[m]), y) for m in h}
    (loss_mm + sum(loss_u.values())).backward(retain_graph=True)
    plain = {k: p.grad.clone() for k, p in ref.named_parameters()}
    for k in plain:
        if not k.startswith("encoders."):
            assert torch.allclose(got[k], plain[k], atol=1e-6), k  # heads: the summed loss's gradient
    for m in ref.modalities:
        names = [k for k, _ in ref.encoders[m].named_parameters()]
        params = list(ref.encoders[m].parameters())
        g_mm = torch.autograd.grad(loss_mm, params, retain_graph=True)
        g_m = torch.autograd.grad(loss_u[m], params, retain_graph=True)
        _, new = pareto_combine(list(g_mm), list(g_m), 1.5)
        for name, g in zip(names, new):
            assert torch.allclose(got[f"encoders.{m}.{name}"], g, atol=1e-6), name
            # never shorter than gamma x the plain gradient
            assert float(g.norm()) >= 1.5 * float(plain[f"encoders.{m}.{name}"].norm()) - 1e-5


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


def test_recipes_fill_only_what_is_not_set():
    from edge_mla.train.config import RECIPES

    paper = TrainConfig.build({"recipe": "paper"})
    assert (paper.method, paper.head_grad) == ("mla", "owm")
    assert TrainConfig.build({"recipe": "paper", "head_grad": "none"}).head_grad == "none"  # an explicit value wins
    default = TrainConfig()
    assert (default.method, default.head_grad) == (RECIPES["default"]["method"], RECIPES["default"]["head_grad"])
