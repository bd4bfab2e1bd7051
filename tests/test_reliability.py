"""The maths of fault-aware fusion: each fusion rule with reliability gating against
hand-computed weights, the reliability signals and their fitting, the metrics, the
corruption families, and the constants block's error handling."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from edge_mla import corruptions
from edge_mla.errors import EdgeMlaError
from edge_mla.fusion import fuse, fusion_weights, reliable_mask
from edge_mla.reliability import (
    Reliability, auroc, ece, ece_floor, feature_matrix, fit_gaussian, fit_logistic, fit_temperature, min_mahalanobis,
)

# a: uniform over 2 classes, entropy ln 2; b: p = (3/4, 1/4), entropy -(3/4 ln 3/4 + 1/4 ln 1/4)
A = np.array([[0.0, 0.0]] * 3)
B = np.array([[math.log(3.0), 0.0]] * 3)
# entropy weights by hand: exp(-e_a) = 1/2, exp(-e_b) = 0.75**0.75 * 0.25**0.25
EXP_A, EXP_B = 0.5, 0.75**0.75 * 0.25**0.25
R = {"a": np.array([0.9, 0.2, 0.3]), "b": np.array([0.8, 0.7, 0.1])}  # sample 1: a unreliable; sample 2: both


@pytest.mark.parametrize(
    "rule, clean, gated_b_only",
    [
        ("entropy", (EXP_A / (EXP_A + EXP_B), EXP_B / (EXP_A + EXP_B)), (0.0, 1.0)),
        ("mean", (0.5, 0.5), (0.0, 1.0)),
        ("sum", (1.0, 1.0), (0.0, 1.0)),
    ],
)
def test_rule_weights_with_reliability_gate_match_hand_computation(rule, clean, gated_b_only):
    w = fusion_weights({"a": A, "b": B}, rule, reliability=R, threshold=0.5)
    # sample 0: both reliable -> the rule's own weights
    assert w["a"][0] == pytest.approx(clean[0], rel=1e-6) and w["b"][0] == pytest.approx(clean[1], rel=1e-6)
    # sample 1: a below the threshold -> zero weight, b alone
    assert (w["a"][1], w["b"][1]) == pytest.approx(gated_b_only)
    # sample 2: both below -> the least unreliable one (a, r=0.3) alone
    assert w["a"][2] == pytest.approx(1.0) and w["b"][2] == 0.0
    fused, _ = fuse({"a": A, "b": B}, rule, reliability=R, threshold=0.5)
    np.testing.assert_allclose(fused[1], B[1], rtol=1e-6)
    np.testing.assert_allclose(fused[2], A[2], atol=1e-7)


@pytest.mark.parametrize("rule", ["entropy", "mean", "sum"])
def test_soft_weighting_multiplies_the_rule_weights_by_r_to_the_power(rule):
    """power 3, floor 0.1: r = 1.0 / 0.5 scales the rule's weights by 1 / 0.125; a
    modality below the floor drops out; all below it: the most reliable alone."""
    z = {"a": np.array([[1.0, 0.0]] * 3), "b": np.array([[1.0, 0.0]] * 3)}  # equal entropies: the rule's own weights are equal
    r = {"a": np.array([1.0, 1.0, 0.05]), "b": np.array([0.5, 0.09, 0.08])}
    w = fusion_weights(z, rule, reliability=r, threshold=0.1, power=3.0)
    if rule == "sum":
        assert (w["a"][0], w["b"][0]) == pytest.approx((1.0, 0.125))
    else:  # renormalised: 1 / 1.125 and 0.125 / 1.125
        assert (w["a"][0], w["b"][0]) == pytest.approx((0.888889, 0.111111), abs=1e-6)
    assert (w["a"][1], w["b"][1]) == pytest.approx((1.0, 0.0))  # b below the floor
    assert (w["a"][2], w["b"][2]) == pytest.approx((0.0, 1.0))  # both below: b (0.08) is the more reliable
    hard = fusion_weights(z, rule, reliability=r, threshold=0.1, power=0.0)  # power 0: the hard gate
    assert (hard["a"][0], hard["b"][0]) == pytest.approx((1.0, 1.0) if rule == "sum" else (0.5, 0.5))
    # a reference r per modality: b's 0.5 against its typical clean 0.625 is 0.8 ** 3 = 0.512;
    # the floor still applies to r itself, and r above the reference weighs fully
    ref = fusion_weights(z, rule, reliability=r, threshold=0.1, power=3.0, reference={"b": 0.625})
    if rule == "sum":
        assert (ref["a"][0], ref["b"][0]) == pytest.approx((1.0, 0.512))
    else:  # 1 / 1.512 and 0.512 / 1.512
        assert (ref["a"][0], ref["b"][0]) == pytest.approx((0.661376, 0.338624), abs=1e-6)
    assert (ref["a"][1], ref["b"][1]) == pytest.approx((1.0, 0.0))
    top = fusion_weights(z, rule, reliability={"a": np.ones(3), "b": np.full(3, 0.9)}, threshold=0.1, power=3.0, reference={"a": 0.95, "b": 0.6})
    assert top["a"] == pytest.approx(top["b"])  # both at or above their reference: the rule's own weights


def test_reliability_block_without_weighting_keeps_its_hard_gate_and_corrupt_weighting_is_one_line():
    from edge_mla.errors import EdgeMlaError
    from edge_mla.reliability import WEIGHTINGS, ModalityReliability, Reliability

    mod = ModalityReliability(1.5, ("msp",), [2.0], -1.0).to_dict()
    old = Reliability.from_dict({"signal": "msp", "threshold": 0.4, "modalities": {"a": mod}}, "m.json")
    assert old.weighting == {"threshold": 0.4, "power": 0.0, "reference": {"a": 1.0}}  # exported before the weighting: a hard gate
    new = Reliability.from_dict(Reliability("msp", 0.5, {"a": ModalityReliability.from_dict({**mod, "reference": 0.7}, "x")}).to_dict(), "m.json")
    power, floor = WEIGHTINGS["entropy"]
    assert new.weighting == {"threshold": floor, "power": power, "reference": {"a": 0.7}} and new.threshold == 0.5
    for bad in (0, -0.2, 1.5, "0.7", True, None, float("nan")):
        with pytest.raises(EdgeMlaError, match=r"m\.json \[a\]: corrupt reliability constants \(ValueError: reference"):
            Reliability.from_dict({"signal": "msp", "threshold": 0.5, "modalities": {"a": {**mod, "reference": bad}}}, "m.json")
    for bad in ({"power": -1}, {"power": "3"}, {"floor": 1.5}, {"power": True}, {"power_fit": [3]}, {"power_fit": {"entropy": {"power": 99}}},
                {"power_fit": {"sum": 2.0}}):
        with pytest.raises(EdgeMlaError, match=r"m\.json.*: corrupt reliability constants \((power|floor)"):
            Reliability.from_dict({"signal": "msp", "threshold": 0.5, "modalities": {"a": mod}, **bad}, "m.json")


def test_every_fusion_rule_has_a_weighting_and_a_cached_block_takes_its_rules(tmp_path):
    """The power is fitted per fusion rule and cached with the constants; loading for
    a rule takes that rule's power and floor. A block without a fitted power gets the
    rule's fallback, and a cache an older edge-mla wrote is refitted, not trusted."""
    import json

    from edge_mla.fusion import FUSION_RULES
    from edge_mla.reliability import FORMAT, POWERS, RELIABILITY_NAME, WEIGHTINGS, FitData, ModalityReliability, default_weighting
    from edge_mla.reliability_fit import fit_candidates, load, save

    assert set(WEIGHTINGS) == set(FUSION_RULES)
    with pytest.raises(ValueError, match="no reliability weighting for fusion rule 'median'"):
        default_weighting("median")
    mod = ModalityReliability(1.5, ("msp",), [2.0], -1.0)
    fitted = {"entropy": {"power": 2.0, "table": {}}, "sum": {"power": 4.0, "table": {}}, "mean": {"power": 1.0, "table": {}}}
    save(tmp_path, {"msp": Reliability("msp", 0.5, {"a": mod}, power=7.0, floor=0.3, power_fit=fitted),
                    "energy": Reliability("energy", 0.5, {"a": mod}, power=7.0, floor=0.3)})
    for rule in FUSION_RULES:
        rel = load(tmp_path, "msp", rule)
        assert (rel.power, rel.floor) == (fitted[rule]["power"], default_weighting(rule)[1]) and rel.modalities["a"].coef == [2.0]
        assert (load(tmp_path, "energy", rule).power, load(tmp_path, "energy", rule).floor) == default_weighting(rule)  # nothing fitted: the fallback
    assert load(tmp_path, "mahalanobis", "sum") is None  # not cached: the caller fits
    path = tmp_path / RELIABILITY_NAME
    old = json.loads(path.read_text())
    old["format"] = "edge-mla-reliability/1"
    path.write_text(json.dumps(old))
    assert FORMAT != old["format"] and load(tmp_path, "msp", "entropy") is None  # an older fit: refitted
    path.write_text(json.dumps({**old, "format": "something-else/1"}))
    with pytest.raises(EdgeMlaError, match="not an edge-mla reliability file"):
        load(tmp_path, "msp", "entropy")
    for bad in ([1], "x", None, 5):  # a corrupt cache in the run folder: one line naming it, not a traceback
        path.write_text(json.dumps({"format": FORMAT, "candidates": bad}))
        with pytest.raises(EdgeMlaError, match=r"reliability\.json: corrupt reliability constants \(candidates: expected an object"):
            load(tmp_path, "msp", "entropy")
    # a fit carries a power per rule, chosen from POWERS, and is weighted for the run's rule
    rng = np.random.default_rng(0)
    h, y = rng.normal(size=(40, 3)), np.arange(40) % 2
    z = np.stack([h[:, 0], -h[:, 0]], 1)
    data = {"a": FitData(h, y, h, z, y, h * 9, z * 9)}
    fit = fit_candidates(data, 2, "sum", candidates=("msp",))["msp"]
    assert set(fit.power_fit) == set(FUSION_RULES) and all(v["power"] in POWERS and set(v["table"]) == {f"{p:g}" for p in POWERS} for v in fit.power_fit.values())
    assert (fit.power, fit.floor) == (fit.power_fit["sum"]["power"], default_weighting("sum")[1])
    assert Reliability.from_dict(fit.to_dict(), "x").power_fit == fit.power_fit


