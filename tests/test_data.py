"""Datasets: the AV-MNIST protocol on the real data, the demo set, a user folder."""

import csv
import wave

import numpy as np
import pytest

from edge_mla.data import iterate_batches, load_dataset
from edge_mla.data.avmnist import load_avmnist, load_fsdd
from edge_mla.errors import EdgeMlaError


@pytest.fixture(scope="module")
def avmnist(data_dir):
    return load_avmnist(str(data_dir), seed=0)


def _clip_labels(data_dir):
    return load_fsdd(data_dir)["label"].astype(np.int64)


def test_pairs_share_labels_and_keep_test_clips_out_of_training(avmnist, data_dir):
    fs = load_fsdd(data_dir)
    for name in ("train", "val", "test"):
        sp = avmnist.split(name)
        np.testing.assert_array_equal(fs["label"][sp.clip_index].astype(np.int64), sp.labels)
    is_test = fs["index"] <= 4
    assert not is_test[avmnist.train.clip_index].any()
    assert not is_test[avmnist.val.clip_index].any()
    assert is_test[avmnist.test.clip_index].all()
    assert set(avmnist.val.clip_index).isdisjoint(avmnist.train.clip_index)


def test_pca_degradation_keeps_a_quarter_of_the_variance(avmnist):
    assert avmnist.info["pca_components"] == 4
    assert 0.25 <= avmnist.info["pca_explained"] < 0.35
    assert len(avmnist.train) == 50000 and len(avmnist.val) == 10000 and len(avmnist.test) == 10000


def test_pairing_is_seeded(data_dir, avmnist):
    again = load_avmnist(str(data_dir), seed=0)
    other = load_avmnist(str(data_dir), seed=1)
    np.testing.assert_array_equal(again.train.clip_index, avmnist.train.clip_index)
    assert not np.array_equal(other.train.clip_index, avmnist.train.clip_index)


def test_speaker_split_holds_out_whole_speakers(data_dir):
    ds = load_avmnist(str(data_dir), split="speaker")
    spk = load_fsdd(data_dir)["speaker"].astype(str)
    assert set(spk[ds.test.clip_index]) == {"theo"}
    assert set(spk[ds.val.clip_index]) == {"yweweler"}
    assert not {"theo", "yweweler"} & set(spk[ds.train.clip_index])


def test_batches_have_fixed_shapes(avmnist):
    img, aud, y = next(iterate_batches(avmnist.test.subset(np.arange(10)), 4, avmnist.window))
    assert img.shape == (4, 1, 28, 28) and img.dtype == np.float32
    assert aud.shape == (4, 8000) and aud.dtype == np.float32 and np.abs(aud).max() <= 1.0
    assert y.shape == (4,)


def test_missing_or_malformed_data_folder_names_the_file(tmp_path):
    with pytest.raises(EdgeMlaError, match="does not exist"):
        load_avmnist(str(tmp_path / "nope"))
    with pytest.raises(EdgeMlaError, match="mnist.npz: file not found"):
        load_avmnist(str(tmp_path))
    (tmp_path / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(EdgeMlaError, match="mnist.npz: cannot read"):
        load_avmnist(str(tmp_path))
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(EdgeMlaError, match="missing arrays"):
        load_avmnist(str(tmp_path))


def test_demo_dataset_has_real_digits_and_disjoint_voices(demo_cache):
    ds = load_dataset("demo")
    assert ds.info["synthetic_speech"]
    assert ds.classes == [str(i) for i in range(10)]
    train_voices, test_voices = set(ds.train.clip_groups[ds.train.clip_index]), set(ds.test.clip_groups[ds.test.clip_index])
    assert train_voices.isdisjoint(test_voices)
    img = ds.train.image_batch(np.arange(5))
    assert img.shape == (5, 1, 28, 28) and img.max() > 0.5  # real strokes, not blank
    assert all(len(c) > 800 for c in ds.train.clips[:20])  # real speech, > 0.1 s


def _write_wav(path, x, rate):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())


def test_folder_dataset_round_trip(tmp_path):
    import cv2

    (tmp_path / "img").mkdir()
    (tmp_path / "wav").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(30):
        label = ["ok", "fault"][i % 2]
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), (rng.random((40, 60)) * 255).astype(np.uint8))
        _write_wav(tmp_path / "wav" / f"{i}.wav", rng.normal(0, 0.1, 22050 // 2), 22050)
        rows.append({"image": f"img/{i}.png", "audio": f"wav/{i}.wav", "label": label})
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "audio", "label"])
        w.writeheader()
        w.writerows(rows)
    ds = load_dataset("folder", str(tmp_path))
    assert ds.classes == ["fault", "ok"]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30
    assert ds.train.images.shape[1:] == (1, 28, 28)
    assert abs(len(ds.train.clips[0]) - 8000) <= 2  # 0.5 s resampled to 16 kHz


def test_folder_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(EdgeMlaError, match="pairs.csv: not found"):
        load_dataset("folder", str(tmp_path))
    (tmp_path / "pairs.csv").write_text("image,label\na.png,1\n")
    with pytest.raises(EdgeMlaError, match="missing column"):
        load_dataset("folder", str(tmp_path))
    (tmp_path / "pairs.csv").write_text("image,audio,label\nmissing.png,a.wav,1\nmissing.png,a.wav,2\n")
    with pytest.raises(EdgeMlaError, match="missing.png: cannot read image"):
        load_dataset("folder", str(tmp_path))


def test_a_data_dir_given_for_the_demo_dataset_is_said_to_be_unused(demo_cache, caplog):
    """--data-dir with --dataset demo was ignored without a word."""
    import logging

    with caplog.at_level(logging.WARNING, logger="edge_mla.data.registry"):
        load_dataset("demo", "/some/folder")
    assert any("--data-dir /some/folder is not used" in r.getMessage() for r in caplog.records)
