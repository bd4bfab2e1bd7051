import numpy as np
import pytest

from edge_mla.fusion import entropy, fuse, fusion_weights


def test_entropy_weights_sum_to_one_and_favour_confident_modality():
    rng = np.random.default_rng(0)
    confident = np.zeros((5, 10)); confident[:, 3] = 8.0
    unsure = rng.normal(0, 0.1, (5, 10))
    w = fusion_weights({"image": unsure, "audio": confident}, "entropy")
    np.testing.assert_allclose(w["image"] + w["audio"], 1.0, atol=1e-6)
    assert np.all(w["audio"] > w["image"])


def test_entropy_weights_match_formula():
    rng = np.random.default_rng(1)
    z = {"a": rng.normal(size=(7, 4)), "b": rng.normal(size=(7, 4)) * 3}
    w = fusion_weights(z, "entropy")
    e = np.stack([entropy(z["a"]), entropy(z["b"])])
    emax = e.max(axis=0)
    num = np.exp(emax - e)
    np.testing.assert_allclose(w["a"], num[0] / num.sum(0), rtol=1e-5)
    fused, _ = fuse(z, "entropy")
    np.testing.assert_allclose(fused, w["a"][:, None] * z["a"] + w["b"][:, None] * z["b"], rtol=1e-5)


def test_weights_are_per_sample_not_per_batch():
    rng = np.random.default_rng(2)
    z = {"a": rng.normal(size=(8, 10)) * 2, "b": rng.normal(size=(8, 10)) * 2}
    full = fusion_weights(z, "entropy")
    alone = fusion_weights({k: v[3:4] for k, v in z.items()}, "entropy")
    other_batch = {k: np.concatenate([v[3:4], rng.normal(size=(5, 10)) * 10]) for k, v in z.items()}
    mixed = fusion_weights(other_batch, "entropy")
    for m in z:
        assert full[m][3] == pytest.approx(alone[m][0], rel=1e-6)
        assert mixed[m][0] == pytest.approx(alone[m][0], rel=1e-6)


def test_missing_modality_is_left_out():
    rng = np.random.default_rng(3)
    z = {"image": rng.normal(size=(4, 10)), "audio": rng.normal(size=(4, 10))}
    avail = {"image": np.array([True, False, True, True]), "audio": np.array([True, True, False, True])}
    fused, w = fuse(z, "entropy", avail)
    assert w["image"][1] == 0 and w["audio"][1] == pytest.approx(1.0)
    np.testing.assert_allclose(fused[1], z["audio"][1], rtol=1e-6)
    np.testing.assert_allclose(fused[2], z["image"][2], rtol=1e-6)


def test_mean_and_unknown_rule():
    z = {"a": np.ones((2, 3)), "b": np.zeros((2, 3))}
    fused, w = fuse(z, "mean")
    np.testing.assert_allclose(fused, 0.5)
    with pytest.raises(ValueError):
        fusion_weights(z, "median")