def _r_of(r: float, bias: float = 3.0) -> float:
    """The 1-D feature h at which the test's Mahalanobis map (means 0, precision 1,
    coef 1, ``bias``) scores r: sigmoid(bias - log1p(h^2)) = r."""
    return math.sqrt(math.exp(bias - math.log(r / (1 - r))) - 1)


def _two_class(correct: np.ndarray, margin: float) -> np.ndarray:
    """Logits for labels arange(n) % 2: ``margin`` on the label where ``correct``, on the other class elsewhere."""
    y = np.arange(len(correct)) % 2
    z = np.zeros((len(correct), 2))
    z[np.arange(len(y)), np.where(correct, y, 1 - y)] = margin
    return z


def _selection_case(a_clean, a_bad, b_clean, b_r: float) -> tuple:
    """FitData for modalities a (clean and one corrupted family) and b (clean only),
    and the Reliability scoring them through a 1-D Mahalanobis map."""
    from edge_mla.reliability import FitData, ModalityReliability

    n = len(a_clean[0])
    y = np.arange(n) % 2
    col = lambda r: np.full((n, 1), _r_of(r))  # noqa: E731
    data = {"a": FitData(col(0.95), y, col(a_clean[1]), a_clean[0], y, col(a_bad[1]), a_bad[0]),
            "b": FitData(col(0.95), y, col(b_r), b_clean, y, np.zeros((0, 1)), np.zeros((0, 2)))}
    gauss = {"features": ("mahalanobis",), "coef": [1.0], "bias": 3.0, "means": np.zeros((2, 1)), "precision": np.eye(1)}
    rel = Reliability("mahalanobis", 0.5, {m: ModalityReliability(1.0, **gauss) for m in data})
    return data, rel


