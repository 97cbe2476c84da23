"""Real recorded media: ten GRID talking-face clips (MPEG-1 program streams, MPEG-1 video
360 x 288 at 25 fps, MPEG-1 layer II stereo audio at 44.1 kHz, 2.98 s) through the media
readers and `data_prep.folder`.

Tolerances, measured on the ten clips: the recipe's audio (PyAV decode, resampled by
FFmpeg to 22,050 Hz, mean of the channels) against librosa (soxr) on a WAV extracted with
PyAV differs by at most 1.5% of the signal's RMS and correlates above 0.9998; their log
spectrograms, over the bins above |S| = 0.01, differ by 0.011-0.024 on average. The tests
allow 3%, 0.9995 and 0.05. Frames: OpenCV's decode equals PyAV's pixel for pixel.
"""

import csv
import json
import os
import shutil

import librosa
import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from data_prep import convert, features, folder, media

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = os.path.join(os.path.dirname(REPO), "shared", "data", "grid")
CLIPS = sorted(f[:-4] for f in os.listdir(GRID) if f.endswith(".mpg")) \
    if os.path.isdir(GRID) else []
pytestmark = pytest.mark.skipif(len(CLIPS) < 10, reason=f"the ten real GRID clips are not "
                                                        f"in {GRID}")
COMMANDS = {"b": "bin", "l": "lay", "p": "place", "s": "set"}  # GRID's first word
FRAMES = convert.FrameParams(num_frames=3, frame_size=64)
# 75 frames, 3 samples: the centres of three 25-frame thirds.
SAMPLED = [12, 37, 62]
TRUNCATED_AT = 0.6  # of the file's bytes


def _decoded_audio(path):
    """Every audio sample PyAV decodes at the file's own rate, float `[channels, n]`."""
    import av

    with av.open(path) as c:
        rate = c.streams.audio[0].rate
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    return np.concatenate(chunks, axis=1).astype(np.float32) / 32768.0, rate


def _extract_wav(path, wav):
    samples, rate = _decoded_audio(path)
    soundfile.write(wav, samples.T, rate, subtype="PCM_16")


