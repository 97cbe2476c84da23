"""AV-MNIST's building blocks without the recordings: how images are shared out, the
degradations and their strengths, and the options of the benchmark settings."""

import numpy as np
import pytest

from data_prep import av_mnist_options, convert, degrade, digit_images


def test_images_are_shared_out_by_need_then_in_proportion():
    # 174 images of a digit for 50 test, 50 validation and 150 training clips, each
    # image for at most 2 clips: 25 / 25 / 75 first, then the 49 left at 50:50:150
    # (9.8, 9.8, 29.4 -> 9, 9, 29 and the two largest remainders to test and validation).
    assert digit_images.allocate(174, [("test", 50), ("validation", 50), ("train", 150)],
                                 2) == {"test": 35, "validation": 35, "train": 104}
    # One use each: test is served first; train and validation share the rest.
    assert digit_images.allocate(6, [("test", 8), ("train+validation", 4)], 1) == {
        "test": 6, "train+validation": 0}
    assert digit_images.allocate(20, [("test", 4), ("train+validation", 8)], 1) == {
        "test": 4, "train+validation": 16}
    assert digit_images.pairing_groups(1) == [("test",), ("train", "validation")]
    assert digit_images.pairing_groups(2) == [("test",), ("validation",), ("train",)]


def test_partition_never_shares_an_image_between_splits():
    pool = digit_images.empty_pool()
    for d in digit_images.DIGITS:
        for i in range(7):
            pool.refs[d].append(f"{d}:{i}")
            pool.images[d].append(np.full((2, 2), i, np.uint8))
    needs = {"test": {d: 2 for d in digit_images.DIGITS},
             "validation": {d: 2 for d in digit_images.DIGITS},
             "train": {d: 6 for d in digit_images.DIGITS}}
    parts = digit_images.partition_pool(pool, needs, max_uses=2, seed=0)
    for d in digit_images.DIGITS:
        counts = [parts[s].count(d) for s in ("test", "validation", "train")]
        # ceil(2/2), ceil(2/2), ceil(6/2) = 1, 1, 3; the 2 left are shared 0.4 : 0.4 :
        # 1.2 -> 0, 0, 1 and the last to the largest remainder (test before validation).
        assert counts == [2, 1, 4]
        refs = sum((parts[s].refs[d] for s in parts), [])
        assert sorted(refs) == sorted(pool.refs[d])  # each image in exactly one split


def test_pairing_reuses_images_evenly_and_caps_the_uses():
    rng = np.random.default_rng(0)
    picks = digit_images.pair_counts(7, 3, 3, rng)
    assert len(picks) == 7 and sorted(np.bincount(picks).tolist()) == [2, 2, 3]
    capped = digit_images.pair_counts(7, 3, 2, rng)
    assert len(capped) == 6 and np.bincount(capped).tolist() == [2, 2, 2]  # 7th: none
    assert len(set(digit_images.pair_counts(3, 5, 2, rng))) == 3  # enough: no reuse


def test_kinds_are_drawn_with_exact_counts_in_a_fixed_order():
    codes = degrade.draw_kinds(20, [0.3, 0.0, 0.2, 0.0], np.random.default_rng(5))
    assert np.bincount(codes, minlength=5).tolist() == [10, 6, 0, 4, 0]
    # The same permutation as the converter's first release for its two kinds: the
    # first round(0.3 * n) of it are visual, the next round(0.2 * n) audio.
    order = np.random.default_rng(5).permutation(20)
    assert set(np.flatnonzero(codes == 1)) == set(order[:6].tolist())
    assert set(np.flatnonzero(codes == 3)) == set(order[6:10].tolist())
    both = degrade.draw_kinds(10, [0.0, 0.2, 0.0, 0.2], np.random.default_rng(1))
    assert np.bincount(both, minlength=5).tolist() == [6, 0, 2, 0, 2]


