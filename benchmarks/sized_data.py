"""A synthetic dataset with a real dataset's shapes, written fast, for benchmarks.

Usage: python benchmarks/sized_data.py --data_dir=DIR --name=NAME [--train 6698]
       [--validation 670] [--test 744] [--freq_bins 257] [--time_steps 188]
       [--num_frames 1] [--frame_size 224] [--num_classes 6] [--json_out FILE]

Writes `avsynth/NAME` through avsynth's own tfds builder (the trainer needs a prepared
dataset: its loader takes the shapes and split sizes from the records), in clip order
through the converters' streaming writer (data_prep/convert.py), then builds the
loader's decoded cache under `DIR/avgmm_cache`, where a run with
`config.data.cache_dir=""` finds it. What makes it fast: avsynth's generator draws every
clip's noise one clip at a time (float64 normals for each pixel); here a bank of 64 random
clips is drawn once, vectorized, and every example is a view of one of them with its own
label, so writing costs the serialization and the disk alone. The contents are
random: timing, not learning. Prints (and with --json_out writes) the seconds each part
took.
"""

import json
import os
import sys
import time
from typing import Dict, Iterator, Tuple
from unittest import mock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from avgmm import cli  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from tensorflow_datasets.core import writer as tfds_writer  # noqa: E402

from avgmm.data import avsynth, pipeline  # noqa: E402
from data_prep.convert import StreamingWriter  # noqa: E402

BANK = 64  # distinct random clips the examples are views of

with tfds.core.registered.skip_registration():
    class SizedAvsynth(avsynth.Avsynth):
        """avsynth's builder (its features, metadata and files) with a fast generator and
        without the ground-truth `imbalanced` flag, which real datasets do not have (with
        it, the trainer would add a final gap pass and GMM fit that a real run skips)."""

        name = "avsynth"  # written where `avsynth/<config>` is looked for

        def _info(self) -> tfds.core.DatasetInfo:
            info = super()._info()
            features = {k: v for k, v in info.features.items() if k != "imbalanced"}
            return tfds.core.DatasetInfo(builder=self, description=info.description,
                                         features=tfds.features.FeaturesDict(features),
                                         metadata=info.metadata, disable_shuffling=True)

        def _download_and_prepare(self, dl_manager, download_config=None):
            # As the converters write (data_prep/convert.py): records straight into their
            # shards, without tfds's shuffler, which spills splits above 1 GB to files it
            # reads back with TensorFlow (not a dependency) and costs a second pass.
            with mock.patch.object(tfds_writer, "Writer", StreamingWriter):
                super()._download_and_prepare(dl_manager, download_config=download_config)

        def _generate_examples(self, split: str, n: int,
                               seed: int) -> Iterator[Tuple[str, Dict]]:
            c = self.builder_config
            rng = np.random.default_rng(seed)
            audio = rng.standard_normal((BANK, c.freq_bins, c.time_steps),
                                        dtype=np.float32).astype(np.float16)
            frames = rng.integers(0, 256, (BANK, c.num_frames, c.frame_size, c.frame_size, 3),
                                  dtype=np.uint8)
            labels = rng.integers(0, c.num_classes, n)
            picks = rng.integers(0, BANK, (n, 2))
            for i in range(n):
                key = f"{split}_{i:06d}"
                yield key, {"audio": audio[picks[i, 0]], "frames": frames[picks[i, 1]],
                            "label": int(labels[i]), "id": key}


def generate(data_dir: str, name: str, train: int, validation: int, test: int,
             freq_bins: int, time_steps: int, num_frames: int, frame_size: int,
             num_classes: int) -> Dict[str, float]:
    """Writes `avsynth/<name>` and its decoded cache (loader frame choice: one frame);
    returns the seconds of each part, the clip counts and the bytes on disk."""
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    config = avsynth.AvsynthConfig(
        name=name, num_classes=num_classes, num_train=train, num_validation=validation,
        num_test=test, freq_bins=freq_bins, time_steps=time_steps, num_frames=num_frames,
        frame_size=frame_size)
    start = time.perf_counter()
    SizedAvsynth(config=config, data_dir=data_dir,
                 file_format="array_record").download_and_prepare()
    records_s = time.perf_counter() - start
    cache_dir = os.path.join(data_dir, "avgmm_cache")
    start = time.perf_counter()
    ds = pipeline.load_dataset(f"avsynth/{name}", data_dir, num_frames=1, cache_dir=cache_dir)
    cache_s = time.perf_counter() - start
    return {"records_s": records_s, "cache_s": cache_s,
            "clips": dict(ds.meta.num_examples),
            "records_bytes": _bytes(os.path.join(data_dir, "avsynth")),
            "cache_bytes": _bytes(cache_dir)}


def _bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
               for f in files)


def main() -> None:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--name", required=True)
    for field, value in (("train", 6698), ("validation", 670), ("test", 744),
                         ("freq_bins", 257), ("time_steps", 188), ("num_frames", 1),
                         ("frame_size", 224), ("num_classes", 6)):
        p.add_argument(f"--{field}", type=int, default=value)
    p.add_argument("--json_out", default=None)
    args = vars(p.parse_args())
    json_out = args.pop("json_out")
    out = generate(**args)
    print(json.dumps(out), flush=True)
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
