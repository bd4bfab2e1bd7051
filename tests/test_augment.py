"""Training-time audio augmentation: each perturbation does what it says, the
default is the placement the trainer always used, and the config maps onto it."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mla.data.augment import AudioAugment, change_speed
from edge_mla.data.pairs import PairedSplit
from edge_mla.preprocess import fit_window
from edge_mla.train.config import TrainConfig

SR = 8000


def _tone(freq: float, n: int, amp: float = 0.1) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_moves_pitch_and_duration_by_the_factor(factor):
    x = _tone(500.0, 4000)
    y = change_speed(x, factor)
    assert len(y) == round(4000 / factor)
    assert abs(_peak_hz(y) - 500.0 * factor) < 5.0  # 2 Hz bins; the tone moved 50 Hz


def test_gain_scales_within_the_range_and_clips_like_a_converter():
    rng = np.random.default_rng(0)
    x = _tone(300.0, 2000)
    quiet = AudioAugment(placement=False, gain_db=(-20.0, -10.0))
    ratios = [np.abs(quiet.window(x, 4000, rng)).max() / np.abs(x).max() for _ in range(200)]
    db = 20 * np.log10(ratios)
    assert db.min() >= -20.0 - 1e-3 and db.max() <= -10.0 + 1e-3
    assert db.max() - db.min() > 8.0  # drawn across the range, not one value
    loud = AudioAugment(placement=False, gain_db=(30.0, 30.0)).window(x, 4000, rng)
    assert np.abs(loud).max() == 1.0 and np.mean(np.abs(loud[1000:3000]) == 1.0) > 0.5


def test_default_is_the_placement_the_trainer_always_used():
    """Same rng, same draws: a run without gain or speed is what it was before they existed."""
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    clips = [(np.arange(n) % 200 - 100).astype(np.int16) * 50 for n in (3000, 8000, 9500)]
    for clip in clips * 3:
        got = AudioAugment().window(clip, 8000, rng_a)
        slack = 8000 - clip.shape[0]
        off = int(rng_b.integers(0, slack + 1)) if slack > 0 else -int(rng_b.integers(0, -slack + 1))
        np.testing.assert_array_equal(got, fit_window(clip, 8000, off))


def test_split_centres_without_rng_and_augments_with_it():
    clip = (_tone(400.0, 3000) * 32767).astype(np.int16)
    split = PairedSplit(np.zeros((1, 1, 4, 4), np.float32), [clip], np.zeros(4, np.int64), np.zeros(4, np.int64), np.zeros(4, np.int64))
    aug = AudioAugment(gain_db=(-30.0, -30.0), speed=0.1)
    centred = split.audio_batch(np.arange(4), 8000, None, aug)
    assert all(np.array_equal(row, fit_window(clip, 8000)) for row in centred)
    batch = split.audio_batch(np.arange(4), 8000, np.random.default_rng(0), aug)
    level = 20 * np.log10(np.abs(batch).max(axis=1) / np.abs(centred).max(axis=1))
    np.testing.assert_allclose(level, -30.0, atol=0.2)
    lengths = (np.abs(batch) > 0).sum(axis=1)
    assert lengths.min() >= 3000 / 1.1 - 2 and lengths.max() <= 3000 / 0.9 + 2 and len(set(lengths)) > 1


def test_config_builds_the_augment_and_no_augment_turns_all_of_it_off():
    cfg = TrainConfig(aug_gain_db=[-24, 6], aug_speed=0.1)
    assert cfg.audio_augment() == AudioAugment(True, (-24.0, 6.0), 0.1)
    assert cfg.to_dict()["aug_gain_db"] == [-24.0, 6.0]
    assert TrainConfig(augment=False, aug_speed=0.1).audio_augment() is None


def test_a_checkpoint_names_the_augment_it_was_trained_with():
    from edge_mla.errors import EdgeMlaError

    new = {"extra": {"config": TrainConfig(aug_gain_db=(-12, 0), aug_speed=0.05).to_dict()}}
    assert TrainConfig.audio_augment_of(new, "ck.pt") == AudioAugment(True, (-12.0, 0.0), 0.05)
    old = {"extra": {"config": {"augment": True, "method": "mla"}}}  # before gain and speed existed
    assert TrainConfig.audio_augment_of(old, "ck.pt") == AudioAugment()
    assert TrainConfig.audio_augment_of({"extra": {"config": {"augment": False}}}, "ck.pt") is None
    assert TrainConfig.audio_augment_of({}, "ck.pt") is None  # not the trainer's: training unknown, clips centred
    for bad in ({"aug_speed": "fast"}, {"aug_gain_db": [10, -10]}, {"augment": "yes"}):
        with pytest.raises(EdgeMlaError, match=r"^ck\.pt: training config "):
            TrainConfig.audio_augment_of({"extra": {"config": bad}}, "ck.pt")


def _level_model():
    import torch

    class Level(torch.nn.Module):  # a stand-in encoder whose feature is the input level
        modalities = ["audio"]

        def embed(self, m, x):
            return x.abs().amax(dim=1, keepdim=True)

        def head_logits(self, m, h):
            return h

    return Level()


def _tone_split() -> PairedSplit:
    clip = (_tone(400.0, 3000) * 32767).astype(np.int16)
    return PairedSplit(np.zeros((1, 1, 4, 4), np.float32), [clip], np.zeros(64, np.int64), np.zeros(64, np.int64), np.zeros(64, np.int64))


def test_collect_draws_the_training_perturbation_reproducibly():
    """The reliability Gaussian is fitted on training audio as training saw it:
    seeded, so a refit gives the same constants."""
    from edge_mla.evaluate import collect

    split = _tone_split()
    aug = AudioAugment(gain_db=(-24.0, 6.0))
    plain, _, _ = collect(_level_model(), split, 8000, modalities=["audio"])
    a, _, _ = collect(_level_model(), split, 8000, modalities=["audio"], augment=aug, seed=5)
    b, _, _ = collect(_level_model(), split, 8000, modalities=["audio"], augment=aug, seed=5)
    np.testing.assert_array_equal(a["audio"], b["audio"])
    db = 20 * np.log10(a["audio"][:, 0] / plain["audio"][:, 0])
    assert db.min() >= -24.01 and db.max() <= 6.01 and db.std() > 5


def test_fit_data_can_draw_validation_audio_through_the_augmentation_for_the_temperature():
    from types import SimpleNamespace

    from edge_mla.reliability_fit import fit_data

    split = _tone_split()
    ds = SimpleNamespace(train=split, val=split, window=8000, sample_rate=8000)
    plain = fit_data(_level_model(), ds, seed=3)["audio"]
    assert plain.aug_z is None and plain.calibration_set()[0] is plain.val_z  # training unknown: clean validation only
    clean_only = fit_data(_level_model(), ds, seed=3, augment=AudioAugment(gain_db=(-24.0, 6.0)), temperature_on_augmented=False)["audio"]
    assert clean_only.aug_z is None  # the fit before the default (BENCHMARKS.md section 8)
    data = fit_data(_level_model(), ds, seed=3, augment=AudioAugment(gain_db=(-24.0, 6.0)))["audio"]  # the default
    assert data.aug_z.shape == data.val_z.shape and data.calibration_set()[1].tolist() == data.val_y.tolist() * 2
    db = 20 * np.log10(data.aug_z[:, 0] / data.val_z[:, 0])
    assert db.min() >= -24.01 and db.max() <= 6.01 and db.std() > 5  # the training gains, on the validation clips
    np.testing.assert_array_equal(data.val_z, plain.val_z)  # the clean half is unchanged
    again = fit_data(_level_model(), ds, seed=3, augment=AudioAugment(gain_db=(-24.0, 6.0)))["audio"]
    np.testing.assert_array_equal(again.aug_z, data.aug_z)  # seeded: a refit gives the same temperature