def test_mixed_in_speech_has_the_asked_snr_and_strength():
    t = np.arange(8000) / 8000
    wave = (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    others = [0.5 * np.sin(2 * np.pi * 710 * t), 0.05 * np.sin(2 * np.pi * 1130 * t)]
    mixed = degrade.mix_in(wave, others, -3.0)
    rest = mixed - wave
    snr = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(rest ** 2))
    assert abs(snr + 3.0) < 1e-3
    # Each other recording is brought to the same power first: neither drowns the other.
    spectrum = np.abs(np.fft.rfft(rest))
    assert abs(spectrum[710] / spectrum[1130] - 1) < 1e-3
    # Loud enough to clip: the whole mixture is scaled down, which keeps the SNR.
    loud = degrade.mix_in(wave * 9, others, -6.0).astype(np.float64)
    assert np.abs(loud).max() == pytest.approx(1.0)
    speech = 9 * wave.astype(np.float64)
    scale = loud @ speech / (speech @ speech)  # the tones are orthogonal over 1 s
    assert 0 < scale < 1
    kept = 10 * np.log10(np.mean((scale * speech) ** 2) / np.mean((loud - scale * speech) ** 2))
    assert abs(kept + 6.0) < 1e-3
    assert degrade.interference_share(0.0) == pytest.approx(0.5)
    assert degrade.interference_share(-10.0) == pytest.approx(10 / 11)


def test_interferers_are_other_digits_of_other_speakers_where_there_are_any():
    candidates = [("1_a_0", "1", "a"), ("2_a_0", "2", "a"), ("3_b_0", "3", "b"),
                  ("4_b_0", "4", "b"), ("1_b_0", "1", "b"), ("5_a_0", "5", "a")]
    for seed in range(20):
        picked = degrade.pick_interferers(candidates, "1", "a", 2, np.random.default_rng(seed))
        assert sorted(picked) == ["3_b_0", "4_b_0"]  # speaker b's, never digit 1
    alone = [c for c in candidates if c[2] == "a"]
    picked = degrade.pick_interferers(alone, "1", "a", 2, np.random.default_rng(0))
    assert sorted(picked) == ["2_a_0", "5_a_0"]  # one speaker: their own other digits


def test_graded_images_are_weak_not_empty():
    """A nearest-centroid classifier of clean digits still reads strongly degraded images
    well above chance and pure-noise ones at chance."""
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)
    size = 28
    def flat(frames):
        return np.stack(frames)[:, 0, :, :, 0].reshape(len(frames), -1) / 255.0

    train = np.arange(len(images)) % 2 == 0
    clean = flat([digit_images.digit_frame(im, size) for im in images])
    centroids = np.stack([clean[train & (d.target == k)].mean(0) for k in range(10)])
    score = lambda x: np.mean(  # noqa: E731
        np.argmin(((x[:, None] - centroids[None]) ** 2).sum(-1), 1) == d.target[~train])
    rng = np.random.default_rng(0)
    accuracy = {"clean": score(clean[~train])}
    for strength in (0.3, 1.0):
        accuracy[strength] = score(flat([degrade.graded_frame(im, size, strength, rng)
                                         for im in images[~train]]))
    accuracy["noise"] = score(flat([degrade.noise_frame(size, rng) for _ in images[~train]]))
    assert accuracy["clean"] > 0.85 and accuracy[0.3] > 0.75, accuracy
    assert 0.3 < accuracy[1.0] < accuracy[0.3] - 0.1, accuracy
    assert accuracy["noise"] < 0.2, accuracy


def test_settings_resolve_to_their_options():
    graded = av_mnist_options.resolve_options("graded", {"image_source": "sklearn", "seed": 4})
    assert graded["visual_graded_fraction"] == 0.3 and graded["visual_noise_fraction"] == 0
    assert (graded["test_speakers"], graded["val_speakers"], graded["val_fraction"],
            graded["max_image_uses"], graded["seed"], graded["setting"]) == (
        ["george"], ["jackson"], 0.0, 2, 4, "graded")
    two = av_mnist_options.resolve_options("two-sided", {"image_source": "sklearn"})
    assert (two["setting"], two["visual_graded_fraction"], two["audio_mix_fraction"]) == (
        "two_sided", 0.2, 0.2)
    free = av_mnist_options.resolve_options(None, {"image_source": "mnist",
                                                   "val_speakers": ["lucas"]})
    assert (free["setting"], free["val_fraction"], free["max_image_uses"]) == ("", 0.0, 1)
    for bad, message in (({"audio_mix_fraction": 0.7, "visual_noise_fraction": 0.5},
                          "exceed 1"),
                         ({"visual_strength": [0.8, 0.2]}, "need 0 < LO <= HI <= 1"),
                         ({"audio_mix_snr_db": [0.0, float("nan")]}, "finite dB values"),
                         ({"max_image_uses": 0}, "must be >= 1"),
                         ({"loudness": 3}, r"unknown AV-MNIST option\(s\) \['loudness'\]")):
        with pytest.raises(convert.DataPrepError, match=message):
            av_mnist_options.resolve_options(None, {"image_source": "mnist", **bad})