def test_select_power_takes_the_steepest_power_a_confident_broken_sensor_needs():
    """a is right on every clean pair; corrupted it is wrong with margin 5 at r 0.3,
    while b (right on 3 of 4, margin 1.5, r 0.95) alone would score 75%. Entropy
    weights exp(-e): a 0.961, b 0.622; b out-votes a where 0.622 * 1.5 * 0.95^p >
    0.961 * 5 * 0.3^p, i.e. for p >= 1.5 (p 1: fused 0%, regret 75)."""
    from edge_mla.reliability_fit import select_power

    n = 200
    b_ok = np.arange(n) % 4 != 0
    data, rel = _selection_case((_two_class(np.ones(n, bool), 5.0), 0.95), (_two_class(np.zeros(n, bool), 5.0), 0.3), _two_class(b_ok, 1.5), 0.95)
    fit = select_power(data, rel, "entropy")
    assert fit["table"]["1"] == [0.0, 75.0]
    assert all(fit["table"][k] == [0.0, 0.0] for k in ("1.5", "2", "3", "4"))
    assert fit["power"] == 1.5  # the gentlest of those with the lowest worst regret


def test_select_power_keeps_clean_accuracy_within_the_tolerance():
    """b is right on every pair (margin 6) but the detector doubts it (r 0.6, a new
    voice); a is right on 4 of 5 (margin 3, r 0.95). Clean: b wins a's wrong pairs
    while 1.19 * 0.6^p > 0.5, so p <= 1.5 keeps 100% and p >= 2 falls to 80% (-20
    points). Corrupted a (wrong, margin 8, r 0.55) only loses its vote at p 4. Within
    the 0.5-point tolerance no power fixes the corruption, so the gentlest is kept;
    with the tolerance lifted, p 4 is the pick."""
    from edge_mla.reliability_fit import select_power

    n = 200
    a_ok = np.arange(n) % 5 != 0
    data, rel = _selection_case((_two_class(a_ok, 3.0), 0.95), (_two_class(np.zeros(n, bool), 8.0), 0.55), _two_class(np.ones(n, bool), 6.0), 0.6)
    fit = select_power(data, rel, "entropy")
    assert [fit["table"][k][0] for k in ("1", "1.5", "2", "3", "4")] == [0.0, 0.0, -20.0, -20.0, -20.0]
    assert [fit["table"][k][1] for k in ("1", "1.5", "2", "3", "4")] == [100.0, 100.0, 100.0, 100.0, 0.0]
    assert fit["power"] == 1.0
    assert select_power(data, rel, "entropy", tolerance=100.0)["power"] == 4.0
    # nothing corrupted to select on: the rule's fallback
    bare = {m: d.__class__(d.train_h, d.train_y, d.val_h, d.val_z, d.val_y, d.bad_h[:0], d.bad_z[:0]) for m, d in data.items()}
    assert select_power(bare, rel, "entropy") == {"power": 3.0, "table": {}}
    assert select_power(bare, rel, "sum") == {"power": 1.5, "table": {}, "reference": {"a": pytest.approx(0.95), "b": pytest.approx(0.6)}}


