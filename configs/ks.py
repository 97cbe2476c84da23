"""Kinetics-Sounds (31 classes) with the recipe of this benchmark's public reference code.

Prepare the data first: `python -m data_prep.kinetics_sounds --raw_dir=... --data_dir=...`.
Sources: OGM-GE (github.com/GeWu-Lab/OGM-GE_CVPR2022) main.py defaults for its
KineticSound runs: SGD momentum 0.9, lr 1e-3, weight decay 1e-4, StepLR(70, 0.1), batch 64,
3 frames per clip (use_video_frames=3) at 224 x 224, 31 classes; its
pre-processing/get_ks.py audio: 16 kHz, 10 s, scipy PSD 512 / noverlap 353, log, z-score
-> 257 x 1004. Not stated there, ours as for the other datasets: 30 warm-up epochs and 7
adaptive steps of 10 epochs (100 epochs, OGM-GE's default count).
"""

from avgmm import config_defaults as default
from data_prep import features


def get_config():
    config = default.get_config()
    config.data.name = "kinetics_sounds_av"
    config.data.num_frames = 3  # OGM-GE use_video_frames=3
    config.data.image_size = 224
    config.optimizer.learning_rate = 1e-3  # OGM-GE main.py --learning_rate default
    # The preprocessing the data must have, taken from the converter itself: the loader
    # refuses a dataset that recorded other values.
    config.data.expect.update(features.KINETICS_SOUNDS_AUDIO.as_metadata())
    config.data.expect.split_source = "standard"  # the annotation CSVs' train / val split
    return config
