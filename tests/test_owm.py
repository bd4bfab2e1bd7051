import torch

from edge_mla.train.owm import HeadProjector


def test_projection_update_removes_the_feature_direction():
    torch.manual_seed(0)
    proj = HeadProjector(16)
    h = torch.randn(16)
    proj.update(h, alpha=1e-3)
    # After an update with h, P h is small relative to h (h is nearly projected out).
    assert float((proj.P @ h.double()).norm()) < 0.05 * float(h.norm())
    # Directions orthogonal to h are untouched.
    v = torch.randn(16).double()
    v -= (v @ h.double()) / (h.double() @ h.double()) * h.double()
    assert torch.allclose(proj.P @ v, v, atol=1e-6)
    assert torch.allclose(proj.P, proj.P.t())


def test_projection_changes_the_head_gradient():
    torch.manual_seed(1)
    proj = HeadProjector(8)
    h = torch.randn(8)
    proj.update(h, alpha=0.01)
    g = torch.randn(10, 8)
    g2 = proj.project(g)
    assert not torch.allclose(g, g2)
    assert float((g2.double() @ h.double()).norm()) < 0.05 * float((g.double() @ h.double()).norm())
    assert 0 < proj.last_ratio < 1


def test_norm_preserving_variant_keeps_the_gradient_size():
    torch.manual_seed(2)
    proj = HeadProjector(8, mode="owm_norm")
    for _ in range(50):
        proj.update(torch.randn(8), alpha=0.01)
    g = torch.randn(10, 8)
    g2 = proj.project(g)
    assert proj.last_ratio < 0.9  # the paper's projection shrinks it ...
    assert abs(float(g2.norm()) - float(g.norm())) < 1e-4 * float(g.norm())  # ... owm_norm does not


def test_p_collapses_with_repeated_updates():
    torch.manual_seed(3)
    proj = HeadProjector(8)
    start = proj.frobenius
    for _ in range(200):
        proj.update(torch.randn(8) + 2.0, alpha=0.01)
    assert proj.frobenius < 0.5 * start
