"""`avsynth`: the embedded synthetic audio-visual dataset (a tensorflow-datasets builder).

The project cannot download anything at run time, so its default dataset is generated.
It has the features the real prepared datasets have (`audio` float16 `[F, T]` log
spectrogram-like array, `frames` uint8 `[T, H, W, 3]`, `label`, `id`) plus the ground
truth `imbalanced` flag, and it is built to show the phenomenon the paper is about:

- audio is the easier modality: each class owns two frequency bands with a class-specific
  temporal rhythm, under moderate noise;
- vision is harder: each class owns a colour for a square patch at a random position,
  under heavier pixel noise, with the colours of neighbouring classes close together;
- a known fraction of samples (`degraded_fraction`, 15% by default) has a strongly
  degraded visual stream: the patch is gone and only noise remains. Those samples are
  flagged `imbalanced=True`; a model can only get them right from audio, so their
  modality gap is large and positive.

Generation is deterministic (numpy `default_rng(seed)` per split), written as ArrayRecord
files; no TensorFlow is needed.
"""

import dataclasses
from typing import Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds

from data_prep import registry

# Built by the loader on first use; `python -m avgmm.demo` builds the default one too.
DATASETS = (
    registry.DatasetEntry(tfds_name="avsynth/default", display_name="avsynth",
                          command="python -m avgmm.demo", config="demo.py"),
    registry.DatasetEntry(tfds_name="avsynth/tiny", display_name="avsynth (tiny)",
                          command="python -m avgmm.demo", config="tiny.py"),
)


@dataclasses.dataclass
class AvsynthConfig(tfds.core.BuilderConfig):
    """Sizes and difficulty of one avsynth variant."""

    num_classes: int = 6
    num_train: int = 1536
    num_validation: int = 256
    num_test: int = 512
    freq_bins: int = 40
    time_steps: int = 48
    num_frames: int = 3
    frame_size: int = 36
    degraded_fraction: float = 0.15
    audio_noise: float = 3.2
    visual_noise: float = 150.0
    seed: int = 0


class Avsynth(tfds.core.GeneratorBasedBuilder):
    """Synthetic audio-visual classification with a known set of visually degraded clips."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "Tensors stored as raw bytes (smaller, 10x faster to read)."}
    BUILDER_CONFIGS = [
        AvsynthConfig(name="default", description="The demo dataset (about 2,300 clips)."),
        AvsynthConfig(name="tiny", description="A few dozen small clips for tests.",
                      num_classes=3, num_train=48, num_validation=16, num_test=16,
                      freq_bins=16, time_steps=16, num_frames=3, frame_size=16),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        params = {k: getattr(c, k) for k in (
            "num_classes", "freq_bins", "time_steps", "num_frames", "frame_size",
            "degraded_fraction", "audio_noise", "visual_noise", "seed")}
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                # Raw bytes: tfds would otherwise store uint8 as int64 varints and float16
                # as float32 lists, slow to write and to read.
                "audio": tfds.features.Tensor(shape=(c.freq_bins, c.time_steps),
                                              dtype=np.float16,
                                              encoding=tfds.features.Encoding.BYTES),
                "frames": tfds.features.Tensor(
                    shape=(c.num_frames, c.frame_size, c.frame_size, 3), dtype=np.uint8,
                    encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(
                    names=[f"class_{k}" for k in range(c.num_classes)]),
                "id": tfds.features.Text(),
                "imbalanced": tfds.features.Scalar(dtype=np.bool_),
            }),
            metadata=tfds.core.MetadataDict(generator="avsynth", **params),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        c = self.builder_config
        return {
            "train": self._generate_examples("train", c.num_train, c.seed),
            "validation": self._generate_examples("validation", c.num_validation, c.seed + 1),
            "test": self._generate_examples("test", c.num_test, c.seed + 2),
        }

    def _generate_examples(self, split: str, n: int, seed: int) -> Iterator[Tuple[str, Dict]]:
        rng = np.random.default_rng(seed)
        for i, example in enumerate(generate(self.builder_config, n, rng)):
            key = f"{split}_{i:06d}"
            example["id"] = key
            yield key, example


def _class_patterns(c: AvsynthConfig):
    """Fixed per-class audio templates and colours (the same for every split)."""
    rng = np.random.default_rng(1234)
    t = np.arange(c.time_steps)
    audio = np.zeros((c.num_classes, c.freq_bins, c.time_steps), np.float32)
    bands = rng.permutation(c.freq_bins - 2)[: 2 * c.num_classes].reshape(c.num_classes, 2)
    for k in range(c.num_classes):
        rhythm = 0.5 + 0.5 * np.sin(2 * np.pi * t * (k + 1) / c.time_steps + k)
        for b in bands[k]:
            audio[k, b:b + 2] += 2.0 * rhythm
    # Colours on a hue circle: neighbouring classes look alike, which keeps vision harder.
    hues = np.arange(c.num_classes) / c.num_classes
    colours = 127 + 100 * np.stack([np.cos(2 * np.pi * (hues + s)) for s in (0, 1 / 3, 2 / 3)], 1)
    return audio, colours


def generate(c: AvsynthConfig, n: int, rng: np.random.Generator) -> Iterator[Dict]:
    """Yields `n` examples (without `id`) drawn with `rng`."""
    audio_templates, colours = _class_patterns(c)
    labels = rng.integers(0, c.num_classes, n)
    degraded = rng.random(n) < c.degraded_fraction
    patch = max(3, c.frame_size // 3)
    for label, is_degraded in zip(labels, degraded):
        audio = audio_templates[label] + c.audio_noise * rng.standard_normal(
            (c.freq_bins, c.time_steps))
        frames = np.full((c.num_frames, c.frame_size, c.frame_size, 3), 127.0)
        if not is_degraded:
            y, x = rng.integers(0, c.frame_size - patch + 1, 2)
            frames[:, y:y + patch, x:x + patch, :] = colours[label]
            noise = c.visual_noise
        else:
            noise = 2.0 * c.visual_noise
        frames = frames + noise * rng.standard_normal(frames.shape)
        yield {
            "audio": audio.astype(np.float16),
            "frames": np.clip(frames, 0, 255).astype(np.uint8),
            "label": int(label),
            "imbalanced": bool(is_degraded),
        }


def prepare(data_dir: str, config_name: str = "default") -> tfds.core.DatasetBuilder:
    """Builds `avsynth/<config_name>` in `data_dir` if it is not there yet (idempotent)."""
    builder = Avsynth(config=config_name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return builder
