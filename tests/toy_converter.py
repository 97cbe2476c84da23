"""A throw-away converter, written the way a user adds a dataset: one module that declares
its dataset and prepares it. The registry test copies it into a `data_prep/` folder of its
own on PYTHONPATH; the clip-field tests import it directly.

Each clip `i` of a split: audio and frames filled with `i`, label `i % 2`, and the clip
fields `hard` (bool, `i % 3 == 0`), `level` (ClassLabel low / mid / high, `i % 3`),
`step` (int, `10 * i`) and `weight` (float, `i / 4`).
"""

import os

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags

from data_prep import registry
from data_prep.features import AudioParams

AUDIO = AudioParams(sample_rate=8000, clip_seconds=0.5, n_fft=30, hop_length=200)
FRAMES = (2, 8, 8, 3)
LEVELS = ("low", "mid", "high")
DATASET = registry.DatasetEntry(
    tfds_name="toy_av", prepare_name="toy", display_name="Toy AV",
    inputs="--count=<clips per split>", audio=AUDIO,
    config=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "toy_config.py"))


class ToyAv(tfds.core.GeneratorBasedBuilder):
    """Toy clips with four clip fields."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, count: int = 8, **kwargs):
        self.count = count
        super().__init__(**kwargs)

    def _info(self):
        raw = tfds.features.Encoding.BYTES
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "audio": tfds.features.Tensor(shape=AUDIO.shape, dtype=np.float16, encoding=raw),
            "frames": tfds.features.Tensor(shape=FRAMES, dtype=np.uint8, encoding=raw),
            "label": tfds.features.ClassLabel(names=["a", "b"]),
            "id": tfds.features.Text(),
            "hard": tfds.features.Scalar(dtype=np.bool_),
            "level": tfds.features.ClassLabel(names=list(LEVELS)),
            "step": tfds.features.Scalar(dtype=np.int64),
            "weight": tfds.features.Scalar(dtype=np.float32),
        }), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples("train"),
                "test": self._generate_examples("test")}

    def _generate_examples(self, split):
        for i in range(self.count):
            yield f"{split}{i:03d}", {
                "audio": np.full(AUDIO.shape, i, np.float16),
                "frames": np.full(FRAMES, i, np.uint8), "label": i % 2, "id": f"{split}{i}",
                "hard": i % 3 == 0, "level": LEVELS[i % 3], "step": 10 * i,
                "weight": np.float32(i / 4)}


def prepare(data_dir: str, count: int) -> ToyAv:
    builder = ToyAv(count=count, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig())
    return builder


def main(argv):
    del argv
    builder = prepare(os.path.expanduser(flags.FLAGS.data_dir), flags.FLAGS.count)
    print(f"prepared {builder.name}: {flags.FLAGS.count} clips per split")


if __name__ == "__main__":
    flags.DEFINE_integer("count", 8, "Clips per split.")
    flags.DEFINE_string("data_dir", None, "tfds data directory to write into.")
    flags.mark_flag_as_required("data_dir")
    app.run(main)