def test_a_modality_doubted_at_its_typical_clean_level_keeps_its_vote():
    """The case above with each modality's reference at its median clean r (b: 0.6,
    a: 0.95): a clean b weighs fully at every power, so no power costs clean
    accuracy, and corrupted a (r 0.55 against its 0.95) loses its vote at every
    power: worst regret 0 where r ** power alone left 100 within the tolerance."""
    from edge_mla.reliability_fit import with_reference_quantile

    n = 200
    a_ok = np.arange(n) % 5 != 0
    data, rel = _selection_case((_two_class(a_ok, 3.0), 0.95), (_two_class(np.zeros(n, bool), 8.0), 0.55), _two_class(np.ones(n, bool), 6.0), 0.6)
    referenced = with_reference_quantile(data, rel, "entropy", 0.5)
    assert referenced.weighting["reference"] == {"a": pytest.approx(0.95), "b": pytest.approx(0.6)}
    assert all(v == [0.0, 0.0] for v in referenced.power_fit["entropy"]["table"].values()) and referenced.power == 1.0
    assert with_reference_quantile(data, rel, "entropy", None).weighting["reference"] == {"a": 1.0, "b": 1.0}


def test_the_sum_rule_weighs_against_its_reference_and_entropy_against_none():
    """Each rule's fit records the reference its powers were scored under
    (REFERENCE_QUANTILES: the sum rule's quantile of each modality's clean validation
    r; none for entropy), ``for_rule`` hands it to the fusion, it survives the
    manifest round trip, and a corrupt one is one line."""
    from edge_mla.errors import EdgeMlaError
    from edge_mla.fusion import FUSION_RULES
    from edge_mla.reliability import REFERENCE_QUANTILES
    from edge_mla.reliability_fit import select_power

    n = 200
    data, rel = _selection_case((_two_class(np.ones(n, bool), 3.0), 0.9), (_two_class(np.zeros(n, bool), 8.0), 0.55), _two_class(np.ones(n, bool), 6.0), 0.6)
    assert REFERENCE_QUANTILES["entropy"] is None and REFERENCE_QUANTILES["sum"] is not None
    rel.power_fit = {r: select_power(data, rel, r) for r in FUSION_RULES}
    for rule, want in (("sum", {"a": 0.9, "b": 0.6}), ("entropy", {"a": 1.0, "b": 1.0})):
        for r in (rel.for_rule(rule), Reliability.from_dict(rel.to_dict(), "m.json").for_rule(rule)):
            assert r.weighting["reference"] == {m: pytest.approx(v) for m, v in want.items()}
    for bad in ({"a": 2.0}, {"a": "x"}, [0.5]):
        block = {**rel.to_dict(), "power_fit": {"sum": {"power": 3.0, "reference": bad}}}
        with pytest.raises(EdgeMlaError, match=r"m\.json \[power_fit sum.*corrupt reliability constants"):
            Reliability.from_dict(block, "m.json")


def test_the_reference_is_a_quantile_of_clean_r_and_round_trips():
    from edge_mla.reliability import Reliability, clean_reference, fit_modality

    data = _dead_sensor_data(np.random.default_rng(3))
    rel = fit_modality(data, "mahalanobis", 2)
    clean_r = rel.score(data.val_h, data.val_z)
    for q in (0.5, 0.9):
        assert clean_reference(clean_r, q) == pytest.approx(float(np.quantile(clean_r, q)))
    assert clean_reference(clean_r, None) == 1.0 and clean_reference(np.array([]), 0.5) == 1.0 and clean_reference(np.zeros(5), 0.5) == pytest.approx(1e-3)
    shipped = Reliability("mahalanobis", 0.5, {"audio": rel}).with_references({"audio": np.array([0.2, 0.3, 0.4, np.nan])}, 0.5)
    assert shipped.modalities["audio"].reference == pytest.approx(0.3)
    back = Reliability.from_dict(shipped.to_dict(), "m.json")
    assert back.weighting["reference"] == {"audio": pytest.approx(0.3)}


def test_temperature_is_fitted_on_clean_and_perturbed_validation_together():
    from edge_mla.reliability import FitData, fit_modality

    rng = np.random.default_rng(1)
    y = np.arange(400) % 4
    z = np.eye(4)[y] * 6.0 + rng.normal(size=(400, 4))  # confident and right: wants a small T
    wrong = np.eye(4)[(y + 1) % 4] * 6.0 + rng.normal(size=(400, 4))  # confident and wrong half the time
    aug_z = np.where((np.arange(400) % 2 == 0)[:, None], z, wrong)
    h = rng.normal(size=(400, 3))
    clean = FitData(h, y, h, z, y, h * 9, z * 9)
    both = FitData(h, y, h, z, y, h * 9, z * 9, aug_z)
    zc, yc = both.calibration_set()
    assert zc.shape == (800, 4) and yc.tolist() == y.tolist() * 2
    assert clean.calibration_set()[0] is z
    t_clean = fit_modality(clean, "msp", 4).temperature
    t_both = fit_modality(both, "msp", 4).temperature
    assert t_clean == pytest.approx(fit_temperature(z, y)) and t_both == pytest.approx(fit_temperature(zc, yc))
    assert t_both > 2 * t_clean  # the perturbed half is often wrong: a softer temperature


def test_entropy_hand_weight_value():
    # 0.5 / (0.5 + 0.5699) = 0.4673: the figure the parametrised test relies on
    w = fusion_weights({"a": A[:1], "b": B[:1]}, "entropy")
    assert w["a"][0] == pytest.approx(0.4673, abs=1e-4)