def _decoded_frames(path):
    import av

    with av.open(path) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _without_audio(src, dst):
    """A copy of `src` with its audio stream removed (video packets remuxed as they are)."""
    import av

    with av.open(src) as inp, av.open(dst, "w", format="mpeg") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A folder CSV of seven real clips, a truncated copy and an audio-less copy (with
    and without a separate WAV), prepared with the CREMA-D recipe (22,050 Hz, 3 s)."""
    root = tmp_path_factory.mktemp("grid")
    rows = []
    for i, clip in enumerate(CLIPS[:7]):
        split = ("train", "train", "train", "train", "validation", "test", "test")[i]
        rows.append([os.path.join(GRID, clip + ".mpg"), COMMANDS[clip[0]], split, ""])
    cut = str(root / "cut.mpg")
    shutil.copy(os.path.join(GRID, CLIPS[7] + ".mpg"), cut)
    os.chmod(cut, 0o644)
    with open(cut, "r+b") as f:
        f.truncate(int(os.path.getsize(cut) * TRUNCATED_AT))
    rows.append([cut, COMMANDS[CLIPS[7][0]], "train", ""])
    silent = str(root / "noaudio.mpg")
    _without_audio(os.path.join(GRID, CLIPS[8] + ".mpg"), silent)
    wav = str(root / "noaudio.wav")
    _extract_wav(os.path.join(GRID, CLIPS[8] + ".mpg"), wav)
    rows.append([silent, COMMANDS[CLIPS[8][0]], "train", ""])  # no audio at all
    rows.append([silent, COMMANDS[CLIPS[8][0]], "train", wav])  # audio given beside it
    csv_path = root / "clips.csv"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([["video_path", "label", "split", "audio_path"]] + rows)
    data_dir = str(root / "data")
    convert.prepare(folder.builder_class("grid_real"), str(root), data_dir, frames=FRAMES,
                    workers=1, csv_path=str(csv_path))
    examples = {}
    for split in ("train", "validation", "test"):
        src = tfds.data_source("grid_real", data_dir=data_dir, split=split)
        for i in range(len(src)):
            examples.setdefault(src[i]["id"].decode(), []).append(src[i])
    with open(os.path.join(data_dir, "grid_real", "failures.jsonl")) as f:
        failures = [json.loads(line) for line in f]
    return {"root": root, "examples": examples, "failures": failures, "wav": wav}


def test_audio_resampled_and_tiled_matches_a_reference_decode(grid, tmp_path):
    params = features.AudioParams(sample_rate=22050, clip_seconds=3.0)  # the CSV's recipe
    for clip in CLIPS[:7]:
        path = os.path.join(GRID, clip + ".mpg")
        wav = str(tmp_path / f"{clip}.wav")
        _extract_wav(path, wav)
        reference, _ = librosa.load(wav, sr=22050, mono=True)
        got = media.load_audio(path, 22050)
        assert len(got) == len(reference) == 65664  # 131,328 samples at 44.1 kHz
        rel = np.sqrt(np.mean((got - reference) ** 2) / np.mean(reference ** 2))
        assert rel < 0.03, (clip, rel)
        assert np.corrcoef(got, reference)[0, 1] > 0.9995
        # The stored feature: the reference tiled by hand to 3 s (2.98 s + its first 0.02 s).
        tiled = np.concatenate([reference, reference[:66150 - len(reference)]])
        want = features.log_spectrogram(tiled, params)
        (stored,) = grid["examples"][os.path.relpath(path, grid["root"])]
        stored = stored["audio"].astype(np.float32)
        assert stored.shape == want.shape == (257, 188)
        loud = want > np.log(1e-2)
        assert np.mean(np.abs(stored - want)[loud]) < 0.05, clip


def test_sampled_frames_are_the_decoded_ones(grid):
    import cv2

    for clip in CLIPS[:7]:
        path = os.path.join(GRID, clip + ".mpg")
        decoded = _decoded_frames(path)
        assert len(decoded) == 75 and decoded[0].shape == (288, 360, 3)
        (stored,) = grid["examples"][os.path.relpath(path, grid["root"])]
        for k, i in enumerate(SAMPLED):
            near = {j: cv2.resize(decoded[j], (64, 64), interpolation=cv2.INTER_AREA)
                    for j in range(i - 2, i + 3)}
            diffs = {j: np.abs(stored["frames"][k].astype(int) - im).mean()
                     for j, im in near.items()}
            assert np.mean(stored["frames"][k] == near[i]) > 0.99, (clip, i)
            assert min(diffs, key=diffs.get) == i, (clip, i, diffs)


def test_a_truncated_copy_of_a_real_clip_is_reported_not_kept(grid, tmp_path):
    (row,) = [r for r in grid["failures"] if r["video"].endswith("cut.mpg")]
    assert row["reason"].startswith("video damaged or cut short: FFmpeg reports 'Packet "
                                    "corrupt")
    assert "cut.mpg" not in grid["examples"]
    # The coverage rule alone would have kept it: the stream records no duration, and the
    # frame count OpenCV estimates from the cut file's size is about what decodes.
    import cv2

    cap = cv2.VideoCapture(row["video"])
    hinted = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = sum(1 for _ in iter(cap.grab, False))
    cap.release()
    assert abs(hinted - decoded) <= 1 and decoded < 75
    assert decoded >= media.MIN_VIDEO_COVERAGE * hinted
    # Cut elsewhere (inside another packet), it is refused all the same.
    other = str(tmp_path / "cut2.mpg")
    shutil.copy(os.path.join(GRID, CLIPS[9] + ".mpg"), other)
    os.chmod(other, 0o644)
    with open(other, "r+b") as f:
        f.truncate(int(os.path.getsize(other) * 0.3))
    with pytest.raises(media.ClipError, match="video damaged or cut short"):
        media.read_frames(other, 3, 64)
    media.check_intact(os.path.join(GRID, CLIPS[9] + ".mpg"))  # the whole clip passes


def test_a_real_clip_without_its_audio_stream(grid):
    # Without an audio_path: skipped, reported as having no audio track.
    (row,) = [r for r in grid["failures"] if r["video"].endswith("noaudio.mpg")]
    assert row["reason"] == "no audio track" and row["audio"] == row["video"]
    # With a WAV beside it: kept, its frames those of the original clip and its audio
    # the WAV's.
    (kept,) = grid["examples"]["noaudio.mpg"]
    original = os.path.join(GRID, CLIPS[8] + ".mpg")
    np.testing.assert_array_equal(kept["frames"], media.read_frames(original, 3, 64))
    wave = media.load_audio(grid["wav"], 22050)
    params = features.AudioParams(sample_rate=22050, clip_seconds=3.0)
    np.testing.assert_array_equal(kept["audio"], features.spectrogram(wave, params))