def test_reliable_mask_flags_all_degraded_and_respects_availability():
    mask, degraded = reliable_mask(["a", "b"], 3, {"a": np.array([True, True, False]), "b": np.array([True, True, True])}, R, 0.5)
    assert degraded.tolist() == [False, False, True]
    assert mask["a"].tolist() == [True, False, False]  # sample 2: a is missing, so b is the fallback
    assert mask["b"].tolist() == [True, True, True]
    _, none = reliable_mask(["a", "b"], 3, None, None, 0.5)
    assert not none.any()


def test_without_reliability_the_rules_are_unchanged():
    rng = np.random.default_rng(0)
    z = {"a": rng.normal(size=(6, 5)), "b": rng.normal(size=(6, 5)) * 3}
    for rule in ("entropy", "mean", "sum"):
        plain = fusion_weights(z, rule)
        ones = fusion_weights(z, rule, reliability={"a": np.ones(6), "b": np.ones(6)})
        for m in z:
            np.testing.assert_allclose(plain[m], ones[m])


def test_min_mahalanobis_matches_brute_force():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(20, 4))
    y = rng.integers(0, 3, 20)
    means, prec = fit_gaussian(h, y, 3)
    brute = np.array([min((x - mu) @ prec @ (x - mu) for mu in means) for x in h])
    np.testing.assert_allclose(min_mahalanobis(h, means, prec), brute, rtol=1e-6, atol=1e-9)


def test_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(4000, 5)) * 4
    t_true = 2.5
    p = np.exp(z / t_true) / np.exp(z / t_true).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(z, y) == pytest.approx(t_true, rel=0.1)


def test_logistic_separates_and_features_are_signed_in_distribution_high():
    rng = np.random.default_rng(3)
    x = np.r_[rng.normal(2, 1, (200, 1)), rng.normal(-2, 1, (200, 1))]
    y = np.r_[np.ones(200), np.zeros(200)]
    coef, bias = fit_logistic(x, y)
    p = 1 / (1 + np.exp(-(x @ coef + bias)))
    assert coef[0] > 0 and np.mean((p >= 0.5) == y) > 0.95
    z = np.array([[10.0, 0, 0], [0.1, 0, 0]])
    f = feature_matrix(("msp", "energy"), None, z, 1.0)
    assert f[0, 0] > f[1, 0] and f[0, 1] > f[1, 1]  # confident -> higher msp and energy


def test_ece_floor_tells_noise_from_miscalibration():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(600, 10)) * 2.5
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (rng.random(600)[:, None] > np.cumsum(p, 1)).sum(1)  # labels drawn from the model's own probabilities
    fl = ece_floor(z, y)
    assert fl["ece"] == pytest.approx(ece(z, y)) and fl["distinct"] == 600
    assert 0.0 < fl["floor"] <= fl["floor_p90"] and fl["p"] > 0.05  # calibrated: its ECE is noise
    over = ece_floor(z, y, temperature=0.3)  # sharpened: over-confident
    assert over["ece"] > 3 * over["floor_p90"] and over["p"] == 0.0
    # the same 100 recordings each paired 6 times: 100 distinct inputs, a higher floor
    # than 600 distinct ones with the same confidences
    rep = np.repeat(np.arange(100), 6)
    dup = ece_floor(z[rep], y[rep], groups=rep)
    assert dup["distinct"] == 100 and dup["floor"] > 1.5 * ece_floor(z[rep], y[rep])["floor"]
    assert dup["floor"] == pytest.approx(ece_floor(z[:100], y[:100])["floor"], rel=0.35)


def test_auroc_and_ece_on_known_cases():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5  # ties count half
    assert auroc([2, 4], [1, 3]) == 0.75
    # confidence 0.75 everywhere (logits ln 3, 0), right 3 times out of 4: calibrated
    z = np.tile([math.log(3.0), 0.0], (4, 1))
    assert ece(z, np.array([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-9)
    assert ece(z, np.array([1, 1, 1, 1])) == pytest.approx(0.75)


def test_corrupt_constants_name_the_file():
    good = {"signal": "energy", "threshold": 0.5, "modalities": {"audio": {"temperature": 1.0, "features": ["energy"], "coef": [1.0], "bias": 0.0}}}
    assert Reliability.from_dict(good, "x/manifest.json").modalities["audio"].features == ("energy",)
    for bad in (
        {**good, "modalities": {}},
        {**good, "threshold": 3},
        {**good, "modalities": {"audio": {**good["modalities"]["audio"], "coef": ["x"]}}},
        {**good, "modalities": {"audio": {**good["modalities"]["audio"], "features": ["mahalanobis"], "means": [[0.0]], "precision": [[1.0, 2.0]]}}},
        {**good, "modalities": {"audio": {**good["modalities"]["audio"], "temperature": -1}}},
        {**good, "modalities": {"au\ndio": good["modalities"]["audio"]}},  # names end up in messages: one line each
        {**good, "power_fit": {"su\nm": {"power": 1.0}}},
        {**good, "power_fit": {"sum": {"power": 1.0, "reference": {"au\ndio": 0.5}}}},
        {**good, "auroc": None},
    ):
        with pytest.raises(EdgeMlaError, match="x/manifest.json") as err:
            Reliability.from_dict(bad, "x/manifest.json")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("family", list(corruptions.FAMILIES))
def test_every_corruption_keeps_shape_range_and_is_seeded(family):
    rng = np.random.default_rng(0)
    mod = corruptions.FAMILIES[family][0]
    x = rng.random((4, 1, 28, 28)).astype(np.float32) if mod == "image" else (rng.normal(0, 0.1, (4, 8000))).astype(np.float32)
    lo, hi = (0.0, 1.0) if mod == "image" else (-1.0, 1.0)
    changed = []
    for sev in corruptions.SEVERITIES:
        c = corruptions.corruption(family, sev)
        y = c.apply(x, np.random.default_rng(5))
        assert y.shape == x.shape and y.dtype == np.float32
        assert y.min() >= lo - 1e-6 and y.max() <= hi + 1e-6
        np.testing.assert_array_equal(y, c.apply(x, np.random.default_rng(5)))
        changed.append(float(np.mean(np.abs(y - x))))
    assert changed[-1] > 0  # the severest level changes the input


def test_suite_splits_train_and_held_out_families_for_both_modalities():
    held = corruptions.suite(held_out=True)
    train = corruptions.suite(held_out=False)
    for mod in ("image", "audio"):
        assert {c.family for c in held if c.modality == mod} and {c.family for c in train if c.modality == mod}
    assert not {c.family for c in held} & {c.family for c in train}
    assert corruptions.by_name("audio_babble@2").severity == 2
    with pytest.raises(ValueError):
        corruptions.by_name("audio_nope@1")


def test_calibration_divides_each_modality_by_its_temperature_and_changes_the_vote():
    """Fused by the sum rule: raw logits let the over-confident modality b win; its
    fitted temperature (4) scales it down so that a decides. By hand: raw sum
    (2, 0) + (0, 6) = (2, 6) -> class 1; calibrated (2, 0)/1 + (0, 6)/4 = (2, 1.5)
    -> class 0. A modality without constants passes through unchanged."""
    rel = Reliability.from_dict({"signal": "energy", "threshold": 0.5, "modalities": {
        "a": {"temperature": 1.0, "features": ["energy"], "coef": [1.0], "bias": 0.0},
        "b": {"temperature": 4.0, "features": ["energy"], "coef": [1.0], "bias": 0.0}}}, "test")
    z = {"a": np.array([[2.0, 0.0]]), "b": np.array([[0.0, 6.0]]), "c": np.array([[1.0, 1.0]])}
    cal = rel.calibrate(z)
    assert np.allclose(cal["a"], [[2.0, 0.0]]) and np.allclose(cal["b"], [[0.0, 1.5]]) and cal["c"] is z["c"]
    two = {m: z[m] for m in ("a", "b")}
    assert fuse(two, "sum")[0].argmax(1)[0] == 1
    assert fuse(rel.calibrate(two), "sum")[0].argmax(1)[0] == 0
    assert np.allclose(fuse(rel.calibrate(two), "sum")[0], [[2.0, 1.5]])


def test_suite_scores_the_calibrated_gated_rule_and_keeps_the_raw_one_as_base():
    """score_suite's ``fused`` is what an exported engine folder decides (calibrated
    logits, then the gate), ``fused_base`` the raw rule, ``fused_calibrated`` calibration
    alone; here calibration flips every sample to the right class."""
    from edge_mla.evaluate import SuiteData, score_suite

    rel = Reliability.from_dict({"signal": "energy", "threshold": 0.0, "modalities": {
        "a": {"temperature": 1.0, "features": ["energy"], "coef": [1.0], "bias": 0.0},
        "b": {"temperature": 4.0, "features": ["energy"], "coef": [1.0], "bias": 0.0}}}, "test")
    n = 5
    z = {"a": np.tile([2.0, 0.0], (n, 1)), "b": np.tile([0.0, 6.0], (n, 1))}
    h = {m: np.zeros((n, 1)) for m in z}
    s = score_suite(SuiteData(np.zeros(n, int), h, z), "sum", rel)
    assert s["clean"]["fused_base"] == 0.0
    assert s["clean"]["fused_calibrated"] == 1.0 and s["clean"]["fused"] == 1.0


# -- the fault gate: a dead sensor the distance cannot see -----------------------------
def test_fault_gate_logit_hand_value_and_r_takes_the_lower_logit():
    """One prototype at the origin, precision I, coef 6, bias -5: at h = (1, 0) the
    distance is 1, so the gate's logit is 6 log(1 + 1/2) - 5 = -2.5672, below the
    map's 3 * -log(1 + 16/2) + 8 = 1.4083 (class means (+-5, 0)): r = sigmoid(-2.5672).
    At h = (5, 0), on a class mean, the gate's 6 log(1 + 25/2) - 5 = 10.616 is above
    the map's 8: the gate is inert there and r is the map's own."""
    from edge_mla.reliability import FaultGate, ModalityReliability

    eye = np.eye(2)
    means = np.array([[5.0, 0.0], [-5.0, 0.0]])
    gate = FaultGate(np.zeros((1, 2)), 6.0, -5.0, ("dead",))
    assert gate.logit(np.array([[1.0, 0.0]]), eye) == pytest.approx([-2.5672], abs=1e-4)
    mr = ModalityReliability(1.0, ("mahalanobis",), [3.0], 8.0, means, eye, gate)
    z = np.zeros((2, 2))
    h = np.array([[1.0, 0.0], [5.0, 0.0]])
    want = np.array([-2.5672, 8.0])
    np.testing.assert_allclose(mr.logit(h, z), want, atol=1e-4)
    np.testing.assert_allclose(mr.score(h, z), 1 / (1 + np.exp(-want)), atol=1e-5)
    without = ModalityReliability(1.0, ("mahalanobis",), [3.0], 8.0, means, eye)
    assert without.logit(h, z)[0] == pytest.approx(1.4083, abs=1e-4)
    assert mr.score(h, z)[1] == without.score(h, z)[1] and mr.score(h, z)[0] < 0.5 < without.score(h, z)[0]


def _dead_sensor_data(rng, n_val: int = 400):
    """Two classes at (+-3, 0) with a wide second axis (the microphone level the
    training perturbs), and three train-family blocks on validation: "dead" (every
    input maps to one point down the level axis, typical for the distance, and the
    encoder says class 0 whatever was said), "noise" (far off: the distance sees it)
    and "mild" (harmless: the encoder still reads it)."""
    from edge_mla.reliability import FitData

    def draw(n):
        y = np.arange(n) % 2
        h = np.stack([np.where(y == 0, -3.0, 3.0) + rng.normal(size=n), 5.0 * rng.normal(size=n)], 1)
        return h, y

    th, ty = draw(4000)
    vh, vy = draw(n_val)
    logits = lambda h: np.stack([-h[:, 0], h[:, 0]], 1)  # noqa: E731
    dead = np.array([-3.0, -8.0]) + 0.05 * rng.normal(size=(n_val, 2))
    noise = np.array([0.0, 60.0]) + rng.normal(size=(n_val, 2))
    mild = vh + 0.1 * rng.normal(size=vh.shape)
    bad_h = np.concatenate([dead, noise, mild])
    bad_z = np.concatenate([np.tile([4.0, 0.0], (n_val, 1)), logits(noise), logits(mild)])
    return FitData(th, ty, vh, logits(vh), vy, bad_h, bad_z, None, ("dead", "noise", "mild"))


def test_fault_gate_covers_the_dead_sensor_the_distance_misses_and_nothing_else():
    from edge_mla.reliability import FAULT_CLEAN_ALARM, FAULT_COVER, FAULT_R, fit_fault_gate, fit_modality

    rng = np.random.default_rng(7)
    data = _dead_sensor_data(rng)
    rel = fit_modality(data, "mahalanobis", 2)
    n = len(data.val_y)
    assert rel.fault is not None and rel.fault.blocks == ("dead",)  # noise is caught by the map, mild costs nothing
    np.testing.assert_allclose(rel.fault.means[0], data.bad_h[:n].mean(0))
    plain = dataclasses.replace(rel, fault=None)
    dead_h, dead_z = data.bad_h[:n], data.bad_z[:n]
    assert np.mean(plain.score(dead_h, dead_z) >= 0.5) > 0.9  # the distance alone calls the dead sensor fine
    assert np.all(rel.score(dead_h, dead_z) < 0.5)  # the gate does not,
    assert np.mean(rel.score(dead_h, dead_z) <= FAULT_R + 1e-9) >= FAULT_COVER  # and leaves it out of the fusion (below every floor)
    clean_plain, clean = plain.score(data.val_h, data.val_z), rel.score(data.val_h, data.val_z)
    assert np.mean(clean < 0.5) - np.mean(clean_plain < 0.5) <= FAULT_CLEAN_ALARM + 1 / n
    # far from the prototype (a corruption no fit has seen) r is the distance's own
    far = np.array([[40.0, 0.0], [-3.0, 30.0]])
    np.testing.assert_array_equal(rel.score(far, np.zeros((2, 2))), plain.score(far, np.zeros((2, 2))))
    # nothing to gate: every costly block is caught, or no block structure
    caught = dataclasses.replace(data, bad_h=data.bad_h[n:], bad_z=data.bad_z[n:], bad_names=("noise", "mild"))
    assert fit_fault_gate(caught, plain) is None
    assert fit_fault_gate(dataclasses.replace(data, bad_h=data.bad_h[:-1], bad_z=data.bad_z[:-1]), plain) is None
    # the signals without a Gaussian have no gate
    assert fit_modality(data, "energy", 2).fault is None
    # a costly block the clean inputs overlap (speech scattered down the level axis) is no prototype
    spread = np.array([-3.0, -8.0]) + np.array([1.0, 5.0]) * rng.normal(size=(n, 2))
    overlap = dataclasses.replace(data, bad_h=np.concatenate([spread, data.bad_h[n:]]))
    assert fit_fault_gate(overlap, plain) is None


def test_fault_gate_round_trips_and_a_corrupt_one_is_one_line():
    from edge_mla.errors import EdgeMlaError
    from edge_mla.reliability import Reliability, fit_modality

    rel = fit_modality(_dead_sensor_data(np.random.default_rng(8), 200), "mahalanobis", 2)
    block = Reliability("mahalanobis", 0.5, {"audio": rel}).to_dict()
    back = Reliability.from_dict(json.loads(json.dumps(block)), "m.json").modalities["audio"]
    assert back.fault.blocks == ("dead",) and back.fault.coef == pytest.approx(rel.fault.coef)
    h = _dead_sensor_data(np.random.default_rng(9), 50).bad_h
    np.testing.assert_allclose(back.score(h, np.zeros((len(h), 2))), rel.score(h, np.zeros((len(h), 2))), atol=1e-5)  # float32 in the file
    fault = block["modalities"]["audio"]["fault"]
    for bad, why in (({**fault, "coef": -1.0}, "must be positive"), ({**fault, "coef": float("nan")}, "non-finite"),
                     ({**fault, "means": [[0.0, 0.0, 0.0]]}, "fault means"), ({**fault, "means": []}, "fault means"),
                     ({k: v for k, v in fault.items() if k != "bias"}, "bias"), ({**fault, "blocks": [1]}, "blocks"), ([1, 2], "expected an object")):
        d = json.loads(json.dumps(block))
        d["modalities"]["audio"]["fault"] = bad
        with pytest.raises(EdgeMlaError, match=rf"m\.json \[audio\]: corrupt reliability constants \(.*{why}"):
            Reliability.from_dict(d, "m.json")
    d = json.loads(json.dumps(block))
    d["modalities"]["audio"]["features"], d["modalities"]["audio"]["coef"] = ["energy"], [1.0]
    with pytest.raises(EdgeMlaError, match=r"fault gate needs the mahalanobis constants"):
        Reliability.from_dict(d, "m.json")


def test_fault_gate_spares_the_quiet_inputs_training_taught_the_encoder_to_read():
    """A run trained with a perturbation (the microphone's level) has its validation
    inputs drawn through it too (FitData.aug_h): those are clean to the gate, so a
    quiet voice near the dead sensor's point is not doubted, and the dead sensor
    still is."""
    from edge_mla.reliability import FAULT_CLEAN_ALARM, fit_modality

    data = _dead_sensor_data(np.random.default_rng(11))
    quiet = data.val_h + np.array([0.0, -6.0])  # the level axis, most of the way to the dead point
    without = fit_modality(data, "mahalanobis", 2)
    with_aug = fit_modality(dataclasses.replace(data, aug_h=quiet), "mahalanobis", 2)
    n = len(data.val_y)

    def doubted(rel, h):  # share the gate itself puts below 0.5 (the map's own doubt aside)
        return float(np.mean(rel.fault.logit(h, rel.precision) < 0))

    assert doubted(without, quiet) > 3 * FAULT_CLEAN_ALARM  # fitted on loud validation alone, the gate takes quiet voices
    assert doubted(with_aug, quiet) <= 2 * FAULT_CLEAN_ALARM + 1 / n
    assert np.all(with_aug.score(data.bad_h[:n], data.bad_z[:n]) < 0.5)
    assert np.array_equal(dataclasses.replace(data, aug_h=quiet).clean_features()[n:], quiet) and data.clean_features() is data.val_h


def test_a_cache_fitted_on_other_data_is_refitted_not_served(tmp_path):
    """``export RUN --dataset folder --data-dir OTHER`` fitted on OTHER and cached it in
    RUN/reliability.json without saying so: every later eval and export of the run
    used those constants. The cache records what it was fitted on."""
    from types import SimpleNamespace

    from edge_mla.reliability import ModalityReliability
    from edge_mla.reliability_fit import fitted_on, load, save

    def ds(where):
        return SimpleNamespace(name="folder", info={"root": where}, train=[0] * 7, val=[0] * 3)

    mod = ModalityReliability(1.5, ("msp",), [2.0], -1.0)
    own = fitted_on(ds("/data/own"), 0)
    save(tmp_path, {"msp": Reliability("msp", 0.5, {"a": mod})}, own)
    assert load(tmp_path, "msp", "entropy", own) is not None
    assert load(tmp_path, "msp", "entropy", fitted_on(ds("/data/other"), 0)) is None
    assert load(tmp_path, "msp", "entropy", fitted_on(ds("/data/own"), 1)) is None  # another seed draws another split
    save(tmp_path, {"msp": Reliability("msp", 0.5, {"a": mod})})  # a file from before the record: taken as it is
    assert load(tmp_path, "msp", "entropy", own) is not None


def test_the_gaussian_fits_one_training_pair_per_class():
    """One pair per class leaves no within-class spread: the covariance was 0 and its
    inverse a Singular matrix traceback in eval and export. The ridge has a floor."""
    from edge_mla.reliability import fit_gaussian, min_mahalanobis

    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 8))
    means, precision = fit_gaussian(h, np.arange(3), 3)
    assert np.isfinite(precision).all()
    d = min_mahalanobis(np.vstack([h, h + 5.0]), means, precision)
    assert np.all(d[:3] < 1e-6) and np.all(d[3:] > d[:3].max())  # a training pair is typical; one far off is not
    means, precision = fit_gaussian(np.ones((4, 8)), np.array([0, 1, 0, 1]), 2)  # every feature constant
    assert np.isfinite(precision).all()
    # an ordinary fit keeps its ridge (relative to the within-class spread)
    h = rng.normal(size=(200, 8))
    y = np.arange(200) % 4
    _, p = fit_gaussian(h, y, 4)
    r = h - np.stack([h[y == c].mean(0) for c in range(4)])[y]
    cov = r.T @ r / 199
    np.testing.assert_allclose(p, np.linalg.inv(cov + 1e-3 * np.trace(cov) / 8 * np.eye(8)))
